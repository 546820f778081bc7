/* bank.c — the reference bank and its .pead file.
 *
 * File layout, version 1 (all integers and floats little-endian):
 *   offset 0   char[8]  "PEADBANK"
 *          8   u32      version (1)
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
 *                       f32 threshold (NaN: none)
 *                       i32 num_refs M, i32 dim D
 *                       M x { i32 grid_h, i32 grid_w, str name [, i32 width, i32 height] }
 *              body:    M x f32 features (grid_h * grid_w, D)
 *                       [M x u8 RGB (height, width, 3)]      (flag bit 0)
 *   size - 8   u64      FNV-1a 64 of bytes [0, size - 8)
 * Loading verifies magic, version, size, checksum, every count against limits and
 * that the parsed layout ends exactly at the checksum.
 */
#include "bank.h"
#include "score.h"

#include <math.h>
#include <string.h>
#include <sys/stat.h>

#define BANK_MAGIC "PEADBANK"
#define BANK_VERSION 1u
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
    b->grid_h = calloc((size_t)num_refs, sizeof *b->grid_h);
    b->grid_w = calloc((size_t)num_refs, sizeof *b->grid_w);
    b->names = calloc((size_t)num_refs, sizeof *b->names);
    b->feats = calloc((size_t)num_refs, sizeof *b->feats);
    b->inv = calloc((size_t)num_refs, sizeof *b->inv);
    size_t patches = 0;
    for (int k = 0; k < num_refs; k++) patches += (size_t)grid_h[k] * grid_w[k];
    if (b->model_path && b->grid_h && b->grid_w && b->names && b->feats && b->inv) {
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
    for (int k = 0; k < b->num_refs; k++)
        pe_inv_norms(b->feats[k], b->grid_h[k] * b->grid_w[k], b->dim, b->inv[k]);
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
    free(b);
}

const pe_detect_params *pe_bank_params(const pe_bank *b) { return &b->params; }
int pe_bank_num_refs(const pe_bank *b) { return b->num_refs; }
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
    put_f32(&w, b->threshold);
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
    char tmp[4200];
    FILE *f = pe_open_temp(path, tmp, sizeof tmp);
    if (!f) {
        free(w.data);
        return PE_ERR_IO;
    }
    if (fwrite(w.data, 1, w.n, f) != w.n) {
        pe_abort_file(f, tmp);
        free(w.data);
        return pe_fail(PE_ERR_IO, "%s: write failed", path);
    }
    free(w.data);
    return pe_commit_file(f, tmp, path);
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
    float threshold = get_f32(&r);
    int m = get_i32(&r), dim = get_i32(&r);
    if (r.bad || m < 1 || m > BANK_MAX_REFS || dim < 1 || dim > BANK_MAX_DIM ||
        (unsigned)p.score.order > 1 || p.size < 0 || p.size > 4096) {
        free(model_path);
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
        if (!s && !r.bad) pe_bank_finish(b);
    }
    if (r.bad && !s) s = pe_fail(PE_ERR_FORMAT, "%s: corrupt bank layout", path);
    free(model_path);
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
