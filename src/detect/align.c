/* align.c — PatchEAD+ alignment: the rigid transform (rotation + translation, no
 * scale) that maps a reference image onto a query image, and the warp applying it.
 *
 * Pipeline of pe_align_estimate (both images at one common working scale):
 *   RGB -> luminance in [0, 1] -> area downscale so the longer side of the larger
 *   image is work_size -> Gaussian blur -> Harris corners (sub-pixel, spread over an
 *   8x8 grid of cells) -> dominant gradient orientation(s) per corner -> a 128-float
 *   gradient-histogram descriptor sampled in the corner's rotated frame (4x4 cells x
 *   8 orientation bins; rotation invariant because it is measured relative to the
 *   corner's own orientation) -> mutual nearest neighbours with a ratio test
 *   (similarities from one sgemm) -> RANSAC over 2-match rigid hypotheses ->
 *   least-squares refit on the inliers (closed-form 2D Procrustes) -> the transform
 *   expressed in the input images' pixel frame.
 *
 * Coordinates: pixel centres are at integer coordinates, x to the right, y down;
 * (0, 0) is the centre of the top-left pixel. R(a) = [[cos a, -sin a], [sin a, cos a]]
 * in these coordinates, so a positive angle turns the picture clockwise on screen.
 */
#include "core/internal.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

#define DESC_DIM 128         /* 4 x 4 cells x 8 orientation bins */
#define DESC_SAMPLES 16      /* 16 x 16 gradient samples, 4 x 4 per cell */
#define DESC_SPACING 1.25f   /* working pixels between samples: a 20 px square patch */
#define ORI_BINS 36          /* orientation histogram, 10 degrees per bin */
#define ORI_SIGMA 4.0f       /* Gaussian window of the orientation histogram */
#define ORI_RADIUS 12        /* 3 sigma */
#define BORDER 16            /* corners closer than this to the edge are not used: the
                                rotated descriptor patch reaches 10 * sqrt(2) + 1 px */
#define BLUR_SIGMA 1.2f      /* smoothing before gradients (after the area downscale) */
#define HARRIS_SIGMA 2.0f    /* integration window of the structure tensor */
#define HARRIS_K 0.04f
#define HARRIS_REL 1e-3f     /* corners weaker than this fraction of the strongest are dropped */
#define HARRIS_ABS 1e-10f    /* ... and below this absolute response (flat images: none) */
#define GRID_CELLS 8         /* corners are spread over GRID_CELLS x GRID_CELLS cells */
#define RATIO 0.8f           /* Lowe's ratio test on descriptor distances */
#define MIN_PAIR_DIST 8.0f   /* RANSAC: the two matches of a hypothesis at least this far apart */
#define ORI_AGREE_DEG 30.0   /* RANSAC: both matches' orientation changes agree with the angle */
#define MAX_KEYPOINTS_LIMIT 100000

static const double PI = 3.14159265358979323846;

/* atan2 in [0, 2 pi), max error ~0.004 rad (about 0.2 degrees): plenty for binning
 * gradient directions into 10- and 45-degree bins, and 4x cheaper than atan2f.
 * atan(z) ~ z (pi/4 + 0.273 (1 - |z|)) on |z| <= 1, mapped to the octants. */
static inline float angle_2pi(float y, float x)
{
    const float ax = x < 0 ? -x : x, ay = y < 0 ? -y : y;
    const float big = ax > ay ? ax : ay, small = ax > ay ? ay : ax;
    if (big == 0) return 0;
    const float z = small / big;
    float a = z * (0.78539816f + 0.273f * (1 - z));
    if (ay > ax) a = 1.57079633f - a;
    if (x < 0) a = 3.14159265f - a;
    if (y < 0) a = 6.28318531f - a;
    return a >= 6.28318531f ? 0 : a;
}

pe_align_params pe_align_default_params(void)
{
    pe_align_params p;
    p.max_keypoints = 1000;
    p.min_inliers = 12;
    p.ransac_iters = 2000;
    p.ransac_tol_px = 3.0f;
    p.work_size = 512;
    p.seed = 0x9e3779b97f4a7c15ULL;
    return p;
}

/* ------------------------------------------------------------------ gray planes */

typedef struct {
    int w, h;
    float *px; /* (h, w) */
} plane;

/* Separable area (box-coverage) resampling weights for one axis: output pixel i
 * covers input interval [i / s, (i + 1) / s) (corner coordinates), s <= 1. */
typedef struct {
    int *start, *count; /* (n_out) first input index and number of taps */
    float *weight;      /* (n_out, taps) */
    int taps;
} area_axis;

static void area_axis_free(area_axis *a)
{
    free(a->start);
    free(a->count);
    free(a->weight);
}

static pe_status area_axis_make(int n_in, int n_out, double s, area_axis *a)
{
    a->taps = (int)ceil(1.0 / s) + 2;
    a->start = pe_alloc((size_t)n_out, sizeof(int), "align: area weights");
    a->count = pe_alloc((size_t)n_out, sizeof(int), "align: area weights");
    a->weight = pe_alloc((size_t)n_out * (size_t)a->taps, sizeof(float), "align: area weights");
    if (!a->start || !a->count || !a->weight) {
        area_axis_free(a);
        return PE_ERR_NOMEM;
    }
    for (int i = 0; i < n_out; i++) {
        double lo = i / s, hi = (i + 1) / s;
        if (hi > n_in) hi = n_in;
        int j0 = (int)floor(lo), n = 0;
        double total = 0;
        for (int j = j0; j < n_in && j < hi && n < a->taps; j++, n++) {
            double cover = PE_MIN((double)j + 1, hi) - PE_MAX((double)j, lo);
            a->weight[(size_t)i * a->taps + n] = (float)cover;
            total += cover;
        }
        for (int k = 0; k < n; k++) a->weight[(size_t)i * a->taps + k] /= (float)total;
        a->start[i] = j0;
        a->count[i] = n;
    }
    return PE_OK;
}

