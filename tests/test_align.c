/* test_align.c — PatchEAD+ alignment: transform recovery on synthetic scenes with a
 * known rigid motion, clean fallback on flat / unrelated images, determinism, the
 * warp against PyTorch's grid_sample (tests/fixtures/align, tools/make_align_fixtures.py),
 * rotate180, and argument errors. Optionally a real tire image from $PATCHEAD_DATA.
 *
 * The scenes are drawn analytically: a scene is a list of shapes in a world plane;
 * a reference pixel (x, y) shows world point (x, y), and a query pixel q shows world
 * point R^T (q - t). So the query is rendered directly, never produced by the warp
 * under test. */
#include "core/internal.h"
#include "testlib.h"

#include <time.h>
#include <unistd.h>

static const double PI = 3.14159265358979323846;

/* ------------------------------------------------------------------ scenes */

enum { DISC, RECT, SEGMENT, TRIANGLE };
typedef struct {
    int kind;
    double cx, cy, a, b, ca, sa; /* centre, half sizes / radius, cos / sin of the rotation */
    double x[3], y[3];          /* triangle / segment vertices */
    uint8_t color[3];
    double x0, y0, x1, y1; /* bounding box */
} shape;

#define CELL 32
typedef struct {
    int nshapes;
    shape *shapes;
    double wx0, wy0; /* world origin of the grid */
    int gw, gh;
    int *cell_start, *cell_items; /* shapes overlapping each cell, drawing order kept */
} scene;

static uint64_t rng_state;
static double urand(void) /* [0, 1) */
{
    rng_state = rng_state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (double)(rng_state >> 11) / 9007199254740992.0;
}

/* A random scene covering world [wx0, wx0 + ww) x [wy0, wy0 + wh). */
static void scene_make(scene *s, uint64_t seed, double wx0, double wy0, double ww, double wh)
{
    rng_state = seed;
    s->nshapes = (int)(ww * wh / 1500);
    s->shapes = calloc((size_t)s->nshapes, sizeof(shape));
    for (int i = 0; i < s->nshapes; i++) {
        shape *p = &s->shapes[i];
        p->kind = (int)(urand() * 4);
        p->cx = wx0 + urand() * ww;
        p->cy = wy0 + urand() * wh;
        p->a = 4 + urand() * 18;
        p->b = 3 + urand() * 12;
        double angle = urand() * 2 * PI;
        p->ca = cos(angle), p->sa = sin(angle);
        for (int k = 0; k < 3; k++) {
            p->x[k] = p->cx + (urand() - 0.5) * 50;
            p->y[k] = p->cy + (urand() - 0.5) * 50;
            p->color[k] = (uint8_t)(urand() * 256);
        }
        double r = p->kind == DISC ? p->a : (p->kind == RECT ? hypot(p->a, p->b) : 0);
        if (p->kind == DISC || p->kind == RECT) {
            p->x0 = p->cx - r, p->x1 = p->cx + r, p->y0 = p->cy - r, p->y1 = p->cy + r;
        } else {
            int nv = p->kind == SEGMENT ? 2 : 3;
            double pad = p->kind == SEGMENT ? 3 : 0;
            p->x0 = p->x1 = p->x[0], p->y0 = p->y1 = p->y[0];
            for (int k = 1; k < nv; k++) {
                p->x0 = fmin(p->x0, p->x[k]), p->x1 = fmax(p->x1, p->x[k]);
                p->y0 = fmin(p->y0, p->y[k]), p->y1 = fmax(p->y1, p->y[k]);
            }
            p->x0 -= pad, p->y0 -= pad, p->x1 += pad, p->y1 += pad;
        }
    }
    /* bucket the shapes into CELL x CELL cells (two passes: count, fill) */
    s->wx0 = wx0, s->wy0 = wy0;
    s->gw = (int)(ww / CELL) + 1, s->gh = (int)(wh / CELL) + 1;
    int ncell = s->gw * s->gh;
    s->cell_start = calloc((size_t)ncell + 1, sizeof(int));
    for (int pass = 0; pass < 2; pass++) {
        int *fill = pass ? calloc((size_t)ncell, sizeof(int)) : NULL;
        for (int i = 0; i < s->nshapes; i++) {
            shape *p = &s->shapes[i];
            int cx0 = (int)floor((p->x0 - wx0) / CELL), cx1 = (int)floor((p->x1 - wx0) / CELL);
            int cy0 = (int)floor((p->y0 - wy0) / CELL), cy1 = (int)floor((p->y1 - wy0) / CELL);
            for (int cy = cy0 < 0 ? 0 : cy0; cy <= cy1 && cy < s->gh; cy++)
                for (int cx = cx0 < 0 ? 0 : cx0; cx <= cx1 && cx < s->gw; cx++) {
                    int c = cy * s->gw + cx;
                    if (pass == 0) s->cell_start[c + 1]++;
                    else s->cell_items[s->cell_start[c] + fill[c]++] = i;
                }
        }
        if (pass == 0) {
            for (int c = 0; c < ncell; c++) s->cell_start[c + 1] += s->cell_start[c];
            s->cell_items = calloc((size_t)s->cell_start[ncell] + 1, sizeof(int));
        }
        free(fill);
    }
}

