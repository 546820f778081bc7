/* zeroshot_sampled.c — batch zero-shot through a comparator schedule: the full batch
 * (every pair), a seeded sample of R comparators per image, and either of them split
 * across MPI ranks. The per-pair work is score.c's pe_pair_scorer (engine GEMMs); this file only
 * decides which pairs run, where, and in which order. Rules: docs/SCALE.md.
 *
 * The comparator rule (balanced by construction):
 *   1. pi = a seeded permutation of the n images (splitmix64 Fisher-Yates): a ring.
 *   2. The image at ring position p is compared with positions p +- 1 .. p +- floor(R/2);
 *      for odd R also with p + floor(n/2) (for even n that pair is symmetric; for odd n it is
 *      needed in one direction only).
 *   So every image has exactly R comparators and is the comparator of exactly R images,
 *   each unordered pair is listed once, and a pair needed in both directions is one GEMM
 *   (its row maxima serve one image, its column maxima the other). */
#include "scale.h"
#include "score/score.h"

#include <math.h>
#include <string.h>

static uint64_t mix_next(uint64_t *state) /* splitmix64 */
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static int cmp_pair(const void *x, const void *y)
{
    const pe_pair *a = x, *b = y;
    if (a->lo != b->lo) return a->lo < b->lo ? -1 : 1;
    return (a->hi > b->hi) - (a->hi < b->hi);
}

/* Pair of images i -> j: i's patches need j (and j's need i when both). */
static pe_pair make_pair(int i, int j, int both)
{
    pe_pair p;
    p.lo = i < j ? i : j;
    p.hi = i < j ? j : i;
    p.dirs = both ? (PE_PAIR_LO | PE_PAIR_HI) : (i < j ? PE_PAIR_LO : PE_PAIR_HI);
    return p;
}

pe_status pe_comparator_schedule(int n, int r, uint64_t seed, pe_pair **pairs, int64_t *num_pairs)
{
    *pairs = NULL;
    *num_pairs = 0;
    if (n < 2)
        return pe_fail(PE_ERR_ARG, "comparator schedule: needs at least 2 images, got %d", n);
    int full = r <= 0 || r >= n - 1;
    int h = r / 2, odd = !full && (r & 1);
    int64_t total =
        full ? (int64_t)n * (n - 1) / 2 : (int64_t)n * h + (odd ? (n % 2 ? n : n / 2) : 0);
    pe_pair *out = pe_alloc((size_t)total, sizeof *out, "comparator schedule");
    int *ring = malloc((size_t)n * sizeof *ring);
    if (!out || !ring) {
        free(out);
        free(ring);
        return pe_fail(PE_ERR_NOMEM, "comparator schedule: out of memory (%d images)", n);
    }
    int64_t e = 0;
    if (full) {
        for (int a = 0; a < n; a++)
            for (int b = a + 1; b < n; b++) out[e++] = make_pair(a, b, 1);
    } else {
        uint64_t state = seed ^ 0x5ca1ab1e00000000ULL;
        for (int i = 0; i < n; i++) ring[i] = i;
        for (int i = n - 1; i > 0; i--) {
            int j = (int)(mix_next(&state) % (uint64_t)(i + 1));
            int t = ring[i];
            ring[i] = ring[j];
            ring[j] = t;
        }
        /* h < n/2 here (R <= n-2), so p -> p+o for o in 1..h lists each pair once */
        for (int p = 0; p < n; p++)
            for (int o = 1; o <= h; o++) out[e++] = make_pair(ring[p], ring[(p + o) % n], 1);
        if (odd) {
            int m = n / 2; /* > h: not among the symmetric offsets */
            for (int p = 0; p < (n % 2 ? n : n / 2); p++)
                out[e++] = make_pair(ring[p], ring[(p + m) % n], n % 2 == 0);
        }
        qsort(out, (size_t)e, sizeof *out, cmp_pair);
    }
    free(ring);
    *pairs = out;
    *num_pairs = e;
    return PE_OK;
}