/* RGB (h, w, 3) -> luminance (ITU-R 601) in [0, 1], area-downscaled by s (s <= 1)
 * into out (floor(w s), floor(h s)). tmp holds (h, out->w) floats. */
static pe_status gray_downscale(const pe_image *img, double s, plane *out, float *full, float *tmp)
{
    const int w = img->width, h = img->height;
    #pragma omp parallel for schedule(static)
    for (int y = 0; y < h; y++) {
        const uint8_t *src = img->rgb + (size_t)y * w * 3;
        float *dst = full + (size_t)y * w;
        for (int x = 0; x < w; x++)
            dst[x] = (0.299f * src[3 * x] + 0.587f * src[3 * x + 1] + 0.114f * src[3 * x + 2]) *
                     (1.0f / 255.0f);
    }
    if (s >= 1.0) {
        memcpy(out->px, full, (size_t)w * h * sizeof(float));
        return PE_OK;
    }
    area_axis ax = {0}, ay = {0};
    pe_status st = area_axis_make(w, out->w, s, &ax);
    if (st == PE_OK) st = area_axis_make(h, out->h, s, &ay);
    if (st != PE_OK) {
        area_axis_free(&ax);
        area_axis_free(&ay);
        return st;
    }
    const int ow = out->w, oh = out->h;
    #pragma omp parallel for schedule(static)
    for (int y = 0; y < h; y++) { /* horizontal pass: (h, w) -> (h, ow) */
        const float *src = full + (size_t)y * w;
        float *dst = tmp + (size_t)y * ow;
        for (int x = 0; x < ow; x++) {
            const float *wt = ax.weight + (size_t)x * ax.taps;
            const float *in = src + ax.start[x];
            float acc = 0;
            for (int k = 0; k < ax.count[x]; k++) acc += wt[k] * in[k];
            dst[x] = acc;
        }
    }
    #pragma omp parallel for schedule(static)
    for (int y = 0; y < oh; y++) { /* vertical pass: (h, ow) -> (oh, ow) */
        float *dst = out->px + (size_t)y * ow;
        for (int x = 0; x < ow; x++) dst[x] = 0;
        const float *wt = ay.weight + (size_t)y * ay.taps;
        for (int k = 0; k < ay.count[y]; k++) {
            const float *src = tmp + (size_t)(ay.start[y] + k) * ow;
            for (int x = 0; x < ow; x++) dst[x] += wt[k] * src[x];
        }
    }
    area_axis_free(&ax);
    area_axis_free(&ay);
    return PE_OK;
}

/* Separable Gaussian blur (3 sigma support), replicate border, in -> out (may alias);
 * tmp: w*h floats. Each row is copied into a padded buffer so that both passes are
 * plain multiply-adds over contiguous floats (vectorised with omp simd). */
static void gauss_blur(const float *in, float *out, float *tmp, int w, int h, float sigma)
{
    int r = (int)ceilf(3.0f * sigma);
    float kern[64];
    if (r > 31) r = 31;
    float total = 0;
    for (int k = -r; k <= r; k++) total += kern[k + r] = expf(-(float)(k * k) / (2 * sigma * sigma));
    for (int k = 0; k <= 2 * r; k++) kern[k] /= total;
    #pragma omp parallel
    {
        float *pad = malloc((size_t)(w + 2 * r) * sizeof(float)); /* (w + 2r) one row */
        #pragma omp for schedule(static)
        for (int y = 0; y < h; y++) {
            if (!pad) continue; /* (only on out-of-memory; the caller's result is then unblurred) */
            const float *src = in + (size_t)y * w;
            float *restrict dst = tmp + (size_t)y * w;
            for (int k = 0; k < r; k++) pad[k] = src[0], pad[w + r + k] = src[w - 1];
            memcpy(pad + r, src, (size_t)w * sizeof(float));
            for (int x = 0; x < w; x++) dst[x] = 0;
            for (int k = 0; k <= 2 * r; k++) {
                const float c = kern[k];
                const float *restrict p = pad + k;
                #pragma omp simd
                for (int x = 0; x < w; x++) dst[x] += c * p[x];
            }
        }
        #pragma omp for schedule(static)
        for (int y = 0; y < h; y++) {
            float *restrict dst = out + (size_t)y * w;
            for (int x = 0; x < w; x++) dst[x] = 0;
            for (int k = -r; k <= r; k++) {
                const float *restrict src = tmp + (size_t)PE_MIN(PE_MAX(y + k, 0), h - 1) * w;
                const float c = kern[k + r];
                #pragma omp simd
                for (int x = 0; x < w; x++) dst[x] += c * src[x];
            }
        }
        free(pad);
    }
}

/* ------------------------------------------------------------------ keypoints */

typedef struct {
    float x, y;  /* working-frame position */
    float angle; /* dominant gradient orientation, radians */
    int corner;  /* index of the corner (a corner may carry two orientations) */
} keypoint;

typedef struct {
    int count;
    keypoint *kp; /* (count) */
    float *desc;  /* (count, DESC_DIM), unit norm (or zero for a flat patch) */
} feature_set;

static void feature_set_free(feature_set *f)
{
    free(f->kp);
    free(f->desc);
    memset(f, 0, sizeof *f);
}

typedef struct {
    float response, x, y;
} corner;

