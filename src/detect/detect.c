/* detect.c — the detection pipeline: features -> Eq. 1-4 scores -> results, with the
 * PatchEAD+ switches (alignment, attention masking), for few-shot banks and batch
 * zero-shot. See docs/SCORING.md for the rules chosen here (threshold, alignment
 * averaging, masking order). */
#include "bank.h"
#include "score/beyond.h"
#include "ref_views.h"
#include "scale/scale.h"
#include "score/score.h"

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

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
    /* beyond the paper: off by default (docs/BEYOND.md) */
    p.rotations = 1;
    p.window = -1;
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
                       "attention masking needs CLS attention, which %s (a %s) does not have; "
                       "use a ViT backbone or turn masking off",
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

/* Reference views to score against: m views (features, inverse norms, grids) in
 * num_groups Eq. 3 references, group g = views [group_start[g], group_start[g + 1]). */
typedef struct {
    const float **feats, **inv;
    pe_ref_cache **cache; /* the bank's cache of each view (NULL: none, e.g. aligned views) */
    int *gh, *gw;
    int m;
    int *group_start; /* (num_groups + 1) */
    int num_groups;
} ref_views;

static pe_status alloc_views(int m, ref_views *v)
{
    v->feats = malloc((size_t)m * sizeof *v->feats);
    v->inv = malloc((size_t)m * sizeof *v->inv);
    v->cache = calloc((size_t)m, sizeof *v->cache);
    v->gh = malloc((size_t)m * sizeof *v->gh);
    v->gw = malloc((size_t)m * sizeof *v->gw);
    v->group_start = malloc((size_t)(m + 1) * sizeof *v->group_start);
    v->m = v->num_groups = 0;
    if (!v->feats || !v->inv || !v->cache || !v->gh || !v->gw || !v->group_start)
        return pe_fail(PE_ERR_NOMEM, "bank: out of memory");
    v->group_start[0] = 0;
    return PE_OK;
}

static void free_views(ref_views *v)
{
    free(v->feats);
    free(v->inv);
    free(v->cache);
    free(v->gh);
    free(v->gw);
    free(v->group_start);
}

/* Few-shot Eq. 1-4 of one query against reference views (grouped, windowed as the
 * params say). patch: (Gq) out; returns the image score after masking in *image_score. */
static pe_status score_against(const pe_features *q, const float *q_inv, const ref_views *v,
                               const pe_detect_params *p, float *patch, float *image_score)
{
    int gq = q->grid_h * q->grid_w;
    pe_status s =
        pe_score_groups(q->data, q_inv, q->grid_h, q->grid_w, v->feats, v->inv, v->gh, v->gw,
                        v->cache, v->group_start, v->num_groups, q->dim, p->window, &p->score,
                        patch);
    if (s) return s;
    if (p->mask)
        pe_apply_attention_mask(patch, q->attn, gq, p->score.mask_threshold,
                                p->score.mask_low_weight);
    *image_score = pe_image_score(patch, gq, &p->score);
    return PE_OK;
}

