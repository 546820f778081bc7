/* anomaly_map.c — patch scores -> pixel anomaly map -> heatmap PNG.
 *
 * Map (AnomalyDINO's recipe, docs/METHOD.md, "Anomaly maps"):
 *   1. bilinear upsampling of the (grid_h, grid_w) patch scores to (out_h, out_w) with
 *      PyTorch's F.interpolate(mode="bilinear", align_corners=False) convention:
 *      src = max(0, (dst + 0.5) * in / out - 0.5), neighbours clamped to the edge;
 *   2. separable Gaussian of std `sigma` output pixels, as scipy.ndimage.gaussian_filter
 *      with its defaults: kernel radius int(4 * sigma + 0.5) (truncate = 4), border mode
 *      "reflect" (d c b a | a b c d | d c b a, the edge sample repeated).
 * Both are checked against PyTorch + SciPy outputs in tests/fixtures/score/.
 */
#include "core/internal.h"

#include <math.h>
#include <string.h>

/* Reflect index i into 0..n-1 the way scipy's mode="reflect" does (period 2n). */
static inline int reflect_index(int i, int n)
{
    int period = 2 * n;
    int m = i % period;
    if (m < 0) m += period;
    return m < n ? m : period - 1 - m;
}

/* Source position and weights of one output coordinate (align_corners=False). */
static inline void bilinear_coord(int dst, int in, int out, int *i0, int *i1, float *w1)
{
    double src = ((double)dst + 0.5) * in / out - 0.5;
    if (src < 0) src = 0;
    int lo = (int)src;
    if (lo > in - 1) lo = in - 1;
    *i0 = lo;
    *i1 = lo + 1 < in ? lo + 1 : in - 1;
    *w1 = (float)(src - lo);
}

/* 1-D Gaussian taps for offsets -r..r, normalised to sum 1. */
static float *gaussian_taps(float sigma, int *radius)
{
    int r = (int)(4.0 * sigma + 0.5);
    float *w = pe_alloc((size_t)(2 * r + 1), sizeof(float), "gaussian kernel");
    if (!w) return NULL;
    double sum = 0;
    for (int i = -r; i <= r; i++) {
        double v = exp(-0.5 * (double)i * i / ((double)sigma * sigma));
        w[i + r] = (float)v;
        sum += v;
    }
    for (int i = 0; i <= 2 * r; i++) w[i] = (float)(w[i] / sum);
    *radius = r;
    return w;
}

/* In-place separable Gaussian on a (h, w) map; tmp: (h, w) scratch. */
static pe_status gaussian_blur(float *map, int w, int h, float sigma)
{
    int r;
    float *taps = gaussian_taps(sigma, &r);
    float *tmp = pe_alloc((size_t)w * h, sizeof(float), "anomaly map scratch");
    if (!taps || !tmp) {
        free(taps);
        free(tmp);
        return PE_ERR_NOMEM;
    }
    /* Horizontal pass map -> tmp: interior columns without index mapping. */
#pragma omp parallel for schedule(static)
    for (int y = 0; y < h; y++) {
        const float *src = map + (size_t)y * w;
        float *dst = tmp + (size_t)y * w;
        for (int x = 0; x < w; x++) {
            float acc = 0;
            if (x - r >= 0 && x + r < w) {
                for (int t = -r; t <= r; t++) acc += taps[t + r] * src[x + t];
            } else {
                for (int t = -r; t <= r; t++) acc += taps[t + r] * src[reflect_index(x + t, w)];
            }
            dst[x] = acc;
        }
    }
    /* Vertical pass tmp -> map: accumulate whole rows so the inner loop is contiguous. */
#pragma omp parallel for schedule(static)
    for (int y = 0; y < h; y++) {
        float *dst = map + (size_t)y * w;
        memset(dst, 0, (size_t)w * sizeof *dst);
        for (int t = -r; t <= r; t++) {
            const float *src = tmp + (size_t)reflect_index(y + t, h) * w;
            float wt = taps[t + r];
#pragma omp simd
            for (int x = 0; x < w; x++) dst[x] += wt * src[x];
        }
    }
    free(taps);
    free(tmp);
    return PE_OK;
}

