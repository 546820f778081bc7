/* softmax_tile.c — the online-softmax step of blocked attention (see softmax_tile.h).
 *
 * Two implementations of the same arithmetic:
 *   - the generic body on vecmath.h's vectors (compiled for AVX2 and AVX-512, picked
 *     by vec_avx512()): the only one on AVX2 machines;
 *   - an AVX-512 copy written with intrinsics, where the ISA has single instructions
 *     for steps the generic code spells out: vscalefps for p * 2^n (instead of building
 *     the exponent bits: convert, add, shift, multiply), vmaxps/vminps for the clamps
 *     (instead of compare + blend), and on CPUs with AVX-512-BF16 vcvtneps2bf16 for the
 *     rounding of P to bf16 (instead of nine integer operations).
 * Every step is the same operation on the same lanes in the same order (the same fused
 * multiply-adds, the same clamps, the same lane-ordered sums), so all copies give
 * bit-identical results; tests/test_softmax_tile.c checks that. The exponentials are
 * this step's whole cost (one per score: 75 million per DINOv2 ViT-S/14 forward at
 * 448 px), hence the care. */
#include "softmax_tile.h"
#include "vecmath.h"

#include <math.h>
#include <stdlib.h>
#include <strings.h>

#define PE_MIN(a, b) ((a) < (b) ? (a) : (b))

/* ------------------------------------------------------------------ generic copy */

/* m' = max(m, rowmax * scale) when the GEMM gave the row maxima (the same value as the
 * maximum of the scaled scores: rounding a product by scale > 0 keeps the order) */
static inline float given_max(float m, const float *rowmax, int r, float scale)
{
    const float v = rowmax[r] * scale;
    return v > m ? v : m;
}

VEC_INLINE void tile_rows(float *S, int lds, uint16_t *p16, int ldp, int nq, int nk, float scale,
                          float *m, float *l, float *acc, int dh, const float *rowmax, int lowp)
{
    for (int r = 0; r < nq; r++) {
        float *row = S + (size_t)r * lds;
        float mx;
        if (rowmax) mx = given_max(m[r], rowmax, r, scale);
        else { /* four running maxima (a single one is a serial chain of compare + blend) */
            vf mx4[4] = {vsplat(m[r]), vsplat(m[r]), vsplat(m[r]), vsplat(m[r])};
            int i = 0;
            for (; i + 4 * VL <= nk; i += 4 * VL)
                for (int u = 0; u < 4; u++) {
                    const vf v = vload(row + i + u * VL, VL, 0.0f) * scale;
                    mx4[u] = vsel(v > mx4[u], v, mx4[u]);
                }
            for (; i < nk; i += VL) {
                const vf v = vload(row + i, (size_t)PE_MIN(VL, nk - i), -INFINITY) * scale;
                mx4[0] = vsel(v > mx4[0], v, mx4[0]);
            }
            for (int u = 1; u < 4; u++) mx4[0] = vsel(mx4[u] > mx4[0], mx4[u], mx4[0]);
            mx = vmax_lanes(mx4[0]);
        }
        const float corr = m[r] == -INFINITY ? 0.0f : expf(m[r] - mx);
        /* bf16: exp(scale s - mx) = 2^(s c2 - m2) (v_exp2_bf16), log2(e) folded into the
         * one multiply-add. Its rounding error is up to half an ulp of m2 (the product
         * s c2 is exact inside the fused multiply-add, m2 was rounded): below 2^-14 while
         * |m2| <= 1024, so the row's largest score still gets exp ~ 1; beyond (scores
         * no trained ViT gives) the shift stays a separate step: 2^((scale s - mx) log2 e). */
        const float c2 = scale * 1.44269504088896341f, m2 = mx * 1.44269504088896341f;
        const int fold = fabsf(m2) <= 1024.0f;
#define SOFTMAX_EXP(v)                                                                             \
    (lowp ? v_exp2_bf16(fold ? (v)*c2 - m2 : ((v)*scale - mx) * 1.44269504088896341f)              \
          : v_exp((v)*scale - mx))
        vf vsum = vsplat(0.0f), vsum2 = vsplat(0.0f);
        uint16_t *prow = p16 ? p16 + (size_t)r * ldp : NULL;
        int i = 0;
        for (; i + 2 * VL <= nk; i += 2 * VL) { /* whole vectors, two chains of sums */
            const vf e = SOFTMAX_EXP(vload(row + i, VL, 0.0f));
            const vf e2 = SOFTMAX_EXP(vload(row + i + VL, VL, 0.0f));
            vsum += e;
            vsum2 += e2;
            if (prow) {
                vstore_bf16(prow + i, e, VL);
                vstore_bf16(prow + i + VL, e2, VL);
            } else {
                vstore(row + i, e, VL);
                vstore(row + i + VL, e2, VL);
            }
        }
        vsum += vsum2;
        for (; i + VL <= nk; i += VL) {
            const vf e = SOFTMAX_EXP(vload(row + i, VL, 0.0f));
            vsum += e;
            if (prow) vstore_bf16(prow + i, e, VL);
            else vstore(row + i, e, VL);
        }
        if (i < nk) {
            const size_t k = (size_t)(nk - i);
            const vf e = vsel(lanes_below(k), SOFTMAX_EXP(vload(row + i, k, 0.0f)), vsplat(0.0f));
            vsum += e;
            if (prow) vstore_bf16(prow + i, e, k);
            else vstore(row + i, e, k);
        }
#undef SOFTMAX_EXP
        l[r] = fmaf(l[r], corr, vsum_lanes(vsum)); /* fused in every build (see exp512) */
        m[r] = mx;
        if (corr != 1.0f) {
            float *a = acc + (size_t)r * dh;
            for (int j = 0; j < dh; j += VL) {
                const size_t k = (size_t)PE_MIN(VL, dh - j);
                vstore(a + j, vload(a + j, k, 0.0f) * corr, k);
            }
        }
    }
}
VEC_INLINE void tile_vec_body(float *S, int lds, uint16_t *p16, int ldp, int nq, int nk,
                              float scale, float *m, float *l, float *acc, int dh,
                              const float *rowmax)
{
    if (p16) tile_rows(S, lds, p16, ldp, nq, nk, scale, m, l, acc, dh, rowmax, 1);
    else tile_rows(S, lds, NULL, ldp, nq, nk, scale, m, l, acc, dh, rowmax, 0);
}
VEC_KERNEL(tile_vec,
           (float *S, int lds, uint16_t *p16, int ldp, int nq, int nk, float scale, float *m,
            float *l, float *acc, int dh, const float *rowmax),
           (S, lds, p16, ldp, nq, nk, scale, m, l, acc, dh, rowmax))

