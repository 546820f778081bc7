/* score_kernel.c — the zero-shot pair scoring as one fused kernel: dot products of a
 * block of query rows with a panel of reference columns are accumulated in registers
 * and reduced at once to the two maxima the scoring needs (score_kernel.h), so the
 * (rows, G) matrix of dot products is never written to memory.
 *
 * Why: the scoring's GEMM has a short inner dimension (D = 128 for MobileNetV2 features)
 * and a huge output (G x G per pair); a library GEMM writes every output and the
 * reductions read it back, so it ran at ~80 GFLOP/s on 2 AVX-512 cores where the FMA
 * units allow ~250 (docs/ENGINE.md). Here each output costs D multiply-adds in a
 * register and one max.
 *
 * Layout. B (the reference image's G rows of D) is packed once per pair into panels of
 * NR = 32 columns: fp32 panels are (D, 32) k-major; bf16 panels are (D/2, 32, 2), the
 * pairs of k that one vdpbf16ps consumes. A (the query rows) is read in place: one
 * broadcast per row and k (a bf16 pair for bf16). Micro-tile: MR = 8 rows x 32 columns
 * in 16 zmm accumulators (AVX-512) or 4 rows x 16 columns in 8 ymm (AVX2 + FMA).
 *
 * Copies: fp32 on AVX-512 or AVX2+FMA, bf16 on AVX-512-BF16 (vdpbf16ps, fp32
 * accumulation); picked at run time (vec_avx512(), cpuid). Each output is the same
 * sequential k-order FMA chain in every copy, so fp32 results agree across ISAs. */
#include "score_kernel.h"

#include "compute/amx.h"

#include "compute/vecmath.h"

#include <immintrin.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define NR 32
#define MR512 8
#define MR256 4

static int g_bf16 = -1;
static int cpu_bf16(void)
{
    if (g_bf16 < 0) {
        __builtin_cpu_init();
        g_bf16 = vec_avx512() && __builtin_cpu_supports("avx512bf16");
    }
    return g_bf16;
}

