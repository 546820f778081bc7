/* conv.c — convolution, pooling and epilogue loops for the CNN backbones (see conv.h).
 * Checked against PyTorch through tests/test_cnn.c (reduced-width networks) and
 * tools/parity_cnn.py (full networks). */
#include "conv.h"

#include "core/internal.h"
#include "ops.h"

#include <cblas.h>
#include <float.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#else
static int omp_get_thread_num(void) { return 0; }
#endif

void conv_geometry(int in, int k, int stride, conv_pad pad, int *out, int *pad_before)
{
    if (pad == CONV_PAD_SAME) {
        int o = (in + stride - 1) / stride;
        int total = (o - 1) * stride + k - in;
        if (total < 0) total = 0;
        *out = o;
        *pad_before = total / 2;
    } else {
        int p = k / 2;
        *out = (in + 2 * p - k) / stride + 1;
        *pad_before = p;
    }
}

static int direct_gemm(const conv_layer *l)
{
    return !l->depthwise && l->k == 1 && l->stride == 1;
}

static size_t depthwise_scratch(int ow, int k, int stride);

size_t conv_cols_size(const conv_layer *l, int height, int width, conv_pad pad)
{
    if (direct_gemm(l)) return 0;
    int oh, ow, pt, pl;
    conv_geometry(height, l->k, l->stride, pad, &oh, &pt);
    conv_geometry(width, l->k, l->stride, pad, &ow, &pl);
    if (l->depthwise) return depthwise_scratch(ow, l->k, l->stride);
    return (size_t)l->cin * l->k * l->k * oh * ow;
}

/* First and last output index o (inclusive) with 0 <= o*stride - pad + tap < in; last < first
 * when none. */
static void valid_range(int in, int out, int stride, int pad, int tap, int *first, int *last)
{
    int lo = pad - tap; /* need o*stride >= lo */
    int f = lo <= 0 ? 0 : (lo + stride - 1) / stride;
    int hi = in - 1 + pad - tap; /* need o*stride <= hi */
    int t = hi < 0 ? -1 : hi / stride;
    *first = f;
    *last = PE_MIN(t, out - 1);
}

/* cols (cin*k*k, Ho*Wo): row (c, ky, kx) holds in[c, oy*s - pt + ky, ox*s - pl + kx], 0 outside. */
static void im2col(const float *in, int cin, int height, int width, int k, int stride, int pt,
                   int pl, int oh, int ow, float *cols)
{
    int rows = cin * k * k;
#pragma omp parallel for schedule(static) num_threads(pe_get_threads())
    for (int r = 0; r < rows; r++) {
        int c = r / (k * k), ky = (r / k) % k, kx = r % k;
        const float *plane = in + (size_t)c * height * width;
        float *dst = cols + (size_t)r * oh * ow;
        int x0, x1;
        valid_range(width, ow, stride, pl, kx, &x0, &x1);
        for (int oy = 0; oy < oh; oy++) {
            float *drow = dst + (size_t)oy * ow;
            int iy = oy * stride - pt + ky;
            if (iy < 0 || iy >= height || x1 < x0) {
                for (int ox = 0; ox < ow; ox++) drow[ox] = 0.0f;
                continue;
            }
            const float *srow = plane + (size_t)iy * width - pl + kx;
            for (int ox = 0; ox < x0; ox++) drow[ox] = 0.0f;
            if (stride == 1)
#pragma omp simd
                for (int ox = x0; ox <= x1; ox++) drow[ox] = srow[ox];
            else
                for (int ox = x0; ox <= x1; ox++) drow[ox] = srow[ox * stride];
            for (int ox = x1 + 1; ox < ow; ox++) drow[ox] = 0.0f;
        }
    }
}

/* In place on one plane of n values: v = act(v + bias [+ residual]), one pass. */
static inline void epilogue_plane(float *v, size_t n, float bias, const float *residual, conv_act act)
{
    const float lo = act == CONV_ACT_NONE ? -FLT_MAX : 0.0f;
    const float hi = act == CONV_ACT_RELU6 ? 6.0f : FLT_MAX;
    if (residual)
#pragma omp simd
        for (size_t i = 0; i < n; i++) {
            float t = v[i] + bias + residual[i];
            t = t > lo ? t : lo;
            v[i] = t < hi ? t : hi;
        }
    else
#pragma omp simd
        for (size_t i = 0; i < n; i++) {
            float t = v[i] + bias;
            t = t > lo ? t : lo;
            v[i] = t < hi ? t : hi;
        }
}

