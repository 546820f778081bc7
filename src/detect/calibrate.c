/* calibrate.c — a bank's calibration from normal images: each image is scored through the
 * detection pipeline (pe_bank_predict), and the scores go to the conformal rule of
 * conformal.c. It sits above detect.c, which needs only conformal.c (p-values, stored
 * calibration) and never calls back here. docs/BEYOND.md has the argument. */
#include "bank.h"

#include <stdlib.h>

/* Scores of calibration images through predict (features given or extracted). */
static pe_status calibrate(pe_bank *b, pe_model *model, const pe_image *images,
                           const pe_features *feats, int n, float alpha)
{
    if (!b || n < 1 || (!images && !feats))
        return pe_fail(PE_ERR_ARG, "calibration: no calibration images");
    if (!(alpha > 0 && alpha < 1))
        return pe_fail(PE_ERR_ARG, "calibration: false-alarm rate must be in (0, 1), got %g",
                       (double)alpha);
    float *scores = malloc((size_t)n * sizeof *scores);
    if (!scores) return pe_fail(PE_ERR_NOMEM, "calibration: out of memory");
    pe_status s = PE_OK;
    for (int i = 0; i < n && !s; i++) {
        pe_result r;
        s = images ? pe_bank_predict(b, model, &images[i], &r)
                   : pe_bank_predict_features(b, &feats[i], &r);
        if (!s) scores[i] = r.image_score;
        pe_result_free(&r);
    }
    if (!s) s = pe_bank_store_calibration(b, scores, n, alpha, PE_CALIB_IMAGES);
    free(scores);
    return s;
}

pe_status pe_bank_calibrate(pe_bank *b, pe_model *model, const pe_image *images, int n, float alpha)
{
    if (!model || !images) return pe_fail(PE_ERR_ARG, "pe_bank_calibrate: NULL argument");
    return calibrate(b, model, images, NULL, n, alpha);
}

pe_status pe_bank_calibrate_features(pe_bank *b, const pe_features *feats, int n, float alpha)
{
    if (!feats) return pe_fail(PE_ERR_ARG, "pe_bank_calibrate_features: NULL argument");
    return calibrate(b, NULL, NULL, feats, n, alpha);
}
