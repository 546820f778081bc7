/* score.h — internal scoring kernels shared by score.c and detect.c (not public API).
 *
 * Features are kept as given (not normalised copies); instead every feature matrix
 * carries its per-patch inverse L2 norms, computed once. A tile of raw dot products
 * (one GEMM) is turned into cosine similarities by scaling rows/columns with these,
 * so no normalised copy of a bank or of a zero-shot batch is ever made. */
#ifndef PE_SCORE_H
#define PE_SCORE_H

#include "internal.h"

/* out[i] = 1 / ||x_i|| for the n rows of x (n, dim); 0 for a zero row. */
void pe_inv_norms(const float *x, int n, int dim, float *out);

/* K of Eq. 3 for M reference images: k_count if > 0 (clamped to M), else
 * max(1, floor(k_fraction * M + 1e-6)), at most M. */
int pe_score_k(const pe_score_params *p, int num_refs);

/* pe_score_query with the inverse norms precomputed (query_inv: (Gq), ref_inv[k]: (Gk)).
 * image_score may be NULL. */
pe_status pe_score_query_inv(const float *query, const float *query_inv, int query_patches,
                             const float *const *refs, const float *const *ref_inv,
                             const int *ref_patches, int num_refs, int dim,
                             const pe_score_params *params, float *patch_scores,
                             float *image_score);

#endif
