/* bank.c — the reference bank and its .pead file.
 *
 * File layout, version 2 (all integers and floats little-endian):
 *   offset 0   char[8]  "PEADBANK"
 *          8   u32      version (2; version 1 files — no precision, no block below — still load)
 *         12   u32      flags (bit 0: reference images present)
 *         16   u64      file size in bytes, checksum included (detects truncation)
 *         24   header:  str family, str name, str weights_hash, str model_path
 *                       (str = u32 length + bytes, no NUL)
 *                       i32 size, layer, align, mask
 *                       i32 order, f32 k_fraction, i32 k_count, f32 top_fraction,
 *                       i32 top_count, i32 tile, f32 mask_threshold, f32 mask_low_weight
 *                       f32 map_sigma
 *                       i32 max_keypoints, min_inliers, ransac_iters, f32 ransac_tol_px,
 *                       i32 work_size, u64 seed
 *                       i32 precision (pe_precision FP32 / BF16 / INT8 as resolved at fit; version >= 2)
 *                       f32 threshold (NaN: none)
 *                       i32 num_refs M, i32 dim D
 *                       M x { i32 grid_h, i32 grid_w, str name [, i32 width, i32 height] }
 *              body:    M x f32 features (grid_h * grid_w, D)
 *                       [M x u8 RGB (height, width, 3)]      (flag bit 0)
 *   size - 8   u64      FNV-1a 64 of bytes [0, size - 8)
 * Version 2 (docs/BEYOND.md) inserts one block right after `f32 threshold`:
 *                       i32 rotations, flips, window, f32 coreset_fraction,
 *                       i32 coreset_count, coreset_proj, u64 coreset_seed, f32 fpr
 *                       i32 num_groups G, (G + 1) x i32 group_start
 *                       f32 calib_alpha, i32 calib_source, i32 calib_n, calib_n x f32
 *                 A version 1 file loads as: no rotations, global scoring, one group
 *                 per reference, no calibration.
 * Loading verifies magic, version, size, checksum, every count against limits and
 * that the parsed layout ends exactly at the checksum.
 */
#include "bank.h"
#include "score/score.h"

#include <math.h>
#include <string.h>
#include <sys/stat.h>

#define BANK_MAGIC "PEADBANK"
#define BANK_VERSION 2u
#define BANK_MAX_REFS 100000
#define BANK_MAX_DIM 65536
#define BANK_MAX_GRID 4096
#define BANK_MAX_STR 4096

/* ------------------------------------------------------------------ in memory */

pe_status pe_bank_alloc(int num_refs, int dim, const int *grid_h, const int *grid_w, pe_bank **out)
{
    *out = NULL;
    pe_bank *b = calloc(1, sizeof *b);
    if (!b) return pe_fail(PE_ERR_NOMEM, "bank: out of memory");
    b->num_refs = num_refs;
    b->dim = dim;
    b->threshold = NAN;
    b->model_path = strdup("");
    b->num_groups = num_refs; /* one reference view per Eq. 3 reference image */
    b->group_start = malloc((size_t)(num_refs + 1) * sizeof *b->group_start);
    if (b->group_start)
        for (int g = 0; g <= num_refs; g++) b->group_start[g] = g;
    b->grid_h = calloc((size_t)num_refs, sizeof *b->grid_h);
    b->grid_w = calloc((size_t)num_refs, sizeof *b->grid_w);
    b->names = calloc((size_t)num_refs, sizeof *b->names);
    b->feats = calloc((size_t)num_refs, sizeof *b->feats);
    b->inv = calloc((size_t)num_refs, sizeof *b->inv);
    b->cache = calloc((size_t)num_refs, sizeof *b->cache);
    size_t patches = 0;
    for (int k = 0; k < num_refs; k++) patches += (size_t)grid_h[k] * grid_w[k];
    if (b->model_path && b->grid_h && b->grid_w && b->names && b->feats && b->inv && b->cache &&
        b->group_start) {
        b->feat_data = pe_calloc(patches * (size_t)dim, sizeof(float), "bank features");
        b->inv_data = pe_alloc(patches, sizeof(float), "bank norms");
    }
    if (!b->feat_data || !b->inv_data) {
        pe_bank_free(b);
        return pe_fail(PE_ERR_NOMEM, "bank: out of memory (%d references, %zu patches of dim %d)",
                       num_refs, patches, dim);
    }
    size_t off = 0;
    for (int k = 0; k < num_refs; k++) {
        b->grid_h[k] = grid_h[k];
        b->grid_w[k] = grid_w[k];
        b->feats[k] = b->feat_data + off * dim;
        b->inv[k] = b->inv_data + off;
        off += (size_t)grid_h[k] * grid_w[k];
    }
    *out = b;
    return PE_OK;
}

