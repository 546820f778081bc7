/* score.h — internal scoring kernels shared by score.c and detect.c (not public API).
 *
 * Features are kept as given (not normalised copies); instead every feature matrix
 * carries its per-patch inverse L2 norms, computed once. A tile of raw dot products
 * (one GEMM) is turned into cosine similarities by scaling rows/columns with these,
 * so no normalised copy of a bank or of a zero-shot batch is ever made. */
#ifndef PE_SCORE_H
#define PE_SCORE_H

#include "core/internal.h"

/* out[i] = 1 / ||x_i|| for the n rows of x (n, dim); 0 for a zero row. */
void pe_inv_norms(const float *x, int n, int dim, float *out);

/* K of Eq. 3 for M reference images: k_count if > 0 (clamped to M), else
 * max(1, floor(k_fraction * M + 1e-6)), at most M. */
int pe_score_k(const pe_score_params *p, int num_refs);

/* What the few-shot scoring derives from one reference's features alone, kept by the
 * reference's owner from query to query instead of being redone for every query (a bank
 * keeps one per reference view: detect/bank.c): the fp32 screen's normalised bf16 copy,
 * packed into panels, with its per-patch bounds (score_screen.c), and for bf16 scoring
 * the reference in bf16 (packed for the fused kernel, else row-major for the engine).
 * Zeroed = empty. Each part is built by pe_score_query_inv on first use and published
 * with an atomic compare-and-swap, so queries may score against one cache from several
 * threads at once (a thread that loses the race frees its copy and takes the winner's).
 * A part is used only for the features, norms and shape it was built from (else the
 * query prepares that reference itself, as without a cache); one whose memory would
 * exceed a quarter of the available memory is not kept. The features must not change
 * while the cache lives; pe_ref_cache_clear frees it (zeroed again). */
typedef struct pe_ref_cache {
    void *screen; /* atomic: the screen's part, NULL until built */
    void *bf16;   /* atomic: the bf16 part */
} pe_ref_cache;
void pe_ref_cache_clear(pe_ref_cache *c);
/* bytes held by c's parts */
size_t pe_ref_cache_bytes(const pe_ref_cache *c);
/* tests: the reference preparations (a screen copy with its bounds, or a bf16 copy) the
 * few-shot scoring has made in this process so far, kept in a cache or not */
long long pe_score_ref_preps(void);

/* pe_score_query with the inverse norms precomputed (query_inv: (Gq), ref_inv[k]: (Gk)).
 * ref_cache (may be NULL, as may its entries): reference k's cache (above), used and
 * filled here. image_score may be NULL. */
pe_status pe_score_query_inv(const float *query, const float *query_inv, int query_patches,
                             const float *const *refs, const float *const *ref_inv,
                             const int *ref_patches, int num_refs, int dim,
                             pe_ref_cache *const *ref_cache, const pe_score_params *params,
                             float *patch_scores, float *image_score);

/* The pairs of one zero-shot batch, computed once for both directions: the (G, D) x
 * (G, D)^T dot products of a's patches with b's, T rows at a time, through the engine in
 * `precision` (bf16 operands: the pair's two images converted when the pair needs them,
 * in two slots, so a run of pairs that share a keeps a's copy), tiles spread over the
 * threads. The row maxima give a's Eq. 2 distances to b, offered to heap_a ((G, K),
 * count_a keys offered before); the column maxima give b's distances to a, offered to
 * heap_b. Either heap may be NULL when that direction is not needed. inv_a, inv_b: (G)
 * inverse norms. pe_score_batch runs every pair a < b through this; zeroshot_sampled.c
 * runs a sampled (and/or MPI-sharded) schedule. run returns 0, or -1 if a GEMM failed. */
typedef struct pe_pair_scorer pe_pair_scorer;
pe_status pe_pair_scorer_new(const float *const *feats, int n, int G, int dim, int T, int K,
                             pe_order order, pe_precision precision, pe_pair_scorer **out);
int pe_pair_scorer_run(pe_pair_scorer *ps, int a, const float *inv_a, int b, const float *inv_b,
                       float *heap_a, int count_a, float *heap_b, int count_b);
void pe_pair_scorer_free(pe_pair_scorer *ps);
/* tests and benchmarks: 0 turns off the fp32 screen (score_screen.c), so fp32 pairs run
 * the plain fp32 kernel; set before pe_pair_scorer_new (default 1) */
void pe_score_set_screen(int on);
/* 1 if fp32 zero-shot pairs of this width go through the screen here; its extra memory
 * for n images of G patches, and whether that fits (else the fp32 kernel runs) */
int pe_score_screen_runs(int dim);
double pe_score_screen_bytes(int n, int G, int dim);
/* the bf16 copies of a pair's two images that the pair scorer keeps (bf16 mode, and the
 * screen's, included in pe_score_screen_bytes): no copy of the whole batch is made */
double pe_score_pair_copy_bytes(int G, int dim);
int pe_score_screen_fits(int n, int G, int dim);
/* Offer a heap key (distance for order lowest, -distance for highest) to a K-slot
 * max-heap holding the K smallest keys; `count` keys were offered before. */
void pe_score_heap_offer(float *heap, int count, int k, float key);
/* Query rows per GEMM tile for `cols` reference patches (params->tile or ~16 MB). */
int pe_score_auto_tile(const pe_score_params *p, int rows, int cols);
/* PE_ERR_ARG unless K, top fraction, order and tile are valid. */
pe_status pe_score_check(const pe_score_params *p);
/* a_i = mean of the K kept keys of each of n patches (heaps: (n, K)), sign restored. */
void pe_score_finish(const float *heaps, int n, int k, pe_order order, float *out);

#endif
