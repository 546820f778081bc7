/* posenc.h — position encodings of the ViT families beyond learned absolute tables:
 * 2-D axial rotary embeddings (RoPE) on queries/keys, and BEiT's relative position
 * bias added to the attention logits. Used by vit.c; each rule is written to match
 * its reference implementation bit-for-bit in structure (checked by make parity and
 * tests/test_vit.c), see docs/BACKBONES.md for the per-family parameters. */
#ifndef PE_POSENC_H
#define PE_POSENC_H

/* How the patch grid becomes two coordinates per patch (row i of gh, column j of gw). */
typedef enum {
    ROPE_NONE = 0,
    ROPE_CENTERED, /* DINOv3: c = 2 * (i + 0.5) / n - 1 in [-1, 1] (transformers / timm 'dinov3') */
    ROPE_INDEX /* EVA-02, PE: c = (i + offset) [* ref / n if ref > 0] (timm RotaryEmbeddingCat) */
} rope_grid;

typedef struct {
    rope_grid grid;
    int half;     /* 1: rotate-half layout [f0..f(n-1), f0..f(n-1)] (DINOv3);
                          0: interleaved pairs [f0, f0, f1, f1, ...] (timm EVA / PE) */
    int xy;       /* 1: first coordinate channel is x (timm grid_indexing='xy', PE); 0: y first */
    float offset; /* ROPE_INDEX: added to the integer index (PE: 1) */
    int ref_h, ref_w; /* ROPE_INDEX: > 0 rescales the grid onto this reference shape (EVA style) */
    double theta;     /* base of the inverse frequencies: band k = theta^(-k / nb), nb = dh / 4 */
    double scale;     /* angle multiplier: 2*pi for DINOv3, 1 for timm 'cat' */
} rope_config;

/* Angles of a gh x gw grid for head dim dh (a multiple of 4): cos/sin of (G, dh/2)
 * angles, G = gh*gw, angle row = [c0 * band_k (k < dh/4), c1 * band_k (k < dh/4)].
 * cos_out / sin_out are (G, dh/2), caller-allocated. */
void rope_tables(const rope_config *rc, int gh, int gw, int dh, float *cos_out, float *sin_out);

/* Rotate `rows` rows of one head's vectors in place: x row r at x + r*ld, dh values,
 * with angle row r of (cos, sin) (G, dh/2). out = x*cos + rot(x)*sin, rot = rotate-half
 * ([-x2, x1]) or interleaved ([-x1, x0, -x3, x2, ...]) per rc->half. */
void rope_apply(const rope_config *rc, float *x, int ld, int rows, int dh, const float *cos_t,
                const float *sin_t);

/* BEiT relative position bias for a gh x gw grid with a CLS token first (T = 1 + gh*gw).
 * table (n0, H), n0 = (2*g0h-1)*(2*g0w-1) + 3: the learned table for the g0h x g0w
 * pretraining grid (last 3 rows: cls->token, token->cls, cls->cls).
 * relpos_table_resize: the table for the new grid, ((2gh-1)*(2gw-1) + 3, H): the spatial
 *   part resized bilinearly (align_corners=False, no antialias), the 3 CLS rows copied
 *   (transformers BeitRelativePositionBias.forward). out must hold that many rows.
 * relpos_index: (T, T) int32 row index into the resized table (generate_relative_position_index).
 * Both return 0, or -1 when out of memory. */
int relpos_table_resize(float *out, const float *table, int heads, int g0h, int g0w, int gh,
                        int gw);
void relpos_index(int *out, int gh, int gw);

/* Bilinear resize of a channels-last grid in (in_h, in_w, C) -> out (out_h, out_w, C),
 * as torch.nn.functional.interpolate(mode="bilinear", align_corners=False) with
 * antialias = 0 (plain 2-tap) or 1 (PyTorch's _upsample_bilinear2d_aa: triangle filter
 * widened by the downscale factor, weights normalised inside the image).
 * Returns 0, or -1 when out of memory. */
int op_resize_bilinear(float *out, const float *in, int channels, int in_h, int in_w, int out_h,
                       int out_w, int antialias);

#endif