void pe_bank_finish(pe_bank *b)
{
    for (int k = 0; k < b->num_refs; k++) {
        pe_inv_norms(b->feats[k], b->grid_h[k] * b->grid_w[k], b->dim, b->inv[k]);
        pe_ref_cache_clear(&b->cache[k]); /* built from the features as they were */
    }
}

void pe_bank_free(pe_bank *b)
{
    if (!b) return;
    if (b->names)
        for (int k = 0; k < b->num_refs; k++) free(b->names[k]);
    if (b->images)
        for (int k = 0; k < b->num_refs; k++) free(b->images[k].rgb);
    free(b->images);
    free(b->names);
    free(b->model_path);
    free(b->grid_h);
    free(b->grid_w);
    free(b->feats);
    free(b->feat_data);
    free(b->inv);
    free(b->inv_data);
    if (b->cache)
        for (int k = 0; k < b->num_refs; k++) pe_ref_cache_clear(&b->cache[k]);
    free(b->cache);
    free(b->group_start);
    free(b->calib_scores);
    free(b);
}

void pe_bank_set_precision(pe_bank *b, pe_precision precision)
{
    if (b) b->params.score.precision = pe_precision_resolve(precision);
}

pe_status pe_bank_set_groups(pe_bank *b, int num_groups)
{
    if (num_groups < 1 || b->num_refs % num_groups)
        return pe_fail(PE_ERR_ARG, "bank: %d reference views do not split into %d references",
                       b->num_refs, num_groups);
    int per = b->num_refs / num_groups;
    for (int g = 0; g <= num_groups; g++) b->group_start[g] = g * per;
    b->num_groups = num_groups;
    return PE_OK;
}

const pe_detect_params *pe_bank_params(const pe_bank *b) { return &b->params; }
int pe_bank_num_refs(const pe_bank *b) { return b->num_groups; }
float pe_bank_threshold(const pe_bank *b) { return b->threshold; }
void pe_bank_set_threshold(pe_bank *b, float t) { b->threshold = t; }
const char *pe_bank_hash(const pe_bank *b) { return b->file_hash; }
const char *pe_bank_model_path(const pe_bank *b) { return b->model_path ? b->model_path : ""; }

void pe_bank_set_model_path(pe_bank *b, const char *path)
{
    char *copy = strdup(path ? path : "");
    if (!copy) return;
    free(b->model_path);
    b->model_path = copy;
}

