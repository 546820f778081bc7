/* ops.c — neural-net building blocks (see ops.h): sgemm wrappers, layernorm,
 * activations, softmax, bicubic grid resize. Element-wise loops are written so GCC
 * vectorises them (`omp simd`, no libm calls inside: exp and erf are inlined
 * polynomial versions); row loops are split over threads with OpenMP. */
#include "ops.h"

#include "engine.h"
#include "internal.h"

#include <cblas.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Work below this many elements stays on one thread (thread start-up would dominate).
 * PAR(n): whether a loop over n elements runs on the OpenMP team. */
#define PAR_MIN 32768
static _Thread_local int row_parallel = 1;
#define PAR(n) (row_parallel && (size_t)(n) >= PAR_MIN)

int op_set_row_parallel(int enabled)
{
    int previous = row_parallel;
    row_parallel = enabled != 0;
    return previous;
}

void op_gemm(int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A, int lda,
             const float *B, int ldb, float beta, float *C, int ldc)
{
    /* The engine (oneDNN, precision of the current model) for the common untransposed-A
     * case; OpenBLAS for transposed A or if oneDNN fails. */
    if (!trans_a && !eng_gemm(eng_ctx_precision(eng_current()), trans_b, M, N, K, alpha, A, lda, B,
                              ldb, beta, C, ldc, NULL))
        return;
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans,
                M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

void op_add_bias(float *x, const float *bias, int rows, int dim)
{
    if (!bias) return;
#pragma omp parallel for schedule(static) if (PAR((size_t)rows * dim))
    for (int r = 0; r < rows; r++) {
        float *row = x + (size_t)r * dim;
#pragma omp simd
        for (int i = 0; i < dim; i++) row[i] += bias[i];
    }
}

void op_linear(float *out, const float *in, const float *weight, const float *bias, int rows,
               int in_dim, int out_dim)
{
    /* out (rows, out_dim) = in (rows, in_dim) . weight^T + bias through the engine: the
     * weight is reordered once per model (eng_linear) and the bias is fused into the GEMM. */
    if (!eng_linear(eng_current(), rows, out_dim, in_dim, in, in_dim, weight, 0.0f, out, out_dim, bias))
        return;
    /* fallback (oneDNN failed): bias written first, sgemm accumulates onto it (beta = 1) */
    if (bias)
        for (int r = 0; r < rows; r++) memcpy(out + (size_t)r * out_dim, bias, (size_t)out_dim * sizeof(float));
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, out_dim, in_dim, 1.0f, in, in_dim,
                weight, in_dim, bias ? 1.0f : 0.0f, out, out_dim);
}

void op_linear_acc(float *out, const float *in, const float *weight, const float *bias, int rows,
                   int in_dim, int out_dim)
{
    if (!eng_linear(eng_current(), rows, out_dim, in_dim, in, in_dim, weight, 1.0f, out, out_dim, bias))
        return;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, out_dim, in_dim, 1.0f, in, in_dim,
                weight, in_dim, 1.0f, out, out_dim);
    op_add_bias(out, bias, rows, out_dim);
}

void op_layernorm(float *out, const float *in, const float *gamma, const float *beta, int rows,
                  int dim, float eps)
{
#pragma omp parallel for schedule(static) if (PAR((size_t)rows * dim))
    for (int r = 0; r < rows; r++) {
        const float *x = in + (size_t)r * dim;
        float *y = out + (size_t)r * dim;
        /* two passes (mean, then centred squares): stable without Welford's serial chain */
        float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
        for (int i = 0; i < dim; i++) sum += x[i];
        float mean = sum / (float)dim, sq = 0.0f;
#pragma omp simd reduction(+ : sq)
        for (int i = 0; i < dim; i++) sq += (x[i] - mean) * (x[i] - mean);
        float inv = 1.0f / sqrtf(sq / (float)dim + eps);
        if (gamma && beta) {
#pragma omp simd
            for (int i = 0; i < dim; i++) y[i] = (x[i] - mean) * inv * gamma[i] + beta[i];
        } else {
#pragma omp simd
            for (int i = 0; i < dim; i++)
                y[i] = (x[i] - mean) * inv * (gamma ? gamma[i] : 1.0f) + (beta ? beta[i] : 0.0f);
        }
    }
}

