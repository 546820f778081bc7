/* amx_linear.c — the linear layers of a bf16 ViT block on AMX tiles, each with its
 * epilogue done on the 32 x 32 block of results while it is still in L1 (amx.h,
 * amx_linear): the bias, the activation and the rounding to bf16 for qkv and fc1; the
 * bias, LayerScale and the sum into the fp32 residual stream for the out-projection and
 * fc2. Why not oneDNN's matmul with post-ops, which the block used before: its GELU
 * post-op doubled fc1's time (1025 x 1536 x 384, 2 threads: 0.83 -> 1.66 ms), and on
 * these shapes the tile loop of amx.h ran 10-25 % faster than its kernels (one thread:
 * 1,285 vs 1,038 GFLOP/s for fc1, 1,090 vs 974 for fc2) — docs/ENGINE.md, "Where the
 * time goes".
 *
 * Work: the rows in strips of 32, two strips per work item, taken dynamically by the
 * OpenMP team (a vCPU that runs slower takes fewer); within an item, each 32-column panel
 * of the packed weight is read once for both strips. */
#include "amx.h"
#include "engine.h"
#include "vecmath.h"

#include <omp.h>
#include <string.h>

#define TAMXV                                                                                      \
    __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,avx512bf16,amx-tile,amx-bf16")))     \
    VEC_FAST
#define STRIPS 2 /* 32-row strips per work item */
#define PE_MIN(a, b) ((a) < (b) ? (a) : (b))
#define PE_MAX(a, b) ((a) > (b) ? (a) : (b))

/* GELU (erf) for values about to be rounded to bf16: the same Abramowitz & Stegun 7.1.26
 * erf as v_gelu (vecmath.h), with its division replaced by rcp14 and one Newton step
 * (relative error ~1e-7 instead of 0.5 ulp) and exp(-z^2) by the degree-4 polynomial
 * that softmax's bf16 path uses (2.7e-6 relative): both far below bf16's rounding step
 * (2^-9 relative), at about half the instructions (measured in docs/ENGINE.md). */
static inline __attribute__((always_inline, target("avx512f,avx512dq"))) __m512 gelu_bf16(__m512 x)
{
    const __m512 z = _mm512_mul_ps(x, _mm512_set1_ps(0.70710678118654752f));
    const __m512 a = _mm512_abs_ps(z);
    const __m512 d = _mm512_fmadd_ps(a, _mm512_set1_ps(0.3275911f), _mm512_set1_ps(1.0f));
    __m512 t = _mm512_rcp14_ps(d);
    t = _mm512_mul_ps(t, _mm512_fnmadd_ps(d, t, _mm512_set1_ps(2.0f)));
    __m512 poly = _mm512_set1_ps(1.061405429f);
    poly = _mm512_fmadd_ps(poly, t, _mm512_set1_ps(-1.453152027f));
    poly = _mm512_fmadd_ps(poly, t, _mm512_set1_ps(1.421413741f));
    poly = _mm512_fmadd_ps(poly, t, _mm512_set1_ps(-0.284496736f));
    poly = _mm512_fmadd_ps(poly, t, _mm512_set1_ps(0.254829592f));
    poly = _mm512_mul_ps(poly, t);
    /* exp(-a^2) = 2^n exp(r), -a^2 clamped to -87.3 (no inf - inf below) */
    const __m512 e = _mm512_max_ps(_mm512_mul_ps(_mm512_sub_ps(_mm512_setzero_ps(), a), a),
                                   _mm512_set1_ps(-87.3f));
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(e, _mm512_set1_ps(1.44269504088896341f)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), e);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(0x1.53d68p-5f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0x1.57e178p-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0x1.000552p-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0x1.fffb3p-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0x1.ffffe8p-1f));
    const __m512 y = _mm512_fnmadd_ps(poly, _mm512_scalef_ps(p, n), _mm512_set1_ps(1.0f));
    /* erf(z) = sign(z) y; gelu = x/2 + x/2 erf */
    const __m512 erf = _mm512_or_ps(y, _mm512_and_ps(z, _mm512_set1_ps(-0.0f)));
    const __m512 h = _mm512_mul_ps(x, _mm512_set1_ps(0.5f));
    return _mm512_fmadd_ps(h, erf, h);
}

/* exp(x) as vecmath.h's v_exp (the same clamps and polynomial, by pointer: clang refuses
 * to pass its generic vectors by value into a function compiled for another ISA), 2^n by
 * vscalefps */
static inline __attribute__((always_inline)) TAMXV __m512 exp_512(__m512 x)
{
    /* (the constant first: vmaxps / vminps return their second operand for a NaN) */
    x = _mm512_min_ps(_mm512_set1_ps(88.0f), _mm512_max_ps(_mm512_set1_ps(-87.3f), x));
    const vf xv = (vf)x;
    vf p, n;
    v_exp_parts(&xv, &p, &n);
    return _mm512_scalef_ps((__m512)p, (__m512)n);
}

