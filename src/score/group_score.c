/* group_score.c — few-shot scoring over grouped and positional reference views
 * (docs/BEYOND.md). The global, one-view-per-reference case stays in score.c's tiled
 * GEMMs; this file adds
 *   - groups: the views of one reference image (its rotations / mirrors) count as one
 *     reference of Eq. 3: s_i^k = min over its views of Eq. 2;
 *   - windows: Eq. 2 restricted to reference patches near the query patch's position.
 * With K = 1 and order lowest, min over groups of min over views is the min over all
 * views, so that case is one call of score.c's kernel over every view. */
#include "beyond.h"
#include "score.h"

#include <math.h>
#include <string.h>

static inline float clamp_dist(float cosine)
{
    float d = 1.0f - cosine; /* Eq. 1, clamped to [0, 2] like score.c */
    return d < 0 ? 0 : (d > 2 ? 2 : d);
}

void pe_score_window(const float *query, const float *query_inv, const float *ref,
                     const float *ref_inv, int grid_h, int grid_w, int dim, int radius, float *out)
{
    const int R = radius;
#pragma omp parallel for schedule(static)
    for (int y = 0; y < grid_h; y++) {
        int y0 = y - R < 0 ? 0 : y - R, y1 = y + R >= grid_h ? grid_h - 1 : y + R;
        for (int x = 0; x < grid_w; x++) {
            int x0 = x - R < 0 ? 0 : x - R, x1 = x + R >= grid_w ? grid_w - 1 : x + R;
            const float *q = query + ((size_t)y * grid_w + x) * dim;
            float best = -INFINITY;
            for (int yy = y0; yy <= y1; yy++)
                for (int xx = x0; xx <= x1; xx++) {
                    size_t j = (size_t)yy * grid_w + xx;
                    const float *r = ref + j * dim;
                    float dot = 0;
#pragma omp simd reduction(+ : dot)
                    for (int d = 0; d < dim; d++) dot += q[d] * r[d];
                    dot *= ref_inv[j];
                    best = dot > best ? dot : best;
                }
            out[(size_t)y * grid_w + x] = clamp_dist(best * query_inv[(size_t)y * grid_w + x]);
        }
    }
}

static int cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

pe_status pe_score_groups(const float *query, const float *query_inv, int qgh, int qgw,
                          const float *const *views, const float *const *view_inv,
                          const int *view_gh, const int *view_gw, pe_ref_cache *const *view_cache,
                          const int *group_start, int num_groups, int dim, int window,
                          const pe_score_params *params, float *patch_scores)
{
    const int gq = qgh * qgw, nviews = group_start[num_groups];
    if (num_groups < 1 || nviews < 1) return pe_fail(PE_ERR_ARG, "score: no reference images");
    int *patches = malloc((size_t)nviews * sizeof *patches);
    if (!patches) return pe_fail(PE_ERR_NOMEM, "score: out of memory");
    for (int v = 0; v < nviews; v++) {
        patches[v] = view_gh[v] * view_gw[v];
        if (window >= 0 && (view_gh[v] != qgh || view_gw[v] != qgw)) {
            free(patches);
            return pe_fail(PE_ERR_SHAPE,
                           "positional scoring needs the query's patch grid (%dx%d) to equal the "
                           "reference's (%dx%d): use one input size for both",
                           qgh, qgw, view_gh[v], view_gw[v]);
        }
    }
    const int trivial = nviews == num_groups;
    const int union_nn = pe_score_k(params, num_groups) == 1 && params->order == PE_ORDER_LOWEST;
    pe_status s = PE_OK;
    if (window < 0 && (trivial || union_nn)) {
        /* score.c's GEMM kernel does it all: one view per reference (Eq. 3 as in the
         * paper) or the union nearest neighbour (K = 1, lowest). */
        pe_score_params p = *params;
        if (!trivial) p.k_count = 1;
        s = pe_score_query_inv(query, query_inv, gq, views, view_inv, patches, nviews, dim,
                               view_cache, &p, patch_scores, NULL);
        free(patches);
        return s;
    }
    /* General case: per group the minimum over its views, then Eq. 3 across groups.
     * group_min: (Gq, num_groups); view_min: (Gq) for one view. */
    float *group_min = pe_alloc((size_t)gq * num_groups, sizeof(float), "group distances");
    float *view_min = pe_alloc((size_t)gq, sizeof(float), "view distances");
    if (!group_min || !view_min) s = PE_ERR_NOMEM;
    pe_score_params nearest = *params; /* Eq. 2 of one view = K 1, lowest, over 1 reference */
    nearest.k_count = 1;
    nearest.order = PE_ORDER_LOWEST;
    for (int g = 0; g < num_groups && !s; g++) {
        for (int i = 0; i < gq; i++) group_min[(size_t)i * num_groups + g] = INFINITY;
        for (int v = group_start[g]; v < group_start[g + 1] && !s; v++) {
            if (window >= 0)
                pe_score_window(query, query_inv, views[v], view_inv[v], qgh, qgw, dim, window,
                                view_min);
            else
                s = pe_score_query_inv(query, query_inv, gq, &views[v], &view_inv[v], &patches[v],
                                       1, dim, view_cache ? &view_cache[v] : NULL, &nearest,
                                       view_min, NULL);
            for (int i = 0; i < gq && !s; i++) {
                float *m = &group_min[(size_t)i * num_groups + g];
                if (view_min[i] < *m) *m = view_min[i];
            }
        }
    }
    if (!s) {
        const int K = pe_score_k(params, num_groups);
        for (int i = 0; i < gq; i++) {
            float *row = group_min + (size_t)i * num_groups;
            qsort(row, (size_t)num_groups, sizeof *row, cmp_float);
            const float *sel = params->order == PE_ORDER_LOWEST ? row : row + num_groups - K;
            double sum = 0;
            for (int j = 0; j < K; j++) sum += sel[j];
            patch_scores[i] = (float)(sum / K);
        }
    }
    free(group_min);
    free(view_min);
    free(patches);
    return s;
}