/* ------------------------------------------------------------------ AVX-512 copies */

#if defined(__x86_64__)
#include <immintrin.h>

#define T512_ISA "avx512f,avx512dq,avx512bw,avx512vl,fma"
#define T512 __attribute__((target(T512_ISA)))
#define T512_INLINE static inline __attribute__((always_inline, target(T512_ISA))) VEC_FAST

/* v_exp (vecmath.h) step for step: the same v_exp_parts (the reduction and the
 * polynomial, written with vector operators, so the compiler contracts them exactly as
 * in the generic copy: fused at -O2, unfused at -O1, the sanitizer build), so the copies
 * stay bit-identical either way. Only what has no operator form is an
 * intrinsic: the clamps, and p * 2^n (vscalefps; exact, as the generic copy's multiply
 * by 2^n: n in [-126, 127] makes 2^n a normal float). The one scalar update,
 * l = l * corr + sum, is an explicit fmaf in both copies: at -O1 GCC fused it in one
 * copy and not in the other. */
T512_INLINE __m512 exp512(__m512 x)
{
    x = _mm512_max_ps(_mm512_set1_ps(-87.3f), x); /* a NaN x stays x, as in vsel */
    x = _mm512_min_ps(_mm512_set1_ps(88.0f), x);
    const vf xv = (vf)x;
    vf p, n;
    v_exp_parts(&xv, &p, &n);
    return _mm512_scalef_ps((__m512)p, (__m512)n);
}
/* v_exp2_bf16 step for step: the clamp as vmaxps, round(t) as vrndscaleps (to nearest
 * even, as the generic copy's add and subtract of 1.5 * 2^23 for |t| <= 125: the same n),
 * the same polynomial, 2^n as vscalefps */
T512_INLINE __m512 exp2_512(__m512 t)
{
    t = _mm512_max_ps(_mm512_set1_ps(-125.0f), t);
    const __m512 n = _mm512_roundscale_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const vf f = (vf)(t - n);
    vf p;
    V_EXP2_BF16_POLY(p, f);
    return _mm512_scalef_ps((__m512)p, n);
}

/* v_to_bf16's rounding (to nearest even; a NaN becomes a quiet NaN) in integer ops */
T512_INLINE __m256i bf16_soft(__m512 x)
{
    const __m512i u = _mm512_castps_si512(x);
    const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    const __m512i rounded = _mm512_srli_epi32(
        _mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32(0x7fff)), lsb), 16);
    const __m512i quiet = _mm512_or_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(0x40));
    const __mmask16 nan = _mm512_cmpgt_epu32_mask(
        _mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff)), _mm512_set1_epi32(0x7f800000));
    return _mm512_cvtepi32_epi16(_mm512_mask_mov_epi32(rounded, nan, quiet));
}

