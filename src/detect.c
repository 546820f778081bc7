/* detect.c — the detection pipeline: features -> Eq. 1-4 scores -> results, with the
 * PatchEAD+ switches (alignment, attention masking), for few-shot banks and batch
 * zero-shot. See docs/SCORING.md for the rules chosen here (threshold, alignment
 * averaging, masking order). */
#include "bank.h"
#include "scale.h"
#include "score.h"

#include <math.h>
#include <string.h>

pe_detect_params pe_detect_default_params(int zeroshot)
{
    pe_detect_params p;
    memset(&p, 0, sizeof p);
    p.score = pe_score_default_params("patchead", zeroshot);
    p.size = 0;
    p.layer = 0;
    p.align = 0;
    p.mask = 0;
    p.map_sigma = 4.0f;
    p.align_params = pe_align_default_params();
    return p;
}

void pe_result_free(pe_result *r)
{
    if (!r) return;
    free(r->patch_scores);
    memset(r, 0, sizeof *r);
}

pe_status pe_result_map(const pe_result *r, int width, int height, float sigma, float *out_map)
{
    if (!r || !r->patch_scores) return pe_fail(PE_ERR_ARG, "pe_result_map: empty result");
    return pe_anomaly_map(r->patch_scores, r->grid_h, r->grid_w, width, height, sigma, out_map);
}

/* ------------------------------------------------------------------ helpers */

static pe_status check_mask_support(pe_model *model, const pe_detect_params *p)
{
    if (!p->mask || !model) return PE_OK;
    pe_model_info info;
    pe_status s = pe_model_get_info(model, &info);
    if (s) return s;
    if (!info.has_attention)
        return pe_fail(PE_ERR_UNSUPPORTED,
                       "--mask needs CLS attention, which %s (a %s) does not have; use a ViT "
                       "backbone or drop --mask",
                       info.name, info.is_vit ? "ViT without attention output" : "CNN");
    return PE_OK;
}

static pe_status resolved_size(pe_model *model, int size, int *out)
{
    pe_model_info info;
    pe_status s = pe_model_get_info(model, &info);
    if (s) return s;
    *out = size > 0 ? size : info.default_size;
    return PE_OK;
}

static pe_status extract(pe_model *model, const pe_image *img, const pe_detect_params *p,
                         int want_attn, pe_features *out)
{
    pe_extract_params e = pe_extract_default_params();
    e.size = p->size;
    e.layer = p->layer;
    e.want_attn = want_attn;
    return pe_model_extract(model, img, &e, out);
}

/* Few-shot Eq. 1-4 of one query against bank references [0, M) except `exclude`
 * (-1: none), the references given as views (feats, inv norms, patch counts).
 * patch: (Gq) out; returns the image score after masking in *image_score. */
static pe_status score_against(const pe_features *q, const float *q_inv, const float *const *feats,
                               const float *const *inv, const int *patches, int m,
                               const pe_detect_params *p, float *patch, float *image_score)
{
    int gq = q->grid_h * q->grid_w;
    pe_status s = pe_score_query_inv(q->data, q_inv, gq, feats, inv, patches, m, q->dim, &p->score,
                                     patch, NULL);
    if (s) return s;
    if (p->mask) pe_apply_attention_mask(patch, q->attn, gq, p->score.mask_threshold,
                                         p->score.mask_low_weight);
    *image_score = pe_image_score(patch, gq, &p->score);
    return PE_OK;
}

/* Views of the bank's references without `exclude`. */
typedef struct {
    const float **feats, **inv;
    int *patches;
    int m;
} ref_views;

static pe_status make_views(const pe_bank *b, int exclude, ref_views *v)
{
    v->feats = malloc((size_t)b->num_refs * sizeof *v->feats);
    v->inv = malloc((size_t)b->num_refs * sizeof *v->inv);
    v->patches = malloc((size_t)b->num_refs * sizeof *v->patches);
    v->m = 0;
    if (!v->feats || !v->inv || !v->patches) return pe_fail(PE_ERR_NOMEM, "bank: out of memory");
    for (int k = 0; k < b->num_refs; k++) {
        if (k == exclude) continue;
        v->feats[v->m] = b->feats[k];
        v->inv[v->m] = b->inv[k];
        v->patches[v->m++] = b->grid_h[k] * b->grid_w[k];
    }
    return PE_OK;
}

