/* ref_views.c — rotated and mirrored copies of a reference image (docs/BEYOND.md).
 * Their features are extracted once at fit time and stored in the bank as extra views
 * of the same reference, so a query turned relative to the references still finds
 * its patches. Multiples of 90 degrees on a square image are exact pixel permutations;
 * other angles use alignment's warp (bilinear, replicated border). */
#include "beyond.h"

#include <math.h>
#include <string.h>

pe_status pe_image_mirror(const pe_image *src, pe_image *out)
{
    memset(out, 0, sizeof *out);
    if (!src || !src->rgb || src->width <= 0 || src->height <= 0)
        return pe_fail(PE_ERR_ARG, "mirror: image is empty");
    const int w = src->width, h = src->height;
    uint8_t *dst = pe_alloc((size_t)w * h * 3, 1, "mirrored image");
    if (!dst) return PE_ERR_NOMEM;
    for (int y = 0; y < h; y++) {
        const uint8_t *in = src->rgb + (size_t)y * w * 3;
        uint8_t *row = dst + (size_t)y * w * 3;
        for (int x = 0; x < w; x++) memcpy(row + 3 * x, in + 3 * (size_t)(w - 1 - x), 3);
    }
    out->width = w;
    out->height = h;
    out->rgb = dst;
    return PE_OK;
}

/* Quarter turns (clockwise on screen) of a square image: exact. */
static pe_status rotate_quarter(const pe_image *src, int quarters, pe_image *out)
{
    const int n = src->width;
    uint8_t *dst = pe_alloc((size_t)n * n * 3, 1, "rotated image");
    if (!dst) return PE_ERR_NOMEM;
    for (int y = 0; y < n; y++)
        for (int x = 0; x < n; x++) {
            int sx, sy; /* source pixel of destination (x, y) */
            switch (quarters & 3) {
            case 0: sx = x; sy = y; break;
            case 1: sx = y; sy = n - 1 - x; break;
            case 2: sx = n - 1 - x; sy = n - 1 - y; break;
            default: sx = n - 1 - y; sy = x; break;
            }
            memcpy(dst + 3 * ((size_t)y * n + x), src->rgb + 3 * ((size_t)sy * n + sx), 3);
        }
    out->width = out->height = n;
    out->rgb = dst;
    return PE_OK;
}

static pe_status rotate(const pe_image *src, double degrees, pe_image *out)
{
    memset(out, 0, sizeof *out);
    double quarters = degrees / 90.0;
    if (src->width == src->height && quarters == floor(quarters))
        return rotate_quarter(src, (int)quarters, out);
    /* about the centre: q = R (r - c) + c, i.e. t = c - R c */
    double a = degrees * M_PI / 180.0, cx = (src->width - 1) / 2.0, cy = (src->height - 1) / 2.0;
    pe_rigid t = {degrees, cx - (cos(a) * cx - sin(a) * cy), cy - (sin(a) * cx + cos(a) * cy), 0, 1};
    return pe_align_warp(src, &t, src->width, src->height, out);
}

pe_status pe_reference_views(const pe_image *reference, int rotations, int flips, pe_image *out)
{
    if (!reference || !reference->rgb || reference->width <= 0 || reference->height <= 0)
        return pe_fail(PE_ERR_ARG, "reference views: image is empty");
    if (rotations < 1 || rotations > 360)
        return pe_fail(PE_ERR_ARG, "reference views: rotations must be 1..360, got %d", rotations);
    const int mirrors = flips ? 2 : 1;
    pe_status s = PE_OK;
    int made = 0;
    for (int m = 0; m < mirrors && !s; m++) {
        pe_image base = {0};
        if (m) s = pe_image_mirror(reference, &base);
        for (int r = 0; r < rotations && !s; r++, made++)
            s = rotate(m ? &base : reference, 360.0 * r / rotations, &out[made]);
        pe_image_free(&base);
    }
    if (s)
        for (int i = 0; i < made; i++) pe_image_free(&out[i]);
    return s;
}