static int corner_cmp(const void *a, const void *b)
{
    const corner *ca = a, *cb = b;
    if (ca->response != cb->response) return ca->response < cb->response ? 1 : -1;
    if (ca->y != cb->y) return ca->y < cb->y ? -1 : 1; /* ties: raster order, deterministic */
    return ca->x < cb->x ? -1 : (ca->x > cb->x);
}

/* Bilinear sample of a plane at (x, y), coordinates clamped into the plane. */
static inline float sample(const float *px, int w, int h, float x, float y)
{
    x = x < 0 ? 0 : (x > w - 1 ? (float)(w - 1) : x);
    y = y < 0 ? 0 : (y > h - 1 ? (float)(h - 1) : y);
    int x0 = PE_MIN((int)x, w - 2 < 0 ? 0 : w - 2), y0 = PE_MIN((int)y, h - 2 < 0 ? 0 : h - 2);
    int x1 = PE_MIN(x0 + 1, w - 1), y1 = PE_MIN(y0 + 1, h - 1);
    float fx = x - x0, fy = y - y0;
    const float *r0 = px + (size_t)y0 * w, *r1 = px + (size_t)y1 * w;
    return (1 - fy) * ((1 - fx) * r0[x0] + fx * r0[x1]) + fy * ((1 - fx) * r1[x0] + fx * r1[x1]);
}

/* Dominant orientations at (cx, cy) from a Gaussian-weighted 36-bin histogram of
 * gradient angles; writes up to 2 (the peak and any other peak >= 80% of it). */
#define ORI_SIDE (2 * ORI_RADIUS + 1)
static int orientations(const float *gx, const float *gy, int w, int cx, int cy,
                        const float *window /* (ORI_SIDE, ORI_SIDE) Gaussian, 0 outside */,
                        float out[2])
{
    float hist[ORI_BINS] = {0}, smooth[ORI_BINS];
    for (int dy = -ORI_RADIUS; dy <= ORI_RADIUS; dy++) {
        const float *wrow = window + (dy + ORI_RADIUS) * ORI_SIDE + ORI_RADIUS;
        for (int dx = -ORI_RADIUS; dx <= ORI_RADIUS; dx++) {
            if (wrow[dx] == 0) continue;
            size_t i = (size_t)(cy + dy) * w + (cx + dx);
            float mag = sqrtf(gx[i] * gx[i] + gy[i] * gy[i]);
            float bin = angle_2pi(gy[i], gx[i]) * (ORI_BINS / (2 * (float)PI));
            int b0 = (int)bin;
            float f = bin - b0;
            float wgt = mag * wrow[dx];
            hist[b0 % ORI_BINS] += (1 - f) * wgt;
            hist[(b0 + 1) % ORI_BINS] += f * wgt;
        }
    }
    for (int pass = 0; pass < 2; pass++) { /* circular [1 2 1]/4 smoothing, twice */
        for (int b = 0; b < ORI_BINS; b++)
            smooth[b] = 0.25f * hist[(b + ORI_BINS - 1) % ORI_BINS] + 0.5f * hist[b] +
                        0.25f * hist[(b + 1) % ORI_BINS];
        memcpy(hist, smooth, sizeof hist);
    }
    float peak = 0;
    for (int b = 0; b < ORI_BINS; b++) peak = fmaxf(peak, hist[b]);
    if (!(peak > 0)) return 0;
    int n = 0;
    float best[2] = {0, 0};
    for (int b = 0; b < ORI_BINS; b++) {
        float l = hist[(b + ORI_BINS - 1) % ORI_BINS], c = hist[b], r = hist[(b + 1) % ORI_BINS];
        if (!(c > l && c >= r && c >= 0.8f * peak)) continue;
        float off = 0.5f * (l - r) / (l - 2 * c + r); /* parabolic peak, in (-0.5, 0.5] */
        float a = (b + 0.5f + off) * (2 * (float)PI / ORI_BINS);
        /* keep the two strongest peaks, strongest first */
        if (n < 2) {
            out[n] = a;
            best[n] = c;
            n++;
        } else if (c > best[1]) {
            out[1] = a;
            best[1] = c;
        }
        if (n == 2 && best[1] > best[0]) {
            float t = out[0];
            out[0] = out[1];
            out[1] = t;
            t = best[0];
            best[0] = best[1];
            best[1] = t;
        }
    }
    return n;
}

/* The 128-float descriptor of a keypoint: 16 x 16 samples of the gradient taken on a
 * grid rotated by the keypoint's angle, gradients expressed in that rotated frame,
 * Gaussian-weighted and trilinearly binned into 4 x 4 cells x 8 orientations; then
 * L2-normalised, clipped at 0.2 and normalised again (robust to lighting changes). */
