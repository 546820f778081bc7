/* amx.c — bf16 GEMM on AMX tiles (see amx.h). A 32 x 32 block of C is four 16 x 16
 * fp32 tiles (tmm0-3), accumulated over K in chunks of 32 from two A tiles (tmm4-5:
 * 16 rows x 32 bf16, read in place) and two B tiles (tmm6-7: 16 pairs x 16 columns of a
 * packed panel). Blocks at the edges of M or N go through a 32 x 32 buffer. */
#include "amx.h"

#include <cpuid.h>
#include <immintrin.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/syscall.h>
#include <unistd.h>

#define TAMX __attribute__((target("avx512f,avx512bw,amx-tile,amx-bf16")))
#define NP 32 /* panel width (columns) and tile depth (K per chunk) */

static int g_amx = -1;

int amx_ready(void)
{
    int v = __atomic_load_n(&g_amx, __ATOMIC_RELAXED);
    if (v >= 0) return v;
    unsigned a = 0, b = 0, c = 0, d = 0;
    /* leaf 7: EDX bit 22 AMX-BF16, bit 24 AMX-TILE */
    v = __get_cpuid_count(7, 0, &a, &b, &c, &d) && (d >> 22 & 1) && (d >> 24 & 1);
    const char *cap = getenv("DNNL_MAX_CPU_ISA"); /* one knob caps oneDNN and us */
    if (cap && *cap && strncasecmp(cap, "ALL", 3) != 0 && !strcasestr(cap, "AMX")) v = 0;
    /* Linux hands out the tile data state on request (ARCH_REQ_XCOMP_PERM, XTILEDATA) */
    if (v) v = syscall(SYS_arch_prctl, 0x1023, 18) == 0;
    __atomic_store_n(&g_amx, v, __ATOMIC_RELAXED);
    return v;
}

int amx_kpad(int K) { return (K + NP - 1) / NP * NP; }

size_t amx_packed_bytes(int K, int N)
{
    return (size_t)((N + NP - 1) / NP) * NP * amx_kpad(K) * sizeof(uint16_t);
}

/* Packing, vectorised (once per head and layer in attention: 2 % of a bf16 ViT forward
 * when it moved one 32-bit cell at a time). Only called where AMX runs, so AVX-512 is
 * there too. */
TAMX void amx_pack(const uint16_t *B, int ld, int trans, int K, int N, uint16_t *packed)
{
    const int kp = amx_kpad(K), np = (N + NP - 1) / NP, kk_full = K / 2;
    /* trans: the 16-bit offsets of the first cell of 16 consecutive rows of B^T */
    const __m512i rows16 =
        _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                           _mm512_set1_epi32(ld));
    /* !trans: interleave two rows of 32 bf16 into 32 pairs (vpermt2w indices) */
    const __m512i lo_pairs =
                      _mm512_set_epi16(47, 15, 46, 14, 45, 13, 44, 12, 43, 11, 42, 10, 41, 9, 40, 8,
                                       39, 7, 38, 6, 37, 5, 36, 4, 35, 3, 34, 2, 33, 1, 32, 0),
                  hi_pairs = _mm512_set_epi16(63, 31, 62, 30, 61, 29, 60, 28, 59, 27, 58, 26, 57,
                                              25, 56, 24, 55, 23, 54, 22, 53, 21, 52, 20, 51, 19,
                                              50, 18, 49, 17, 48, 16);
    for (int p = 0; p < np; p++) {
        /* a panel is (kp/2, 32) 32-bit cells, each the pair B[2kk][n], B[2kk+1][n] */
        uint32_t *dst = (uint32_t *)(void *)(packed + (size_t)p * NP * kp);
        /* the rows below write every cell (zeros past nc); the rest of the panel is zero */
        const int written = trans ? kk_full : (K + 1) / 2;
        memset(dst + (size_t)written * NP, 0, (size_t)(kp / 2 - written) * NP * sizeof(uint32_t));
        const int n0 = p * NP, nc = N - n0 < NP ? N - n0 : NP;
        if (trans) { /* B^T rows (N, K): a pair is 4 contiguous bytes of row n; a row of the
                        panel gathers cell kk of its 32 rows */
            const uint16_t *base = B + (size_t)n0 * ld;
            const __mmask16 m0 = nc >= 16 ? 0xffff : (__mmask16)((1u << nc) - 1),
                            m1 = nc <= 16   ? 0
                                 : nc >= 32 ? 0xffff
                                            : (__mmask16)((1u << (nc - 16)) - 1);
            const __m512i second = _mm512_add_epi32(rows16, _mm512_set1_epi32(16 * ld));
            for (int kk = 0; kk < kk_full; kk++) {
                const __m512i at = _mm512_set1_epi32(2 * kk);
                const __m512i v0 = _mm512_mask_i32gather_epi32(
                    _mm512_setzero_si512(), m0, _mm512_add_epi32(rows16, at), base, 2);
                const __m512i v1 = _mm512_mask_i32gather_epi32(
                    _mm512_setzero_si512(), m1, _mm512_add_epi32(second, at), base, 2);
                _mm512_storeu_si512(dst + (size_t)kk * NP, v0);
                _mm512_storeu_si512(dst + (size_t)kk * NP + 16, v1);
            }
            if (K % 2)
                for (int c = 0; c < nc; c++)
                    dst[(size_t)kk_full * NP + c] = B[(size_t)(n0 + c) * ld + K - 1];
        } else /* B rows (K, N): a pair interleaves two rows */
            for (int kk = 0; kk < (K + 1) / 2; kk++) {
                const uint16_t *r0 = B + (size_t)(2 * kk) * ld + n0;
                const int has_r1 = 2 * kk + 1 < K;
                const __mmask32 m = nc >= 32 ? 0xffffffffu : (__mmask32)((1u << nc) - 1);
                const __m512i a = _mm512_maskz_loadu_epi16(m, r0),
                              b = has_r1 ? _mm512_maskz_loadu_epi16(m, r0 + ld)
                                         : _mm512_setzero_si512();
                uint32_t *d = dst + (size_t)kk * NP;
                _mm512_storeu_si512(d, _mm512_permutex2var_epi16(a, lo_pairs, b));
                _mm512_storeu_si512(d + 16, _mm512_permutex2var_epi16(a, hi_pairs, b));
            }
    }
}

typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} tile_config;

/* A constant in read-only data, not a local filled in before the load: GCC 12's
 * _tile_loadconfig tells the compiler it reads only the first 8 bytes of the
 * configuration, so stores to a local's rows/colsb could be dropped as dead. */
static const tile_config g_tiles_16x64 = {
    .palette = 1,
    .colsb = {64, 64, 64, 64, 64, 64, 64, 64},
    .rows = {16, 16, 16, 16, 16, 16, 16, 16},
};

TAMX void amx_tiles_begin(void) { _tile_loadconfig(&g_tiles_16x64); }

TAMX int amx_gemm(int M, int N, int K, const uint16_t *A, int lda, const uint16_t *packed, float *C,
                  int ldc, int accumulate, float *rowmax)
{
    amx_tiles_begin();
    const int kp = amx_kpad(K), chunks = kp / NP;
    float edge[32 * 32] __attribute__((aligned(64)));
    __m512 rm[32];         /* rowmax: the strip's running maxima, 16 lanes per row */
    uint16_t *apad = NULL; /* the last rows of A, zero-padded to 32 */
    for (int m0 = 0; m0 < M; m0 += 32) {
        const int mr = M - m0 < 32 ? M - m0 : 32;
        const uint16_t *a = A + (size_t)m0 * lda;
        int a_ld = lda;
        if (mr < 32) {
            apad = calloc((size_t)32 * kp, sizeof *apad);
            if (!apad) {
                _tile_release();
                return -1;
            }
            for (int i = 0; i < mr; i++)
                memcpy(apad + (size_t)i * kp, a + (size_t)i * lda, (size_t)kp * 2);
            a = apad;
            a_ld = kp;
        }
        if (rowmax)
            for (int i = 0; i < 32; i++) rm[i] = _mm512_set1_ps(-INFINITY);
        for (int n0 = 0; n0 < N; n0 += 32) {
            const int nc = N - n0 < 32 ? N - n0 : 32;
            const uint16_t *pp = packed + (size_t)(n0 / NP) * NP * kp;
            const int direct = mr == 32 && nc == 32;
            float *c = direct ? C + (size_t)m0 * ldc + n0 : edge;
            const int cld = direct ? ldc : 32;
            if (accumulate && !direct)
                for (int i = 0; i < 32; i++)
                    for (int j = 0; j < 32; j++)
                        edge[i * 32 + j] =
                            i < mr && j < nc ? C[(size_t)(m0 + i) * ldc + n0 + j] : 0.0f;
            amx_block32(a, a_ld, pp, chunks, c, cld, accumulate);
            if (rowmax) { /* the block was just stored: its rows are in L1 */
                const __mmask16 k0 = nc >= 16 ? 0xffff : (__mmask16)((1u << nc) - 1),
                                k1 = nc <= 16   ? 0
                                     : nc >= 32 ? 0xffff
                                                : (__mmask16)((1u << (nc - 16)) - 1);
                const __m512 lo = _mm512_set1_ps(-INFINITY);
                for (int i = 0; i < mr; i++) {
                    const float *cr = c + (size_t)i * cld;
                    rm[i] = _mm512_max_ps(_mm512_mask_loadu_ps(lo, k0, cr), rm[i]);
                    rm[i] = _mm512_max_ps(_mm512_mask_loadu_ps(lo, k1, cr + 16), rm[i]);
                }
            }
            if (!direct)
                for (int i = 0; i < mr; i++)
                    memcpy(C + (size_t)(m0 + i) * ldc + n0, edge + i * 32,
                           (size_t)nc * sizeof(float));
        }
        if (rowmax)
            for (int i = 0; i < mr; i++) rowmax[m0 + i] = _mm512_reduce_max_ps(rm[i]);
    }
    free(apad);
    _tile_release();
    return 0;
}