static void scene_free(scene *s)
{
    free(s->shapes);
    free(s->cell_start);
    free(s->cell_items);
}

static int inside(const shape *p, double x, double y)
{
    if (x < p->x0 || x > p->x1 || y < p->y0 || y > p->y1) return 0;
    switch (p->kind) {
    case DISC: return (x - p->cx) * (x - p->cx) + (y - p->cy) * (y - p->cy) <= p->a * p->a;
    case RECT: {
        double c = p->ca, s = p->sa, dx = x - p->cx, dy = y - p->cy;
        return fabs(c * dx + s * dy) <= p->a && fabs(-s * dx + c * dy) <= p->b;
    }
    case SEGMENT: {
        double vx = p->x[1] - p->x[0], vy = p->y[1] - p->y[0], wx = x - p->x[0], wy = y - p->y[0];
        double t = (vx * wx + vy * wy) / (vx * vx + vy * vy + 1e-12);
        t = t < 0 ? 0 : (t > 1 ? 1 : t);
        return hypot(wx - t * vx, wy - t * vy) <= 2.5;
    }
    default: {
        double d[3];
        for (int k = 0; k < 3; k++) {
            int n = (k + 1) % 3;
            d[k] = (p->x[n] - p->x[k]) * (y - p->y[k]) - (p->y[n] - p->y[k]) * (x - p->x[k]);
        }
        return (d[0] >= 0 && d[1] >= 0 && d[2] >= 0) || (d[0] <= 0 && d[1] <= 0 && d[2] <= 0);
    }
    }
}

/* Colour of world point (x, y): the last shape containing it, else a smooth background. */
static void scene_color(const scene *s, double x, double y, double rgb[3])
{
    int cx = (int)floor((x - s->wx0) / CELL), cy = (int)floor((y - s->wy0) / CELL);
    if (cx >= 0 && cy >= 0 && cx < s->gw && cy < s->gh) {
        int c = cy * s->gw + cx;
        for (int k = s->cell_start[c + 1] - 1; k >= s->cell_start[c]; k--) {
            const shape *p = &s->shapes[s->cell_items[k]];
            if (inside(p, x, y)) {
                for (int ch = 0; ch < 3; ch++) rgb[ch] = p->color[ch];
                return;
            }
        }
    }
    rgb[0] = 110 + 20 * sin(x / 45.0);
    rgb[1] = 100 + 20 * cos(y / 60.0);
    rgb[2] = 120;
}

/* Render w x h pixels showing world point R(angle)^T (q - t) at pixel q (2 x 2
 * supersampling), plus deterministic noise of +-noise grey levels. */