static void describe(const float *gx, const float *gy, int w, int h, const keypoint *k,
                     const float *window /* (16, 16) Gaussian, sigma = half the patch */,
                     float *desc)
{
    const float c = cosf(k->angle), s = sinf(k->angle);
    memset(desc, 0, DESC_DIM * sizeof(float));
    for (int i = 0; i < DESC_SAMPLES; i++) {
        float v = (i - 0.5f * (DESC_SAMPLES - 1)) * DESC_SPACING; /* keypoint frame, down */
        for (int j = 0; j < DESC_SAMPLES; j++) {
            float u = (j - 0.5f * (DESC_SAMPLES - 1)) * DESC_SPACING;
            float x = k->x + c * u - s * v, y = k->y + s * u + c * v;
            float ix = sample(gx, w, h, x, y), iy = sample(gy, w, h, x, y);
            float ru = c * ix + s * iy, rv = -s * ix + c * iy; /* R(-angle) g */
            float mag = sqrtf(ru * ru + rv * rv) * window[i * DESC_SAMPLES + j];
            if (mag == 0) continue;
            float ob = angle_2pi(rv, ru) * (8 / (2 * (float)PI));
            float cx = (j + 0.5f) / 4 - 0.5f, cy = (i + 0.5f) / 4 - 0.5f; /* cell coordinates */
            int x0 = (int)floorf(cx), y0 = (int)floorf(cy), o0 = (int)ob;
            float fx = cx - x0, fy = cy - y0, fo = ob - o0;
            for (int dy = 0; dy < 2; dy++) {
                int yy = y0 + dy;
                if (yy < 0 || yy > 3) continue;
                float wy = dy ? fy : 1 - fy;
                for (int dx = 0; dx < 2; dx++) {
                    int xx = x0 + dx;
                    if (xx < 0 || xx > 3) continue;
                    float wxy = wy * (dx ? fx : 1 - fx) * mag;
                    float *cell = desc + (yy * 4 + xx) * 8;
                    cell[o0 % 8] += wxy * (1 - fo);
                    cell[(o0 + 1) % 8] += wxy * fo;
                }
            }
        }
    }
    for (int pass = 0; pass < 2; pass++) {
        float n2 = 0;
        for (int d = 0; d < DESC_DIM; d++) n2 += desc[d] * desc[d];
        if (!(n2 > 1e-20f)) return; /* flat patch: zero descriptor, matches nothing */
        float inv = 1.0f / sqrtf(n2);
        for (int d = 0; d < DESC_DIM; d++) {
            desc[d] *= inv;
            if (pass == 0 && desc[d] > 0.2f) desc[d] = 0.2f;
        }
    }
}