pe_status pe_anomaly_map(const float *patch_scores, int grid_h, int grid_w, int out_w, int out_h,
                         float sigma, float *out_map)
{
    if (!patch_scores || !out_map) return pe_fail(PE_ERR_ARG, "pe_anomaly_map: NULL argument");
    if (grid_h <= 0 || grid_w <= 0 || out_w <= 0 || out_h <= 0)
        return pe_fail(PE_ERR_SHAPE, "pe_anomaly_map: grid %dx%d to %dx%d pixels", grid_w, grid_h,
                       out_w, out_h);
    if ((size_t)out_w * out_h > PE_MAX_IMAGE_PIXELS || out_w > PE_MAX_IMAGE_SIDE ||
        out_h > PE_MAX_IMAGE_SIDE)
        return pe_fail(PE_ERR_LIMIT, "pe_anomaly_map: %dx%d pixels exceeds the image limit", out_w,
                       out_h);
    if (!(sigma >= 0) || sigma > 1000)
        return pe_fail(PE_ERR_ARG, "pe_anomaly_map: sigma %g is not in 0..1000", (double)sigma);

    /* Column neighbours and weights once per call: (out_w) each. */
    int *x0 = malloc((size_t)out_w * 2 * sizeof *x0);
    float *wx = malloc((size_t)out_w * sizeof *wx);
    if (!x0 || !wx) {
        free(x0);
        free(wx);
        return pe_fail(PE_ERR_NOMEM, "pe_anomaly_map: out of memory");
    }
    int *x1 = x0 + out_w;
    for (int x = 0; x < out_w; x++) bilinear_coord(x, grid_w, out_w, &x0[x], &x1[x], &wx[x]);
#pragma omp parallel for schedule(static)
    for (int y = 0; y < out_h; y++) {
        int y0, y1;
        float wy;
        bilinear_coord(y, grid_h, out_h, &y0, &y1, &wy);
        const float *r0 = patch_scores + (size_t)y0 * grid_w, *r1 = patch_scores + (size_t)y1 * grid_w;
        float *dst = out_map + (size_t)y * out_w;
        for (int x = 0; x < out_w; x++) {
            float top = r0[x0[x]] + wx[x] * (r0[x1[x]] - r0[x0[x]]);
            float bot = r1[x0[x]] + wx[x] * (r1[x1[x]] - r1[x0[x]]);
            dst[x] = top + wy * (bot - top);
        }
    }
    free(x0);
    free(wx);
    if (sigma > 0) return gaussian_blur(out_map, out_w, out_h, sigma);
    return PE_OK;
}

/* ------------------------------------------------------------------ heatmap */

/* patchead's own colour ramp: dark blue -> blue -> green -> yellow -> red, linear
 * between five hand-picked anchors (low = cool, high = hot). */
static void colormap(float t, uint8_t rgb[3])
{
    static const float anchors[5][3] = {
        {20, 20, 100}, {30, 120, 210}, {60, 200, 120}, {245, 205, 40}, {215, 25, 25}};
    if (!(t > 0)) t = 0;
    if (t > 1) t = 1;
    float pos = t * 4;
    int i = (int)pos;
    if (i > 3) i = 3;
    float f = pos - i;
    for (int c = 0; c < 3; c++) {
        float v = anchors[i][c] + f * (anchors[i + 1][c] - anchors[i][c]);
        rgb[c] = (uint8_t)(v + 0.5f);
    }
}

pe_status pe_heatmap_render(const pe_image *img, const float *map, float vmin, float vmax,
                            pe_image *out)
{
    if (!out) return pe_fail(PE_ERR_ARG, "pe_heatmap_render: NULL output");
    memset(out, 0, sizeof *out);
    if (!img || !img->rgb || !map) return pe_fail(PE_ERR_ARG, "pe_heatmap_render: NULL argument");
    const int w = img->width, h = img->height;
    if (w <= 0 || h <= 0) return pe_fail(PE_ERR_SHAPE, "heatmap: empty image");
    /* A colour bar (vmax at the top, vmin at the bottom) right of the overlay. */
    const int gap = 4, bar = PE_MAX(8, w / 40);
    pe_image heat = {w + gap + bar, h, NULL};
    heat.rgb = pe_alloc((size_t)heat.width * h, 3, "heatmap");
    if (!heat.rgb) return PE_ERR_NOMEM;
    const float range = vmax > vmin ? vmax - vmin : 0;
    const float alpha = 0.5f; /* weight of the colour over the image */
#pragma omp parallel for schedule(static)
    for (int y = 0; y < h; y++) {
        uint8_t *dst = heat.rgb + (size_t)y * heat.width * 3;
        const uint8_t *src = img->rgb + (size_t)y * w * 3;
        const float *m = map + (size_t)y * w;
        for (int x = 0; x < w; x++) {
            uint8_t c[3];
            colormap(range > 0 ? (m[x] - vmin) / range : 0, c);
            for (int k = 0; k < 3; k++)
                dst[3 * x + k] = (uint8_t)((1 - alpha) * src[3 * x + k] + alpha * c[k] + 0.5f);
        }
        for (int x = w; x < w + gap; x++) dst[3 * x] = dst[3 * x + 1] = dst[3 * x + 2] = 255;
        uint8_t c[3];
        colormap(h > 1 ? 1.0f - (float)y / (h - 1) : 1.0f, c);
        for (int x = w + gap; x < heat.width; x++) memcpy(dst + 3 * x, c, 3);
    }
    *out = heat;
    return PE_OK;
}

pe_status pe_save_heatmap_png(const char *path, const pe_image *img, const float *map, float vmin,
                              float vmax)
{
    if (!path) return pe_fail(PE_ERR_ARG, "pe_save_heatmap_png: NULL path");
    pe_image heat;
    pe_status s = pe_heatmap_render(img, map, vmin, vmax, &heat);
    if (s) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", pe_last_error());
        return pe_fail(s, "%s: %s", path, msg);
    }
    s = pe_image_save_png(path, &heat);
    free(heat.rgb);
    return s;
}
