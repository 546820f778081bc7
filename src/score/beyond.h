/* beyond.h — detection beyond the paper (docs/BEYOND.md), internal kernels:
 * grouped / positional scoring (group_score.c) and coreset selection (coreset.c).
 * The rotated reference views are detect/ref_views.h; calibration is public. */
#ifndef PE_BEYOND_H
#define PE_BEYOND_H

#include "core/internal.h"
#include "score.h"

/* Eq. 2 restricted to a window, for one reference view of the same grid as the query:
 *   out[i] = min over reference patches j with |row_j - row_i| <= R and |col_j - col_i| <= R
 *            of d(q_i, n_j)   (R >= the grid size: every patch, i.e. global Eq. 2).
 * query (gh*gw, D) with inverse norms query_inv (gh*gw); ref likewise. Cost
 * O(G (2R+1)^2 D) instead of O(G^2 D). */
void pe_score_window(const float *query, const float *query_inv, const float *ref,
                     const float *ref_inv, int grid_h, int grid_w, int dim, int radius, float *out);

/* Eq. 2-3 over reference views grouped into reference images:
 *   s_i^g = min over the views v of group g of Eq. 2 against v (windowed when window >= 0)
 *   a_i   = Eq. 3 (K lowest / highest of the s_i^g, g < num_groups, averaged)
 * views[v]: (view_gh[v] * view_gw[v], D) with inverse norms view_inv[v]; group g is views
 * [group_start[g], group_start[g + 1]). Positional scoring needs every view's grid equal
 * to the query's. view_cache (may be NULL, as may its entries): each view's reference
 * cache (score.h, pe_ref_cache). patch_scores: (qgh * qgw). */
pe_status pe_score_groups(const float *query, const float *query_inv, int qgh, int qgw,
                          const float *const *views, const float *const *view_inv,
                          const int *view_gh, const int *view_gw, pe_ref_cache *const *view_cache,
                          const int *group_start, int num_groups, int dim, int window,
                          const pe_score_params *params, float *patch_scores);

/* Default random projection of the coreset distances: PatchCore's 128 dims, used when the
 * features are wider (proj_dim 0); narrower features are not projected. */
#define PE_CORESET_PROJ_DEFAULT 128
/* The projection pe_coreset_select uses for proj_dim: < 0 none (0 returned), 0 the
 * default above, > 0 that many dims. */
int pe_coreset_proj_dims(int dim, int proj_dim);
/* Greedy k-center (PatchCore's coreset rule) on the cosine geometry of n rows of x
 * (n, dim): rows are L2-normalised (randomly projected to pe_coreset_proj_dims(dim,
 * proj_dim) dims when that is > 0, Gaussian, seeded); the first centre is row splitmix64(seed) % n; each next centre
 * is the row farthest from all centres so far (ties: lowest index). selected: (keep)
 * row indices in selection order. Deterministic for a seed, whatever the thread count. */
pe_status pe_coreset_select(const float *x, int n, int dim, int keep, int proj_dim, uint64_t seed,
                            int *selected);
/* The same with a progress callback: progress(done, keep, user) after the first centre,
 * about every keep/200 centres and after the last; a nonzero return stops the selection
 * (PE_ERR_LIMIT, "stopped after ..."). hooks NULL: none. PE_CORESET_PLAIN=1 (tests,
 * benches) runs the plain loop, without callbacks. */
typedef struct {
    int (*progress)(int done, int total, void *user);
    void *user;
} pe_coreset_hooks;
pe_status pe_coreset_select_hooked(const float *x, int n, int dim, int keep, int proj_dim,
                                   uint64_t seed, const pe_coreset_hooks *hooks, int *selected);
/* Number of rows a coreset keeps of n: count if > 0 (at most n), else
 * max(1, round(fraction * n)). */
int pe_coreset_size(int n, float fraction, int count);
/* Peak bytes pe_coreset_select allocates for these arguments (its own working memory, not
 * the caller's x): what the fit's memory guard adds to the features it holds. */
double pe_coreset_bytes(int n, int dim, int keep, int proj_dim);

#endif
