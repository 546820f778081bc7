/* score.c — PLACEHOLDER, to be replaced by its implementation. */
#include "internal.h"

pe_score_params pe_score_default_params(const char *preset, int zeroshot)
{
    (void)preset;
    (void)zeroshot;
    pe_score_params p = {0};
    return p;
}

pe_status pe_score_preset(const char *preset, int zeroshot, pe_score_params *out)
{
    (void)preset;
    (void)zeroshot;
    (void)out;
    return pe_fail(PE_ERR_UNSUPPORTED, "not implemented yet");
}

pe_status pe_score_query(const float *query, int query_patches, const float *const *refs, const int *ref_patches, int num_refs, int dim, const pe_score_params *params, float *patch_scores, float *image_score)
{
    (void)query;
    (void)query_patches;
    (void)refs;
    (void)ref_patches;
    (void)num_refs;
    (void)dim;
    (void)params;
    (void)patch_scores;
    (void)image_score;
    return pe_fail(PE_ERR_UNSUPPORTED, "not implemented yet");
}

pe_status pe_score_batch(const float *const *feats, int num_images, int patches, int dim, const pe_score_params *params, float *patch_scores, float *image_scores)
{
    (void)feats;
    (void)num_images;
    (void)patches;
    (void)dim;
    (void)params;
    (void)patch_scores;
    (void)image_scores;
    return pe_fail(PE_ERR_UNSUPPORTED, "not implemented yet");
}

float pe_image_score(const float *patch_scores, int n, const pe_score_params *params)
{
    (void)patch_scores;
    (void)n;
    (void)params;
    return 0;
}

void pe_apply_attention_mask(float *patch_scores, const float *attn, int n, float threshold, float low_weight)
{
    (void)patch_scores;
    (void)attn;
    (void)n;
    (void)threshold;
    (void)low_weight;
}
