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
    const size_t n = (size_t)G * sample->dim;
    /* a batch of two images of the sample's shape: one pair, both directions, through the
     * scorer every batch uses (same tile and reductions). Their values are pseudo-random:
     * the fp32 screen's cost depends on near-ties (score_screen.c), which the features of
     * one flat grey image, the sample, are full of and real batches mostly are not. */
    float *pair = pe_alloc(2 * n, sizeof(float), "calibration features");
    float *scores = pe_alloc((size_t)2 * G, sizeof(float), "calibration scores");
    if (!pair || !scores) {
        free(pair);
        free(scores);
        return PE_ERR_NOMEM;
    }
    uint64_t x = 0x9e3779b97f4a7c15ull;
    for (size_t i = 0; i < 2 * n; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        pair[i] = (float)((x >> 40) * (1.0 / 16777216.0));
    }
    const float *feats[2] = {pair, pair + n};
    pe_status s = PE_OK;
    double best = 0;
    for (int rep = 0; rep < 3 && !s; rep++) { /* the first warms up threads and scratch */
        double t0 = now();
        s = pe_score_batch_scheduled(feats, 2, G, sample->dim, &params->score, 0, 0, 0, NULL, NULL,
                                     scores);
        double t = now() - t0;
        if (rep > 0 && (best == 0 || t < best)) best = t;
    }
    free(pair);
    free(scores);
    if (!s) *seconds = best;
    return s;
}