static void free_views(ref_views *v)
{
    free(v->feats);
    free(v->inv);
    free(v->patches);
}

/* The core of predict: query features (+ attention when masking), and with alignment
 * the S x S query image and the model. exclude: bank reference left out (LOO). */
static pe_status predict_core(const pe_bank *b, pe_model *model, const pe_features *q,
                              const pe_image *query_s, int exclude, int use_align, pe_result *out)
{
    memset(out, 0, sizeof *out);
    const pe_detect_params *p = &b->params;
    if (q->dim != b->dim)
        return pe_fail(PE_ERR_SHAPE, "query features have dim %d, the bank %d", q->dim, b->dim);
    if (p->mask && !q->attn)
        return pe_fail(PE_ERR_ARG, "bank uses --mask but the query features carry no attention");
    const int gq = q->grid_h * q->grid_w;
    ref_views v = {0};
    float *q_inv = pe_alloc((size_t)gq, sizeof(float), "query norms");
    float *patch = pe_alloc((size_t)gq, sizeof(float), "patch scores");
    pe_status s = q_inv && patch ? make_views(b, exclude, &v) : PE_ERR_NOMEM;
    if (!s && v.m == 0) s = pe_fail(PE_ERR_ARG, "bank: no reference images to score against");
    float score = 0;
    if (!s) {
        pe_inv_norms(q->data, gq, q->dim, q_inv);
        s = score_against(q, q_inv, v.feats, v.inv, v.patches, v.m, p, patch, &score);
    }
    if (!s && use_align) {
        /* PatchEAD+ alignment: score against the references aligned onto the query and
         * their 180-degree rotations too; average the three patch maps and image scores. */
        pe_features *warped = calloc((size_t)2 * v.m, sizeof *warped);
        float *extra = pe_alloc((size_t)gq, sizeof(float), "patch scores");
        const float **wf = malloc((size_t)v.m * sizeof *wf), **wi = malloc((size_t)v.m * sizeof *wi);
        int *wp = malloc((size_t)v.m * sizeof *wp);
        float *winv = NULL;
        if (!warped || !extra || !wf || !wi || !wp) s = pe_fail(PE_ERR_NOMEM, "align: out of memory");
        for (int k = 0, j = 0; k < b->num_refs && !s; k++) {
            if (k == exclude) continue;
            pe_rigid t;
            s = pe_align_estimate(&b->images[k], query_s, &p->align_params, &t);
            if (s) break;
            pe_image aligned = {0}, rotated = {0};
            if (t.ok) {
                out->aligned++;
                s = pe_align_warp(&b->images[k], &t, query_s->width, query_s->height, &aligned);
            } else {
                out->align_failed++; /* identity: the reference as it is */
            }
            const pe_image *base = t.ok ? &aligned : &b->images[k];
            if (!s) s = pe_image_rotate180(base, &rotated);
            if (!s) s = extract(model, base, p, 0, &warped[j]);
            if (!s) s = extract(model, &rotated, p, 0, &warped[v.m + j]);
            pe_image_free(&aligned);
            pe_image_free(&rotated);
            j++;
        }
        size_t total = 0;
        for (int j = 0; j < 2 * v.m && !s; j++) total += (size_t)warped[j].grid_h * warped[j].grid_w;
        if (!s && !(winv = pe_alloc(total, sizeof(float), "aligned norms"))) s = PE_ERR_NOMEM;
        float *next = winv;
        for (int j = 0; j < 2 * v.m && !s; j++) {
            int g = warped[j].grid_h * warped[j].grid_w;
            pe_inv_norms(warped[j].data, g, warped[j].dim, next);
            next += g;
        }
        /* Two more reference sets: aligned (j = 0..m-1), aligned + 180 (j = m..2m-1). */
        next = winv;
        for (int set = 0; set < 2 && !s; set++) {
            for (int j = 0; j < v.m; j++) {
                const pe_features *f = &warped[set * v.m + j];
                wf[j] = f->data;
                wi[j] = next;
                wp[j] = f->grid_h * f->grid_w;
                next += wp[j];
            }
            float extra_score;
            s = score_against(q, q_inv, wf, wi, wp, v.m, p, extra, &extra_score);
            if (s) break;
            for (int i = 0; i < gq; i++) patch[i] += extra[i];
            score += extra_score;
        }
        if (!s) {
            for (int i = 0; i < gq; i++) patch[i] /= 3.0f;
            score /= 3.0f;
        }
        for (int j = 0; warped && j < 2 * v.m; j++) pe_features_free(&warped[j]);
        free(warped);
        free(extra);
        free(wf);
        free(wi);
        free(wp);
        free(winv);
    }
    free_views(&v);
    free(q_inv);
    if (s) {
        free(patch);
        return s;
    }
    out->image_score = score;
    out->grid_h = q->grid_h;
    out->grid_w = q->grid_w;
    out->patch_scores = patch;
    return PE_OK;
}