/* The same lane-ordered reductions as vmax_lanes / vsum_lanes */
T512_INLINE float max_lanes512(__m512 v)
{
    float a[16];
    _mm512_storeu_ps(a, v);
    float m = a[0];
    for (int i = 1; i < 16; i++) m = a[i] > m ? a[i] : m;
    return m;
}
T512_INLINE float sum_lanes512(__m512 v)
{
    float a[16], s = 0.0f;
    _mm512_storeu_ps(a, v);
    for (int i = 0; i < 16; i++) s += a[i];
    return s;
}

/* exp(scale v - mx) as tile_rows computes it: bf16 (LOWP) 2^(v c2 - m2), else exp */
#define EXP512(v, LOWP)                                                                            \
    ((LOWP) ? exp2_512(fold ? (v)*c2 - m2 : ((v)*scale - mx) * 1.44269504088896341f)               \
            : exp512((v)*scale - mx))
/* The row loop of tile_rows with CVT(x) -> __m256i turning 16 probabilities to bf16 and
 * LOWP the bf16 exponential. */
#define TILE512_BODY(CVT, LOWP)                                                                    \
    VEC_CONTRACT                                                                                   \
    const __m512 vscale = _mm512_set1_ps(scale);                                                   \
    for (int r = 0; r < nq; r++) {                                                                 \
        float *row = S + (size_t)r * lds;                                                          \
        float mx;                                                                                  \
        int i = 0;                                                                                 \
        if (rowmax) mx = given_max(m[r], rowmax, r, scale);                                        \
        else {                                                                                     \
            __m512 mx4[4];                                                                         \
            for (int u = 0; u < 4; u++) mx4[u] = _mm512_set1_ps(m[r]);                             \
            for (; i + 64 <= nk; i += 64)                                                          \
                for (int u = 0; u < 4; u++)                                                        \
                    mx4[u] = _mm512_max_ps(                                                        \
                        _mm512_mul_ps(_mm512_loadu_ps(row + i + 16 * u), vscale), mx4[u]);         \
            for (; i < nk; i += 16) {                                                              \
                const __mmask16 k = nk - i >= 16 ? 0xffff : (__mmask16)((1u << (nk - i)) - 1);     \
                const __m512 v = _mm512_mask_loadu_ps(_mm512_set1_ps(-INFINITY), k, row + i);      \
                mx4[0] = _mm512_max_ps(_mm512_mul_ps(v, vscale), mx4[0]);                          \
            }                                                                                      \
            for (int u = 1; u < 4; u++) mx4[0] = _mm512_max_ps(mx4[u], mx4[0]);                    \
            mx = max_lanes512(mx4[0]);                                                             \
        }                                                                                          \
        const float corr = m[r] == -INFINITY ? 0.0f : expf(m[r] - mx);                             \
        const float c2 = scale * 1.44269504088896341f, m2 = mx * 1.44269504088896341f;             \
        const int fold = fabsf(m2) <= 1024.0f; /* (see tile_rows) */                               \
        __m512 vsum = _mm512_setzero_ps(), vsum2 = _mm512_setzero_ps();                            \
        uint16_t *prow = p16 ? p16 + (size_t)r * ldp : NULL;                                       \
        i = 0;                                                                                     \
        for (; i + 32 <= nk; i += 32) {                                                            \
            const __m512 e = EXP512(_mm512_loadu_ps(row + i), LOWP);                               \
            const __m512 e2 = EXP512(_mm512_loadu_ps(row + i + 16), LOWP);                         \
            vsum = _mm512_add_ps(vsum, e);                                                         \
            vsum2 = _mm512_add_ps(vsum2, e2);                                                      \
            if (prow) {                                                                            \
                _mm256_storeu_si256((__m256i *)(void *)(prow + i), CVT(e));                        \
                _mm256_storeu_si256((__m256i *)(void *)(prow + i + 16), CVT(e2));                  \
            } else {                                                                               \
                _mm512_storeu_ps(row + i, e);                                                      \
                _mm512_storeu_ps(row + i + 16, e2);                                                \
            }                                                                                      \
        }                                                                                          \
        vsum = _mm512_add_ps(vsum, vsum2);                                                         \
        for (; i < nk; i += 16) {                                                                  \
            const __mmask16 k = nk - i >= 16 ? 0xffff : (__mmask16)((1u << (nk - i)) - 1);         \
            const __m512 e =                                                                       \
                _mm512_maskz_mov_ps(k, EXP512(_mm512_maskz_loadu_ps(k, row + i), LOWP));           \
            vsum = _mm512_add_ps(vsum, e);                                                         \
            if (prow) _mm256_mask_storeu_epi16(prow + i, k, CVT(e));                               \
            else _mm512_mask_storeu_ps(row + i, k, e);                                             \
        }                                                                                          \
        l[r] = fmaf(l[r], corr, sum_lanes512(vsum)); /* as in the generic copy */                  \
        m[r] = mx;                                                                                 \
        if (corr != 1.0f) {                                                                        \
            float *a = acc + (size_t)r * dh;                                                       \
            const __m512 vc = _mm512_set1_ps(corr);                                                \
            for (int j = 0; j < dh; j += 16) {                                                     \
                const __mmask16 k = dh - j >= 16 ? 0xffff : (__mmask16)((1u << (dh - j)) - 1);     \
                _mm512_mask_storeu_ps(a + j, k,                                                    \
                                      _mm512_mul_ps(_mm512_maskz_loadu_ps(k, a + j), vc));         \
            }                                                                                      \
        }                                                                                          \
    }

