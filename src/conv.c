/* conv.c — convolution, pooling and epilogue loops for the CNN backbones (see conv.h).
 * Checked against PyTorch through tests/test_cnn.c (reduced-width networks) and
 * tools/parity_cnn.py (full networks). */
#include "conv.h"

#include "internal.h"

#include <cblas.h>
#include <float.h>

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

size_t conv_cols_size(const conv_layer *l, int height, int width, conv_pad pad)
{
    if (l->depthwise || direct_gemm(l)) return 0;
    int oh, ow, pt, pl;
    conv_geometry(height, l->k, l->stride, pad, &oh, &pt);
    conv_geometry(width, l->k, l->stride, pad, &ow, &pl);
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
                for (int ox = x0; ox <= x1; ox++) drow[ox] = srow[ox];
            else
                for (int ox = x0; ox <= x1; ox++) drow[ox] = srow[ox * stride];
            for (int ox = x1 + 1; ox < ow; ox++) drow[ox] = 0.0f;
        }
    }
}

/* In place on one plane of n values: v = act(v + bias [+ residual]). */
static inline void epilogue_plane(float *v, size_t n, float bias, const float *residual, conv_act act)
{
    if (residual)
        for (size_t i = 0; i < n; i++) v[i] += bias + residual[i];
    else
        for (size_t i = 0; i < n; i++) v[i] += bias;
    if (act == CONV_ACT_RELU)
        for (size_t i = 0; i < n; i++) v[i] = v[i] > 0.0f ? v[i] : 0.0f;
    else if (act == CONV_ACT_RELU6)
        for (size_t i = 0; i < n; i++) v[i] = PE_MIN(PE_MAX(v[i], 0.0f), 6.0f);
}

/* Depthwise: every channel its own k x k filter; out rows accumulated tap by tap so the
 * innermost loop runs along contiguous output pixels. */
static void depthwise(const conv_layer *l, const float *in, int height, int width, int pt, int pl,
                      float *out, int oh, int ow)
{
    const int k = l->k, s = l->stride;
    const size_t in_plane = (size_t)height * width, out_plane = (size_t)oh * ow;
#pragma omp parallel for schedule(static) num_threads(pe_get_threads())
    for (int c = 0; c < l->cout; c++) {
        const float *x = in + c * in_plane, *w = l->weight + (size_t)c * k * k;
        float *o = out + c * out_plane;
        for (size_t i = 0; i < out_plane; i++) o[i] = 0.0f;
        for (int kx = 0; kx < k; kx++) {
            int x0, x1;
            valid_range(width, ow, s, pl, kx, &x0, &x1);
            if (x1 < x0) continue;
            for (int oy = 0; oy < oh; oy++) {
                float *orow = o + (size_t)oy * ow;
                for (int ky = 0; ky < k; ky++) {
                    int iy = oy * s - pt + ky;
                    if (iy < 0 || iy >= height) continue;
                    const float wv = w[ky * k + kx];
                    const float *xrow = x + (size_t)iy * width - pl + kx;
                    if (s == 1)
                        for (int ox = x0; ox <= x1; ox++) orow[ox] += wv * xrow[ox];
                    else
                        for (int ox = x0; ox <= x1; ox++) orow[ox] += wv * xrow[ox * s];
                }
            }
        }
        epilogue_plane(o, out_plane, l->bias[c], NULL, l->act);
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
        depthwise(l, in, height, width, pt, pl, out, oh, ow);
        return;
    }
    /* out (cout, Ho*Wo) = weight (cout, cin*k*k) . B (cin*k*k, Ho*Wo) */
    const float *b = in;
    if (!direct_gemm(l)) {
        im2col(in, l->cin, height, width, l->k, l->stride, pt, pl, oh, ow, cols);
        b = cols;
    }
    const int kdim = l->cin * l->k * l->k;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, l->cout, (int)plane, kdim, 1.0f,
                l->weight, kdim, b, (int)plane, 0.0f, out, (int)plane);
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