/* Label-free threshold: every reference scored against the others (leave-one-out,
 * through the same path as predict); threshold = the largest of these image scores.
 * attn: per-reference attention (masking), images: S x S references (alignment). */
static pe_status loo_threshold(pe_bank *b, pe_model *model, const pe_features *refs, float *out)
{
    *out = NAN;
    if (b->num_refs < 2) return PE_OK;
    float worst = -INFINITY;
    for (int k = 0; k < b->num_refs; k++) {
        pe_result r;
        pe_status s = predict_core(b, model, &refs[k], b->images ? &b->images[k] : NULL, k,
                                   b->params.align && b->images, &r);
        if (s) return s;
        worst = fmaxf(worst, r.image_score);
        pe_result_free(&r);
    }
    *out = worst;
    return PE_OK;
}

/* ------------------------------------------------------------------ fit */

static pe_status bank_from_features(pe_model *model, const pe_features *refs, int n,
                                    const pe_detect_params *params, pe_bank **out)
{
    *out = NULL;
    if (n < 1) return pe_fail(PE_ERR_ARG, "fit: no reference images");
    int dim = refs[0].dim;
    int *gh = malloc((size_t)n * sizeof *gh), *gw = malloc((size_t)n * sizeof *gw);
    if (!gh || !gw) {
        free(gh);
        free(gw);
        return pe_fail(PE_ERR_NOMEM, "fit: out of memory");
    }
    pe_status s = PE_OK;
    for (int k = 0; k < n && !s; k++) {
        gh[k] = refs[k].grid_h;
        gw[k] = refs[k].grid_w;
        if (!refs[k].data || refs[k].dim != dim || gh[k] < 1 || gw[k] < 1)
            s = pe_fail(PE_ERR_SHAPE, "fit: reference %d has features %dx%dx%d, reference 0 dim %d",
                        k, gh[k], gw[k], refs[k].dim, dim);
    }
    pe_bank *b = NULL;
    if (!s) s = pe_bank_alloc(n, dim, gh, gw, &b);
    free(gh);
    free(gw);
    if (s) return s;
    b->params = *params;
    for (int k = 0; k < n; k++)
        memcpy(b->feats[k], refs[k].data, sizeof(float) * (size_t)refs[k].grid_h * refs[k].grid_w * dim);
    pe_bank_finish(b);
    for (int k = 0; k < n && !s; k++)
        if (!(b->names[k] = strdup(""))) s = pe_fail(PE_ERR_NOMEM, "fit: out of memory");
    if (model && !s) {
        pe_model_info info;
        s = pe_model_get_info(model, &info);
        if (!s) {
            snprintf(b->family, sizeof b->family, "%s", info.family);
            snprintf(b->name, sizeof b->name, "%s", info.name);
            snprintf(b->weights_hash, sizeof b->weights_hash, "%s", info.weights_hash);
            if (b->params.size <= 0) b->params.size = info.default_size;
        }
    }
    if (s) {
        pe_bank_free(b);
        return s;
    }
    *out = b;
    return PE_OK;
}