/* Keypoints + descriptors of one image at working scale s (s <= 1). */
static pe_status detect_and_describe(const pe_image *img, double s, const pe_align_params *p,
                                     feature_set *out)
{
    memset(out, 0, sizeof *out);
    const int w = s < 1.0 ? (int)floor(img->width * s) : img->width;
    const int h = s < 1.0 ? (int)floor(img->height * s) : img->height;
    const size_t full_n = (size_t)img->width * img->height, n = (size_t)w * h;
    if (w < 2 * BORDER + 3 || h < 2 * BORDER + 3) return PE_OK; /* too small: no keypoints */

    /* scratch: full-size luminance + row-pass buffer, then 7 working planes */
    float *full = pe_alloc(full_n + (size_t)img->height * w, sizeof(float), "align: luminance");
    float *work = pe_alloc(7 * n, sizeof(float), "align: working planes");
    corner *cand = NULL;
    pe_status st = PE_ERR_NOMEM;
    if (!full || !work) goto done;
    plane gray = {w, h, work};
    float *gx = work + n, *gy = work + 2 * n, *ixx = work + 3 * n, *iyy = work + 4 * n,
          *ixy = work + 5 * n, *tmp = work + 6 * n;
    st = gray_downscale(img, s, &gray, full, full + full_n);
    if (st != PE_OK) goto done;
    gauss_blur(gray.px, gray.px, tmp, w, h, BLUR_SIGMA);

    /* central-difference gradients and structure-tensor products */
    #pragma omp parallel for schedule(static)
    for (int y = 0; y < h; y++) {
        const float *row = gray.px + (size_t)y * w;
        const float *up = gray.px + (size_t)PE_MAX(y - 1, 0) * w;
        const float *dn = gray.px + (size_t)PE_MIN(y + 1, h - 1) * w;
        for (int x = 0; x < w; x++) {
            float dx = 0.5f * (row[PE_MIN(x + 1, w - 1)] - row[PE_MAX(x - 1, 0)]);
            float dy = 0.5f * (dn[x] - up[x]);
            size_t i = (size_t)y * w + x;
            gx[i] = dx;
            gy[i] = dy;
            ixx[i] = dx * dx;
            iyy[i] = dy * dy;
            ixy[i] = dx * dy;
        }
    }
    gauss_blur(ixx, ixx, tmp, w, h, HARRIS_SIGMA);
    gauss_blur(iyy, iyy, tmp, w, h, HARRIS_SIGMA);
    gauss_blur(ixy, ixy, tmp, w, h, HARRIS_SIGMA);
    float *resp = ixx; /* Harris response det - k tr^2, written over Ixx */
    float rmax = 0;
    #pragma omp parallel for schedule(static) reduction(max : rmax)
    for (size_t i = 0; i < n; i++) {
        float a = ixx[i], b = iyy[i], c = ixy[i];
        float r = a * b - c * c - HARRIS_K * (a + b) * (a + b);
        resp[i] = r;
        rmax = r > rmax ? r : rmax;
    }
    const float thresh = fmaxf(HARRIS_ABS, HARRIS_REL * rmax);

    /* strict 3x3 local maxima above the threshold, away from the border */
    size_t ncand = 0, cap = 1024;
    cand = pe_alloc(cap, sizeof(corner), "align: corners");
    if (!cand) goto done;
    for (int y = BORDER; y < h - BORDER; y++) {
        for (int x = BORDER; x < w - BORDER; x++) {
            const float *r = resp + (size_t)y * w + x;
            float c = r[0];
            if (!(c > thresh)) continue;
            if (!(c > r[-1] && c >= r[1] && c > r[-w - 1] && c > r[-w] && c > r[-w + 1] &&
                  c >= r[w - 1] && c >= r[w] && c >= r[w + 1]))
                continue;
            if (ncand == cap) {
                corner *grown = realloc(cand, 2 * cap * sizeof(corner));
                if (!grown) {
                    st = pe_fail(PE_ERR_NOMEM, "align: out of memory for corners");
                    goto done;
                }
                cand = grown;
                cap *= 2;
            }
            /* sub-pixel position: parabola through the response along x and along y */
            float dxx = r[-1] - 2 * c + r[1], dyy = r[-w] - 2 * c + r[w];
            float ox = dxx < 0 ? 0.5f * (r[-1] - r[1]) / dxx : 0;
            float oy = dyy < 0 ? 0.5f * (r[-w] - r[w]) / dyy : 0;
            cand[ncand].response = c;
            cand[ncand].x = x + fminf(fmaxf(ox, -0.5f), 0.5f);
            cand[ncand].y = y + fminf(fmaxf(oy, -0.5f), 0.5f);
            ncand++;
        }
    }
    qsort(cand, ncand, sizeof(corner), corner_cmp);

    /* strongest first, at most cell_cap per grid cell so that matches cover the image */
    int cell_cap = PE_MAX(4, (2 * p->max_keypoints + GRID_CELLS * GRID_CELLS - 1) /
                                 (GRID_CELLS * GRID_CELLS));
    int cell_used[GRID_CELLS * GRID_CELLS] = {0};
    size_t kept = 0;
    for (size_t i = 0; i < ncand && kept < (size_t)p->max_keypoints; i++) {
        int cx = PE_MIN((int)(cand[i].x * GRID_CELLS / w), GRID_CELLS - 1);
        int cy = PE_MIN((int)(cand[i].y * GRID_CELLS / h), GRID_CELLS - 1);
        if (cell_used[cy * GRID_CELLS + cx] >= cell_cap) continue;
        cell_used[cy * GRID_CELLS + cx]++;
        cand[kept++] = cand[i];
    }

    /* Gaussian windows of the orientation histogram and of the descriptor */
    float ori_window[ORI_SIDE * ORI_SIDE], desc_window[DESC_SAMPLES * DESC_SAMPLES];
    for (int dy = -ORI_RADIUS; dy <= ORI_RADIUS; dy++)
        for (int dx = -ORI_RADIUS; dx <= ORI_RADIUS; dx++) {
            int r2 = dx * dx + dy * dy;
            ori_window[(dy + ORI_RADIUS) * ORI_SIDE + dx + ORI_RADIUS] =
                r2 > ORI_RADIUS * ORI_RADIUS ? 0 : expf(-r2 / (2 * ORI_SIGMA * ORI_SIGMA));
        }
    const float half = 0.5f * DESC_SAMPLES * DESC_SPACING; /* 10 px */
    for (int i = 0; i < DESC_SAMPLES; i++)
        for (int j = 0; j < DESC_SAMPLES; j++) {
            float v = (i - 0.5f * (DESC_SAMPLES - 1)) * DESC_SPACING;
            float u = (j - 0.5f * (DESC_SAMPLES - 1)) * DESC_SPACING;
            desc_window[i * DESC_SAMPLES + j] = expf(-(u * u + v * v) / (2 * half * half));
        }

    out->kp = pe_alloc(2 * kept + 1, sizeof(keypoint), "align: keypoints");
    if (!out->kp) goto done;
    int count = 0;
    for (size_t i = 0; i < kept; i++) {
        float ang[2];
        int m = orientations(gx, gy, w, (int)lrintf(cand[i].x), (int)lrintf(cand[i].y), ori_window,
                             ang);
        for (int k = 0; k < m; k++)
            out->kp[count++] = (keypoint){cand[i].x, cand[i].y, ang[k], (int)i};
    }
    out->count = count;
    out->desc = pe_alloc((size_t)count * DESC_DIM + 1, sizeof(float), "align: descriptors");
    if (!out->desc) goto done;
    #pragma omp parallel for schedule(dynamic, 16)
    for (int i = 0; i < count; i++)
        describe(gx, gy, w, h, &out->kp[i], desc_window, out->desc + (size_t)i * DESC_DIM);
    st = PE_OK;
done:
    free(full);
    free(work);
    free(cand);
    if (st != PE_OK) feature_set_free(out);
    return st;
}

/* ------------------------------------------------------------------ matching */

typedef struct {
    float rx, ry, qx, qy; /* working-frame positions in reference and query */
    float dangle;         /* query orientation - reference orientation, radians */
    int rc, qc;           /* corner ids (for removing duplicate pairs) */
} match;

static int match_cmp(const void *a, const void *b)
{
    const match *ma = a, *mb = b;
    if (ma->rc != mb->rc) return ma->rc < mb->rc ? -1 : 1;
    return ma->qc < mb->qc ? -1 : (ma->qc > mb->qc);
}

/* Mutual nearest neighbours that pass the ratio test. Similarities S = Dr Dq^T come
 * from sgemm in tiles of MATCH_TILE reference rows (MATCH_TILE, Nq), so the scratch
 * stays bounded whatever max_keypoints is; for unit vectors distance^2 = 2 - 2 S. */