static pe_image render(const scene *s, int w, int h, double angle_deg, double tx, double ty,
                       int noise, uint64_t noise_seed)
{
    pe_image img = {w, h, malloc((size_t)w * h * 3)};
    double a = angle_deg * PI / 180, c = cos(a), sn = sin(a);
    rng_state = noise_seed;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            double acc[3] = {0, 0, 0}, rgb[3];
            for (int sy = 0; sy < 2; sy++)
                for (int sx = 0; sx < 2; sx++) {
                    double qx = x - 0.25 + 0.5 * sx - tx, qy = y - 0.25 + 0.5 * sy - ty;
                    scene_color(s, c * qx + sn * qy, -sn * qx + c * qy, rgb);
                    for (int ch = 0; ch < 3; ch++) acc[ch] += 0.25 * rgb[ch];
                }
            for (int ch = 0; ch < 3; ch++) {
                double v = acc[ch] + (noise ? (urand() * 2 - 1) * noise : 0);
                img.rgb[((size_t)y * w + x) * 3 + ch] = (uint8_t)(v < 0 ? 0 : (v > 255 ? 255 : v + 0.5));
            }
        }
    return img;
}

/* A motion that rotates by angle about the image centre and then shifts by (sx, sy):
 * t = centre + shift - R centre. */
static void motion(int w, int h, double angle_deg, double sx, double sy, double *tx, double *ty)
{
    double a = angle_deg * PI / 180, cx = 0.5 * (w - 1), cy = 0.5 * (h - 1);
    *tx = cx + sx - (cos(a) * cx - sin(a) * cy);
    *ty = cy + sy - (sin(a) * cx + cos(a) * cy);
}

static double angle_diff(double a, double b)
{
    double d = fmod(a - b, 360.0);
    if (d > 180) d -= 360;
    if (d < -180) d += 360;
    return fabs(d);
}

