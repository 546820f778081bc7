/* drift.c — is the stream of new normal images still like the calibration images?
 *
 * The conformal threshold (conformal.c) promises P(normal image flagged) <= alpha only while
 * a new normal image's score is exchangeable with the calibration scores. When lighting, the
 * camera or the product drifts, normal images score higher and false alarms pile up, while
 * every single image still looks like "a bit high". The check here looks at the images the
 * bank judges normal (score <= t, the calibrated threshold) and asks whether their scores are
 * stochastically higher than the calibration scores at or below t:
 *
 *   reference sample  c_1..c_n  = calibration scores <= t (sorted; the bank keeps them sorted)
 *   new sample        x_1..x_m  = judged-normal scores (all, or the last `window`)
 *   D = max over x of (F_c(x) - F_x(x))      one-sided two-sample Kolmogorov-Smirnov
 *   p = exp(-2 D^2 n m / (n + m))            Smirnov's limit, an upper bound's form
 *
 * Truncating both samples at t keeps them exchangeable under the null (same distribution,
 * same cut), and restricting to judged-normal images keeps true anomalies (which score above
 * t) out of the test: a line with defects but no drift does not warn. The test is rank-based,
 * so it does not care about the score's units. Cost per report: a sort of m floats and one
 * merge, O(m log m + n). */
#include "bank.h"

#include <math.h>
#include <string.h>

struct pe_drift {
    const float *ref; /* the bank's sorted calibration scores <= threshold */
    int n_ref;
    float threshold;
    double delta;
    int window; /* 0: unbounded */
    float *x;   /* judged-normal scores: ring of `window`, or a growing array */
    int n_x, cap, head;
    int seen;
};

pe_status pe_drift_new(const pe_bank *bank, double delta, int window, pe_drift **out)
{
    if (out) *out = NULL;
    if (!bank || !out || !(delta > 0 && delta < 1) || window < 0)
        return pe_fail(PE_ERR_ARG, "drift: bad arguments (delta %g, window %d)", delta, window);
    if (bank->calib_n < 1 || !bank->calib_scores)
        return pe_fail(PE_ERR_ARG, "drift: the bank has no calibration scores (fit with "
                                   "--calibrate DIR|FRACTION or --fpr)");
    float t = bank->threshold;
    if (!isfinite(t)) t = bank->calib_scores[bank->calib_n - 1];
    int n = 0;
    while (n < bank->calib_n && bank->calib_scores[n] <= t) n++;
    if (n < 1) return pe_fail(PE_ERR_ARG, "drift: no calibration score at or below the threshold");
    pe_drift *d = calloc(1, sizeof *d);
    if (!d) return pe_fail(PE_ERR_NOMEM, "drift: out of memory");
    d->ref = bank->calib_scores, d->n_ref = n, d->threshold = t, d->delta = delta;
    d->window = window;
    *out = d;
    return PE_OK;
}

pe_status pe_drift_add(pe_drift *d, float score)
{
    if (!d) return pe_fail(PE_ERR_ARG, "pe_drift_add: NULL");
    d->seen++;
    if (!(score <= d->threshold)) return PE_OK; /* flagged (or NaN): not judged normal */
    if (d->window > 0) {
        if (!d->x && !(d->x = malloc((size_t)d->window * sizeof *d->x)))
            return pe_fail(PE_ERR_NOMEM, "drift: out of memory");
        d->x[d->head] = score;
        d->head = (d->head + 1) % d->window;
        if (d->n_x < d->window) d->n_x++;
        return PE_OK;
    }
    if (d->n_x == d->cap) {
        int cap = d->cap ? 2 * d->cap : 64;
        float *x = realloc(d->x, (size_t)cap * sizeof *x);
        if (!x) return pe_fail(PE_ERR_NOMEM, "drift: out of memory");
        d->x = x, d->cap = cap;
    }
    d->x[d->n_x++] = score;
    return PE_OK;
}

static int cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

pe_status pe_drift_report_get(const pe_drift *d, pe_drift_report *r)
{
    if (!d || !r) return pe_fail(PE_ERR_ARG, "pe_drift_report_get: NULL");
    memset(r, 0, sizeof *r);
    r->seen = d->seen, r->normal = d->n_x, r->reference = d->n_ref;
    r->threshold = d->threshold, r->delta = d->delta, r->p_value = 1;
    if (d->n_x < PE_DRIFT_MIN) return PE_OK;
    float *x = malloc((size_t)d->n_x * sizeof *x);
    if (!x) return pe_fail(PE_ERR_NOMEM, "drift: out of memory");
    memcpy(x, d->x, (size_t)d->n_x * sizeof *x);
    qsort(x, (size_t)d->n_x, sizeof *x, cmp_float);
    /* walk both sorted samples; at each distinct value v, after taking every element <= v
     * from both, F_c(v) - F_x(v) is a candidate (ties move together, as in the definition) */
    const int n = d->n_ref, m = d->n_x;
    int i = 0, j = 0;
    double best = 0;
    while (i < n || j < m) {
        float v = j >= m || (i < n && d->ref[i] <= x[j]) ? d->ref[i] : x[j];
        while (i < n && d->ref[i] <= v) i++;
        while (j < m && x[j] <= v) j++;
        double diff = (double)i / n - (double)j / m;
        if (diff > best) best = diff;
    }
    free(x);
    r->statistic = best;
    r->p_value = exp(-2.0 * best * best * ((double)n * m / (n + m)));
    if (r->p_value > 1) r->p_value = 1;
    r->warning = r->p_value < d->delta;
    return PE_OK;
}

void pe_drift_free(pe_drift *d)
{
    if (!d) return;
    free(d->x);
    free(d);
}