#define MATCH_TILE 256
static pe_status match_features(const feature_set *r, const feature_set *q, match **out, int *nout)
{
    *out = NULL;
    *nout = 0;
    const int nr = r->count, nq = q->count;
    if (nr < 2 || nq < 2) return PE_OK;
    float *sim = pe_alloc((size_t)PE_MIN(nr, MATCH_TILE) * nq, sizeof(float), "align: similarity tile");
    int *row_best = pe_alloc((size_t)nr, sizeof(int), "align: matches");
    int *col_best = pe_alloc((size_t)nq, sizeof(int), "align: matches");
    float *col_sim = pe_alloc((size_t)nq, sizeof(float), "align: matches");
    match *m = pe_alloc((size_t)nr, sizeof(match), "align: matches");
    if (!sim || !row_best || !col_best || !col_sim || !m) {
        free(sim), free(row_best), free(col_best), free(col_sim), free(m);
        return PE_ERR_NOMEM;
    }
    for (int j = 0; j < nq; j++) col_sim[j] = -2, col_best[j] = -1;
    for (int i0 = 0; i0 < nr; i0 += MATCH_TILE) {
        const int rows = PE_MIN(MATCH_TILE, nr - i0);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, nq, DESC_DIM, 1.0f,
                    r->desc + (size_t)i0 * DESC_DIM, DESC_DIM, q->desc, DESC_DIM, 0.0f, sim, nq);
        /* per reference descriptor: best and second best query descriptor (ratio test) */
        #pragma omp parallel for schedule(static)
        for (int i = 0; i < rows; i++) {
            const float *row = sim + (size_t)i * nq;
            float s1 = -2, s2 = -2;
            int j1 = -1;
            for (int j = 0; j < nq; j++) {
                float v = row[j];
                if (v > s1) {
                    s2 = s1;
                    s1 = v;
                    j1 = j;
                } else if (v > s2) {
                    s2 = v;
                }
            }
            float d1 = sqrtf(s1 < 1 ? 2 - 2 * s1 : 0), d2 = sqrtf(s2 < 1 ? 2 - 2 * s2 : 0);
            row_best[i0 + i] = (s1 > 0 && d1 < RATIO * d2) ? j1 : -1;
        }
        for (int i = 0; i < rows; i++) { /* row-major pass: best reference for every query */
            const float *row = sim + (size_t)i * nq;
            for (int j = 0; j < nq; j++)
                if (row[j] > col_sim[j]) col_sim[j] = row[j], col_best[j] = i0 + i;
        }
    }
    int n = 0;
    for (int i = 0; i < nr; i++) {
        int j = row_best[i];
        if (j < 0 || col_best[j] != i) continue; /* cross-check */
        const keypoint *a = &r->kp[i], *b = &q->kp[j];
        m[n++] = (match){a->x, a->y, b->x, b->y, b->angle - a->angle, a->corner, b->corner};
    }
    /* one match per (reference corner, query corner) pair */
    qsort(m, (size_t)n, sizeof(match), match_cmp);
    int u = 0;
    for (int i = 0; i < n; i++)
        if (u == 0 || m[i].rc != m[u - 1].rc || m[i].qc != m[u - 1].qc) m[u++] = m[i];
    free(sim), free(row_best), free(col_best), free(col_sim);
    *out = m;
    *nout = u;
    return PE_OK;
}

/* ------------------------------------------------------------------ robust fit */

static double wrap_angle(double a) /* into (-pi, pi] */
{
    a = fmod(a, 2 * PI);
    if (a > PI) a -= 2 * PI;
    if (a <= -PI) a += 2 * PI;
    return a;
}

typedef struct {
    double angle, tx, ty; /* q = R(angle) r + t */
} rigid;

static int count_inliers(const match *m, int n, const rigid *t, double tol2, unsigned char *flag,
                         double *err_sum)
{
    const double c = cos(t->angle), s = sin(t->angle);
    int count = 0;
    double sum = 0;
    for (int i = 0; i < n; i++) {
        double ex = c * m[i].rx - s * m[i].ry + t->tx - m[i].qx;
        double ey = s * m[i].rx + c * m[i].ry + t->ty - m[i].qy;
        double e2 = ex * ex + ey * ey;
        int in = e2 < tol2;
        if (flag) flag[i] = (unsigned char)in;
        if (in) count++, sum += e2;
    }
    if (err_sum) *err_sum = sum;
    return count;
}

/* Closed-form least-squares rotation + translation (2D Procrustes, no scale) of the
 * flagged matches: angle = atan2(sum cross(r', q'), sum dot(r', q')) of centred points. */
static void procrustes(const match *m, int n, const unsigned char *flag, rigid *t)
{
    double rcx = 0, rcy = 0, qcx = 0, qcy = 0;
    int k = 0;
    for (int i = 0; i < n; i++)
        if (flag[i]) rcx += m[i].rx, rcy += m[i].ry, qcx += m[i].qx, qcy += m[i].qy, k++;
    if (k < 2) return;
    rcx /= k, rcy /= k, qcx /= k, qcy /= k;
    double dot = 0, cross = 0;
    for (int i = 0; i < n; i++) {
        if (!flag[i]) continue;
        double ax = m[i].rx - rcx, ay = m[i].ry - rcy, bx = m[i].qx - qcx, by = m[i].qy - qcy;
        dot += ax * bx + ay * by;
        cross += ax * by - ay * bx;
    }
    t->angle = atan2(cross, dot);
    double c = cos(t->angle), s = sin(t->angle);
    t->tx = qcx - (c * rcx - s * rcy);
    t->ty = qcy - (s * rcx + c * rcy);
}