/* Largest displacement between two transforms over the corners of a w x h image. */
static double corner_error(const pe_rigid *e, double angle, double tx, double ty, int w, int h)
{
    double worst = 0, ae = e->angle_deg * PI / 180, at = angle * PI / 180;
    for (int k = 0; k < 4; k++) {
        double x = (k & 1) ? w - 1 : 0, y = (k & 2) ? h - 1 : 0;
        double ex = cos(ae) * x - sin(ae) * y + e->tx, ey = sin(ae) * x + cos(ae) * y + e->ty;
        double gx = cos(at) * x - sin(at) * y + tx, gy = sin(at) * x + cos(at) * y + ty;
        worst = tl_worse(worst, hypot(ex - gx, ey - gy));
    }
    return worst;
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

/* ------------------------------------------------------------------ tests */

/* Known rotations (incl. 90 and 180 degrees) and shifts are recovered within 1 degree
 * and 1 px, and warping the reference with the estimate reproduces the query. */
static void test_recover_known_motion(void)
{
    const int w = 320, h = 256;
    scene s;
    scene_make(&s, 7, -260, -260, w + 520, h + 520);
    pe_image ref = render(&s, w, h, 0, 0, 0, 3, 1);
    const double cases[][3] = {{-30, 12.5, -7.25}, {5, -20, 15}, {90, 3, 9}, {180, -6.5, 4}, {0, 0, 0},
                               {137, 10, -10}};
    pe_align_params p = pe_align_default_params();
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        double tx, ty;
        motion(w, h, cases[i][0], cases[i][1], cases[i][2], &tx, &ty);
        pe_image query = render(&s, w, h, cases[i][0], tx, ty, 3, 100 + i);
        pe_rigid est;
        CHECK(pe_align_estimate(&ref, &query, &p, &est) == PE_OK);
        CHECK_MSG(est.ok, "angle %g: alignment failed (%d inliers)", cases[i][0], est.inliers);
        CHECK_MSG(angle_diff(est.angle_deg, cases[i][0]) < 1.0, "angle %g: got %.3f", cases[i][0],
                  est.angle_deg);
        CHECK_MSG(fabs(est.tx - tx) < 1.0 && fabs(est.ty - ty) < 1.0,
                  "angle %g: t = (%.2f, %.2f), want (%.2f, %.2f)", cases[i][0], est.tx, est.ty, tx, ty);
        double ce = corner_error(&est, cases[i][0], tx, ty, w, h);
        CHECK_MSG(ce < 1.5, "angle %g: corner error %.2f px", cases[i][0], ce);
        printf("  angle %7.2f shift (%6.2f, %6.2f): est %8.3f deg, t err (%.3f, %.3f) px, corner err "
               "%.3f px, %d inliers\n",
               cases[i][0], cases[i][1], cases[i][2], est.angle_deg, est.tx - tx, est.ty - ty, ce,
               est.inliers);

        /* warp check: inside the area that maps into the reference, the warped
         * reference equals the query up to resampling and noise */
        pe_image warped;
        CHECK(pe_align_warp(&ref, &est, w, h, &warped) == PE_OK);
        double a = est.angle_deg * PI / 180, sum = 0, sum_id = 0;
        long n = 0;
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++) {
                double qx = x - est.tx, qy = y - est.ty;
                double rx = cos(a) * qx + sin(a) * qy, ry = -sin(a) * qx + cos(a) * qy;
                if (rx < 2 || ry < 2 || rx > w - 3 || ry > h - 3) continue;
                for (int ch = 0; ch < 3; ch++) {
                    size_t k = ((size_t)y * w + x) * 3 + ch;
                    sum += abs(warped.rgb[k] - query.rgb[k]);
                    sum_id += abs(ref.rgb[k] - query.rgb[k]);
                }
                n += 3;
            }
        CHECK(n > (long)w * h); /* a good part of the frame overlaps */
        double mad = sum / n, mad_id = sum_id / n;
        CHECK_MSG(mad < 8.0, "angle %g: warped mean abs diff %.2f", cases[i][0], mad);
        if (cases[i][0] != 0) CHECK_MSG(mad < 0.3 * mad_id, "angle %g: %.2f vs unaligned %.2f",
                                        cases[i][0], mad, mad_id);
        pe_image_free(&warped);
        pe_image_free(&query);
    }
    pe_image_free(&ref);
    scene_free(&s);
}

/* Larger images than work_size: matching runs downscaled, the transform must come back
 * in the input pixel frame; reference and query of different sizes. */
static void test_downscaled_frames(void)
{
    scene s;
    scene_make(&s, 11, -300, -300, 800 + 600, 600 + 600);
    pe_image ref = render(&s, 800, 600, 0, 0, 0, 2, 3);
    double tx, ty;
    motion(700, 560, -17.5, 14.25, -9.5, &tx, &ty);
    pe_image query = render(&s, 700, 560, -17.5, tx, ty, 2, 4);
    pe_align_params p = pe_align_default_params();
    p.work_size = 400; /* scale 0.5 */
    pe_rigid est;
    double t0 = now_ms();
    CHECK(pe_align_estimate(&ref, &query, &p, &est) == PE_OK);
    double ms = now_ms() - t0;
    CHECK(est.ok);
    CHECK_MSG(angle_diff(est.angle_deg, -17.5) < 1.0, "angle %.3f", est.angle_deg);
    CHECK_MSG(fabs(est.tx - tx) < 1.0 && fabs(est.ty - ty) < 1.0, "t = (%.2f, %.2f), want (%.2f, %.2f)",
              est.tx, est.ty, tx, ty);
    printf("  800x600 -> 700x560 at work_size 400: angle err %.3f deg, t err (%.3f, %.3f) px, %d inliers, "
           "%.1f ms\n",
           est.angle_deg + 17.5, est.tx - tx, est.ty - ty, est.inliers, ms);
    pe_image_free(&ref);
    pe_image_free(&query);
    scene_free(&s);
}

