/* posenc.c — RoPE tables and rotation, BEiT relative position bias, bilinear resize.
 * See posenc.h for the contracts and docs/BACKBONES.md for which family uses what. */
#include "posenc.h"
#include "ops.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void rope_tables(const rope_config *rc, int gh, int gw, int dh, float *cos_out, float *sin_out)
{
    const int nb = dh / 4, half = dh / 2;
    /* bands in float32 as the references compute them (theta ** (k / nb) in float) */
    float band[1024]; /* dh <= 4096 is checked by the loader */
    for (int k = 0; k < nb && k < 1024; k++)
        band[k] = (float)(1.0 / pow(rc->theta, (double)(float)((float)k / (float)nb)));
    for (int i = 0; i < gh; i++)
        for (int j = 0; j < gw; j++) {
            float cy, cx;
            if (rc->grid == ROPE_CENTERED) {
                cy = 2.0f * ((i + 0.5f) / (float)gh) - 1.0f;
                cx = 2.0f * ((j + 0.5f) / (float)gw) - 1.0f;
            } else {
                cy = (float)i + rc->offset;
                cx = (float)j + rc->offset;
                if (rc->ref_h > 0) cy = cy / (float)gh * (float)rc->ref_h;
                if (rc->ref_w > 0) cx = cx / (float)gw * (float)rc->ref_w;
            }
            const float c0 = rc->xy ? cx : cy, c1 = rc->xy ? cy : cx;
            float *co = cos_out + ((size_t)i * gw + j) * half,
                  *si = sin_out + ((size_t)i * gw + j) * half;
            for (int k = 0; k < nb; k++) {
                /* (scale * c) * band in float32, the references' order; cos/sin rounded once */
                const double a0 = (double)((float)rc->scale * c0 * band[k]);
                const double a1 = (double)((float)rc->scale * c1 * band[k]);
                co[k] = (float)cos(a0);
                si[k] = (float)sin(a0);
                co[nb + k] = (float)cos(a1);
                si[nb + k] = (float)sin(a1);
            }
        }
}

void rope_apply(const rope_config *rc, float *x, int ld, int rows, int dh, const float *cos_t,
                const float *sin_t)
{
    const int half = dh / 2;
    for (int r = 0; r < rows; r++) {
        float *v = x + (size_t)r * ld;
        const float *co = cos_t + (size_t)r * half, *si = sin_t + (size_t)r * half;
        if (rc->half) { /* [x1, x2] -> [x1 cos - x2 sin, x2 cos + x1 sin], angle k for both halves */
            for (int k = 0; k < half; k++) {
                const float a = v[k], b = v[half + k];
                v[k] = a * co[k] - b * si[k];
                v[half + k] = b * co[k] + a * si[k];
            }
        } else { /* pairs (x_2k, x_2k+1) rotated by angle k */
            for (int k = 0; k < half; k++) {
                const float a = v[2 * k], b = v[2 * k + 1];
                v[2 * k] = a * co[k] - b * si[k];
                v[2 * k + 1] = b * co[k] + a * si[k];
            }
        }
    }
}

/* One axis of a bilinear resize: for each output index, up to `taps` source indices
 * and weights (PyTorch's upsample_bilinear2d / _upsample_bilinear2d_aa rules). */
static int lin_axis_setup(op_axis *a, int in, int out, int antialias)
{
    const float scale = (float)in / (float)out;
    const float support = antialias && scale >= 1.0f ? scale : 1.0f;
    a->taps = antialias ? (int)ceilf(support) * 2 + 1 : 2;
    a->index = calloc((size_t)out * a->taps, sizeof *a->index);
    a->weight = calloc((size_t)out * a->taps, sizeof *a->weight);
    if (!a->index || !a->weight) return -1;
    for (int i = 0; i < out; i++) {
        int *ix = a->index + (size_t)i * a->taps;
        float *w = a->weight + (size_t)i * a->taps;
        if (!antialias) {
            float src = scale * (i + 0.5f) - 0.5f;
            if (src < 0) src = 0;
            int i0 = (int)src;
            if (i0 > in - 1) i0 = in - 1;
            int i1 = i0 + (i0 < in - 1);
            float l1 = src - (float)i0;
            ix[0] = i0;
            ix[1] = i1;
            w[0] = 1.0f - l1;
            w[1] = l1;
            continue;
        }
        const float center = scale * (i + 0.5f);
        const float invscale = scale >= 1.0f ? 1.0f / scale : 1.0f;
        int xmin = (int)(center - support + 0.5f);
        if (xmin < 0) xmin = 0;
        int xmax = (int)(center + support + 0.5f);
        if (xmax > in) xmax = in;
        int n = xmax - xmin;
        if (n > a->taps) n = a->taps;
        float total = 0;
        for (int j = 0; j < n; j++) {
            float t = fabsf((j + xmin - center + 0.5f) * invscale);
            w[j] = t < 1.0f ? 1.0f - t : 0.0f;
            ix[j] = xmin + j;
            total += w[j];
        }
        for (int j = 0; j < n; j++) w[j] = total != 0.0f ? w[j] / total : 0.0f;
        for (int j = n; j < a->taps; j++) {
            ix[j] = xmin;
            w[j] = 0.0f;
        }
    }
    return 0;
}

int op_resize_bilinear(float *out, const float *in, int channels, int in_h, int in_w, int out_h,
                       int out_w, int antialias)
{
    op_axis ax = {0}, ay = {0};
    int rc = -1;
    if (antialias && (in_w > 15 * out_w || in_h > 15 * out_h)) return -1;
    if (!lin_axis_setup(&ax, in_w, out_w, antialias) &&
        !lin_axis_setup(&ay, in_h, out_h, antialias))
        rc = op_resize_taps(out, in, channels, in_h, in_w, out_h, out_w, &ax, &ay);
    free(ax.index);
    free(ax.weight);
    free(ay.index);
    free(ay.weight);
    return rc;
}

int relpos_table_resize(float *out, const float *table, int heads, int g0h, int g0w, int gh, int gw)
{
    const int oh = 2 * g0h - 1, ow = 2 * g0w - 1, nh = 2 * gh - 1, nw = 2 * gw - 1;
    const size_t old_n = (size_t)oh * ow, new_n = (size_t)nh * nw;
    /* the spatial part is a channels-last (oh, ow, heads) grid already */
    if (oh == nh && ow == nw) memcpy(out, table, old_n * heads * sizeof *out);
    else if (op_resize_bilinear(out, table, heads, oh, ow, nh, nw, 0)) return -1;
    memcpy(out + new_n * heads, table + old_n * heads, (size_t)3 * heads * sizeof *out);
    return 0;
}

void relpos_index(int *out, int gh, int gw)
{
    const int G = gh * gw, T = G + 1, nw = 2 * gw - 1;
    const int n = (2 * gh - 1) * nw + 3;
    for (int a = 0; a < G; a++)
        for (int b = 0; b < G; b++) {
            const int dy = a / gw - b / gw + gh - 1, dx = a % gw - b % gw + gw - 1;
            out[(size_t)(a + 1) * T + b + 1] = dy * nw + dx;
        }
    for (int j = 0; j < T; j++) out[j] = n - 3;             /* cls -> token */
    for (int i = 0; i < T; i++) out[(size_t)i * T] = n - 2; /* token -> cls */
    out[0] = n - 1;                                         /* cls -> cls */
}
