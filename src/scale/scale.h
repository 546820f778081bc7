/* scale.h — batch zero-shot at scale (not public API): the comparator schedule,
 * the sampled / sharded scorer, and the MPI collectives it needs. docs/SCALE.md
 * explains the rules. */
#ifndef PE_SCALE_H
#define PE_SCALE_H

#include "core/internal.h"

/* One unordered pair of a batch, lo < hi, and which directions are needed. */
enum {
    PE_PAIR_LO = 1, /* lo's patches against hi (row maxima of the lo x hi tile) */
    PE_PAIR_HI = 2  /* hi's patches against lo (column maxima of the same tile) */
};
typedef struct {
    int lo, hi;
    int dirs; /* PE_PAIR_LO | PE_PAIR_HI */
} pe_pair;

/* The comparator schedule of a batch of n images with R comparators each
 * (R <= 0 or R >= n-1: every pair, both directions). Sorted by (lo, hi), so the full
 * schedule is exactly pe_score_batch's loop order. *pairs is malloc'd. */
pe_status pe_comparator_schedule(int n, int r, uint64_t seed, pe_pair **pairs, int64_t *num_pairs);

/* Batch zero-shot through a schedule (see pe_comparator_schedule): patch scores
 * (n, G) of Eq. 3 with M = min(R, n-1) comparators per image. With shard and an MPI
 * build run by several ranks, each rank computes a contiguous share of the pairs and
 * the Eq. 3 selections are merged on every rank (pe_dist_merge_selection), so every
 * rank returns the same scores. progress may be NULL. */
pe_status pe_score_batch_scheduled(const float *const *feats, int n, int patches, int dim,
                                   const pe_score_params *params, int comparators, uint64_t seed,
                                   int shard,
                                   void (*progress)(int64_t done, int64_t total, void *user),
                                   void *user, float *patch_scores);

/* What pe_zeroshot_features scores with: checks the scoring state against the
 * available memory (PE_ERR_LIMIT), then runs pe_score_batch for a plain full batch on
 * one rank, else pe_score_batch_scheduled (sample, MPI shard, progress). */
pe_status pe_zeroshot_score(const float *const *feats, int n, int patches, int dim,
                            const pe_detect_params *params, float *patch_scores);

/* Bytes of the scoring state of a zero-shot batch (selection heaps, inverse norms,
 * scores, one tile; the bf16 copy of the features where bf16 or the fp32 screen runs, with
 * the screen's norms), the fp32 features excluded; *k gets Eq. 3's K. */
double pe_zeroshot_scoring_bytes(int n, int patches, int dim, const pe_detect_params *params,
                                 int *k);

/* MPI (dist.c). Merge the Eq. 3 selections of all ranks, in place on every rank:
 * heaps holds `blocks` blocks of k keys, unused slots +INFINITY; each block becomes
 * the k smallest keys of the union over ranks (ascending, +INFINITY padded). */
pe_status pe_dist_merge_selection(float *heaps, size_t blocks, int k);

#endif
