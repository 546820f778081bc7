/* conv.h — the CNN layers cnn.c is built from, on channel-major float maps:
 * a map is (C, H, W) row-major, one plane per channel, as PyTorch's NCHW with N = 1.
 *
 * Convolutions carry their BatchNorm folded in (weight * gamma / sqrt(var + eps),
 * bias = beta - mean * gamma / sqrt(var + eps)), so one layer = conv + bias +
 * optional residual + activation. Dense convolutions are one cblas_sgemm
 * (weights (Cout, Cin*k*k) x columns (Cin*k*k, Ho*Wo)); a 1x1 stride-1 convolution
 * multiplies the input map directly, others go through im2col first. Depthwise
 * convolutions are tight per-channel loops, OpenMP over channels.
 *
 * Threading: every function here may run OpenMP loops or BLAS; call them from one
 * thread, never from inside an OpenMP parallel region. */
#ifndef PE_CONV_H
#define PE_CONV_H

#include <stddef.h>

typedef enum { CONV_ACT_NONE = 0, CONV_ACT_RELU, CONV_ACT_RELU6 } conv_act;

/* Padding rule:
 *   CONV_PAD_SYMMETRIC  PyTorch nn.Conv2d(padding = k / 2): out = (in + 2*(k/2) - k) / s + 1;
 *   CONV_PAD_SAME       TensorFlow "SAME" (EfficientNet's Conv2dDynamicSamePadding):
 *                       out = ceil(in / s), total pad = max((out-1)*s + k - in, 0), of which
 *                       floor(total / 2) goes before (top/left) and the rest after. */
typedef enum { CONV_PAD_SYMMETRIC = 0, CONV_PAD_SAME } conv_pad;

typedef struct {
    int cin, cout;  /* channels in / out (equal for depthwise) */
    int k, stride;  /* square kernel side, stride */
    int depthwise;  /* 1: groups = cin = cout, weight (cout, k*k) */
    conv_act act;
    float *weight;  /* dense (cout, cin*k*k) or depthwise (cout, k*k), BN folded; owned */
    float *bias;    /* (cout), BN folded; owned */
} conv_layer;

/* Output side and leading padding of a convolution (or pooling) along one axis. */
void conv_geometry(int in, int k, int stride, conv_pad pad, int *out, int *pad_before);

/* Floats of im2col scratch conv_forward needs for this layer and input (0 if none). */
size_t conv_cols_size(const conv_layer *l, int height, int width, conv_pad pad);

/* out (cout, Ho, Wo) = act(conv(in (cin, H, W)) + bias [+ residual (cout, Ho, Wo)]).
 * residual may be NULL; `cols` must hold conv_cols_size() floats (may be NULL when that
 * is 0). out must not alias in, cols or residual. Ho/Wo returned. */
void conv_forward(const conv_layer *l, conv_pad pad, const float *in, int height, int width,
                  float *out, int *out_h, int *out_w, const float *residual, float *cols);

/* Max pool 3x3, stride 2, padding 1 (padding never wins: -inf), as nn.MaxPool2d(3, 2, 1):
 * in (C, H, W) -> out (C, Ho, Wo), Ho = (H - 1) / 2 + 1. */
void maxpool3x3s2(const float *in, int channels, int height, int width, float *out, int *out_h,
                  int *out_w);

/* Average pool 3x3, stride 1, padding 1, count_include_pad=True (every window divided by
 * 9, zeros outside the map), as nn.AvgPool2d(3, 1, 1): in (C, H, W) -> out (C, H, W). */
void avgpool3x3s1(const float *in, int channels, int height, int width, float *out);

#endif
