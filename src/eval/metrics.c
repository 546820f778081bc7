/* metrics.c — evaluation metrics: image AUROC / AP / F1-max (exact, tie-grouped as
 * scikit-learn), ROC/PR curves, and streaming pixel AUROC / PRO (histogram of scores,
 * with a guaranteed error bound versus the exact value).
 *
 * Definitions (checked against tools/metrics_ref.py: sklearn roc_auc_score,
 * average_precision_score, and the MVTec AD PRO reference, via tests/fixtures/metrics):
 *   - thresholds are the distinct scores, prediction is "score >= t";
 *   - AUROC = trapezoid area under (FPR, TPR) starting at (0, 0);
 *   - AP = sum over thresholds (decreasing) of (R_n - R_{n-1}) * P_n;
 *   - F1-max = max over thresholds of 2 TP / (2 TP + FP + FN);
 *   - PRO: see patchead.h (8-connected regions, FPR over all normal pixels, 0..max_fpr). */
#include "core/internal.h"

#include <math.h>
#include <string.h>

/* ------------------------------------------------------------------ image level */

typedef struct {
    float score;
    uint8_t label;
} scored;

/* Descending score; equal scores in any order (they form one group). */
static int cmp_scored_desc(const void *a, const void *b)
{
    float x = ((const scored *)a)->score, y = ((const scored *)b)->score;
    return (x < y) - (x > y);
}

/* Sorted copy of the inputs after validation; counts of positives/negatives. */
static pe_status sort_scores(const float *scores, const uint8_t *labels, int n, scored **out,
                             int *num_pos, int *num_neg)
{
    if (n < 0 || (n > 0 && (!scores || !labels)))
        return pe_fail(PE_ERR_ARG, "metrics: bad arguments (n = %d)", n);
    scored *s = pe_alloc((size_t)(n > 0 ? n : 1), sizeof *s, "metrics: sorted scores");
    if (!s) return PE_ERR_NOMEM;
    int pos = 0;
    for (int i = 0; i < n; i++) {
        if (isnan(scores[i])) {
            free(s);
            return pe_fail(PE_ERR_ARG, "metrics: score %d is NaN", i);
        }
        if (labels[i] > 1) {
            free(s);
            return pe_fail(PE_ERR_ARG, "metrics: label %d is %d (expected 0 or 1)", i, labels[i]);
        }
        s[i].score = scores[i];
        s[i].label = labels[i];
        pos += labels[i];
    }
    qsort(s, (size_t)n, sizeof *s, cmp_scored_desc);
    *out = s;
    *num_pos = pos;
    *num_neg = n - pos;
    return PE_OK;
}

pe_status pe_image_metrics_compute(const float *scores, const uint8_t *labels, int n,
                                   pe_image_metrics *out)
{
    scored *s;
    int P, N;
    pe_status st = sort_scores(scores, labels, n, &s, &P, &N);
    if (st) return st;
    out->num_pos = P;
    out->num_neg = N;
    out->auroc = out->ap = out->f1_max = out->f1_threshold = NAN;
    if (P == 0 || N == 0) { /* one class: every metric here is undefined */
        free(s);
        return PE_OK;
    }
    /* Walk the tie groups from the highest score down. The area is accumulated in
     * units of (TP x FP) pairs: a group adding fp negatives and tp positives covers
     * fp * (tp_before + tp / 2) pairs (the tie half-credit of the trapezoid). */
    double area = 0, ap = 0, best_f1 = -1, best_t = NAN;
    long tp = 0, fp = 0;
    for (int i = 0; i < n;) {
        int j = i;
        long gtp = 0, gfp = 0;
        for (; j < n && s[j].score == s[i].score; j++) {
            if (s[j].label) gtp++;
            else gfp++;
        }
        area += (double)gfp * ((double)tp + 0.5 * (double)gtp);
        tp += gtp;
        fp += gfp;
        if (gtp) ap += ((double)gtp / P) * ((double)tp / (double)(tp + fp));
        double f1 = 2.0 * tp / (double)(2 * tp + fp + (P - tp));
        if (f1 > best_f1) {
            best_f1 = f1;
            best_t = s[i].score;
        }
        i = j;
    }
    out->auroc = area / ((double)P * (double)N);
    out->ap = ap;
    out->f1_max = best_f1;
    out->f1_threshold = best_t;
    free(s);
    return PE_OK;
}

