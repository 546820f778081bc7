/* vecmath.h — the element-wise kernels' vector arithmetic (exp, erf, GELU, bf16
 * rounding) and their run-time ISA dispatch.
 *
 * The arithmetic is written once with GCC/Clang vector extensions, 16 floats per
 * operation. Every kernel is compiled twice from the same body (VEC_KERNEL below): once
 * for the build's baseline (x86-64-v3: two AVX2 registers per vector) and once for
 * AVX-512 (one zmm register); vec_avx512() picks the variant once per process from
 * the CPU (cpuid), so one binary runs at each machine's width — no build flag decides.
 * Both variants perform the same operations on the same lanes in the same order (FMA
 * contraction included), so they give bit-identical results (tests/test_vecmath.c).
 *
 * DNNL_MAX_CPU_ISA (oneDNN's own cap, e.g. DNNL_MAX_CPU_ISA=AVX2) caps these kernels
 * too, so one variable makes the whole program behave as on an AVX2 machine. */
#ifndef PE_VECMATH_H
#define PE_VECMATH_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* Vectors wider than the baseline's registers are passed between static helpers
 * (always inlined: no ABI is crossed). */
#pragma GCC diagnostic ignored "-Wpsabi"

#define VL 16
typedef float vf __attribute__((vector_size(VL * sizeof(float))));
typedef int32_t vi __attribute__((vector_size(VL * sizeof(int32_t))));
typedef uint32_t vu __attribute__((vector_size(VL * sizeof(uint32_t))));
typedef uint16_t vh __attribute__((vector_size(VL * sizeof(uint16_t))));

#define VEC_INLINE static inline __attribute__((always_inline)) VEC_FAST
#define VEC_AVX512 __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl")))
/* ISO C mode (-std=c11) keeps a * b + c as two roundings; the kernels ask for fused
 * multiply-adds (both copies alike, so they stay bit-identical to each other). */
#if defined(__clang__)
#define VEC_CONTRACT _Pragma("clang fp contract(fast)")
#define VEC_FAST
#else
#define VEC_CONTRACT
#define VEC_FAST __attribute__((optimize("fp-contract=fast")))
#endif

/* 1 if the AVX-512 variants run here (cpuid, capped by DNNL_MAX_CPU_ISA). */
int vec_avx512(void);
/* Tests: run the baseline copies (0) or the AVX-512 ones (1, refused where the CPU lacks
 * them). Returns the previous setting. Not for use while kernels run on other threads. */
int vec_set_avx512(int enabled);
/* "avx512" or "avx2": the variant vec_avx512() picked (bench output). */
const char *vec_isa_name(void);

/* VEC_KERNEL(name, (params), (args)): after `VEC_INLINE void name##_body params {..}`,
 * defines `static void name params` that runs the body's AVX-512 or baseline copy. */
#define VEC_KERNEL(name, params, args)                                                             \
    static VEC_AVX512 VEC_FAST void name##_avx512 params { VEC_CONTRACT name##_body args; }        \
    static VEC_FAST void name##_base params { VEC_CONTRACT name##_body args; }                     \
    static void name params                                                                        \
    {                                                                                              \
        if (vec_avx512()) name##_avx512 args;                                                      \
        else name##_base args;                                                                     \
    }

VEC_INLINE vf vsplat(float a) { return (vf){0} + a; }
VEC_INLINE vf vsel(vi mask, vf a, vf b) { return (vf)((mask & (vi)a) | (~mask & (vi)b)); }
/* k <= VL elements from p; lanes >= k get `pad` */
VEC_INLINE vf vload(const float *p, size_t k, float pad)
{
    vf v = vsplat(pad);
    if (k == VL) memcpy(&v, p, sizeof v);
    else memcpy(&v, p, k * sizeof(float));
    return v;
}
VEC_INLINE void vstore(float *p, vf v, size_t k)
{
    if (k == VL) memcpy(p, &v, sizeof v);
    else memcpy(p, &v, k * sizeof(float));
}
VEC_INLINE vi lanes_below(size_t k)
{
    const vi idx = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
    return idx < (int32_t)k;
}
/* lane-ordered horizontal max / sum (a fixed order: the same result in every variant) */
VEC_INLINE float vmax_lanes(vf v)
{
    float m = v[0];
    for (int l = 1; l < VL; l++) m = v[l] > m ? v[l] : m;
    return m;
}
VEC_INLINE float vsum_lanes(vf v)
{
    float s = 0.0f;
    for (int l = 0; l < VL; l++) s += v[l];
    return s;
}

/* exp(x): x = n ln2 + r, |r| <= ln2/2, exp(r) by a degree-6 Taylor polynomial (relative
 * error < 2e-8 on that interval), 2^n through the exponent bits. x is clamped to
 * [-87.3, 88] so the result stays a normal float (exp(-87.3) ~ 1.2e-38 instead of 0:
 * harmless for softmax / sigmoid, where it is added to 1 or normalised away). */
/* exp(x) = p * 2^n for a clamped x: p = exp(r), r = x - n ln2. Shared by v_exp and
 * softmax_tile.c's AVX-512 copy (which forms 2^n with vscalefps); by pointer, so a caller
 * compiled for another ISA passes no vector by value (clang rejects that ABI change). */