pe_status pe_bank_fit_features(pe_model *model, const pe_features *refs, int num_refs,
                               const pe_detect_params *params, pe_bank **out)
{
    *out = NULL;
    pe_detect_params defaults = pe_detect_default_params(0);
    if (!params) params = &defaults;
    if (!refs) return pe_fail(PE_ERR_ARG, "pe_bank_fit_features: NULL references");
    if (params->align)
        return pe_fail(PE_ERR_UNSUPPORTED,
                       "fit: alignment needs the reference images, not only their features (use "
                       "pe_bank_fit)");
    pe_status s = check_mask_support(model, params);
    if (s) return s;
    for (int k = 0; params->mask && k < num_refs; k++)
        if (!refs[k].attn)
            return pe_fail(PE_ERR_ARG, "fit: --mask needs attention with reference %d's features", k);
    pe_bank *b;
    s = bank_from_features(model, refs, num_refs, params, &b);
    if (s) return s;
    s = loo_threshold(b, NULL, refs, &b->threshold);
    if (s) {
        pe_bank_free(b);
        return s;
    }
    *out = b;
    return PE_OK;
}

pe_status pe_bank_fit(pe_model *model, const pe_image *refs, int num_refs, const char *const *names,
                      const pe_detect_params *params, pe_bank **out)
{
    *out = NULL;
    pe_detect_params p = params ? *params : pe_detect_default_params(0);
    if (!model || !refs) return pe_fail(PE_ERR_ARG, "pe_bank_fit: NULL argument");
    if (num_refs < 1) return pe_fail(PE_ERR_ARG, "fit: no reference images");
    pe_status s = check_mask_support(model, &p);
    if (!s) s = resolved_size(model, p.size, &p.size);
    if (s) return s;
    pe_features *feats = calloc((size_t)num_refs, sizeof *feats);
    if (!feats) return pe_fail(PE_ERR_NOMEM, "fit: out of memory");
    for (int k = 0; k < num_refs && !s; k++) {
        s = extract(model, &refs[k], &p, p.mask, &feats[k]);
        if (s && names && names[k]) {
            char msg[1024];
            snprintf(msg, sizeof msg, "%s", pe_last_error());
            s = pe_fail(s, "%s: %s", names[k], msg);
        }
    }
    pe_bank *b = NULL;
    if (!s) s = bank_from_features(model, feats, num_refs, &p, &b);
    for (int k = 0; k < num_refs && !s && names; k++) {
        free(b->names[k]);
        if (!(b->names[k] = strdup(names[k] ? names[k] : ""))) s = pe_fail(PE_ERR_NOMEM, "fit: out of memory");
    }
    if (!s && p.align) {
        /* Keep the S x S references: alignment runs on them at predict time. */
        b->images = calloc((size_t)num_refs, sizeof *b->images);
        if (!b->images) s = pe_fail(PE_ERR_NOMEM, "fit: out of memory");
        for (int k = 0; k < num_refs && !s; k++)
            s = pe_image_resize(&refs[k], p.size, p.size, &b->images[k]);
    }
    if (!s) s = loo_threshold(b, model, feats, &b->threshold);
    for (int k = 0; k < num_refs; k++) pe_features_free(&feats[k]);
    free(feats);
    if (s) {
        pe_bank_free(b);
        return s;
    }
    *out = b;
    return PE_OK;
}

/* ------------------------------------------------------------------ predict */

pe_status pe_bank_predict(pe_bank *b, pe_model *model, const pe_image *query, pe_result *out)
{
    memset(out, 0, sizeof *out);
    if (!b || !model || !query) return pe_fail(PE_ERR_ARG, "pe_bank_predict: NULL argument");
    pe_status s = pe_bank_check_model(b, model);
    if (s) return s;
    const pe_detect_params *p = &b->params;
    pe_features q = {0};
    pe_image query_s = {0};
    s = extract(model, query, p, p->mask, &q);
    if (!s && p->align) s = pe_image_resize(query, p->size, p->size, &query_s);
    if (!s) s = predict_core(b, model, &q, &query_s, -1, p->align, out);
    pe_features_free(&q);
    pe_image_free(&query_s);
    return s;
}