/* Per-thread scratch of the depthwise convolution: one zero-padded input row
 * (prow_len floats) and, for stride 2, its even and odd phases (phase_len each). */
static void depthwise_row_sizes(int ow, int k, int stride, size_t *prow_len, size_t *phase_len)
{
    *prow_len = (size_t)(ow - 1) * stride + k;
    *phase_len = (size_t)ow + k;
}

static size_t depthwise_scratch(int ow, int k, int stride)
{
    size_t prow, phase;
    depthwise_row_sizes(ow, k, stride, &prow, &phase);
    return (size_t)pe_get_threads() * (prow + 2 * phase);
}

/* Depthwise: every channel its own k x k filter. Output row by row (it stays in L1):
 * for each filter row ky the input row is copied once into a zero-padded buffer
 * (prow[j] = x[iy, j - pad_left]), so every tap is a contiguous, branch-free
 * orow[ox] += w * prow[ox*s + kx]; for stride 2 the padded row is split into its even and
 * odd phases first so that the taps stay contiguous too. */
static void depthwise(const conv_layer *l, const float *in, int height, int width, int pt, int pl,
                      float *out, int oh, int ow, float *scratch)
{
    const int k = l->k, s = l->stride;
    const size_t in_plane = (size_t)height * width, out_plane = (size_t)oh * ow;
    size_t prow_len, phase_len;
    depthwise_row_sizes(ow, k, s, &prow_len, &phase_len);
    /* prow[j] = x[j - pl] for j in [copy_lo, copy_hi), 0 elsewhere */
    const int copy_lo = PE_MIN(pl, (int)prow_len);
    const int copy_hi = PE_MAX(copy_lo, PE_MIN((int)prow_len, width + pl));
#pragma omp parallel num_threads(pe_get_threads())
    {
        float *prow = scratch + (size_t)omp_get_thread_num() * (prow_len + 2 * phase_len);
        float *even = prow + prow_len, *odd = even + phase_len;
#pragma omp for schedule(static)
        for (int c = 0; c < l->cout; c++) {
            const float *x = in + c * in_plane, *w = l->weight + (size_t)c * k * k;
            float *o = out + c * out_plane;
            const float bias = l->bias[c];
            for (int oy = 0; oy < oh; oy++) {
                float *orow = o + (size_t)oy * ow;
                for (int ox = 0; ox < ow; ox++) orow[ox] = 0.0f;
                for (int ky = 0; ky < k; ky++) {
                    int iy = oy * s - pt + ky;
                    if (iy < 0 || iy >= height) continue;
                    const float *xrow = x + (size_t)iy * width;
                    for (int j = 0; j < copy_lo; j++) prow[j] = 0.0f;
                    memcpy(prow + copy_lo, xrow + copy_lo - pl, sizeof(float) * (size_t)(copy_hi - copy_lo));
                    for (int j = copy_hi; j < (int)prow_len; j++) prow[j] = 0.0f;
                    const float *wrow = w + ky * k;
                    if (s == 1) {
                        for (int kx = 0; kx < k; kx++) {
                            const float wv = wrow[kx];
                            const float *src = prow + kx;
                            #pragma omp simd
                            for (int ox = 0; ox < ow; ox++) orow[ox] += wv * src[ox];
                        }
                    } else if (s == 2) {
                        size_t half = (prow_len + 1) / 2;
#pragma omp simd
                        for (size_t i = 0; i < half; i++) even[i] = prow[2 * i];
#pragma omp simd
                        for (size_t i = 0; i < prow_len / 2; i++) odd[i] = prow[2 * i + 1];
                        for (int kx = 0; kx < k; kx++) {
                            const float wv = wrow[kx];
                            const float *src = ((kx & 1) ? odd : even) + kx / 2;
                            #pragma omp simd
                            for (int ox = 0; ox < ow; ox++) orow[ox] += wv * src[ox];
                        }
                    } else {
                        for (int kx = 0; kx < k; kx++) {
                            const float wv = wrow[kx];
                            #pragma omp simd
                            for (int ox = 0; ox < ow; ox++) orow[ox] += wv * prow[ox * s + kx];
                        }
                    }
                }
                epilogue_plane(orow, (size_t)ow, bias, NULL, l->act);
            }
        }
    }
}