/* Views of the bank's references without reference (group) `exclude` (-1: none). */
static pe_status make_views(const pe_bank *b, int exclude, ref_views *v)
{
    pe_status s = alloc_views(b->num_refs, v);
    if (s) return s;
    for (int g = 0; g < b->num_groups; g++) {
        if (g == exclude) continue;
        for (int k = b->group_start[g]; k < b->group_start[g + 1]; k++) {
            v->feats[v->m] = b->feats[k];
            v->inv[v->m] = b->inv[k];
            v->cache[v->m] = &b->cache[k];
            v->gh[v->m] = b->grid_h[k];
            v->gw[v->m++] = b->grid_w[k];
        }
        v->group_start[++v->num_groups] = v->m;
    }
    return PE_OK;
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
        return pe_fail(PE_ERR_ARG,
                       "the bank uses attention masking but the query features carry no attention");
    const int gq = q->grid_h * q->grid_w;
    ref_views v = {0};
    float *q_inv = pe_alloc((size_t)gq, sizeof(float), "query norms");
    float *patch = pe_alloc((size_t)gq, sizeof(float), "patch scores");
    pe_status s = q_inv && patch ? make_views(b, exclude, &v) : PE_ERR_NOMEM;
    if (!s && v.m == 0) s = pe_fail(PE_ERR_ARG, "bank: no reference images to score against");
    float score = 0;
    if (!s) {
        pe_inv_norms(q->data, gq, q->dim, q_inv);
        s = score_against(q, q_inv, &v, p, patch, &score);
    }
    if (!s && use_align) {
        /* PatchEAD+ alignment: score against the references aligned onto the query and
         * their 180-degree rotations too; average the three patch maps and image scores. */
        pe_features *warped = calloc((size_t)2 * v.m, sizeof *warped);
        float *extra = pe_alloc((size_t)gq, sizeof(float), "patch scores");
        ref_views w = {0}; /* one set of aligned references: one view per reference */
        float *winv = NULL;
        if (!warped || !extra || alloc_views(v.m, &w))
            s = pe_fail(PE_ERR_NOMEM, "align: out of memory");
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
        for (int j = 0; j < 2 * v.m && !s; j++)
            total += (size_t)warped[j].grid_h * warped[j].grid_w;
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
                w.feats[j] = f->data;
                w.inv[j] = next;
                w.gh[j] = f->grid_h;
                w.gw[j] = f->grid_w;
                w.group_start[j + 1] = j + 1;
                next += f->grid_h * f->grid_w;
            }
            w.m = w.num_groups = v.m;
            float extra_score;
            s = score_against(q, q_inv, &w, p, extra, &extra_score);
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
        free_views(&w);
        free(winv);
    }
    free_views(&v);
    free(q_inv);
    if (s) {
        free(patch);
        return s;
    }
    out->image_score = score;
    out->p_value = pe_bank_p_value(b, score);
    out->grid_h = q->grid_h;
    out->grid_w = q->grid_w;
    out->patch_scores = patch;
    return PE_OK;
}

/* Label-free threshold: every reference scored against the others (leave-one-out,
 * through the same path as predict); threshold = the largest of these image scores.
 * refs[k]: the features of group k's first view (the reference as given; attention for
 * masking), images: S x S references (alignment). With params.fpr > 0 the leave-one-out
 * scores are also the bank's calibration scores (docs/BEYOND.md). A union (coreset)
 * bank has one group: nothing to leave out, no threshold. */
static pe_status loo_threshold(pe_bank *b, pe_model *model, const pe_features *refs, float *out)
{
    *out = NAN;
    const int m = b->num_groups;
    if (m < 2) return PE_OK;
    float *scores = malloc((size_t)m * sizeof *scores);
    if (!scores) return pe_fail(PE_ERR_NOMEM, "fit: out of memory");
    pe_status s = PE_OK;
    float worst = -INFINITY;
    for (int k = 0; k < m && !s; k++) {
        pe_result r;
        s = predict_core(b, model, &refs[b->group_start[k]], b->images ? &b->images[k] : NULL, k,
                         b->params.align && b->images, &r);
        if (s) break;
        scores[k] = r.image_score;
        worst = fmaxf(worst, r.image_score);
        pe_result_free(&r);
    }
    if (!s) *out = worst;
    if (!s && b->params.fpr > 0) {
        s = pe_bank_store_calibration(b, scores, m, b->params.fpr, PE_CALIB_LOO);
        if (!s) *out = b->threshold;
    }
    free(scores);
    return s;
}

/* Checks of the options beyond the paper that do not depend on the data. */
static pe_status check_beyond(const pe_detect_params *p, int have_images)
{
    const int coreset = p->coreset_fraction > 0 || p->coreset_count > 0;
    if (p->rotations < 1 || p->rotations > 360)
        return pe_fail(PE_ERR_ARG, "fit: rotations must be 1..360, got %d", p->rotations);
    if (p->window < -1)
        return pe_fail(PE_ERR_ARG, "fit: window radius must be >= 0, got %d", p->window);
    if (!(p->fpr >= 0 && p->fpr < 1))
        return pe_fail(PE_ERR_ARG, "fit: target false-alarm rate must be in (0, 1), got %g",
                       (double)p->fpr);
    if (p->coreset_fraction < 0 || p->coreset_fraction > 1 || p->coreset_count < 0 ||
        p->coreset_proj < -1)
        return pe_fail(PE_ERR_ARG, "fit: coreset share must be in (0, 1] (or a count > 0), "
                                   "projection >= 0 (or -1: none)");
    if ((p->rotations > 1 || p->flips) && !have_images)
        return pe_fail(PE_ERR_UNSUPPORTED, "fit: rotated references need the reference images, "
                                           "not only their features (use pe_bank_fit)");
    if ((p->rotations > 1 || p->flips || coreset) && p->align)
        return pe_fail(PE_ERR_UNSUPPORTED, "fit: alignment works on the references as given; it "
                                           "does not combine with rotated references or a coreset");
    if (coreset && p->window >= 0)
        return pe_fail(PE_ERR_UNSUPPORTED, "fit: a coreset bank has no patch positions, so it "
                                           "cannot be scored positionally (window)");
    if (coreset && p->mask)
        return pe_fail(PE_ERR_UNSUPPORTED, "fit: attention masking with a coreset bank is not "
                                           "supported");
    return PE_OK;
}