/* Flat, nearly flat, tiny and unrelated images fall back (ok = 0, identity) without error. */
static void test_fallback(void)
{
    const int w = 256, h = 200;
    pe_image flat = {w, h, malloc((size_t)w * h * 3)};
    memset(flat.rgb, 128, (size_t)w * h * 3);
    pe_image noisy = {w, h, malloc((size_t)w * h * 3)};
    rng_state = 99;
    for (size_t i = 0; i < (size_t)w * h * 3; i++) noisy.rgb[i] = (uint8_t)(126 + (int)(urand() * 5));
    scene s1, s2;
    scene_make(&s1, 21, -100, -100, w + 200, h + 200);
    scene_make(&s2, 22, -100, -100, w + 200, h + 200);
    pe_image a = render(&s1, w, h, 0, 0, 0, 0, 0), b = render(&s2, w, h, 0, 0, 0, 0, 0);
    pe_image tiny = {20, 20, malloc(20 * 20 * 3)};
    memset(tiny.rgb, 50, 20 * 20 * 3);
    const pe_image *pairs[][2] = {{&flat, &flat}, {&a, &flat}, {&flat, &a}, {&noisy, &noisy},
                                  {&a, &b},       {&b, &a},    {&tiny, &a}, {&a, &tiny}};
    for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++) {
        pe_rigid est = {1, 2, 3, 4, 5};
        CHECK_MSG(pe_align_estimate(pairs[i][0], pairs[i][1], NULL, &est) == PE_OK, "pair %zu: %s", i,
                  pe_last_error());
        CHECK_MSG(est.ok == 0, "pair %zu: ok with %d inliers, angle %.2f", i, est.inliers, est.angle_deg);
        CHECK(est.angle_deg == 0 && est.tx == 0 && est.ty == 0);
    }
    /* sanity of the fixture: the same textured image does align with itself */
    pe_rigid self;
    CHECK(pe_align_estimate(&a, &a, NULL, &self) == PE_OK && self.ok);
    CHECK(angle_diff(self.angle_deg, 0) < 0.05 && fabs(self.tx) < 0.1 && fabs(self.ty) < 0.1);
    pe_image_free(&flat);
    pe_image_free(&noisy);
    pe_image_free(&a);
    pe_image_free(&b);
    pe_image_free(&tiny);
    scene_free(&s1);
    scene_free(&s2);
}

/* Same inputs and seed -> bit-identical result, whatever the thread count. */
static void test_deterministic(void)
{
    scene s;
    scene_make(&s, 5, -150, -150, 240 + 300, 200 + 300);
    pe_image ref = render(&s, 240, 200, 0, 0, 0, 4, 5);
    pe_image query = render(&s, 240, 200, 60, 150, -60, 4, 6);
    pe_rigid r1, r2;
    int threads = pe_get_threads();
    pe_set_threads(1);
    CHECK(pe_align_estimate(&ref, &query, NULL, &r1) == PE_OK);
    pe_set_threads(2);
    CHECK(pe_align_estimate(&ref, &query, NULL, &r2) == PE_OK);
    pe_set_threads(threads);
    CHECK(r1.ok && r2.ok);
    CHECK(r1.angle_deg == r2.angle_deg && r1.tx == r2.tx && r1.ty == r2.ty && r1.inliers == r2.inliers);
    pe_image_free(&ref);
    pe_image_free(&query);
    scene_free(&s);
}

