/* conformal.c — thresholds with a stated false-alarm rate (split conformal), from
 * normal images only: the rank rule, p-values, and the calibration a bank stores. docs/BEYOND.md gives the argument; in short:
 *
 *   n calibration scores s_1..s_n of normal images, a new normal image's score s.
 *   If the n + 1 scores are exchangeable, the rank of s among them is uniform, so with
 *   k = ceil((1 - alpha)(n + 1)) and t = s_(k) (the k-th smallest):
 *       P(s > t) <= (n + 1 - k) / (n + 1) <= alpha.
 *   k <= n needs n >= ceil(1/alpha) - 1; with fewer scores no finite t has the bound.
 *   The p-value p = (1 + #{s_i >= s}) / (n + 1) gives the same decision: s > t <=> p <= alpha.
 *
 * The scores are the bank's own image scores (Eq. 4, masking included), so the threshold
 * is in the units predict reports. Scoring the calibration images is calibrate.c's job, a
 * step above the detection pipeline (detect.c calls into this file, calibrate.c calls both). */
#include "bank.h"

#include <math.h>
#include <string.h>

static int cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* k = ceil((1 - alpha)(n + 1)); the small epsilon keeps an exact product (alpha = 0.1,
 * n = 19: k = 18) from rounding up to the next integer. */
static long conformal_rank(int n, float alpha)
{
    return (long)ceil((1.0 - (double)alpha) * (n + 1.0) - 1e-9);
}

float pe_conformal_threshold(const float *scores, int n, float alpha)
{
    if (n < 1 || !scores || !(alpha > 0 && alpha < 1)) return INFINITY;
    long k = conformal_rank(n, alpha);
    if (k > n) return INFINITY;
    if (k < 1) k = 1;
    float *sorted = malloc((size_t)n * sizeof *sorted);
    if (!sorted) return INFINITY;
    memcpy(sorted, scores, (size_t)n * sizeof *sorted);
    qsort(sorted, (size_t)n, sizeof *sorted, cmp_float);
    float t = sorted[k - 1];
    free(sorted);
    return t;
}

double pe_conformal_p_value(const float *scores, int n, float score)
{
    if (n < 1 || !scores || isnan(score)) return NAN;
    int at_least = 0;
    for (int i = 0; i < n; i++) at_least += scores[i] >= score;
    return (1.0 + at_least) / (n + 1.0);
}

/* ------------------------------------------------------------------ bank */

static const char *source_name(int source)
{
    switch (source) {
    case PE_CALIB_LOO: return "leave-one-out";
    case PE_CALIB_IMAGES: return "images";
    }
    return "none";
}

/* Threshold for alpha from the stored scores: the conformal rank when it exists, else
 * the largest calibration score (the label-free rule of the paper's bank) with the
 * guarantee marked missing. */
static void apply_alpha(pe_bank *b, float alpha)
{
    b->calib_alpha = alpha;
    float t = pe_conformal_threshold(b->calib_scores, b->calib_n, alpha);
    b->threshold = isinf(t) && b->calib_n > 0 ? b->calib_scores[b->calib_n - 1] : t;
}

pe_status pe_bank_store_calibration(pe_bank *b, const float *scores, int n, float alpha, int source)
{
    if (!(alpha > 0 && alpha < 1))
        return pe_fail(PE_ERR_ARG, "calibration: false-alarm rate must be in (0, 1), got %g",
                       (double)alpha);
    if (n < 1) return pe_fail(PE_ERR_ARG, "calibration: no calibration scores");
    float *copy = malloc((size_t)n * sizeof *copy);
    if (!copy) return pe_fail(PE_ERR_NOMEM, "calibration: out of memory");
    for (int i = 0; i < n; i++) {
        if (isnan(scores[i])) {
            free(copy);
            return pe_fail(PE_ERR_ARG, "calibration: score %d is NaN", i);
        }
        copy[i] = scores[i];
    }
    qsort(copy, (size_t)n, sizeof *copy, cmp_float);
    free(b->calib_scores);
    b->calib_scores = copy;
    b->calib_n = n;
    b->calib_source = source;
    b->params.fpr = alpha;
    apply_alpha(b, alpha);
    return PE_OK;
}

pe_status pe_bank_calibration(const pe_bank *b, pe_calibration *out)
{
    if (!b || !out) return pe_fail(PE_ERR_ARG, "pe_bank_calibration: NULL argument");
    out->alpha = b->calib_n ? b->calib_alpha : 0;
    out->n = b->calib_n;
    out->source = source_name(b->calib_n ? b->calib_source : PE_CALIB_NONE);
    out->guaranteed = b->calib_n > 0 && conformal_rank(b->calib_n, b->calib_alpha) <= b->calib_n;
    out->threshold = b->threshold;
    return PE_OK;
}

pe_status pe_bank_set_fpr(pe_bank *b, float alpha)
{
    if (!b) return pe_fail(PE_ERR_ARG, "pe_bank_set_fpr: NULL bank");
    if (!(alpha > 0 && alpha < 1))
        return pe_fail(PE_ERR_ARG, "calibration: false-alarm rate must be in (0, 1), got %g",
                       (double)alpha);
    if (!b->calib_n)
        return pe_fail(PE_ERR_ARG, "bank holds no calibration scores (fit it with a target "
                                   "false-alarm rate, or calibrate it)");
    b->params.fpr = alpha;
    apply_alpha(b, alpha);
    return PE_OK;
}

double pe_bank_p_value(const pe_bank *b, float score)
{
    if (!b || !b->calib_n) return NAN;
    return pe_conformal_p_value(b->calib_scores, b->calib_n, score);
}
