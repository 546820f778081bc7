/* ref_views.c — rotated and mirrored copies of a reference image (docs/BEYOND.md).
 * Their features are extracted once at fit time and stored in the bank as extra views
 * of the same reference, so a query turned relative to the references still finds
 * its patches. Multiples of 90 degrees on a square image are exact pixel permutations;
 * other angles use alignment's warp (bilinear, replicated border). */
#include "ref_views.h"

#include <math.h>
#include <string.h>

/* Exact pixel permutation: the view rotate(mirror ? left-right mirror of src : src) by
 * `quarters` quarter turns clockwise (on screen). Odd quarters need a square image. */
static pe_status remap(const pe_image *src, int mirror, int quarters, pe_image *out)
{
    const int w = src->width, h = src->height;
    quarters &= 3;
    uint8_t *dst = pe_alloc((size_t)w * h * 3, 1, "reference view");
    if (!dst) return PE_ERR_NOMEM;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            int sx, sy; /* source pixel of destination (x, y) */
            switch (quarters) {
            case 0:
                sx = x;
                sy = y;
                break;
            case 1:
                sx = y;
                sy = w - 1 - x;
                break;
            case 2:
                sx = w - 1 - x;
                sy = h - 1 - y;
                break;
            default:
                sx = h - 1 - y;
                sy = x;
                break;
            }
            if (mirror) sx = w - 1 - sx;
            memcpy(dst + 3 * ((size_t)y * w + x), src->rgb + 3 * ((size_t)sy * w + sx), 3);
        }
    out->width = w;
    out->height = h;
    out->rgb = dst;
    return PE_OK;
}

static pe_status rotate(const pe_image *src, int mirror, double degrees, pe_image *out)
{
    memset(out, 0, sizeof *out);
    double quarters = degrees / 90.0;
    if (quarters == floor(quarters) && (src->width == src->height || (int)quarters % 2 == 0))
        return remap(src, mirror, (int)quarters, out);
    pe_image base = {0};
    if (mirror) {
        pe_status s = remap(src, 1, 0, &base);
        if (s) return s;
        src = &base;
    }
    /* about the centre: q = R (r - c) + c, i.e. t = c - R c */
    double a = degrees * M_PI / 180.0, cx = (src->width - 1) / 2.0, cy = (src->height - 1) / 2.0;
    pe_rigid t = {degrees, cx - (cos(a) * cx - sin(a) * cy), cy - (sin(a) * cx + cos(a) * cy), 0,
                  1};
    pe_status s = pe_align_warp(src, &t, src->width, src->height, out);
    pe_image_free(&base);
    return s;
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
    for (int m = 0; m < mirrors && !s; m++)
        for (int r = 0; r < rotations && !s; r++, made++)
            s = rotate(reference, m, 360.0 * r / rotations, &out[made]);
    if (s)
        for (int i = 0; i < made; i++) pe_image_free(&out[i]);
    return s;
}