/* pe_align_warp == torch grid_sample(bilinear, border, align_corners=True), to rounding. */
static void test_warp_matches_torch(void)
{
    uint8_t *data;
    size_t size;
    if (pe_read_file(FIXTURE("align/warp_ref.bin"), &data, &size) != PE_OK) {
        CHECK_MSG(0, "%s", pe_last_error());
        return;
    }
    int32_t hdr[5];
    CHECK(size > 28 && memcmp(data, "PEWARP1", 8) == 0);
    memcpy(hdr, data + 8, sizeof hdr);
    int wi = hdr[0], hi = hdr[1], wo = hdr[2], ho = hdr[3], ncase = hdr[4];
    size_t in_n = (size_t)wi * hi * 3, out_n = (size_t)wo * ho * 3;
    CHECK(size == 28 + in_n + (size_t)ncase * (24 + out_n * 4));
    if (tl_current_failed) {
        free(data);
        return;
    }
    pe_image src = {wi, hi, data + 28};
    const uint8_t *at = data + 28 + in_n;
    for (int c = 0; c < ncase; c++, at += 24 + out_n * 4) {
        double tr[3];
        memcpy(tr, at, sizeof tr);
        const float *want = (const float *)(const void *)(at + 24);
        pe_rigid t = {tr[0], tr[1], tr[2], 0, 1};
        pe_image out;
        CHECK(pe_align_warp(&src, &t, wo, ho, &out) == PE_OK);
        double worst = 0;
        for (size_t k = 0; k < out_n; k++) {
            float v;
            memcpy(&v, want + k, sizeof v); /* fixture may be unaligned */
            worst = tl_worse(worst, fabs(out.rgb[k] - v));
        }
        CHECK_MSG(worst <= 0.51, "case %d (angle %g, t %g %g): max diff %.3f", c, tr[0], tr[1], tr[2],
                  worst);
        pe_image_free(&out);
    }
    free(data);
}

/* rotate180 by index arithmetic, and the same as a warp by 180 degrees about the centre. */
static void test_rotate180(void)
{
    const int w = 7, h = 5;
    pe_image img = {w, h, malloc(w * h * 3)};
    for (int i = 0; i < w * h * 3; i++) img.rgb[i] = (uint8_t)(i * 37 + 11);
    pe_image r, rr, warped;
    CHECK(pe_image_rotate180(&img, &r) == PE_OK);
    CHECK(r.width == w && r.height == h);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int c = 0; c < 3; c++)
                CHECK(r.rgb[(y * w + x) * 3 + c] == img.rgb[((h - 1 - y) * w + (w - 1 - x)) * 3 + c]);
    CHECK(pe_image_rotate180(&r, &rr) == PE_OK);
    CHECK(memcmp(rr.rgb, img.rgb, w * h * 3) == 0);
    pe_rigid t = {180, w - 1, h - 1, 0, 1};
    CHECK(pe_align_warp(&img, &t, w, h, &warped) == PE_OK);
    CHECK(memcmp(warped.rgb, r.rgb, w * h * 3) == 0);
    pe_image_free(&img);
    pe_image_free(&r);
    pe_image_free(&rr);
    pe_image_free(&warped);
}