pe_status pe_bank_check_model(const pe_bank *b, pe_model *model)
{
    pe_model_info info;
    pe_status s = pe_model_get_info(model, &info);
    if (s) return s;
    if (strcmp(info.weights_hash, b->weights_hash) != 0)
        return pe_fail(PE_ERR_MISMATCH,
                       "bank was fit with %s (weights hash %s) but the model given is %s (weights "
                       "hash %s); fit a new bank or pass the original model",
                       b->name, b->weights_hash, info.name, info.weights_hash);
    if (info.feature_dim != b->dim)
        return pe_fail(PE_ERR_MISMATCH, "bank has %d-dim features but %s gives %d", b->dim,
                       info.name, info.feature_dim);
    /* The grids must be the ones this backbone gives at the bank's input size (S / stride,
     * +-1 for the CNNs' padding): a bank whose size field was altered would otherwise make
     * every query run at up to 4096 x 4096 against features of another resolution. */
    const int size = b->params.size > 0 ? b->params.size : info.default_size;
    const int expect = info.patch_size > 0 ? size / info.patch_size : 0;
    /* (a coreset bank's entries are 1 x N chunks of one union of patches: no grid to check) */
    const int coreset = b->params.coreset_fraction > 0 || b->params.coreset_count > 0;
    for (int k = 0; k < b->num_refs && expect > 0 && !coreset; k++)
        if (abs(b->grid_h[k] - expect) > 1 || abs(b->grid_w[k] - expect) > 1)
            return pe_fail(PE_ERR_FORMAT,
                           "bank input size %d gives %dx%d patches with %s but reference %d holds "
                           "%dx%d (corrupt bank)", size, expect, expect, info.name, k + 1,
                           b->grid_h[k], b->grid_w[k]);
    return PE_OK;
}

/* ------------------------------------------------------------------ writing */

typedef struct {
    uint8_t *data;
    size_t n, cap;
    int failed;
} wbuf;

static void put(wbuf *w, const void *p, size_t n)
{
    if (w->failed) return;
    if (w->n + n > w->cap) {
        size_t cap = w->cap ? w->cap : 4096;
        while (cap < w->n + n) cap *= 2;
        uint8_t *d = realloc(w->data, cap);
        if (!d) {
            w->failed = 1;
            return;
        }
        w->data = d;
        w->cap = cap;
    }
    memcpy(w->data + w->n, p, n);
    w->n += n;
}