pe_status pe_score_batch_scheduled(const float *const *feats, int n, int patches, int dim,
                                   const pe_score_params *params, int comparators, uint64_t seed,
                                   int shard,
                                   void (*progress)(int64_t done, int64_t total, void *user),
                                   void *user, float *patch_scores)
{
    /* pe_zeroshot_features has checked the batch's shapes; these guard direct callers */
    if (!feats || !params || !patch_scores || n < 2 || patches <= 0 || dim <= 0)
        return pe_fail(PE_ERR_ARG, "zero-shot scoring: %d images of %d patches x %d", n, patches,
                       dim);
    pe_status s = pe_score_check(params);
    if (s) return s;

    const int G = patches;
    const int M = comparators > 0 && comparators < n - 1 ? comparators : n - 1;
    const int K = pe_score_k(params, M);
    const int T = pe_score_auto_tile(params, G, G);
    pe_pair *pairs = NULL;
    int64_t num_pairs = 0;
    if ((s = pe_comparator_schedule(n, comparators, seed, &pairs, &num_pairs))) return s;

    /* this rank's contiguous share of the schedule (all of it without MPI) */
    int ranks = shard ? pe_dist_size() : 1, rank = shard ? pe_dist_rank() : 0;
    int64_t first = num_pairs * rank / ranks, last = num_pairs * (rank + 1) / ranks;

    float *inv = pe_alloc((size_t)n * G, sizeof(float), "inverse norms");
    float *heaps = pe_alloc((size_t)n * G * K, sizeof(float), "zero-shot selection");
    int *count = calloc((size_t)n, sizeof *count); /* keys offered so far, per image */
    pe_pair_scorer *ps = NULL;
    if (!inv || !heaps || !count ||
        pe_pair_scorer_new(feats, n, G, dim, T, K, params->order, params->precision, &ps)) {
        s = pe_fail(PE_ERR_NOMEM, "zero-shot: out of memory (%d images x %d patches, K = %d)", n, G,
                    K);
        goto done;
    }
    /* unused slots stay +INF: a rank's partial selections merge as sets (dist.c) */
    for (size_t i = 0; i < (size_t)n * G * K; i++) heaps[i] = INFINITY;
    for (int b = 0; b < n; b++) pe_inv_norms(feats[b], G, dim, inv + (size_t)b * G);

    for (int64_t e = first; e < last; e++) {
        if (ranks > 1 && pe_dist_peer_failed()) { /* stop: main.c reports that rank */
            s = pe_fail(PE_ERR_IO, "zero-shot scoring stopped: another MPI rank failed");
            goto done;
        }
        const pe_pair *p = &pairs[e];
        float *heap_lo = p->dirs & PE_PAIR_LO ? heaps + (size_t)p->lo * G * K : NULL;
        float *heap_hi = p->dirs & PE_PAIR_HI ? heaps + (size_t)p->hi * G * K : NULL;
        if (pe_pair_scorer_run(ps, p->lo, inv + (size_t)p->lo * G, p->hi, inv + (size_t)p->hi * G,
                               heap_lo, count[p->lo], heap_hi, count[p->hi])) {
            s = pe_fail(PE_ERR_NOMEM, "zero-shot: scoring tile GEMM failed (out of memory)");
            goto done;
        }
        count[p->lo] += heap_lo != NULL;
        count[p->hi] += heap_hi != NULL;
        if (progress) progress(e - first + 1, last - first, user);
    }
    if (ranks > 1 && (s = pe_dist_merge_selection(heaps, (size_t)n * G, K))) goto done;
    for (int b = 0; b < n; b++)
        pe_score_finish(heaps + (size_t)b * G * K, G, K, params->order,
                        patch_scores + (size_t)b * G);
done:
    free(pairs);
    free(inv);
    free(heaps);
    pe_pair_scorer_free(ps);
    free(count);
    return s;
}

pe_status pe_zeroshot_score(const float *const *feats, int n, int patches, int dim,
                            const pe_detect_params *params, float *patch_scores)
{
    /* The scoring state is allocated below: refuse up front when it cannot fit. */
    pe_memory_estimate est;
    pe_status s = pe_zeroshot_estimate(n, patches, dim, 0, 1, params, &est);
    if (!s) s = pe_zeroshot_check_memory(&est, 0);
    if (s) return s;
    int full = params->comparators <= 0 || params->comparators >= n - 1;
    int shard = !params->local_only && pe_dist_size() > 1;
    if (full && !shard && !params->score_progress)
        return pe_score_batch(feats, n, patches, dim, &params->score, patch_scores, NULL);
    return pe_score_batch_scheduled(feats, n, patches, dim, &params->score, params->comparators,
                                    params->comparator_seed, shard, params->score_progress,
                                    params->progress_user, patch_scores);
}