int sk_available(int bf16, int dim)
{
    if (dim <= 0) return 0;
    if (bf16) return cpu_bf16() && dim % 2 == 0;
    /* the release build's baseline (x86-64-v3) has AVX2 + FMA; a plain x86-64 build
     * (e.g. the fuzzers') asks the CPU */
    return vec_avx512() || (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"));
}

static int panels(int G) { return (G + NR - 1) / NR; }

size_t sk_panel_bytes(int G, int dim, int bf16)
{
    return (size_t)panels(G) * NR * dim * (bf16 ? sizeof(uint16_t) : sizeof(float));
}

void sk_pack(const void *B, int G, int dim, int bf16, void *out)
{
    const int np = panels(G);
#pragma omp parallel for schedule(static) if (np >= 8)
    for (int p = 0; p < np; p++) {
        const int c0 = p * NR, nc = G - c0 < NR ? G - c0 : NR;
        if (bf16) {
            const uint16_t *b = B;
            uint16_t *dst = (uint16_t *)out + (size_t)p * NR * dim;
            for (int kk = 0; kk < dim / 2; kk++)
                for (int c = 0; c < NR; c++)
                    for (int t = 0; t < 2; t++)
                        dst[((size_t)kk * NR + c) * 2 + t] =
                            c < nc ? b[(size_t)(c0 + c) * dim + 2 * kk + t] : 0;
        } else {
            const float *b = B;
            float *dst = (float *)out + (size_t)p * NR * dim;
            for (int k = 0; k < dim; k++)
                for (int c = 0; c < NR; c++)
                    dst[(size_t)k * NR + c] = c < nc ? b[(size_t)(c0 + c) * dim + k] : 0.0f;
        }
    }
}

/* ------------------------------------------------------------------ AVX-512 */

#define T512 __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,fma")))
#define T512BF __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,fma,avx512bf16")))

/* One (mr <= MR512) x 32 micro-tile over a panel: the reductions into rowmax vectors
 * (rmv, per row) and colmax (this panel's 32 columns, masked to the valid nc). */
T512 static inline __attribute__((always_inline)) void epilogue512(__m512 acc[MR512][2], int mr,
                                                                   const float *row_inv,
                                                                   const float *col_inv, int nc,
                                                                   __m512 *rmv, float *colmax)
{
    const __mmask16 k0 = nc >= 16 ? 0xffff : (__mmask16)((1u << nc) - 1);
    const __mmask16 k1 = nc >= 32 ? 0xffff : nc <= 16 ? 0 : (__mmask16)((1u << (nc - 16)) - 1);
    const __m512 ci0 = _mm512_maskz_loadu_ps(k0, col_inv),
                 ci1 = _mm512_maskz_loadu_ps(k1, col_inv + 16);
    __m512 cm0 = _mm512_set1_ps(-INFINITY), cm1 = cm0;
#pragma GCC unroll 8
    for (int i = 0; i < MR512; i++) {
        if (i >= mr) break;
        if (rmv) {
            rmv[2 * i] =
                _mm512_mask_max_ps(rmv[2 * i], k0, rmv[2 * i], _mm512_mul_ps(acc[i][0], ci0));
            rmv[2 * i + 1] = _mm512_mask_max_ps(rmv[2 * i + 1], k1, rmv[2 * i + 1],
                                                _mm512_mul_ps(acc[i][1], ci1));
        }
        if (colmax) {
            const __m512 ri = _mm512_set1_ps(row_inv[i]);
            cm0 = _mm512_max_ps(cm0, _mm512_mul_ps(acc[i][0], ri));
            cm1 = _mm512_max_ps(cm1, _mm512_mul_ps(acc[i][1], ri));
        }
    }
    if (colmax) {
        _mm512_mask_storeu_ps(colmax, k0, _mm512_max_ps(_mm512_maskz_loadu_ps(k0, colmax), cm0));
        _mm512_mask_storeu_ps(colmax + 16, k1,
                              _mm512_max_ps(_mm512_maskz_loadu_ps(k1, colmax + 16), cm1));
    }
}

#define SK_BODY512(MR, ACCUM)                                                                      \
    for (int r0 = 0; r0 < rows; r0 += MR) {                                                        \
        const int mr = rows - r0 < MR ? rows - r0 : MR;                                            \
        __m512 rmv[2 * MR];                                                                        \
        for (int i = 0; i < 2 * MR; i++) rmv[i] = _mm512_set1_ps(-INFINITY);                       \
        for (int p = 0; p < np; p++) {                                                             \
            const int nc = G - p * NR < NR ? G - p * NR : NR;                                      \
            __m512 acc[MR][2];                                                                     \
            _Pragma("GCC unroll 8") for (int i = 0; i < MR; i++) acc[i][0] = acc[i][1] =           \
                _mm512_setzero_ps();                                                               \
            ACCUM;                                                                                 \
            epilogue512(acc, mr, row_inv + r0, col_inv + p * NR, nc, rowmax ? rmv : NULL,          \
                        colmax ? colmax + p * NR : NULL);                                          \
        }                                                                                          \
        if (rowmax)                                                                                \
            for (int i = 0; i < mr; i++)                                                           \
                rowmax[r0 + i] = _mm512_reduce_max_ps(_mm512_max_ps(rmv[2 * i], rmv[2 * i + 1]));  \
    }

/* fp32: acc[i][*] += A[r0 + i][k] * panel[k][*], k = 0..dim-1 in order. Rows beyond mr
 * read row r0 (valid memory; their sums are never used). */
#define ACCUM_F32                                                                                  \
    do {                                                                                           \
        const float *pp = (const float *)Bp + (size_t)p * NR * dim;                                \
        const float *ar[MR512];                                                                    \
        for (int i = 0; i < MR512; i++) ar[i] = A + (size_t)(r0 + (i < mr ? i : 0)) * dim;         \
        for (int k = 0; k < dim; k++) {                                                            \
            const __m512 b0 = _mm512_loadu_ps(pp + (size_t)k * NR),                                \
                         b1 = _mm512_loadu_ps(pp + (size_t)k * NR + 16);                           \
            _Pragma("GCC unroll 8") for (int i = 0; i < MR512; i++)                                \
            {                                                                                      \
                const __m512 a = _mm512_set1_ps(ar[i][k]);                                         \
                acc[i][0] = _mm512_fmadd_ps(a, b0, acc[i][0]);                                     \
                acc[i][1] = _mm512_fmadd_ps(a, b1, acc[i][1]);                                     \
            }                                                                                      \
        }                                                                                          \
    } while (0)

T512 static void rows_f32_512(const float *A, int rows, int dim, const void *Bp, int G,
                              const float *row_inv, const float *col_inv, float *rowmax,
                              float *colmax)
{
    const int np = panels(G);
    SK_BODY512(MR512, ACCUM_F32)
}

/* bf16: acc[i][*] += pairs of A[r0 + i][2kk..2kk+1] . panel[kk][*][0..1] (vdpbf16ps) */
#define ACCUM_BF16                                                                                 \
    do {                                                                                           \
        const uint16_t *pp = (const uint16_t *)Bp + (size_t)p * NR * dim;                          \
        const uint16_t *ar[MR512];                                                                 \
        for (int i = 0; i < MR512; i++) ar[i] = A + (size_t)(r0 + (i < mr ? i : 0)) * dim;         \
        for (int kk = 0; kk < dim / 2; kk++) {                                                     \
            const __m512bh b0 = (__m512bh)_mm512_loadu_si512(pp + (size_t)kk * NR * 2),            \
                           b1 = (__m512bh)_mm512_loadu_si512(pp + (size_t)kk * NR * 2 + 32);       \
            _Pragma("GCC unroll 8") for (int i = 0; i < MR512; i++)                                \
            {                                                                                      \
                uint32_t pair;                                                                     \
                memcpy(&pair, ar[i] + 2 * kk, 4);                                                  \
                const __m512bh a = (__m512bh)_mm512_set1_epi32((int)pair);                         \
                acc[i][0] = _mm512_dpbf16_ps(acc[i][0], a, b0);                                    \
                acc[i][1] = _mm512_dpbf16_ps(acc[i][1], a, b1);                                    \
            }                                                                                      \
        }                                                                                          \
    } while (0)

T512BF static void rows_bf16_512(const uint16_t *A, int rows, int dim, const void *Bp, int G,
                                 const float *row_inv, const float *col_inv, float *rowmax,
                                 float *colmax)
{
    const int np = panels(G);
    SK_BODY512(MR512, ACCUM_BF16)
}

/* ------------------------------------------------------------------ AMX (bf16) */

/* Where the CPU has AMX (and the kernel lets this process use its tile registers), the
 * bf16 products go through the tile unit instead: a 32 x 32 block of dot products is
 * four 16 x 16 fp32 tiles, accumulated over dim in chunks of 32 by _tile_dpbf16ps from
 * two A tiles (16 rows x 32 bf16 of the query rows, read in place) and two B tiles (16
 * pairs x 16 columns, straight from the packed panel: its (dim/2, 32, 2) layout is the
 * tile unit's VNNI layout). The block is stored (4 KB, L1) and reduced with AVX-512. */

#define TAMX                                                                                       \
    __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,fma,avx512bf16,amx-tile,amx-bf16")))

TAMX static void rows_bf16_amx(const uint16_t *A, int rows, int dim, const void *Bp, int G,
                               const float *row_inv, const float *col_inv, float *rowmax,
                               float *colmax)
{
    amx_tiles_begin();
    const int np = panels(G);
    float C[32 * 32] __attribute__((aligned(64)));
    uint16_t *pad = NULL; /* the last block's rows, zero-padded to 32 */
    for (int r0 = 0; r0 < rows; r0 += 32) {
        const int mr = rows - r0 < 32 ? rows - r0 : 32;
        const uint16_t *a = A + (size_t)r0 * dim;
        if (mr < 32) {
            pad = calloc((size_t)32 * dim, sizeof *pad);
            if (!pad) { /* out of memory: these rows by the vdpbf16ps kernel */
                _tile_release();
                rows_bf16_512(a, mr, dim, Bp, G, row_inv + r0, col_inv, rowmax ? rowmax + r0 : NULL,
                              colmax);
                return;
            }
            memcpy(pad, a, (size_t)mr * dim * sizeof *pad);
            a = pad;
        }
        __m512 rmv[32];
        for (int i = 0; i < 32; i++) rmv[i] = _mm512_set1_ps(-INFINITY);
        for (int p = 0; p < np; p++) {
            const uint16_t *pp = (const uint16_t *)Bp + (size_t)p * NR * dim;
            amx_block32(a, dim, pp, dim / 32, C, 32, 0);
            const int nc = G - p * NR < NR ? G - p * NR : NR;
            const __mmask16 k0 = nc >= 16 ? 0xffff : (__mmask16)((1u << nc) - 1);
            const __mmask16 k1 = nc >= 32   ? 0xffff
                                 : nc <= 16 ? 0
                                            : (__mmask16)((1u << (nc - 16)) - 1);
            const float *ci = col_inv + p * NR;
            const __m512 ci0 = _mm512_maskz_loadu_ps(k0, ci),
                         ci1 = _mm512_maskz_loadu_ps(k1, ci + 16);
            __m512 cm0 = _mm512_set1_ps(-INFINITY), cm1 = cm0;
            for (int i = 0; i < mr; i++) {
                const __m512 c0 = _mm512_load_ps(C + i * 32), c1 = _mm512_load_ps(C + i * 32 + 16);
                if (rowmax) {
                    rmv[i] = _mm512_mask_max_ps(rmv[i], k0, rmv[i], _mm512_mul_ps(c0, ci0));
                    rmv[i] = _mm512_mask_max_ps(rmv[i], k1, rmv[i], _mm512_mul_ps(c1, ci1));
                }
                if (colmax) {
                    const __m512 ri = _mm512_set1_ps(row_inv[r0 + i]);
                    cm0 = _mm512_max_ps(cm0, _mm512_mul_ps(c0, ri));
                    cm1 = _mm512_max_ps(cm1, _mm512_mul_ps(c1, ri));
                }
            }
            if (colmax) {
                float *cmx = colmax + p * NR;
                _mm512_mask_storeu_ps(cmx, k0, _mm512_max_ps(_mm512_maskz_loadu_ps(k0, cmx), cm0));
                _mm512_mask_storeu_ps(cmx + 16, k1,
                                      _mm512_max_ps(_mm512_maskz_loadu_ps(k1, cmx + 16), cm1));
            }
        }
        if (rowmax)
            for (int i = 0; i < mr; i++) rowmax[r0 + i] = _mm512_reduce_max_ps(rmv[i]);
    }
    free(pad);
    _tile_release();
}

/* ------------------------------------------------------------------ AVX2 + FMA (fp32) */

/* 4 rows x 32 columns as 4 ymm per row (16 accumulators: the baseline has 16 ymm, so
 * the compiler keeps some in L1; the panel stays 32 wide for one packed layout). */
__attribute__((target("avx2,fma"))) static void
rows_f32_256(const float *A, int rows, int dim, const void *Bp, int G, const float *row_inv,
             const float *col_inv, float *rowmax, float *colmax)
{
    const int np = panels(G);
    for (int r0 = 0; r0 < rows; r0 += MR256) {
        const int mr = rows - r0 < MR256 ? rows - r0 : MR256;
        float rm[MR256];
        for (int i = 0; i < MR256; i++) rm[i] = -INFINITY;
        const float *ar[MR256];
        for (int i = 0; i < MR256; i++) ar[i] = A + (size_t)(r0 + (i < mr ? i : 0)) * dim;
        for (int p = 0; p < np; p++) {
            const int nc = G - p * NR < NR ? G - p * NR : NR;
            const float *pp = (const float *)Bp + (size_t)p * NR * dim;
            __m256 acc[MR256][4];
            for (int i = 0; i < MR256; i++)
                for (int v = 0; v < 4; v++) acc[i][v] = _mm256_setzero_ps();
            for (int k = 0; k < dim; k++) {
                __m256 b[4];
                for (int v = 0; v < 4; v++) b[v] = _mm256_loadu_ps(pp + (size_t)k * NR + 8 * v);
                for (int i = 0; i < MR256; i++) {
                    const __m256 a = _mm256_set1_ps(ar[i][k]);
                    for (int v = 0; v < 4; v++) acc[i][v] = _mm256_fmadd_ps(a, b[v], acc[i][v]);
                }
            }
            float dots[MR256][NR];
            for (int i = 0; i < MR256; i++)
                for (int v = 0; v < 4; v++) _mm256_storeu_ps(dots[i] + 8 * v, acc[i][v]);
            const float *ci = col_inv + p * NR;
            for (int i = 0; i < mr; i++) {
                float m = rm[i];
                for (int c = 0; c < nc; c++) {
                    const float x = dots[i][c] * ci[c];
                    m = x > m ? x : m;
                }
                rm[i] = m;
            }
            if (colmax)
                for (int c = 0; c < nc; c++) {
                    float m = colmax[p * NR + c];
                    for (int i = 0; i < mr; i++) {
                        const float x = dots[i][c] * row_inv[r0 + i];
                        m = x > m ? x : m;
                    }
                    colmax[p * NR + c] = m;
                }
        }
        if (rowmax)
            for (int i = 0; i < mr; i++) rowmax[r0 + i] = rm[i];
    }
}

static void rows_any(int bf16, const void *A, int rows, int dim, const void *Bp, int G,
                     const float *row_inv, const float *col_inv, float *rowmax, float *colmax)
{
    if (bf16 && dim % 32 == 0 && amx_ready())
        rows_bf16_amx(A, rows, dim, Bp, G, row_inv, col_inv, rowmax, colmax);
    else if (bf16) rows_bf16_512(A, rows, dim, Bp, G, row_inv, col_inv, rowmax, colmax);
    else if (vec_avx512()) rows_f32_512(A, rows, dim, Bp, G, row_inv, col_inv, rowmax, colmax);
    else rows_f32_256(A, rows, dim, Bp, G, row_inv, col_inv, rowmax, colmax);
}

/* Cache blocking. Each micro-tile row block streams every panel it is given, so with the
 * whole reference (G = 3136, D = 128: 1.6 MB fp32) the panels come from L3 once B
 * outgrows L2; fed a chunk of SK_CHUNK_BYTES of panels at a time, a group of up to
 * SK_GROUP_ROWS rows reuses that chunk from L2 (measured 1 thread, AVX-512, G = 3136:
 * 137-147 GFLOP/s unblocked, the rate of a G = 784 reference, 166, once blocked;
 * docs/ENGINE.md). The chunks' row maxima are merged here; colmax is per column, so a
 * chunk updates only its own columns. Panels are independent, so a chunk starting on a
 * panel boundary is a valid packed reference of its own. A reference of at most
 * SK_BLOCK_ABOVE packed bytes (bf16 at G = 3136: 0.8 MB) stays in L2 unblocked; blocking it
 * measured 2-3 % slower on the AMX path. */
#define SK_CHUNK_BYTES (256 * 1024)
#define SK_BLOCK_ABOVE (1024 * 1024)
#define SK_GROUP_ROWS 256

void sk_rows(int bf16, const void *A, int rows, int dim, const void *Bp, int G,
             const float *row_inv, const float *col_inv, float *rowmax, float *colmax)
{
    const size_t esz = bf16 ? sizeof(uint16_t) : sizeof(float);
    const size_t panel_bytes = (size_t)NR * dim * esz;
    const int chunk_panels =
        panel_bytes >= SK_CHUNK_BYTES ? 1 : (int)(SK_CHUNK_BYTES / panel_bytes);
    const int chunk_cols = chunk_panels * NR;
    if (G <= chunk_cols || sk_panel_bytes(G, dim, bf16) <= SK_BLOCK_ABOVE) {
        rows_any(bf16, A, rows, dim, Bp, G, row_inv, col_inv, rowmax, colmax);
        return;
    }
    float part[SK_GROUP_ROWS] = {0}; /* written by rows_any (zeroed for cppcheck) */
    for (int r0 = 0; r0 < rows; r0 += SK_GROUP_ROWS) {
        const int nr = rows - r0 < SK_GROUP_ROWS ? rows - r0 : SK_GROUP_ROWS;
        const void *a = (const char *)A + (size_t)r0 * dim * esz;
        for (int c0 = 0; c0 < G; c0 += chunk_cols) {
            const int nc = G - c0 < chunk_cols ? G - c0 : chunk_cols;
            const void *bp = (const char *)Bp + (size_t)(c0 / NR) * panel_bytes;
            rows_any(bf16, a, nr, dim, bp, nc, row_inv + r0, col_inv + c0, rowmax ? part : NULL,
                     colmax ? colmax + c0 : NULL);
            if (rowmax)
                for (int i = 0; i < nr; i++)
                    rowmax[r0 + i] = c0 == 0 || part[i] > rowmax[r0 + i] ? part[i] : rowmax[r0 + i];
        }
    }
}