static void put_u32(wbuf *w, uint32_t v)
{
    uint8_t b[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    put(w, b, 4);
}
static void put_u64(wbuf *w, uint64_t v)
{
    put_u32(w, (uint32_t)v);
    put_u32(w, (uint32_t)(v >> 32));
}
static void put_i32(wbuf *w, int v) { put_u32(w, (uint32_t)v); }
static void put_f32(wbuf *w, float v)
{
    uint32_t u;
    memcpy(&u, &v, 4);
    put_u32(w, u);
}
static void put_str(wbuf *w, const char *s)
{
    size_t n = s ? strlen(s) : 0;
    put_u32(w, (uint32_t)n);
    put(w, s, n);
}

/* Version 2 block (see the layout at the top). */
static void put_beyond(wbuf *w, const pe_bank *b)
{
    const pe_detect_params *p = &b->params;
    put_i32(w, p->rotations);
    put_i32(w, p->flips);
    put_i32(w, p->window);
    put_f32(w, p->coreset_fraction);
    put_i32(w, p->coreset_count);
    put_i32(w, p->coreset_proj);
    put_u64(w, p->coreset_seed);
    put_f32(w, p->fpr);
    put_i32(w, b->num_groups);
    for (int g = 0; g <= b->num_groups; g++) put_i32(w, b->group_start[g]);
    put_f32(w, b->calib_alpha);
    put_i32(w, b->calib_source);
    put_i32(w, b->calib_n);
    for (int i = 0; i < b->calib_n; i++) put_f32(w, b->calib_scores[i]);
}

pe_status pe_bank_save(const pe_bank *b, const char *path)
{
    if (!b || !path) return pe_fail(PE_ERR_ARG, "pe_bank_save: NULL argument");
    const pe_detect_params *p = &b->params;
    const int has_images = b->images != NULL;
    wbuf w = {0};
    put(&w, BANK_MAGIC, 8);
    put_u32(&w, BANK_VERSION);
    put_u32(&w, has_images ? 1u : 0u);
    put_u64(&w, 0); /* file size, patched below */
    put_str(&w, b->family);
    put_str(&w, b->name);
    put_str(&w, b->weights_hash);
    put_str(&w, b->model_path);
    put_i32(&w, p->size);
    put_i32(&w, p->layer);
    put_i32(&w, p->align);
    put_i32(&w, p->mask);
    put_i32(&w, (int)p->score.order);
    put_f32(&w, p->score.k_fraction);
    put_i32(&w, p->score.k_count);
    put_f32(&w, p->score.top_fraction);
    put_i32(&w, p->score.top_count);
    put_i32(&w, p->score.tile);
    put_f32(&w, p->score.mask_threshold);
    put_f32(&w, p->score.mask_low_weight);
    put_f32(&w, p->map_sigma);
    put_i32(&w, p->align_params.max_keypoints);
    put_i32(&w, p->align_params.min_inliers);
    put_i32(&w, p->align_params.ransac_iters);
    put_f32(&w, p->align_params.ransac_tol_px);
    put_i32(&w, p->align_params.work_size);
    put_u64(&w, p->align_params.seed);
    put_i32(&w, (int)p->score.precision);
    put_f32(&w, b->threshold);
    put_beyond(&w, b);
    put_i32(&w, b->num_refs);
    put_i32(&w, b->dim);
    for (int k = 0; k < b->num_refs; k++) {
        put_i32(&w, b->grid_h[k]);
        put_i32(&w, b->grid_w[k]);
        put_str(&w, b->names[k]);
        if (has_images) {
            put_i32(&w, b->images[k].width);
            put_i32(&w, b->images[k].height);
        }
    }
    for (int k = 0; k < b->num_refs; k++) {
        size_t n = (size_t)b->grid_h[k] * b->grid_w[k] * b->dim;
        for (size_t i = 0; i < n; i++) put_f32(&w, b->feats[k][i]);
    }
    if (has_images)
        for (int k = 0; k < b->num_refs; k++)
            put(&w, b->images[k].rgb, (size_t)b->images[k].width * b->images[k].height * 3);
    uint64_t total = w.n + 8;
    if (!w.failed)
        for (int i = 0; i < 8; i++) w.data[16 + i] = (uint8_t)(total >> (8 * i));
    put_u64(&w, w.failed ? 0 : pe_fnv1a(PE_FNV_SEED, w.data, w.n));
    if (w.failed) {
        free(w.data);
        return pe_fail(PE_ERR_NOMEM, "%s: out of memory building the bank file", path);
    }
    pe_status s = pe_atomic_write(path, w.data, w.n);
    free(w.data);
    return s;
}

/* ------------------------------------------------------------------ reading */

typedef struct {
    const uint8_t *data;
    size_t n, pos;
    int bad;
} rbuf;

static const uint8_t *take(rbuf *r, size_t n)
{
    if (r->bad || n > r->n - r->pos) {
        r->bad = 1;
        return NULL;
    }
    const uint8_t *p = r->data + r->pos;
    r->pos += n;
    return p;
}
static uint32_t get_u32(rbuf *r)
{
    const uint8_t *p = take(r, 4);
    return p ? (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24
             : 0;
}
static uint64_t get_u64(rbuf *r)
{
    uint64_t lo = get_u32(r);
    return lo | (uint64_t)get_u32(r) << 32;
}
static int get_i32(rbuf *r) { return (int)(int32_t)get_u32(r); }
static float get_f32(rbuf *r)
{
    uint32_t u = get_u32(r);
    float v;
    memcpy(&v, &u, 4);
    return v;
}
/* Copy a string into dst (cap bytes) or, with dst NULL, return a malloc'd copy. */
static char *get_str(rbuf *r, char *dst, size_t cap)
{
    uint32_t n = get_u32(r);
    if (n > BANK_MAX_STR || (dst && n >= cap)) {
        r->bad = 1;
        return NULL;
    }
    const uint8_t *p = take(r, n);
    if (!p) return NULL;
    char *out = dst ? dst : malloc(n + 1);
    if (!out) {
        r->bad = 1;
        return NULL;
    }
    memcpy(out, p, n);
    out[n] = 0;
    if (memchr(out, 0, n)) r->bad = 1;
    return out;
}

/* The version 2 block, read before the bank exists (validated against it later). */
typedef struct {
    int num_groups, *group_start; /* NULL: one group per entry (version 1) */
    float calib_alpha;
    int calib_source, calib_n;
    float *calib_scores;
} beyond_block;

static void get_beyond(rbuf *r, pe_detect_params *p, beyond_block *x)
{
    p->rotations = get_i32(r);
    p->flips = get_i32(r);
    p->window = get_i32(r);
    p->coreset_fraction = get_f32(r);
    p->coreset_count = get_i32(r);
    p->coreset_proj = get_i32(r);
    p->coreset_seed = get_u64(r);
    p->fpr = get_f32(r);
    x->num_groups = get_i32(r);
    if (r->bad || x->num_groups < 1 || x->num_groups > BANK_MAX_REFS || p->rotations < 1 ||
        p->rotations > 360 || (unsigned)p->flips > 1 || p->window < -1 || !(p->fpr >= 0 && p->fpr < 1)) {
        r->bad = 1;
        return;
    }
    x->group_start = malloc((size_t)(x->num_groups + 1) * sizeof *x->group_start);
    if (!x->group_start) {
        r->bad = 1;
        return;
    }
    for (int g = 0; g <= x->num_groups; g++) x->group_start[g] = get_i32(r);
    x->calib_alpha = get_f32(r);
    x->calib_source = get_i32(r);
    x->calib_n = get_i32(r);
    if (r->bad || !(x->calib_alpha >= 0 && x->calib_alpha < 1) || x->calib_source < PE_CALIB_NONE ||
        x->calib_source > PE_CALIB_IMAGES || x->calib_n < 0 ||
        (size_t)x->calib_n > (r->n - r->pos) / 4) {
        r->bad = 1;
        return;
    }
    x->calib_scores = malloc((size_t)(x->calib_n ? x->calib_n : 1) * sizeof *x->calib_scores);
    if (!x->calib_scores) {
        r->bad = 1;
        return;
    }
    for (int i = 0; i < x->calib_n; i++) {
        x->calib_scores[i] = get_f32(r);
        if (isnan(x->calib_scores[i]) || (i && x->calib_scores[i] < x->calib_scores[i - 1])) r->bad = 1;
    }
}

/* Move the block into the bank once its entries are known: groups must tile [0, M). */
static int adopt_beyond(pe_bank *b, beyond_block *x)
{
    if (x->group_start) {
        if (x->group_start[0] != 0 || x->group_start[x->num_groups] != b->num_refs) return -1;
        for (int g = 0; g < x->num_groups; g++)
            if (x->group_start[g + 1] <= x->group_start[g]) return -1;
        free(b->group_start);
        b->group_start = x->group_start;
        b->num_groups = x->num_groups;
        x->group_start = NULL;
    }
    b->calib_alpha = x->calib_alpha;
    b->calib_source = x->calib_source;
    b->calib_n = x->calib_n;
    b->calib_scores = x->calib_scores;
    x->calib_scores = NULL;
    return 0;
}

pe_status pe_bank_load(const char *path, pe_model *model, pe_bank **out)
{
    *out = NULL;
    struct stat st;
    if (stat(path, &st) == 0 && !S_ISREG(st.st_mode))
        return pe_fail(PE_ERR_IO, "%s: not a regular file (a bank is a .pead file)", path);
    uint8_t *data;
    size_t size;
    pe_status s = pe_read_file(path, &data, &size);
    if (s) return s;
    pe_bank *b = NULL;
    if (size < 8 || memcmp(data, BANK_MAGIC, 8) != 0) {
        s = pe_fail(PE_ERR_FORMAT, "%s: not a patchead bank (.pead) file", path);
        goto done;
    }
    if (size < 32) {
        s = pe_fail(PE_ERR_FORMAT, "%s: truncated bank file (%zu bytes)", path, size);
        goto done;
    }
    rbuf r = {data, size, 8, 0};
    uint32_t version = get_u32(&r), flags = get_u32(&r);
    uint64_t total = get_u64(&r);
    if (version > BANK_VERSION) {
        s = pe_fail(PE_ERR_UNSUPPORTED,
                    "%s: bank made by a newer patchead (file version %u, this build reads up to %u)",
                    path, version, BANK_VERSION);
        goto done;
    }
    if (version == 0 || flags > 1) {
        s = pe_fail(PE_ERR_FORMAT, "%s: corrupt bank header (version %u, flags %u)", path, version,
                    flags);
        goto done;
    }
    if (total != size) {
        s = pe_fail(PE_ERR_FORMAT, "%s: %s bank file (%zu bytes, header says %llu)", path,
                    size < total ? "truncated" : "oversized", size, (unsigned long long)total);
        goto done;
    }
    uint64_t stored = 0;
    for (int i = 0; i < 8; i++) stored |= (uint64_t)data[size - 8 + i] << (8 * i);
    if (pe_fnv1a(PE_FNV_SEED, data, size - 8) != stored) {
        s = pe_fail(PE_ERR_FORMAT, "%s: bank checksum mismatch (file corrupt)", path);
        goto done;
    }
    r.n = size - 8; /* parse up to the checksum */

    char family[32], name[64], hash[17];
    get_str(&r, family, sizeof family);
    get_str(&r, name, sizeof name);
    get_str(&r, hash, sizeof hash);
    char *model_path = get_str(&r, NULL, 0);
    pe_detect_params p;
    memset(&p, 0, sizeof p);
    p.size = get_i32(&r);
    p.layer = get_i32(&r);
    p.align = get_i32(&r);
    p.mask = get_i32(&r);
    p.score.order = (pe_order)get_i32(&r);
    p.score.k_fraction = get_f32(&r);
    p.score.k_count = get_i32(&r);
    p.score.top_fraction = get_f32(&r);
    p.score.top_count = get_i32(&r);
    p.score.tile = get_i32(&r);
    p.score.mask_threshold = get_f32(&r);
    p.score.mask_low_weight = get_f32(&r);
    p.map_sigma = get_f32(&r);
    p.align_params.max_keypoints = get_i32(&r);
    p.align_params.min_inliers = get_i32(&r);
    p.align_params.ransac_iters = get_i32(&r);
    p.align_params.ransac_tol_px = get_f32(&r);
    p.align_params.work_size = get_i32(&r);
    p.align_params.seed = get_u64(&r);
    p.score.precision = version >= 2 ? (pe_precision)get_i32(&r) : PE_PRECISION_FP32;
    float threshold = get_f32(&r);
    beyond_block beyond = {0};
    p.rotations = 1; /* version 1: the paper's method */
    p.window = -1;
    if (version >= 2) get_beyond(&r, &p, &beyond);
    int m = get_i32(&r), dim = get_i32(&r);
    if (r.bad || m < 1 || m > BANK_MAX_REFS || dim < 1 || dim > BANK_MAX_DIM ||
        (unsigned)p.score.order > 1 || p.size < 0 || p.size > 4096 ||
        ((unsigned)p.score.precision > (unsigned)PE_PRECISION_INT8 ||
         p.score.precision == PE_PRECISION_AUTO)) {
        free(model_path);
        free(beyond.group_start);
        free(beyond.calib_scores);
        s = pe_fail(PE_ERR_FORMAT, "%s: corrupt bank header", path);
        goto done;
    }
    int *gh = calloc((size_t)m, sizeof *gh), *gw = calloc((size_t)m, sizeof *gw);
    int *iw = calloc((size_t)m, sizeof *iw), *ih = calloc((size_t)m, sizeof *ih);
    char **names = calloc((size_t)m, sizeof *names);
    if (!gh || !gw || !iw || !ih || !names) r.bad = 1;
    for (int k = 0; k < m && !r.bad; k++) {
        gh[k] = get_i32(&r);
        gw[k] = get_i32(&r);
        names[k] = get_str(&r, NULL, 0);
        if (flags & 1) {
            iw[k] = get_i32(&r);
            ih[k] = get_i32(&r);
            if (iw[k] < 1 || ih[k] < 1 || iw[k] > 4096 || ih[k] > 4096) r.bad = 1;
        }
        if (gh[k] < 1 || gw[k] < 1 || gh[k] > BANK_MAX_GRID || gw[k] > BANK_MAX_GRID) r.bad = 1;
    }
    /* The body must be exactly the features (+ images) the header describes. */
    if (!r.bad) {
        size_t need = 0;
        for (int k = 0; k < m; k++) {
            need += (size_t)gh[k] * gw[k] * dim * 4;
            if (flags & 1) need += (size_t)iw[k] * ih[k] * 3;
        }
        if (need != r.n - r.pos) r.bad = 1;
    }
    if (!r.bad) s = pe_bank_alloc(m, dim, gh, gw, &b);
    if (!r.bad && !s) {
        b->params = p;
        memcpy(b->family, family, sizeof family);
        memcpy(b->name, name, sizeof name);
        memcpy(b->weights_hash, hash, sizeof hash);
        free(b->model_path);
        b->model_path = model_path;
        model_path = NULL;
        b->threshold = threshold;
        snprintf(b->file_hash, sizeof b->file_hash, "%016llx", (unsigned long long)stored);
        for (int k = 0; k < m; k++) {
            b->names[k] = names[k];
            names[k] = NULL;
            size_t n = (size_t)gh[k] * gw[k] * dim;
            for (size_t i = 0; i < n; i++) b->feats[k][i] = get_f32(&r);
        }
        if (flags & 1) {
            b->images = calloc((size_t)m, sizeof *b->images);
            if (!b->images) s = pe_fail(PE_ERR_NOMEM, "%s: out of memory", path);
            for (int k = 0; k < m && !s; k++) {
                size_t n = (size_t)iw[k] * ih[k] * 3;
                b->images[k].width = iw[k];
                b->images[k].height = ih[k];
                b->images[k].rgb = malloc(n);
                if (!b->images[k].rgb) {
                    s = pe_fail(PE_ERR_NOMEM, "%s: out of memory", path);
                    break;
                }
                memcpy(b->images[k].rgb, take(&r, n), n);
            }
        }
        if (!s && (r.bad || r.pos != r.n)) r.bad = 1;
        if (!s && !r.bad && adopt_beyond(b, &beyond)) r.bad = 1;
        if (!s && !r.bad) pe_bank_finish(b);
    }
    if (r.bad && !s) s = pe_fail(PE_ERR_FORMAT, "%s: corrupt bank layout", path);
    free(model_path);
    free(beyond.group_start);
    free(beyond.calib_scores);
    for (int k = 0; names && k < m; k++) free(names[k]);
    free(names);
    free(gh);
    free(gw);
    free(iw);
    free(ih);
    if (!s && b->params.align && !b->images)
        s = pe_fail(PE_ERR_FORMAT, "%s: bank says align but holds no reference images", path);
    if (!s && model) {
        s = pe_bank_check_model(b, model);
        if (s) {
            char msg[1024];
            snprintf(msg, sizeof msg, "%s", pe_last_error());
            s = pe_fail(s, "%s: %s", path, msg);
        }
    }
done:
    free(data);
    if (s) {
        pe_bank_free(b);
        return s;
    }
    *out = b;
    return PE_OK;
}