pe_status pe_bank_predict_features(const pe_bank *b, const pe_features *query, pe_result *out)
{
    memset(out, 0, sizeof *out);
    if (!b || !query || !query->data)
        return pe_fail(PE_ERR_ARG, "pe_bank_predict_features: NULL argument");
    return predict_core(b, NULL, query, NULL, -1, 0, out);
}

/* ------------------------------------------------------------------ zero-shot */

pe_status pe_zeroshot_features(const pe_features *feats, int n, const pe_detect_params *params,
                               pe_result *out)
{
    pe_detect_params defaults = pe_detect_default_params(1);
    if (!params) params = &defaults;
    if (!feats || !out) return pe_fail(PE_ERR_ARG, "pe_zeroshot_features: NULL argument");
    if (n < 2)
        return pe_fail(PE_ERR_ARG, "zero-shot needs at least 2 images (each is scored against the "
                                   "others), got %d", n);
    for (int b = 0; b < n; b++) memset(&out[b], 0, sizeof out[b]);
    const int gh = feats[0].grid_h, gw = feats[0].grid_w, dim = feats[0].dim, g = gh * gw;
    for (int b = 0; b < n; b++) {
        if (!feats[b].data || feats[b].grid_h != gh || feats[b].grid_w != gw || feats[b].dim != dim)
            return pe_fail(PE_ERR_SHAPE,
                           "zero-shot: image %d has features %dx%dx%d, image 0 %dx%dx%d (all "
                           "images must use one input size)",
                           b, feats[b].grid_h, feats[b].grid_w, feats[b].dim, gh, gw, dim);
        if (params->mask && !feats[b].attn)
            return pe_fail(PE_ERR_ARG, "zero-shot: --mask needs attention with image %d's features",
                           b);
    }
    const float **views = malloc((size_t)n * sizeof *views);
    float *scores = pe_alloc((size_t)n * g, sizeof(float), "zero-shot scores");
    if (!views || !scores) {
        free(views);
        free(scores);
        return pe_fail(PE_ERR_NOMEM, "zero-shot: out of memory");
    }
    for (int b = 0; b < n; b++) views[b] = feats[b].data;
    pe_status s = pe_zeroshot_score(views, n, g, dim, params, scores);
    free(views);
    for (int b = 0; b < n && !s; b++) {
        float *patch = pe_alloc((size_t)g, sizeof(float), "patch scores");
        if (!patch) {
            s = PE_ERR_NOMEM;
            break;
        }
        memcpy(patch, scores + (size_t)b * g, sizeof(float) * g);
        if (params->mask)
            pe_apply_attention_mask(patch, feats[b].attn, g, params->score.mask_threshold,
                                    params->score.mask_low_weight);
        out[b].patch_scores = patch;
        out[b].grid_h = gh;
        out[b].grid_w = gw;
        out[b].image_score = pe_image_score(patch, g, &params->score);
    }
    free(scores);
    if (s)
        for (int b = 0; b < n; b++) pe_result_free(&out[b]);
    return s;
}

/* Resample a (gh, gw) patch map computed in the anchor's frame back into image b's
 * own frame. t maps b's pixels (S x S) into the anchor frame; each of b's patch
 * centres is mapped through t and sampled bilinearly (edges replicated). */