static T512 VEC_FAST void tile_avx512(float *S, int lds, uint16_t *p16, int ldp, int nq, int nk,
                                      float scale, float *m, float *l, float *acc, int dh,
                                      const float *rowmax)
{
    if (p16) {
        TILE512_BODY(bf16_soft, 1)
    } else {
        TILE512_BODY(bf16_soft, 0)
    }
}

#define T512BF_ISA T512_ISA ",avx512bf16"
static inline __attribute__((always_inline, target(T512BF_ISA))) VEC_FAST __m256i
bf16_native(__m512 x)
{
    return (__m256i)_mm512_cvtneps_pbh(x);
}
static __attribute__((target(T512BF_ISA))) VEC_FAST void
tile_avx512_bf16(float *S, int lds, uint16_t *p16, int ldp, int nq, int nk, float scale, float *m,
                 float *l, float *acc, int dh, const float *rowmax)
{
    if (p16) {
        TILE512_BODY(bf16_native, 1)
    } else {
        TILE512_BODY(bf16_native, 0)
    }
}
#define HAVE_TILE512 1
#endif

/* ------------------------------------------------------------------ dispatch */

static int g_native_bf16 = -1, g_forced = -1;

int softmax_tile_best(void)
{
#ifdef HAVE_TILE512
    /* vec_avx512() applies the DNNL_MAX_CPU_ISA cap and the tests' vec_set_avx512 */
    if (!vec_avx512()) return SOFTMAX_TILE_VEC;
    int native = __atomic_load_n(&g_native_bf16, __ATOMIC_RELAXED);
    if (native < 0) {
        const char *cap = getenv("DNNL_MAX_CPU_ISA");
        const int capped = cap && *cap && strncasecmp(cap, "ALL", 3) != 0 &&
                           !strcasestr(cap, "BF16") && !strcasestr(cap, "AMX");
        __builtin_cpu_init();
        native = __builtin_cpu_supports("avx512bf16") && !capped;
        __atomic_store_n(&g_native_bf16, native, __ATOMIC_RELAXED);
    }
    return native ? SOFTMAX_TILE_AVX512_BF16 : SOFTMAX_TILE_AVX512;
#else
    return SOFTMAX_TILE_VEC;
#endif
}

int softmax_tile_force(int which)
{
    const int before = g_forced >= 0 ? g_forced : softmax_tile_best();
    if (which < 0) {
        g_forced = -1;
        return before;
    }
    if (which > softmax_tile_best()) return -1; /* the copies are ordered by what they need */
    g_forced = which;
    return before;
}

const char *softmax_tile_name(int which)
{
    static const char *names[] = {"vec", "avx512", "avx512_bf16"};
    return which >= 0 && which <= 2 ? names[which] : "?";
}

void softmax_tile(float *S, int lds, uint16_t *p16, int ldp, int nq, int nk, float scale, float *m,
                  float *l, float *acc, int dh, const float *rowmax)
{
    const int which = g_forced >= 0 ? g_forced : softmax_tile_best();
#ifdef HAVE_TILE512
    if (which == SOFTMAX_TILE_AVX512_BF16) {
        tile_avx512_bf16(S, lds, p16, ldp, nq, nk, scale, m, l, acc, dh, rowmax);
        return;
    }
    if (which == SOFTMAX_TILE_AVX512) {
        tile_avx512(S, lds, p16, ldp, nq, nk, scale, m, l, acc, dh, rowmax);
        return;
    }
#endif
    tile_vec(S, lds, p16, ldp, nq, nk, scale, m, l, acc, dh, rowmax);
}