void conv_forward(const conv_layer *l, conv_pad pad, const float *in, int height, int width,
                  float *out, int *out_h, int *out_w, const float *residual, float *cols)
{
    int oh, ow, pt, pl;
    conv_geometry(height, l->k, l->stride, pad, &oh, &pt);
    conv_geometry(width, l->k, l->stride, pad, &ow, &pl);
    *out_h = oh;
    *out_w = ow;
    const size_t plane = (size_t)oh * ow;
    if (l->depthwise) {
        depthwise(l, in, height, width, pt, pl, out, oh, ow, cols);
        return;
    }
    /* out (cout, Ho*Wo) = weight (cout, cin*k*k) . B (cin*k*k, Ho*Wo) */
    const float *b = in;
    if (!direct_gemm(l)) {
        im2col(in, l->cin, height, width, l->k, l->stride, pt, pl, oh, ow, cols);
        b = cols;
    }
    const int kdim = l->cin * l->k * l->k;
    /* through the engine (oneDNN, the model's precision; OpenBLAS as fallback) */
    op_gemm(0, 0, l->cout, (int)plane, kdim, 1.0f, l->weight, kdim, b, (int)plane, 0.0f, out, (int)plane);
#pragma omp parallel for schedule(static) num_threads(pe_get_threads())
    for (int c = 0; c < l->cout; c++)
        epilogue_plane(out + c * plane, plane, l->bias[c], residual ? residual + c * plane : NULL,
                       l->act);
}

void maxpool3x3s2(const float *in, int channels, int height, int width, float *out, int *out_h,
                  int *out_w)
{
    int oh, ow, pt, pl;
    conv_geometry(height, 3, 2, CONV_PAD_SYMMETRIC, &oh, &pt);
    conv_geometry(width, 3, 2, CONV_PAD_SYMMETRIC, &ow, &pl);
    *out_h = oh;
    *out_w = ow;
#pragma omp parallel for schedule(static) num_threads(pe_get_threads())
    for (int c = 0; c < channels; c++) {
        const float *x = in + (size_t)c * height * width;
        float *o = out + (size_t)c * oh * ow;
        for (int oy = 0; oy < oh; oy++) {
            int y0 = PE_MAX(oy * 2 - 1, 0), y1 = PE_MIN(oy * 2 + 1, height - 1);
            for (int ox = 0; ox < ow; ox++) {
                int xa = PE_MAX(ox * 2 - 1, 0), xb = PE_MIN(ox * 2 + 1, width - 1);
                float m = -FLT_MAX;
                for (int y = y0; y <= y1; y++)
                    for (int xx = xa; xx <= xb; xx++) m = PE_MAX(m, x[(size_t)y * width + xx]);
                o[(size_t)oy * ow + ox] = m;
            }
        }
    }
}

void avgpool3x3s1(const float *in, int channels, int height, int width, float *out)
{
    const size_t plane = (size_t)height * width;
#pragma omp parallel for schedule(static) num_threads(pe_get_threads())
    for (int c = 0; c < channels; c++) {
        const float *x = in + c * plane;
        float *o = out + c * plane;
        for (int y = 0; y < height; y++) {
            int y0 = PE_MAX(y - 1, 0), y1 = PE_MIN(y + 1, height - 1);
            for (int xx = 0; xx < width; xx++) {
                int x0 = PE_MAX(xx - 1, 0), x1 = PE_MIN(xx + 1, width - 1);
                float sum = 0.0f;
                for (int yy = y0; yy <= y1; yy++)
                    for (int xi = x0; xi <= x1; xi++) sum += x[(size_t)yy * width + xi];
                o[(size_t)y * width + xx] = sum * (1.0f / 9.0f);
            }
        }
    }
}