/* RANSAC over 2-match hypotheses + iterated Procrustes refit. Returns the inlier count. */
static int fit_rigid(const match *m, int n, const pe_align_params *p, rigid *best,
                     unsigned char *flag)
{
    const double tol = p->ransac_tol_px, tol2 = tol * tol;
    const double ori_tol = ORI_AGREE_DEG * PI / 180;
    uint64_t rng = p->seed;
    int best_count = 0;
    double best_err = 0;
    long needed = p->ransac_iters;
    for (long it = 0; it < needed && it < p->ransac_iters; it++) {
        int i = (int)(pe_splitmix64(&rng) % (uint64_t)n), j = (int)(pe_splitmix64(&rng) % (uint64_t)n);
        if (i == j) continue;
        double vrx = m[j].rx - m[i].rx, vry = m[j].ry - m[i].ry;
        double vqx = m[j].qx - m[i].qx, vqy = m[j].qy - m[i].qy;
        double lr = hypot(vrx, vry), lq = hypot(vqx, vqy);
        if (lr < MIN_PAIR_DIST || fabs(lq - lr) > 2 * tol) continue; /* rigid: no scale */
        rigid t;
        t.angle = atan2(vrx * vqy - vry * vqx, vrx * vqx + vry * vqy);
        if (fabs(wrap_angle(m[i].dangle - t.angle)) > ori_tol ||
            fabs(wrap_angle(m[j].dangle - t.angle)) > ori_tol)
            continue;
        double c = cos(t.angle), s = sin(t.angle);
        double mrx = 0.5 * (m[i].rx + m[j].rx), mry = 0.5 * (m[i].ry + m[j].ry);
        t.tx = 0.5 * (m[i].qx + m[j].qx) - (c * mrx - s * mry);
        t.ty = 0.5 * (m[i].qy + m[j].qy) - (s * mrx + c * mry);
        double err;
        int count = count_inliers(m, n, &t, tol2, NULL, &err);
        if (count > best_count || (count == best_count && count > 0 && err < best_err)) {
            best_count = count;
            best_err = err;
            *best = t;
            /* adaptive stop: enough iterations to draw an all-inlier pair with p = 0.999 */
            double w = (double)count / n;
            if (w > 0.999) needed = it + 1;
            else {
                double need = log(0.001) / log(1 - w * w);
                if (need < needed) needed = PE_MAX((long)ceil(need), 64L);
            }
        }
    }
    if (best_count < 2) return 0;
    /* least-squares refit on the inliers, re-selecting them each round, until the set
     * is stable. A refit may drop a few borderline matches; it is kept unless it loses
     * a fifth of the support (then the hypothesis itself was poor and stays). */
    int count = count_inliers(m, n, best, tol2, flag, NULL);
    const int floor_count = count - count / 5;
    for (int round = 0; round < 10; round++) {
        rigid t = *best;
        procrustes(m, n, flag, &t);
        int c2 = count_inliers(m, n, &t, tol2, NULL, NULL);
        if (c2 < floor_count || c2 < 2) return count;
        *best = t;
        int before = count;
        count = count_inliers(m, n, best, tol2, flag, NULL);
        if (count == before && round > 0) break;
    }
    /* the returned transform is the least-squares fit of exactly the flagged set (the
     * flags may have changed in the last round) */
    procrustes(m, n, flag, best);
    return count;
}

/* ------------------------------------------------------------------ public */

static pe_status check_image(const pe_image *img, const char *what)
{
    if (!img || !img->rgb || img->width <= 0 || img->height <= 0)
        return pe_fail(PE_ERR_ARG, "align: %s image is empty", what);
    if (img->width > PE_MAX_IMAGE_SIDE || img->height > PE_MAX_IMAGE_SIDE ||
        (uint64_t)img->width * (uint64_t)img->height > PE_MAX_IMAGE_PIXELS)
        return pe_fail(PE_ERR_LIMIT, "align: %s image %dx%d exceeds the image size limit", what,
                       img->width, img->height);
    return PE_OK;
}

pe_status pe_align_estimate(const pe_image *reference, const pe_image *query,
                            const pe_align_params *params, pe_rigid *out)
{
    if (!out) return pe_fail(PE_ERR_ARG, "align: output transform is NULL");
    memset(out, 0, sizeof *out);
    pe_status st = check_image(reference, "reference");
    if (st == PE_OK) st = check_image(query, "query");
    if (st != PE_OK) return st;
    pe_align_params p = params ? *params : pe_align_default_params();
    if (p.max_keypoints < 2 || p.max_keypoints > MAX_KEYPOINTS_LIMIT || p.min_inliers < 2 ||
        p.ransac_iters < 1 || !(p.ransac_tol_px > 0) || !isfinite(p.ransac_tol_px) ||
        p.work_size < 2 * BORDER + 3)
        return pe_fail(PE_ERR_ARG,
                       "align: bad parameters (max_keypoints %d, min_inliers %d, ransac_iters %d, "
                       "ransac_tol_px %g, work_size %d)",
                       p.max_keypoints, p.min_inliers, p.ransac_iters, (double)p.ransac_tol_px,
                       p.work_size);

    /* one scale for both images, so that a rigid motion stays rigid at working size */
    int longest = PE_MAX(PE_MAX(reference->width, reference->height),
                         PE_MAX(query->width, query->height));
    double s = longest > p.work_size ? (double)p.work_size / longest : 1.0;

    feature_set fr = {0}, fq = {0};
    match *m = NULL;
    unsigned char *flag = NULL;
    int nm = 0;
    st = detect_and_describe(reference, s, &p, &fr);
    if (st == PE_OK) st = detect_and_describe(query, s, &p, &fq);
    if (st == PE_OK) st = match_features(&fr, &fq, &m, &nm);
    if (st == PE_OK && nm >= 2) {
        flag = pe_alloc((size_t)nm, sizeof(unsigned char), "align: inlier flags");
        if (!flag) st = PE_ERR_NOMEM;
    }
    if (st == PE_OK && nm >= 2) {
        rigid t = {0, 0, 0};
        int inliers = fit_rigid(m, nm, &p, &t, flag);
        /* the inliers must also spread out, or the angle is not determined */
        double spread = 0;
        if (inliers >= 2) {
            double cx = 0, cy = 0;
            for (int i = 0; i < nm; i++)
                if (flag[i]) cx += m[i].rx, cy += m[i].ry;
            cx /= inliers, cy /= inliers;
            for (int i = 0; i < nm; i++)
                if (flag[i]) spread += (m[i].rx - cx) * (m[i].rx - cx) + (m[i].ry - cy) * (m[i].ry - cy);
            spread = sqrt(spread / inliers);
        }
        /* working frame -> input frame: x_w = (x_in + 0.5) s - 0.5 (pixel centres), so
         * q_in = R r_in + t_in with t_in = R c - c + (t_w + c - R c) / s, c = (0.5, 0.5) */
        double c = cos(t.angle), sn = sin(t.angle);
        double rcx = 0.5 * c - 0.5 * sn, rcy = 0.5 * sn + 0.5 * c;
        out->angle_deg = wrap_angle(t.angle) * 180 / PI;
        out->tx = rcx - 0.5 + (t.tx + 0.5 - rcx) / s;
        out->ty = rcy - 0.5 + (t.ty + 0.5 - rcy) / s;
        out->inliers = inliers;
        out->ok = inliers >= p.min_inliers && spread >= 2 * MIN_PAIR_DIST;
    }
    if (!out->ok) { /* failed: report the identity so that careless callers stay safe */
        out->angle_deg = out->tx = out->ty = 0;
    }
    free(flag);
    free(m);
    feature_set_free(&fr);
    feature_set_free(&fq);
    return st;
}