static void test_errors(void)
{
    uint8_t px[3 * 4] = {0};
    pe_image ok_img = {2, 2, px}, empty = {0, 0, NULL}, no_px = {2, 2, NULL};
    pe_rigid t = {0, 0, 0, 0, 1}, bad_t = {NAN, 0, 0, 0, 1};
    pe_image out = {5, 5, (uint8_t *)1};
    CHECK(pe_align_estimate(&empty, &ok_img, NULL, &t) == PE_ERR_ARG);
    CHECK(strstr(pe_last_error(), "reference") != NULL);
    CHECK(pe_align_estimate(&ok_img, &no_px, NULL, &t) == PE_ERR_ARG);
    CHECK(strstr(pe_last_error(), "query") != NULL);
    CHECK(pe_align_estimate(&ok_img, &ok_img, NULL, NULL) == PE_ERR_ARG);
    pe_align_params p = pe_align_default_params();
    p.ransac_tol_px = -1;
    CHECK(pe_align_estimate(&ok_img, &ok_img, &p, &t) == PE_ERR_ARG);
    p = pe_align_default_params();
    p.max_keypoints = 0;
    CHECK(pe_align_estimate(&ok_img, &ok_img, &p, &t) == PE_ERR_ARG);
    CHECK(pe_align_estimate(&ok_img, &ok_img, NULL, &t) == PE_OK && t.ok == 0); /* too small */
    CHECK(pe_align_warp(&ok_img, &bad_t, 4, 4, &out) == PE_ERR_ARG && out.rgb == NULL);
    CHECK(pe_align_warp(&ok_img, NULL, 4, 4, &out) == PE_ERR_ARG);
    CHECK(pe_align_warp(&ok_img, &t, 0, 4, &out) == PE_ERR_ARG);
    CHECK(pe_align_warp(&ok_img, &t, PE_MAX_IMAGE_SIDE + 1, 4, &out) == PE_ERR_LIMIT);
    CHECK(pe_align_warp(&empty, &t, 4, 4, &out) == PE_ERR_ARG);
    CHECK(pe_image_rotate180(&empty, &out) == PE_ERR_ARG);
    CHECK(pe_image_rotate180(&ok_img, NULL) == PE_ERR_ARG);
    /* replicate border: far outside the source, every pixel is the nearest corner's */
    uint8_t quad[12] = {10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110, 120};
    pe_image q = {2, 2, quad};
    pe_rigid far = {0, 100, 100, 0, 1}; /* output (x, y) samples source (x - 100, y - 100) */
    CHECK(pe_align_warp(&q, &far, 3, 3, &out) == PE_OK);
    for (int i = 0; i < 9; i++) CHECK(memcmp(out.rgb + 3 * i, quad, 3) == 0);
    pe_image_free(&out);
}

/* A real tire image ($PATCHEAD_DATA/mvtec3d_tire), rotated by 180 degrees + shifted by
 * the warp with a known transform; its 3-D surface makes this a realistic texture. */
static void test_real_tire(void)
{
    char buf[4096];
    const char *path = test_data_path("mvtec3d_tire/train/good/t000.jpg", buf, sizeof buf);
    if (!path) {
        SKIP("PATCHEAD_DATA not set (optional MVTec data)");
        return;
    }
    pe_image tire = {0};
    CHECK_MSG(pe_image_load(path, &tire) == PE_OK, "%s", pe_last_error());
    if (!tire.rgb) return;
    const double cases[][3] = {{180, 11, -6}, {-12, -15, 8}};
    for (int i = 0; i < 2; i++) {
        double tx, ty;
        motion(tire.width, tire.height, cases[i][0], cases[i][1], cases[i][2], &tx, &ty);
        pe_rigid truth = {cases[i][0], tx, ty, 0, 1}, est;
        pe_image query;
        CHECK(pe_align_warp(&tire, &truth, tire.width, tire.height, &query) == PE_OK);
        double t0 = now_ms();
        CHECK(pe_align_estimate(&tire, &query, NULL, &est) == PE_OK);
        double ms = now_ms() - t0;
        CHECK_MSG(est.ok, "tire: no alignment (%d inliers)", est.inliers);
        CHECK_MSG(angle_diff(est.angle_deg, cases[i][0]) < 1.0, "tire: angle %.3f", est.angle_deg);
        CHECK_MSG(fabs(est.tx - tx) < 1.0 && fabs(est.ty - ty) < 1.0, "tire: t (%.2f, %.2f) want (%.2f, %.2f)",
                  est.tx, est.ty, tx, ty);
        printf("  tire %dx%d angle %g: err %.3f deg, (%.3f, %.3f) px, %d inliers, %.1f ms\n", tire.width,
               tire.height, cases[i][0], angle_diff(est.angle_deg, cases[i][0]), est.tx - tx, est.ty - ty, est.inliers,
               ms);
        pe_image_free(&query);
    }
    pe_image_free(&tire);
}

int main(void)
{
    RUN(test_recover_known_motion);
    RUN(test_downscaled_frames);
    RUN(test_fallback);
    RUN(test_deterministic);
    RUN(test_warp_matches_torch);
    RUN(test_rotate180);
    RUN(test_errors);
    RUN(test_real_tire);
    return test_summary();
}