/* Union bank from the coreset of all reference patches: the selected rows, stored in
 * chunks of at most CORESET_CHUNK patches (grid 1 x n each) forming ONE Eq. 3 reference. */
#define CORESET_CHUNK 4096
static pe_status bank_from_features(pe_model *model, const pe_features *refs, int n,
                                    const pe_detect_params *params, pe_bank **out);

/* "1.50 GiB" */
static const char *gib(double bytes, char buf[32])
{
    snprintf(buf, 32, "%.2f GiB", bytes / 1073741824.0);
    return buf;
}

/* The memory guard: what the selection will hold (the (N, D) input copy, the selection's own
 * working memory, the kept rows) against the machine's available memory, before any of it
 * is allocated. */
static pe_status coreset_memory(size_t total, int dim, int keep, int proj)
{
    double need = 4.0 * (double)total * dim + pe_coreset_bytes((int)total, dim, keep, proj) +
                  4.0 * (double)keep * dim;
    double avail = pe_mem_available();
    char a[32], b[32];
    if (avail > 0 && need > avail)
        return pe_fail(PE_ERR_LIMIT,
                       "fit: the coreset of %zu patches x %d (keeping %d) needs about %s, only "
                       "%s available: fit fewer images, a smaller --size or a smaller --coreset",
                       total, dim, keep, gib(need, a), gib(avail, b));
    return PE_OK;
}

static double seconds_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

/* The time guard: the same selection (share, projection, seed) on every 16th row, timed;
 * the pruned greedy grew about as N^2 in make bench (100 -> 320 -> 1,000 images), so the
 * estimate is that time x 16^2. */
static pe_status coreset_time(const float *all, size_t total, int dim, int keep,
                              const pe_detect_params *p)
{
    const int step = 16;
    const int sub = (int)(total / step), subkeep = keep / step;
    if (!(p->coreset_max_time > 0) || sub < 2 || subkeep < 1) return PE_OK;
    float *x = pe_alloc((size_t)sub * dim, sizeof(float), "coreset calibration");
    int *sel = pe_alloc((size_t)subkeep, sizeof(int), "coreset calibration");
    pe_status s = x && sel ? PE_OK : PE_ERR_NOMEM;
    double t = 0;
    if (!s) {
        for (int i = 0; i < sub; i++)
            memcpy(x + (size_t)i * dim, all + (size_t)i * step * dim, (size_t)dim * sizeof(float));
        double t0 = seconds_now();
        s = pe_coreset_select(x, sub, dim, subkeep, p->coreset_proj, p->coreset_seed, sel);
        t = seconds_now() - t0;
    }
    free(x);
    free(sel);
    if (s) return s;
    const double est = t * step * step;
    if (est > p->coreset_max_time)
        return pe_fail(PE_ERR_LIMIT,
                       "fit: the coreset selection (%d of %zu patches) is estimated at %.0f s "
                       "(%.2f s on 1/%d of the rows, x %d), over --max-time %g s: keep a smaller "
                       "--coreset share, fit fewer images or use a smaller --size",
                       keep, total, est, t, step, step * step, p->coreset_max_time);
    return PE_OK;
}

static int coreset_on_progress(int done, int total, void *user)
{
    const pe_detect_params *p = user;
    p->coreset_progress(done, total, p->progress_user);
    return 0;
}

