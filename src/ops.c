/* ops.c — neural-net building blocks (see ops.h): sgemm wrappers, layernorm,
 * activations, softmax, bicubic grid resize. Element-wise loops are written so GCC
 * vectorises them (`omp simd`, no libm calls inside: exp and erf are inlined
 * polynomial versions); row loops are split over threads with OpenMP. */
#include "ops.h"

#include "internal.h"

#include <cblas.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Work below this many elements stays on one thread (thread start-up would dominate). */
#define PAR_MIN 32768

void op_gemm(int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A, int lda,
             const float *B, int ldb, float beta, float *C, int ldc)
{
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans,
                M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

void op_add_bias(float *x, const float *bias, int rows, int dim)
{
    if (!bias) return;
#pragma omp parallel for schedule(static) if ((size_t)rows * dim >= PAR_MIN)
    for (int r = 0; r < rows; r++) {
        float *row = x + (size_t)r * dim;
#pragma omp simd
        for (int i = 0; i < dim; i++) row[i] += bias[i];
    }
}

void op_linear(float *out, const float *in, const float *weight, const float *bias, int rows,
               int in_dim, int out_dim)
{
    /* out (rows, out_dim) = in (rows, in_dim) . weight^T, weight (out_dim, in_dim) */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, out_dim, in_dim, 1.0f, in, in_dim,
                weight, in_dim, 0.0f, out, out_dim);
    op_add_bias(out, bias, rows, out_dim);
}

void op_layernorm(float *out, const float *in, const float *gamma, const float *beta, int rows,
                  int dim, float eps)
{
#pragma omp parallel for schedule(static) if ((size_t)rows * dim >= PAR_MIN)
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

/* exp(x) for |x| <= ~87: x = n ln2 + r, |r| <= ln2/2, exp(r) by a degree-6 polynomial
 * (Taylor, error < 2e-8 relative on that interval), 2^n by exponent bits. Inputs are
 * clamped so the result stays a normal float (exp(-87.3) ~ 1.2e-38, not 0: harmless
 * for softmax / sigmoid, where it is added to 1 or normalised away). */
#pragma omp declare simd notinbranch
static inline float fast_exp(float x)
{
    x = fminf(fmaxf(x, -87.3f), 88.0f);
    float n = floorf(x * 1.44269504088896341f + 0.5f);
    float r = x - n * 0.693359375f;      /* ln2 split in two for an exact product */
    r = r - n * -2.12194440e-4f;
    float p = 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    int32_t e = ((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &e, 4);
    return p * scale;
}

/* erf(x): Abramowitz & Stegun 7.1.26, |error| <= 1.5e-7 (about 1 ulp near 1). */
#pragma omp declare simd notinbranch
static inline float fast_erf(float x)
{
    float a = fabsf(x);
    float t = 1.0f / (1.0f + 0.3275911f * a);
    float poly = t * (0.254829592f + t * (-0.284496736f + t * (1.421413741f +
                 t * (-1.453152027f + t * 1.061405429f))));
    float y = 1.0f - poly * fast_exp(-a * a);
    return copysignf(y, x);
}

float op_erf1(float x) { return fast_erf(x); }

void op_exp(float *x, size_t n)
{
#pragma omp parallel for simd schedule(static) if (n >= PAR_MIN)
    for (size_t i = 0; i < n; i++) x[i] = fast_exp(x[i]);
}

/* ---------------------------------------------------------------- activations */

void op_gelu(float *x, size_t n)
{
#pragma omp parallel for simd schedule(static) if (n >= PAR_MIN)
    for (size_t i = 0; i < n; i++) x[i] = 0.5f * x[i] * (1.0f + fast_erf(x[i] * 0.70710678118654752f));
}

void op_quick_gelu(float *x, size_t n)
{
#pragma omp parallel for simd schedule(static) if (n >= PAR_MIN)
    for (size_t i = 0; i < n; i++) x[i] = x[i] / (1.0f + fast_exp(-1.702f * x[i]));
}

void op_silu(float *x, size_t n)
{
#pragma omp parallel for simd schedule(static) if (n >= PAR_MIN)
    for (size_t i = 0; i < n; i++) x[i] = x[i] / (1.0f + fast_exp(-x[i]));
}

void op_relu(float *x, size_t n)
{
#pragma omp parallel for simd schedule(static) if (n >= PAR_MIN)
    for (size_t i = 0; i < n; i++) x[i] = fmaxf(x[i], 0.0f);
}

void op_relu6(float *x, size_t n)
{
#pragma omp parallel for simd schedule(static) if (n >= PAR_MIN)
    for (size_t i = 0; i < n; i++) x[i] = fminf(fmaxf(x[i], 0.0f), 6.0f);
}

void op_bias_gelu(float *x, const float *bias, int rows, int dim)
{
#pragma omp parallel for schedule(static) if ((size_t)rows * dim >= PAR_MIN)
    for (int r = 0; r < rows; r++) {
        float *row = x + (size_t)r * dim;
#pragma omp simd
        for (int i = 0; i < dim; i++) {
            float v = row[i] + (bias ? bias[i] : 0.0f);
            row[i] = 0.5f * v * (1.0f + fast_erf(v * 0.70710678118654752f));
        }
    }
}

void op_bias_quick_gelu(float *x, const float *bias, int rows, int dim)
{
#pragma omp parallel for schedule(static) if ((size_t)rows * dim >= PAR_MIN)
    for (int r = 0; r < rows; r++) {
        float *row = x + (size_t)r * dim;
#pragma omp simd
        for (int i = 0; i < dim; i++) {
            float v = row[i] + (bias ? bias[i] : 0.0f);
            row[i] = v / (1.0f + fast_exp(-1.702f * v));
        }
    }
}

/* ---------------------------------------------------------------- softmax */

void op_softmax_rows(float *x, int rows, int cols, int ld)
{
#pragma omp parallel for schedule(static) if ((size_t)rows * cols >= PAR_MIN)
    for (int r = 0; r < rows; r++) {
        float *row = x + (size_t)r * ld;
        float mx = -INFINITY;
#pragma omp simd reduction(max : mx)
        for (int i = 0; i < cols; i++) mx = fmaxf(mx, row[i]);
        float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
        for (int i = 0; i < cols; i++) {
            float e = fast_exp(row[i] - mx);
            row[i] = e;
            sum += e;
        }
        float inv = 1.0f / sum;
#pragma omp simd
        for (int i = 0; i < cols; i++) row[i] *= inv;
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

/* One axis: for each output index o, `taps` source indices (always valid) and weights. */
typedef struct {
    int taps;
    int *index;   /* (out, taps) */
    float *weight; /* (out, taps) */
} axis_weights;

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
            double total = 0.0, wt[64];
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
    float *tmp = NULL;
    int rc = -1;
    /* antialias support grows with the downscale factor; keep the tap table bounded */
    if (antialias && (in_w > 15 * out_w || in_h > 15 * out_h)) return -1;
    if (axis_setup(&ax, in_w, out_w, antialias) || axis_setup(&ay, in_h, out_h, antialias)) goto done;
    /* horizontal pass: tmp (in_h, out_w, C) */
    tmp = malloc((size_t)in_h * out_w * channels * sizeof *tmp);
    if (!tmp) goto done;
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
    rc = 0;
done:
    free(ax.index);
    free(ax.weight);
    free(ay.index);
    free(ay.weight);
    free(tmp);
    return rc;
}