/* act(x) for ENG_ACT_*: the element-wise ops' formulas (vecmath.h), in intrinsics */
static inline __attribute__((always_inline)) TAMXV __m512 activate(__m512 x, int act)
{
    const __m512 one = _mm512_set1_ps(1.0f);
    switch (act) {
    case ENG_ACT_GELU: return gelu_bf16(x);
    case ENG_ACT_GELU_TANH: { /* x / (1 + exp(-2u)), u = sqrt(2/pi) (x + 0.044715 x^3) */
        const __m512 x3 = _mm512_mul_ps(_mm512_mul_ps(x, x), x);
        const __m512 u = _mm512_mul_ps(_mm512_set1_ps(0.7978845608028654f),
                                       _mm512_fmadd_ps(_mm512_set1_ps(0.044715f), x3, x));
        return _mm512_div_ps(x,
                             _mm512_add_ps(one, exp_512(_mm512_mul_ps(_mm512_set1_ps(-2.0f), u))));
    }
    case ENG_ACT_QUICK_GELU:
        return _mm512_div_ps(
            x, _mm512_add_ps(one, exp_512(_mm512_mul_ps(_mm512_set1_ps(-1.702f), x))));
    case ENG_ACT_SILU:
        return _mm512_div_ps(x, _mm512_add_ps(one, exp_512(_mm512_sub_ps(_mm512_setzero_ps(), x))));
    default: return x;
    }
}

/* The epilogue of rows [r0, r1) of one block: blk (32, 32) fp32 products of rows m0..,
 * columns n0.. (nc of them valid). */
static TAMXV void epilogue(const float *blk, int r0, int r1, int nc, int m0, int n0,
                           const amx_epilogue *ep)
{
    uint16_t *out = NULL;
    size_t ld = 0;
    if (ep->out16) {
        const int g = ep->group ? n0 / ep->group : 0;
        out = ep->out16 + (size_t)g * ep->group_stride + (size_t)m0 * ep->ld_out +
              (size_t)(ep->group ? n0 % ep->group : n0);
        ld = (size_t)ep->ld_out;
    }
    for (int h = 0; h < 32 && h < nc; h += 16) {
        const int k = nc - h < 16 ? nc - h : 16;
        const __mmask16 km = k == 16 ? (__mmask16)0xffff : (__mmask16)((1u << k) - 1);
        const __m512 b =
            ep->bias ? _mm512_maskz_loadu_ps(km, ep->bias + n0 + h) : _mm512_setzero_ps();
        const __m512 sc =
            ep->scale ? _mm512_maskz_loadu_ps(km, ep->scale + n0 + h) : _mm512_set1_ps(1.0f);
        for (int i = r0; i < r1; i++) {
            const __m512 v = _mm512_add_ps(_mm512_loadu_ps(blk + i * 32 + h), b);
            if (out) {
                /* vcvtneps2bf16: round to nearest even as eng_to_bf16 (a denormal
                 * becomes 0; AMX CPUs have AVX-512-BF16, amx_linear checks) */
                const __m256i b16 = (__m256i)_mm512_cvtneps_pbh(activate(v, ep->act));
                _mm256_mask_storeu_epi16(out + (size_t)i * ld + h, km, b16);
            } else { /* x += scale * v (one fused multiply-add) */
                float *x = ep->add_to + (size_t)(m0 + i) * ep->ld_add + n0 + h;
                _mm512_mask_storeu_ps(x, km, _mm512_fmadd_ps(v, sc, _mm512_maskz_loadu_ps(km, x)));
            }
        }
    }
}

/* A block waiting for its epilogue: its products in blk, rows m0.. (mr valid), columns n0.. */
typedef struct {
    const float *blk;
    int mr, nc, m0, n0;
} pending;

/* One 32 x 32 block of products, as amx_block32 (accumulate 0; the same amx_chunk32 steps) into c (32, 32), with the
 * epilogue of the previous block (p, NULL for none) done a few rows per K chunk, between
 * the tile products: the tile unit runs the products while the vector units run the
 * epilogue (done after the block instead, a GELU epilogue added its whole cost to fc1's). */
static TAMXV void block_overlapped(const uint16_t *a, int a_ld, const uint16_t *pp, int chunks,
                                   float *c, const pending *p, const amx_epilogue *ep)
{
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    int done = 0;
    for (int kc = 0; kc < chunks; kc++) {
        amx_chunk32(a, a_ld, pp, kc);
        if (p) {
            const int upto = p->mr * (kc + 1) / chunks;
            if (upto > done) epilogue(p->blk, done, upto, p->nc, p->m0, p->n0, ep);
            done = upto;
        }
    }
    _tile_stored(0, c, 32 * 4);
    _tile_stored(1, c + 16, 32 * 4);
    _tile_stored(2, c + 16 * 32, 32 * 4);
    _tile_stored(3, c + 16 * 32 + 16, 32 * 4);
}