static pe_status coreset_bank(pe_model *model, const pe_features *refs, int n,
                              const pe_detect_params *p, pe_bank **out)
{
    *out = NULL;
    const int dim = refs[0].dim;
    size_t total = 0;
    for (int k = 0; k < n; k++) {
        if (!refs[k].data || refs[k].dim != dim)
            return pe_fail(PE_ERR_SHAPE, "fit: reference %d has dim %d, reference 0 %d", k,
                           refs[k].dim, dim);
        total += (size_t)refs[k].grid_h * refs[k].grid_w;
    }
    if (total > (size_t)INT32_MAX / 2)
        return pe_fail(PE_ERR_LIMIT, "fit: %zu reference patches are too many for a coreset",
                       total);
    int keep = pe_coreset_size((int)total, p->coreset_fraction, p->coreset_count);
    pe_status guard = keep < (int)total ? coreset_memory(total, dim, keep, p->coreset_proj) : PE_OK;
    if (guard) return guard;
    float *all = pe_alloc(total * dim, sizeof(float), "coreset input"); /* (N, D) */
    int *sel = pe_alloc((size_t)keep, sizeof(int), "coreset selection");
    int chunks = (keep + CORESET_CHUNK - 1) / CORESET_CHUNK;
    pe_features *parts = calloc((size_t)chunks, sizeof *parts);
    float *kept = pe_alloc((size_t)keep * dim, sizeof(float), "coreset");
    pe_status s = all && sel && parts && kept ? PE_OK : PE_ERR_NOMEM;
    if (!s) {
        size_t off = 0;
        for (int k = 0; k < n; k++) {
            size_t g = (size_t)refs[k].grid_h * refs[k].grid_w;
            memcpy(all + off * dim, refs[k].data, g * dim * sizeof(float));
            off += g;
        }
        if (keep == (int)total) /* 100 %: every patch, in order (no selection needed) */
            for (int i = 0; i < keep; i++) sel[i] = i;
        else {
            s = coreset_time(all, total, dim, keep, p);
            pe_coreset_hooks hooks = {coreset_on_progress, (void *)p};
            if (!s)
                s = pe_coreset_select_hooked(all, (int)total, dim, keep, p->coreset_proj,
                                             p->coreset_seed, p->coreset_progress ? &hooks : NULL,
                                             sel);
        }
    }
    if (!s) {
        for (int i = 0; i < keep; i++)
            memcpy(kept + (size_t)i * dim, all + (size_t)sel[i] * dim, dim * sizeof(float));
        free(all); /* before the bank's copy: peak memory 2 x the patches, not 3 x */
        all = NULL;
        for (int c = 0; c < chunks; c++) {
            parts[c].grid_h = 1;
            parts[c].grid_w = PE_MIN(CORESET_CHUNK, keep - c * CORESET_CHUNK);
            parts[c].dim = dim;
            parts[c].data = kept + (size_t)c * CORESET_CHUNK * dim;
        }
        s = bank_from_features(model, parts, chunks, p, out);
    }
    if (!s) s = pe_bank_set_groups(*out, 1);
    if (s && *out) {
        pe_bank_free(*out);
        *out = NULL;
    }
    free(all);
    free(sel);
    free(parts);
    free(kept);
    return s;
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
    b->params.score.precision = pe_precision_resolve(params->score.precision); /* recorded as run */
    for (int k = 0; k < n; k++)
        memcpy(b->feats[k], refs[k].data,
               sizeof(float) * (size_t)refs[k].grid_h * refs[k].grid_w * dim);
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
    if (!s) s = check_beyond(params, 0);
    if (s) return s;
    for (int k = 0; params->mask && k < num_refs; k++)
        if (!refs[k].attn)
            return pe_fail(PE_ERR_ARG,
                           "fit: attention masking needs reference %d's features with attention",
                           k);
    if (num_refs < 1) return pe_fail(PE_ERR_ARG, "fit: no reference images");
    pe_bank *b;
    if (params->coreset_fraction > 0 || params->coreset_count > 0)
        s = coreset_bank(model, refs, num_refs, params, &b);
    else s = bank_from_features(model, refs, num_refs, params, &b);
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
    if (!s) s = check_beyond(&p, 1);
    if (!s) s = resolved_size(model, p.size, &p.size);
    if (s) return s;
    /* V views per reference: the reference and its rotated / mirrored copies (made from
     * the S x S image, the frame queries are scored in). feats[k * V + v]. */
    const int views = PE_MAX(1, p.rotations) * (p.flips ? 2 : 1);
    const int coreset = p.coreset_fraction > 0 || p.coreset_count > 0;
    const int nfeats = num_refs * views;
    pe_features *feats = calloc((size_t)nfeats, sizeof *feats);
    pe_image *view_imgs = calloc((size_t)views, sizeof *view_imgs);
    if (!feats || !view_imgs) {
        free(feats);
        free(view_imgs);
        return pe_fail(PE_ERR_NOMEM, "fit: out of memory");
    }
    for (int k = 0; k < num_refs && !s; k++) {
        if (views == 1) {
            s = extract(model, &refs[k], &p, p.mask, &feats[k]);
        } else {
            pe_image small = {0};
            s = pe_image_resize(&refs[k], p.size, p.size, &small);
            if (!s) s = pe_reference_views(&small, PE_MAX(1, p.rotations), p.flips, view_imgs);
            for (int v = 0; v < views && !s; v++)
                s = extract(model, &view_imgs[v], &p, p.mask, &feats[k * views + v]);
            pe_image_free(&small);
            for (int v = 0; v < views; v++) pe_image_free(&view_imgs[v]);
        }
        if (s && names && names[k]) {
            char msg[1024];
            snprintf(msg, sizeof msg, "%s", pe_last_error());
            s = pe_fail(s, "%s: %s", names[k], msg);
        }
    }
    free(view_imgs);
    pe_bank *b = NULL;
    if (!s && coreset) s = coreset_bank(model, feats, nfeats, &p, &b);
    else if (!s) s = bank_from_features(model, feats, nfeats, &p, &b);
    if (!s && !coreset) s = pe_bank_set_groups(b, num_refs);
    for (int k = 0; k < nfeats && !s && names && !coreset; k++) {
        free(b->names[k]);
        const char *nm = names[k / views];
        if (!(b->names[k] = strdup(nm ? nm : ""))) s = pe_fail(PE_ERR_NOMEM, "fit: out of memory");
    }
    if (!s && p.align) {
        /* Keep the S x S references: alignment runs on them at predict time. */
        b->images = calloc((size_t)num_refs, sizeof *b->images);
        if (!b->images) s = pe_fail(PE_ERR_NOMEM, "fit: out of memory");
        for (int k = 0; k < num_refs && !s; k++)
            s = pe_image_resize(&refs[k], p.size, p.size, &b->images[k]);
    }
    if (!s) s = loo_threshold(b, model, feats, &b->threshold);
    for (int k = 0; k < nfeats; k++) pe_features_free(&feats[k]);
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
        return pe_fail(PE_ERR_ARG,
                       "zero-shot needs at least 2 images (each is scored against the "
                       "others), got %d",
                       n);
    for (int b = 0; b < n; b++) memset(&out[b], 0, sizeof out[b]);
    if (params->window >= 0 || params->rotations > 1 || params->flips ||
        params->coreset_fraction > 0 || params->coreset_count > 0)
        return pe_fail(PE_ERR_UNSUPPORTED, "zero-shot: positional scoring, rotated references and "
                                           "coresets are few-shot bank options");
    const int gh = feats[0].grid_h, gw = feats[0].grid_w, dim = feats[0].dim, g = gh * gw;
    for (int b = 0; b < n; b++) {
        if (!feats[b].data || feats[b].grid_h != gh || feats[b].grid_w != gw || feats[b].dim != dim)
            return pe_fail(PE_ERR_SHAPE,
                           "zero-shot: image %d has features %dx%dx%d, image 0 %dx%dx%d (all "
                           "images must use one input size)",
                           b, feats[b].grid_h, feats[b].grid_w, feats[b].dim, gh, gw, dim);
        if (params->mask && !feats[b].attn)
            return pe_fail(PE_ERR_ARG,
                           "zero-shot: attention masking needs image %d's features with attention",
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
        out[b].p_value = NAN; /* no calibration in zero-shot */
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

pe_status pe_zeroshot(pe_model *model, const pe_image *images, int n,
                      const pe_detect_params *params,
                      void (*progress)(int done, int total, void *user), void *user, pe_result *out)
{
    pe_detect_params p = params ? *params : pe_detect_default_params(1);
    if (!model || !images || !out) return pe_fail(PE_ERR_ARG, "pe_zeroshot: NULL argument");
    if (n < 2)
        return pe_fail(PE_ERR_ARG,
                       "zero-shot needs at least 2 images (each is scored against the "
                       "others), got %d",
                       n);
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