void pe_curve_free(pe_curve *c)
{
    if (!c) return;
    free(c->threshold);
    free(c->fpr);
    free(c->tpr);
    free(c->precision);
    memset(c, 0, sizeof *c);
}

pe_status pe_curve_compute(const float *scores, const uint8_t *labels, int n, pe_curve *out)
{
    memset(out, 0, sizeof *out);
    scored *s;
    int P, N;
    pe_status st = sort_scores(scores, labels, n, &s, &P, &N);
    if (st) return st;
    size_t cap = (size_t)n + 1;
    out->threshold = pe_alloc(cap, sizeof(double), "metrics: curve");
    out->fpr = pe_alloc(cap, sizeof(double), "metrics: curve");
    out->tpr = pe_alloc(cap, sizeof(double), "metrics: curve");
    out->precision = pe_alloc(cap, sizeof(double), "metrics: curve");
    if (!out->threshold || !out->fpr || !out->tpr || !out->precision) {
        free(s);
        pe_curve_free(out);
        return PE_ERR_NOMEM;
    }
    int k = 0;
    out->threshold[k] = INFINITY;
    out->fpr[k] = out->tpr[k] = 0;
    out->precision[k++] = 1;
    long tp = 0, fp = 0;
    for (int i = 0; i < n;) {
        int j = i;
        for (; j < n && s[j].score == s[i].score; j++) {
            if (s[j].label) tp++;
            else fp++;
        }
        out->threshold[k] = s[i].score;
        out->fpr[k] = N ? (double)fp / N : NAN;
        out->tpr[k] = P ? (double)tp / P : NAN;
        out->precision[k++] = (double)tp / (double)(tp + fp);
        i = j;
    }
    out->n = k;
    free(s);
    return PE_OK;
}

/* ------------------------------------------------------------------ connected components */

/* Union-find root with path halving. */
static int32_t uf_find(int32_t *parent, int32_t x)
{
    while (parent[x] != x) {
        parent[x] = parent[parent[x]];
        x = parent[x];
    }
    return x;
}

static void uf_union(int32_t *parent, int32_t a, int32_t b)
{
    a = uf_find(parent, a);
    b = uf_find(parent, b);
    if (a < b) parent[b] = a;
    else if (b < a) parent[a] = b;
}

/* Two-pass labelling with 8-connectivity. labels doubles as the provisional-label
 * image; parent holds (width * height / 2 + 2) provisional labels at most
 * (a new label needs a background pixel or border before it on the row). */
static int label_regions(const uint8_t *mask, int w, int h, int32_t *labels, int32_t *parent)
{
    int32_t next = 1;
    for (int y = 0; y < h; y++) {
        for (int x = 0; x < w; x++) {
            size_t i = (size_t)y * w + x;
            if (!mask[i]) {
                labels[i] = 0;
                continue;
            }
            /* already-visited neighbours: W, NW, N, NE */
            int32_t nb[4];
            int k = 0;
            if (x > 0 && labels[i - 1]) nb[k++] = labels[i - 1];
            if (y > 0) {
                const int32_t *up = labels + i - w;
                if (x > 0 && up[-1]) nb[k++] = up[-1];
                if (up[0]) nb[k++] = up[0];
                if (x + 1 < w && up[1]) nb[k++] = up[1];
            }
            if (!k) {
                parent[next] = next;
                labels[i] = next++;
                continue;
            }
            int32_t m = nb[0];
            for (int t = 1; t < k; t++) m = nb[t] < m ? nb[t] : m;
            labels[i] = m;
            for (int t = 0; t < k; t++)
                if (nb[t] != m) uf_union(parent, m, nb[t]);
        }
    }
    /* Compact the roots to 1..count in order of first appearance (raster order).
     * parent[l] <= l always (unions point to the smaller label, path halving keeps
     * that), so one ascending pass resolves every label from already-final ones; the
     * final label is stored negated in parent[]. */
    int32_t count = 0;
    for (int32_t l = 1; l < next; l++)
        parent[l] = parent[l] == l ? -(++count) : parent[parent[l]];
    size_t npix = (size_t)w * h;
    for (size_t i = 0; i < npix; i++)
        if (labels[i]) labels[i] = -parent[labels[i]];
    return count;
}

static size_t parent_cap(int w, int h)
{
    return (size_t)w * h / 2 + (size_t)h + 2;
}