/* ---------------------------------------------------------------- exp / erf */

/* The transcendental loops use GCC/Clang vector extensions: 8 floats per operation
 * (one AVX register with -march=x86-64-v3, two SSE registers otherwise). Every element,
 * including a row's tail (zero-padded into a vector), goes through the same vector
 * code, so results do not depend on an element's position. */
#define VL 8
/* Without AVX (e.g. the sanitizer build's plain x86-64) GCC warns that 32-byte vector
 * arguments change the ABI; these helpers are static, so no ABI is crossed. */
#pragma GCC diagnostic ignored "-Wpsabi"
typedef float vf __attribute__((vector_size(VL * sizeof(float))));
typedef int32_t vi __attribute__((vector_size(VL * sizeof(int32_t))));

static inline vf vsplat(float a) { return (vf){0} + a; }
static inline vf vsel(vi mask, vf a, vf b) { return (vf)((mask & (vi)a) | (~mask & (vi)b)); }
/* k <= VL elements from p; lanes >= k get `pad` */
static inline vf vload(const float *p, size_t k, float pad)
{
    vf v = vsplat(pad);
    if (k == VL) memcpy(&v, p, sizeof v);
    else memcpy(&v, p, k * sizeof(float));
    return v;
}
static inline void vstore(float *p, vf v, size_t k)
{
    if (k == VL) memcpy(p, &v, sizeof v);
    else memcpy(p, &v, k * sizeof(float));
}
static inline vi lanes_below(size_t k)
{
    const vi idx = {0, 1, 2, 3, 4, 5, 6, 7};
    return idx < (int32_t)k;
}

/* exp(x): x = n ln2 + r, |r| <= ln2/2, exp(r) by a degree-6 Taylor polynomial (relative
 * error < 2e-8 on that interval), 2^n through the exponent bits. x is clamped to
 * [-87.3, 88] so the result stays a normal float (exp(-87.3) ~ 1.2e-38 instead of 0:
 * harmless for softmax / sigmoid, where it is added to 1 or normalised away). */
static inline vf v_exp(vf x)
{
    x = vsel(x < -87.3f, vsplat(-87.3f), x);
    x = vsel(x > 88.0f, vsplat(88.0f), x);
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
    vi e = (__builtin_convertvector(n, vi) + 127) << 23;
    return p * (vf)e;
}

/* erf(x): Abramowitz & Stegun 7.1.26, |error| <= 1.5e-7 (about 1 ulp near 1). */
static inline vf v_erf(vf x)
{
    const vi sign = (vi)x & (int32_t)0x80000000;
    vf a = (vf)((vi)x & 0x7fffffff);
    vf t = 1.0f / (1.0f + 0.3275911f * a);
    vf poly = t * (0.254829592f + t * (-0.284496736f + t * (1.421413741f +
              t * (-1.453152027f + t * 1.061405429f))));
    vf y = 1.0f - poly * v_exp(-a * a);
    return (vf)((vi)y | sign);
}

static inline vf v_gelu(vf x) { return 0.5f * x * (1.0f + v_erf(x * 0.70710678118654752f)); }
static inline vf v_quick_gelu(vf x) { return x / (1.0f + v_exp(-1.702f * x)); }
static inline vf v_silu(vf x) { return x / (1.0f + v_exp(-x)); }

/* x[0..n) = F(x) in vector chunks, split over threads for large n. */
#define MAP_INPLACE(x, n, F)                                                                       \
    do {                                                                                           \
        _Pragma("omp parallel for schedule(static) if (PAR(n))")                            \
        for (size_t i = 0; i < n; i += VL) {                                                       \
            size_t k = n - i < VL ? n - i : VL;                                                    \
            vstore(x + i, F(vload(x + i, k, 0.0f)), k);                                            \
        }                                                                                          \
    } while (0)

