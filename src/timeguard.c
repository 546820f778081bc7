/* timeguard.c — how long a batch zero-shot will take, from a short calibration, before
 * the bulk of the work starts (docs/SCALE.md "Time guard"). */
#include "scale.h"

#include <time.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int64_t pe_zeroshot_num_pairs(int n, int comparators)
{
    if (n < 2) return 0;
    /* the length of pe_comparator_schedule's list, without building it */
    if (comparators <= 0 || comparators >= n - 1) return (int64_t)n * (n - 1) / 2;
    int64_t h = comparators / 2, extra = comparators % 2 ? (n % 2 ? n : n / 2) : 0;
    return (int64_t)n * h + extra;
}

pe_status pe_zeroshot_pair_seconds(const pe_features *sample, const pe_detect_params *params,
                                   double *seconds)
{
    if (!sample || !sample->data || !params || !seconds)
        return pe_fail(PE_ERR_ARG, "pe_zeroshot_pair_seconds: NULL argument");
    *seconds = 0;
    int G = sample->grid_h * sample->grid_w;
    /* a batch of the sample twice: one pair, both directions, through the scorer every
     * batch uses (same GEMM shape, tile and reductions; cost does not depend on values) */
    const float *feats[2] = {sample->data, sample->data};
    float *scores = pe_alloc((size_t)2 * G, sizeof(float), "calibration scores");
    if (!scores) return PE_ERR_NOMEM;
    pe_status s = PE_OK;
    double best = 0;
    for (int rep = 0; rep < 3 && !s; rep++) { /* the first warms up threads and scratch */
        double t0 = now();
        s = pe_score_batch_scheduled(feats, 2, G, sample->dim, &params->score, 0, 0, 0, NULL, NULL,
                                     scores);
        double t = now() - t0;
        if (rep > 0 && (best == 0 || t < best)) best = t;
    }
    free(scores);
    if (!s) *seconds = best;
    return s;
}