int pe_mask_regions(const uint8_t *mask, int width, int height, int32_t *labels)
{
    if (!mask || !labels || width <= 0 || height <= 0) {
        pe_fail(PE_ERR_ARG, "metrics: bad mask arguments (%d x %d)", width, height);
        return -1;
    }
    int32_t *parent = pe_alloc(parent_cap(width, height), sizeof *parent, "metrics: labels");
    if (!parent) return -1;
    int count = label_regions(mask, width, height, labels, parent);
    free(parent);
    return count;
}

/* ------------------------------------------------------------------ pixel level */

struct pe_pixel_acc {
    int bins;
    double lo, scale;      /* bin = floor((v - lo) * scale), clamped to 0..bins-1 */
    uint64_t *neg, *pos;   /* (bins) pixel counts outside / inside the GT regions */
    double *pro_weight;    /* (bins) sum over region pixels of 1 / region size */
    float *bin_min, *bin_max; /* (bins) extreme scores seen in each bin */
    int64_t num_regions;
    float min_seen, max_seen;
    /* per-image scratch, grown on demand (not per pixel) */
    int32_t *labels, *parent;
    int64_t *region_size;
    size_t scratch_pixels;
};

void pe_pixel_acc_free(pe_pixel_acc *a)
{
    if (!a) return;
    free(a->neg);
    free(a->pos);
    free(a->pro_weight);
    free(a->bin_min);
    free(a->bin_max);
    free(a->labels);
    free(a->parent);
    free(a->region_size);
    free(a);
}

pe_status pe_pixel_acc_create(float lo, float hi, int bins, pe_pixel_acc **out)
{
    *out = NULL;
    if (!isfinite(lo) || !isfinite(hi) || hi < lo)
        return pe_fail(PE_ERR_ARG, "metrics: bad pixel score range [%g, %g]", lo, hi);
    if (bins < 1 || bins > (1 << 26))
        return pe_fail(PE_ERR_ARG, "metrics: pixel bins %d outside 1..%d", bins, 1 << 26);
    pe_pixel_acc *a = calloc(1, sizeof *a);
    if (!a) return pe_fail(PE_ERR_NOMEM, "metrics: out of memory");
    a->bins = bins;
    a->lo = lo;
    a->scale = hi > lo ? bins / ((double)hi - (double)lo) : 0;
    a->neg = pe_calloc((size_t)bins, sizeof *a->neg, "metrics: histogram");
    a->pos = pe_calloc((size_t)bins, sizeof *a->pos, "metrics: histogram");
    a->pro_weight = pe_calloc((size_t)bins, sizeof *a->pro_weight, "metrics: histogram");
    a->bin_min = pe_alloc((size_t)bins, sizeof *a->bin_min, "metrics: histogram");
    a->bin_max = pe_alloc((size_t)bins, sizeof *a->bin_max, "metrics: histogram");
    if (!a->neg || !a->pos || !a->pro_weight || !a->bin_min || !a->bin_max) {
        pe_pixel_acc_free(a);
        return PE_ERR_NOMEM;
    }
    for (int b = 0; b < bins; b++) {
        a->bin_min[b] = INFINITY;
        a->bin_max[b] = -INFINITY;
    }
    a->min_seen = INFINITY;
    a->max_seen = -INFINITY;
    *out = a;
    return PE_OK;
}

static inline int bin_of(const pe_pixel_acc *a, float v)
{
    double t = ((double)v - a->lo) * a->scale;
    if (!(t > 0)) return 0;
    if (t >= a->bins) return a->bins - 1;
    return (int)t;
}

static inline void note_value(pe_pixel_acc *a, int b, float v)
{
    if (v < a->bin_min[b]) a->bin_min[b] = v;
    if (v > a->bin_max[b]) a->bin_max[b] = v;
}