static void unwarp_patch_map(const float *src, int gh, int gw, int size, const pe_rigid *t,
                             float *dst)
{
    double c = cos(t->angle_deg * M_PI / 180.0), sn = sin(t->angle_deg * M_PI / 180.0);
    double sx = (double)size / gw, sy = (double)size / gh;
    for (int gy = 0; gy < gh; gy++)
        for (int gx = 0; gx < gw; gx++) {
            double x = (gx + 0.5) * sx - 0.5, y = (gy + 0.5) * sy - 0.5; /* pixel centre in b */
            double xa = c * x - sn * y + t->tx, ya = sn * x + c * y + t->ty;
            double u = (xa + 0.5) / sx - 0.5, v = (ya + 0.5) / sy - 0.5; /* anchor grid coords */
            u = u < 0 ? 0 : (u > gw - 1 ? gw - 1 : u);
            v = v < 0 ? 0 : (v > gh - 1 ? gh - 1 : v);
            int u0 = (int)u, v0 = (int)v;
            int u1 = u0 + 1 < gw ? u0 + 1 : u0, v1 = v0 + 1 < gh ? v0 + 1 : v0;
            double fu = u - u0, fv = v - v0;
            double top = src[v0 * gw + u0] * (1 - fu) + src[v0 * gw + u1] * fu;
            double bot = src[v1 * gw + u0] * (1 - fu) + src[v1 * gw + u1] * fu;
            dst[gy * gw + gx] = (float)(top * (1 - fv) + bot * fv);
        }
}

pe_status pe_zeroshot(pe_model *model, const pe_image *images, int n, const pe_detect_params *params,
                      void (*progress)(int done, int total, void *user), void *user, pe_result *out)
{
    pe_detect_params p = params ? *params : pe_detect_default_params(1);
    if (!model || !images || !out) return pe_fail(PE_ERR_ARG, "pe_zeroshot: NULL argument");
    if (n < 2)
        return pe_fail(PE_ERR_ARG, "zero-shot needs at least 2 images (each is scored against the "
                                   "others), got %d", n);
    pe_status s = check_mask_support(model, &p);
    if (!s) s = resolved_size(model, p.size, &p.size);
    if (s) return s;
    pe_features *feats = calloc((size_t)n, sizeof *feats);
    pe_rigid *tr = calloc((size_t)n, sizeof *tr);
    if (!feats || !tr) {
        free(feats);
        free(tr);
        return pe_fail(PE_ERR_NOMEM, "zero-shot: out of memory");
    }
    /* PatchEAD+ alignment: every image is warped onto the first (the anchor). */
    pe_image anchor = {0};
    if (p.align) s = pe_image_resize(&images[0], p.size, p.size, &anchor);
    for (int b = 0; b < n && !s; b++) {
        if (p.align && b > 0) {
            pe_image small = {0}, warped = {0};
            s = pe_image_resize(&images[b], p.size, p.size, &small);
            if (!s) s = pe_align_estimate(&small, &anchor, &p.align_params, &tr[b]);
            if (!s && tr[b].ok) s = pe_align_warp(&small, &tr[b], p.size, p.size, &warped);
            if (!s) s = extract(model, tr[b].ok ? &warped : &images[b], &p, p.mask, &feats[b]);
            pe_image_free(&small);
            pe_image_free(&warped);
        } else {
            s = extract(model, &images[b], &p, p.mask, &feats[b]);
        }
        if (!s && progress) progress(b + 1, n, user);
    }
    pe_image_free(&anchor);
    if (!s) s = pe_zeroshot_features(feats, n, &p, out);
    for (int b = 1; b < n && !s && p.align; b++) {
        out[b].aligned = tr[b].ok;
        out[b].align_failed = !tr[b].ok;
        if (!tr[b].ok) continue;
        /* Scores were computed in the anchor's frame; bring the map back to image b's. */
        int g = out[b].grid_h * out[b].grid_w;
        float *own = pe_alloc((size_t)g, sizeof(float), "patch scores");
        if (!own) {
            s = PE_ERR_NOMEM;
            break;
        }
        unwarp_patch_map(out[b].patch_scores, out[b].grid_h, out[b].grid_w, p.size, &tr[b], own);
        free(out[b].patch_scores);
        out[b].patch_scores = own;
    }
    for (int b = 0; b < n; b++) pe_features_free(&feats[b]);
    free(feats);
    free(tr);
    if (s)
        for (int b = 0; b < n; b++) pe_result_free(&out[b]);
    return s;
}