pe_status pe_align_warp(const pe_image *reference, const pe_rigid *transform, int out_w, int out_h,
                        pe_image *out)
{
    if (!out) return pe_fail(PE_ERR_ARG, "align: output image is NULL");
    memset(out, 0, sizeof *out);
    pe_status st = check_image(reference, "reference");
    if (st != PE_OK) return st;
    if (!transform) return pe_fail(PE_ERR_ARG, "align: transform is NULL");
    if (!isfinite(transform->angle_deg) || !isfinite(transform->tx) || !isfinite(transform->ty))
        return pe_fail(PE_ERR_ARG, "align: transform is not finite");
    if (out_w <= 0 || out_h <= 0) return pe_fail(PE_ERR_ARG, "align: bad output size %dx%d", out_w, out_h);
    if (out_w > PE_MAX_IMAGE_SIDE || out_h > PE_MAX_IMAGE_SIDE ||
        (uint64_t)out_w * (uint64_t)out_h > PE_MAX_IMAGE_PIXELS)
        return pe_fail(PE_ERR_LIMIT, "align: output %dx%d exceeds the image size limit", out_w, out_h);
    uint8_t *dst = pe_alloc((size_t)out_w * out_h * 3, 1, "align: warped image");
    if (!dst) return PE_ERR_NOMEM;

    /* inverse map: r = R^T (q - t), evaluated incrementally along each row */
    const double a = transform->angle_deg * PI / 180, c = cos(a), s = sin(a);
    const int w = reference->width, h = reference->height;
    const uint8_t *src = reference->rgb;
    #pragma omp parallel for schedule(static)
    for (int y = 0; y < out_h; y++) {
        double qy = y - transform->ty;
        uint8_t *row = dst + (size_t)y * out_w * 3;
        for (int x = 0; x < out_w; x++) {
            double qx = x - transform->tx;
            double rx = c * qx + s * qy, ry = -s * qx + c * qy;
            /* replicate border: clamp the source point into the image */
            rx = rx < 0 ? 0 : (rx > w - 1 ? w - 1 : rx);
            ry = ry < 0 ? 0 : (ry > h - 1 ? h - 1 : ry);
            int x0 = (int)rx, y0 = (int)ry;
            int x1 = PE_MIN(x0 + 1, w - 1), y1 = PE_MIN(y0 + 1, h - 1);
            float fx = (float)(rx - x0), fy = (float)(ry - y0);
            const uint8_t *p00 = src + ((size_t)y0 * w + x0) * 3, *p01 = src + ((size_t)y0 * w + x1) * 3;
            const uint8_t *p10 = src + ((size_t)y1 * w + x0) * 3, *p11 = src + ((size_t)y1 * w + x1) * 3;
            for (int ch = 0; ch < 3; ch++) {
                float top = p00[ch] + fx * (p01[ch] - p00[ch]);
                float bot = p10[ch] + fx * (p11[ch] - p10[ch]);
                float v = top + fy * (bot - top);
                row[3 * x + ch] = (uint8_t)(v + 0.5f); /* v in [0, 255]: round half up */
            }
        }
    }
    out->width = out_w;
    out->height = out_h;
    out->rgb = dst;
    return PE_OK;
}

pe_status pe_image_rotate180(const pe_image *src, pe_image *out)
{
    if (!out) return pe_fail(PE_ERR_ARG, "rotate180: output image is NULL");
    memset(out, 0, sizeof *out);
    if (!src || !src->rgb || src->width <= 0 || src->height <= 0)
        return pe_fail(PE_ERR_ARG, "rotate180: image is empty");
    const int w = src->width, h = src->height;
    uint8_t *dst = pe_alloc((size_t)w * h * 3, 1, "rotate180: image");
    if (!dst) return PE_ERR_NOMEM;
    #pragma omp parallel for schedule(static)
    for (int y = 0; y < h; y++) {
        const uint8_t *in = src->rgb + (size_t)(h - 1 - y) * w * 3;
        uint8_t *row = dst + (size_t)y * w * 3;
        for (int x = 0; x < w; x++) memcpy(row + 3 * x, in + 3 * (size_t)(w - 1 - x), 3);
    }
    out->width = w;
    out->height = h;
    out->rgb = dst;
    return PE_OK;
}