pe_status pe_pixel_acc_add(pe_pixel_acc *a, const float *map, const uint8_t *mask, int width,
                           int height)
{
    if (!a || !map || width <= 0 || height <= 0)
        return pe_fail(PE_ERR_ARG, "metrics: bad pixel-metric arguments (%d x %d)", width, height);
    size_t npix = (size_t)width * height;
    for (size_t i = 0; i < npix; i++)
        if (isnan(map[i])) return pe_fail(PE_ERR_ARG, "metrics: anomaly map has a NaN at %zu", i);

    int regions = 0;
    if (mask) {
        if (npix > a->scratch_pixels) { /* grow the per-image scratch once per larger image */
            free(a->labels);
            free(a->parent);
            free(a->region_size);
            a->region_size = NULL;
            a->scratch_pixels = 0;
            a->labels = pe_alloc(npix, sizeof *a->labels, "metrics: region labels");
            a->parent = pe_alloc(parent_cap(width, height), sizeof *a->parent, "metrics: labels");
            /* regions <= parent_cap as well */
            a->region_size = pe_alloc(parent_cap(width, height) + 1, sizeof *a->region_size,
                                      "metrics: region sizes");
            if (!a->labels || !a->parent || !a->region_size) return PE_ERR_NOMEM;
            a->scratch_pixels = npix;
        }
        regions = label_regions(mask, width, height, a->labels, a->parent);
        memset(a->region_size, 0, ((size_t)regions + 1) * sizeof *a->region_size);
        for (size_t i = 0; i < npix; i++) a->region_size[a->labels[i]]++;
    }

    float mn = a->min_seen, mx = a->max_seen;
    for (size_t i = 0; i < npix; i++) {
        float v = map[i];
        int b = bin_of(a, v);
        note_value(a, b, v);
        mn = v < mn ? v : mn;
        mx = v > mx ? v : mx;
        int32_t r = mask ? a->labels[i] : 0;
        if (r) {
            a->pos[b]++;
            a->pro_weight[b] += 1.0 / (double)a->region_size[r];
        } else {
            a->neg[b]++;
        }
    }
    a->min_seen = mn;
    a->max_seen = mx;
    a->num_regions += regions;
    return PE_OK;
}

pe_status pe_pixel_acc_result(const pe_pixel_acc *a, double max_fpr, pe_pixel_metrics *out)
{
    if (!a || !(max_fpr > 0 && max_fpr <= 1))
        return pe_fail(PE_ERR_ARG, "metrics: max_fpr %g outside (0, 1]", max_fpr);
    memset(out, 0, sizeof *out);
    out->max_fpr = max_fpr;
    out->min_score = a->min_seen;
    out->max_score = a->max_seen;
    out->num_regions = a->num_regions;
    uint64_t P = 0, N = 0;
    for (int b = 0; b < a->bins; b++) {
        P += a->pos[b];
        N += a->neg[b];
    }
    out->num_pos = (int64_t)P;
    out->num_neg = (int64_t)N;
    out->auroc = out->auroc_bound = out->pro = out->pro_bound = NAN;

    /* Walk the bins from the highest score down; each non-empty bin is one threshold
     * (all of its pixels are treated as tied). A bin whose pixels share one distinct
     * score is exact; otherwise its pairs (AUROC) or its curve segment (PRO) may be
     * ordered differently in the exact computation, which the bounds account for. */
    double area = 0, tie_pairs = 0, tp = 0, fp = 0;
    double pro_area = 0, pro_err = 0, pro_w = 0, f0 = 0, p0 = 0;
    int pro_done = (N == 0 || a->num_regions == 0);
    for (int b = a->bins - 1; b >= 0; b--) {
        double gp = (double)a->pos[b], gn = (double)a->neg[b];
        if (gp == 0 && gn == 0) continue;
        int mixed = a->bin_min[b] < a->bin_max[b];
        area += gn * (tp + 0.5 * gp);
        if (mixed) tie_pairs += gp * gn;
        tp += gp;
        fp += gn;
        if (pro_done) continue;
        pro_w += a->pro_weight[b];
        double f1 = fp / (double)N, p1 = PE_MIN(pro_w / (double)a->num_regions, 1.0);
        if (f1 <= max_fpr) {
            pro_area += 0.5 * (p0 + p1) * (f1 - f0);
            if (mixed) pro_err += 0.5 * (p1 - p0) * (f1 - f0);
            if (f1 == max_fpr) pro_done = 1;
        } else { /* crosses max_fpr: interpolate the PRO there and stop */
            double pm = p0 + (p1 - p0) * (max_fpr - f0) / (f1 - f0);
            pro_area += 0.5 * (p0 + pm) * (max_fpr - f0);
            if (mixed) pro_err += (p1 - p0) * (max_fpr - f0);
            pro_done = 1;
        }
        f0 = f1;
        p0 = p1;
    }
    if (P > 0 && N > 0) {
        double pairs = (double)P * (double)N;
        out->auroc = area / pairs;
        out->auroc_bound = 0.5 * tie_pairs / pairs;
    }
    if (N > 0 && a->num_regions > 0) {
        out->pro = pro_area / max_fpr;
        out->pro_bound = pro_err / max_fpr;
    }
    return PE_OK;
}