/* Rows [s0 * 32, min(M, s1 * 32)) against the panels of columns [n_begin, n_end). apad:
 * the last strip's rows when it has fewer than 32, zero-padded to 32 (filled once by
 * amx_linear and only read here: the items of every column part read it at once). */
static TAMXV void strips(int s0, int s1, int n_begin, int n_end, int M, int K, const uint16_t *A,
                         int lda, const uint16_t *packed, const amx_epilogue *ep,
                         const uint16_t *apad)
{
    const int chunks = K / 32;
    float blk[2][32 * 32] __attribute__((aligned(64)));
    amx_tiles_begin();
    const uint16_t *a[STRIPS];
    int a_ld[STRIPS], mr[STRIPS];
    for (int s = s0; s < s1; s++) {
        const int m0 = s * 32, rows = M - m0 < 32 ? M - m0 : 32;
        mr[s - s0] = rows;
        a[s - s0] = A + (size_t)m0 * lda;
        a_ld[s - s0] = lda;
        if (rows < 32) { /* tile loads read 32 rows: the last ones from the zeroed copy */
            a[s - s0] = apad;
            a_ld[s - s0] = K;
        }
    }
    pending prev = {0};
    int have = 0, cur = 0;
    for (int n0 = n_begin; n0 < n_end; n0 += 32) {
        const int nc = n_end - n0 < 32 ? n_end - n0 : 32;
        const uint16_t *pp = packed + (size_t)(n0 / 32) * 32 * K;
        for (int s = s0; s < s1; s++) {
            block_overlapped(a[s - s0], a_ld[s - s0], pp, chunks, blk[cur], have ? &prev : NULL,
                             ep);
            prev = (pending){blk[cur], mr[s - s0], nc, s * 32, n0};
            have = 1;
            cur ^= 1;
        }
    }
    if (have) epilogue(prev.blk, 0, prev.mr, prev.nc, prev.m0, prev.n0, ep);
    _tile_release();
}

int amx_linear(int M, int N, int K, const uint16_t *A, int lda, const uint16_t *packed,
               const amx_epilogue *ep)
{
    if (M <= 0 || N <= 0) return 0;
    if (!amx_ready() || !__builtin_cpu_supports("avx512bf16") || K <= 0 || K % 32 || !ep ||
        !ep->out16 == !ep->add_to || (ep->group && (ep->group % 32 || !ep->out16)) ||
        (ep->add_to && ep->act))
        return -1;
    const int nstrips = (M + 31) / 32, items = (nstrips + STRIPS - 1) / STRIPS;
    /* the last strip's rows zero-padded to 32, in the calling thread's buffer, taken
     * before any work so that a failure writes nothing, and filled here once: with
     * column parts several items read it at the same time (filling it in each item was
     * a race: one item zeroed it while another's tiles loaded from it) */
    uint16_t *apad = NULL;
    if (M % 32) {
        apad = eng_thread_buffer(ENG_SLOT_AMX_PAD, (size_t)32 * K * sizeof *apad);
        if (!apad) return -1;
        const int m0 = M / 32 * 32;
        memset(apad, 0, (size_t)32 * K * sizeof *apad);
        for (int i = 0; i < M - m0; i++)
            memcpy(apad + (size_t)i * K, A + (size_t)(m0 + i) * lda, (size_t)K * sizeof *apad);
    }
    /* Columns in parts whose packed weight fits in half of a core's L2 (1 MB): the team
     * sweeps the row items of one part, then of the next, so each core streams each
     * part's weight into its cache once instead of once per item (ViT-B's qkv weight is
     * 3.5 MB; the forward under load, A/B in the same minutes: 410-429 -> 357-372 ms). */
    const int panels = (N + 31) / 32,
              per_part = PE_MAX(1, PE_MIN(panels, (int)(((size_t)1 << 20) / ((size_t)K * 64)))),
              parts = (panels + per_part - 1) / per_part;
#pragma omp parallel for schedule(dynamic, 1) if (items * parts > 1)
    for (int it = 0; it < items * parts; it++) {
        const int part = it / items, g = it % items;
        const int s0 = g * STRIPS, s1 = s0 + STRIPS < nstrips ? s0 + STRIPS : nstrips;
        const int n_begin = part * per_part * 32, n_end = PE_MIN(N, n_begin + per_part * 32);
        strips(s0, s1, n_begin, n_end, M, K, A, lda, packed, ep, apad);
    }
    return 0;
}