void op_gelu(float *x, size_t n) { MAP_INPLACE(x, n, v_gelu); }
void op_quick_gelu(float *x, size_t n) { MAP_INPLACE(x, n, v_quick_gelu); }
void op_exp(float *x, size_t n) { MAP_INPLACE(x, n, v_exp); }
void op_silu(float *x, size_t n) { MAP_INPLACE(x, n, v_silu); }

/* x (rows, dim) = F(x + bias) row by row (the fc1 epilogue: one pass over the hidden). */
#define MAP_BIAS_ROWS(x, bias, rows, dim, F)                                                       \
    do {                                                                                           \
        _Pragma("omp parallel for schedule(static) if (PAR((size_t)rows * dim))")           \
        for (int r = 0; r < rows; r++) {                                                           \
            float *row = x + (size_t)r * dim;                                                      \
            for (size_t i = 0; i < (size_t)dim; i += VL) {                                         \
                size_t k = (size_t)dim - i < VL ? (size_t)dim - i : VL;                            \
                vf v = vload(row + i, k, 0.0f);                                                    \
                if (bias) v += vload(bias + i, k, 0.0f);                                           \
                vstore(row + i, F(v), k);                                                          \
            }                                                                                      \
        }                                                                                          \
    } while (0)

void op_bias_gelu(float *x, const float *bias, int rows, int dim)
{
    MAP_BIAS_ROWS(x, bias, rows, dim, v_gelu);
}

/* ---------------------------------------------------------------- softmax */

void op_softmax_rows(float *x, int rows, int cols, int ld)
{
#pragma omp parallel for schedule(static) if (PAR((size_t)rows * cols))
    for (int r = 0; r < rows; r++) {
        float *row = x + (size_t)r * ld;
        const size_t n = (size_t)cols;
        vf vmax = vsplat(-INFINITY);
        for (size_t i = 0; i < n; i += VL) {
            vf v = vload(row + i, n - i < VL ? n - i : VL, -INFINITY);
            vmax = vsel(v > vmax, v, vmax);
        }
        float mx = vmax[0];
        for (int l = 1; l < VL; l++) mx = vmax[l] > mx ? vmax[l] : mx;
        vf vsum = vsplat(0.0f);
        for (size_t i = 0; i < n; i += VL) {
            size_t k = n - i < VL ? n - i : VL;
            vf e = v_exp(vload(row + i, k, 0.0f) - mx);
            if (k < VL) e = vsel(lanes_below(k), e, vsplat(0.0f));
            vstore(row + i, e, k);
            vsum += e;
        }
        float sum = 0.0f;
        for (int l = 0; l < VL; l++) sum += vsum[l];
        const float inv = 1.0f / sum;
        for (size_t i = 0; i < n; i += VL) {
            size_t k = n - i < VL ? n - i : VL;
            vstore(row + i, vload(row + i, k, 0.0f) * inv, k);
        }
    }
}

/* ---------------------------------------------------------------- bicubic resize */