VEC_INLINE void v_exp_parts(const vf *xp, vf *p_out, vf *n_out)
{
    const vf x = *xp;
    vf n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f; /* round(x / ln2) */
    vf r = x - n * 0.693359375f; /* ln2 split in two for an exact product */
    r = r - n * -2.12194440e-4f;
    vf p = vsplat(1.0f / 720.0f);
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    *p_out = p;
    *n_out = n;
}
/* 2^t = p * 2^n for values about to be rounded to bf16 (8 significant bits): n = round(t)
 * to nearest even, p = 2^(t - n) by a degree-4 polynomial on |t - n| <= 1/2 fitted for
 * least maximum relative error (2.7e-6 with these float coefficients; the fit:
 * tools/exp_fit.py --base2). The attention's softmax folds log2(e) into the multiply-add
 * that scales and shifts each score, so exp's range reduction (two multiply-adds by the
 * parts of ln 2) and its upper clamp (the shifted scores are <= 0) are gone: 13
 * operations per vector instead of 16. */
/* p = 2^f, |f| <= 1/2 (Horner, the same fused steps wherever it is spelled out) */
#define V_EXP2_BF16_POLY(p, f)                                                                     \
    do {                                                                                           \
        p = (vf){0} + 0x1.39c93cp-7f; /* (no call: clang passes no vf into another ISA) */         \
        p = p * (f) + 0x1.ca1544p-5f;                                                              \
        p = p * (f) + 0x1.ec0618p-3f;                                                              \
        p = p * (f) + 0x1.62e0dap-1f;                                                              \
        p = p * (f) + 0x1.ffffe8p-1f;                                                              \
    } while (0)
VEC_INLINE void v_exp2_parts_bf16(const vf *tp, vf *p_out, vf *n_out)
{
    const vf t = *tp;
    const vf n = (t + 12582912.0f) - 12582912.0f; /* round(t) */
    const vf f = t - n;
    vf p;
    V_EXP2_BF16_POLY(p, f);
    *p_out = p;
    *n_out = n;
}
/* 2^t for t <= a few ulps above 0 (bf16 softmax), t clamped below at -125 so p 2^n stays a
 * normal float (>= 2^-125.5 ~ 2e-38 instead of 0, normalised away; a denormal would be
 * flushed by vcvtneps2bf16 and kept by the generic rounding) */
VEC_INLINE vf v_exp2_bf16(vf t)
{
    t = vsel(t < -125.0f, vsplat(-125.0f), t);
    vf p, n;
    v_exp2_parts_bf16(&t, &p, &n);
    vi e = (__builtin_convertvector(n, vi) + 127) << 23;
    return p * (vf)e;
}
/* exp(x) with v_exp_parts */
VEC_INLINE vf v_exp(vf x)
{
    x = vsel(x < -87.3f, vsplat(-87.3f), x);
    x = vsel(x > 88.0f, vsplat(88.0f), x);
    vf p, n;
    v_exp_parts(&x, &p, &n);
    vi e = (__builtin_convertvector(n, vi) + 127) << 23;
    return p * (vf)e;
}

/* erf(x): Abramowitz & Stegun 7.1.26, |error| <= 1.5e-7 (about 1 ulp near 1). */
VEC_INLINE vf v_erf(vf x)
{
    const vi sign = (vi)x & (int32_t)0x80000000;
    vf a = (vf)((vi)x & 0x7fffffff);
    vf t = 1.0f / (1.0f + 0.3275911f * a);
    vf poly =
        t * (0.254829592f +
             t * (-0.284496736f + t * (1.421413741f + t * (-1.453152027f + t * 1.061405429f))));
    vf y = 1.0f - poly * v_exp(-a * a);
    return (vf)((vi)y | sign);
}

VEC_INLINE vf v_gelu(vf x) { return 0.5f * x * (1.0f + v_erf(x * 0.70710678118654752f)); }
/* gelu(approximate="tanh"): 0.5 x (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3),
 * written as x / (1 + exp(-2u)) (the same function: 1 + tanh(u) = 2 / (1 + exp(-2u))).
 * The form 2 - 2 / (exp(2u) + 1) lost the result's low bits to cancellation for
 * negative x (x = -3.52: 5e-4 relative); this one has no subtraction. exp's clamp gives
 * x for large u and a tiny multiple of x for very negative u. */
VEC_INLINE vf v_gelu_tanh(vf x)
{
    const vf u = 0.7978845608028654f * (x + 0.044715f * x * x * x);
    return x / (1.0f + v_exp(-2.0f * u));
}
VEC_INLINE vf v_quick_gelu(vf x) { return x / (1.0f + v_exp(-1.702f * x)); }
VEC_INLINE vf v_silu(vf x) { return x / (1.0f + v_exp(-x)); }

/* fp32 -> bf16, round to nearest even on the bit pattern; a NaN keeps a quiet NaN
 * (the same rule as eng_round_bf16 in engine.h). */
VEC_INLINE vh v_to_bf16(vf x)
{
    const vu u = (vu)x;
    const vu rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    const vu nan = (u >> 16) | 0x40u;
    const vu is_nan = (vu)((u & 0x7fffffffu) > 0x7f800000u);
    return __builtin_convertvector((is_nan & nan) | (~is_nan & rounded), vh);
}
VEC_INLINE void vstore_bf16(uint16_t *p, vf v, size_t k)
{
    const vh h = v_to_bf16(v);
    if (k == VL) memcpy(p, &h, sizeof h);
    else memcpy(p, &h, k * sizeof(uint16_t));
}

#endif