/* Keys cubic convolution kernel with parameter a (PyTorch: a = -0.75 plain, -0.5 antialiased). */
static double cubic_kernel(double x, double a)
{
    x = fabs(x);
    if (x <= 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0;
    if (x < 2.0) return ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a;
    return 0.0;
}

typedef op_axis axis_weights; /* one axis: (out, taps) source indices and weights (ops.h) */

static int axis_setup(axis_weights *ax, int in, int out, int antialias)
{
    /* PyTorch computes the scale in float: in / out (align_corners=False, size given). */
    float scale = (float)in / (float)out;
    double support = antialias && scale >= 1.0f ? 2.0 * scale : 2.0;
    ax->taps = antialias ? (int)ceil(support) * 2 + 1 : 4;
    ax->index = malloc((size_t)out * ax->taps * sizeof *ax->index);
    ax->weight = malloc((size_t)out * ax->taps * sizeof *ax->weight);
    if (!ax->index || !ax->weight) return -1;
    for (int o = 0; o < out; o++) {
        int *idx = ax->index + (size_t)o * ax->taps;
        float *w = ax->weight + (size_t)o * ax->taps;
        if (!antialias) {
            /* source coordinate (o + 0.5) * scale - 0.5, not clamped for cubic */
            float real = scale * ((float)o + 0.5f) - 0.5f;
            float fl = floorf(real);
            float t = real - fl;
            int i0 = (int)fl;
            double wt[4] = {cubic_kernel(t + 1.0, -0.75), cubic_kernel(t, -0.75),
                            cubic_kernel(1.0 - t, -0.75), cubic_kernel(2.0 - t, -0.75)};
            for (int k = 0; k < 4; k++) {
                int j = i0 - 1 + k;
                idx[k] = j < 0 ? 0 : j > in - 1 ? in - 1 : j; /* replicate border */
                w[k] = (float)wt[k];
            }
        } else {
            double center = (double)scale * (o + 0.5);
            double invscale = scale >= 1.0f ? 1.0 / scale : 1.0;
            int xmin = (int)(center - support + 0.5);
            if (xmin < 0) xmin = 0;
            int xmax = (int)(center + support + 0.5);
            if (xmax > in) xmax = in;
            int n = xmax - xmin;
            if (n > ax->taps) n = ax->taps;
            double total = 0.0, wt[64] = {0}; /* = {0}: cppcheck cannot see k < n guards the read */
            for (int k = 0; k < n; k++) {
                wt[k] = cubic_kernel((k + xmin - center + 0.5) * invscale, -0.5);
                total += wt[k];
            }
            for (int k = 0; k < ax->taps; k++) {
                idx[k] = k < n ? xmin + k : xmin;
                w[k] = k < n && total != 0.0 ? (float)(wt[k] / total) : 0.0f;
            }
        }
    }
    return 0;
}

int op_resize_bicubic(float *out, const float *in, int channels, int in_h, int in_w, int out_h,
                      int out_w, int antialias)
{
    axis_weights ax = {0}, ay = {0};
    int rc = -1;
    /* antialias support grows with the downscale factor; keep the tap table bounded */
    if (antialias && (in_w > 15 * out_w || in_h > 15 * out_h)) return -1;
    if (axis_setup(&ax, in_w, out_w, antialias) || axis_setup(&ay, in_h, out_h, antialias)) goto done;
    rc = op_resize_taps(out, in, channels, in_h, in_w, out_h, out_w, &ax, &ay);
done:
    free(ax.index);
    free(ax.weight);
    free(ay.index);
    free(ay.weight);
    return rc;
}

int op_resize_taps(float *out, const float *in, int channels, int in_h, int in_w, int out_h, int out_w,
                   const op_axis *ax_, const op_axis *ay_)
{
    const op_axis ax = *ax_, ay = *ay_;
    /* horizontal pass: tmp (in_h, out_w, C) */
    float *tmp = malloc((size_t)in_h * out_w * channels * sizeof *tmp);
    if (!tmp) return -1;
    for (int y = 0; y < in_h; y++)
        for (int x = 0; x < out_w; x++) {
            float *dst = tmp + ((size_t)y * out_w + x) * channels;
            for (int c = 0; c < channels; c++) dst[c] = 0.0f;
            for (int k = 0; k < ax.taps; k++) {
                float w = ax.weight[(size_t)x * ax.taps + k];
                const float *src = in + ((size_t)y * in_w + ax.index[(size_t)x * ax.taps + k]) * channels;
                for (int c = 0; c < channels; c++) dst[c] += w * src[c];
            }
        }
    /* vertical pass: out (out_h, out_w, C) */
    for (int y = 0; y < out_h; y++) {
        float *dst = out + (size_t)y * out_w * channels;
        for (size_t i = 0; i < (size_t)out_w * channels; i++) dst[i] = 0.0f;
        for (int k = 0; k < ay.taps; k++) {
            float w = ay.weight[(size_t)y * ay.taps + k];
            const float *src = tmp + (size_t)ay.index[(size_t)y * ay.taps + k] * out_w * channels;
            for (size_t i = 0; i < (size_t)out_w * channels; i++) dst[i] += w * src[i];
        }
    }
    free(tmp);
    return 0;
}
