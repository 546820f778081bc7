/* test_mask.c — PatchEAD+ attention masking (pe_apply_attention_mask, src/score/score.c):
 * hand-computed examples of min-max normalisation, threshold and low weight; the
 * threshold boundary; invariance to the attention's scale; flat maps; the preset
 * defaults (0.05 / 0.5, docs/METHOD.md); the mask inside batch zero-shot scoring; and end to
 * end with a random-weight ViT fixture (tests/fixtures/vit/dinov2) when it is present. */
#include "testlib.h"
#include "patchead.h"

#include <unistd.h>

/* The paper's rule written out independently, in double: m = (a - min) / (max - min),
 * weight 1 if m > threshold else low_weight. Flat maps: weight 1 everywhere. */
static void reference_weights(const float *attn, int n, double threshold, double low, double *w)
{
    double lo = attn[0], hi = attn[0];
    for (int i = 1; i < n; i++) lo = fmin(lo, attn[i]), hi = fmax(hi, attn[i]);
    for (int i = 0; i < n; i++) w[i] = (hi > lo && !((attn[i] - lo) / (hi - lo) > threshold)) ? low : 1.0;
}

/* Worked by hand: min 0.10, max 0.90, range 0.80. Normalised attention:
 *   0.10 -> 0      0.30 -> 0.25    0.13 -> 0.0375   0.50 -> 0.50
 *   0.90 -> 1      0.16 -> 0.075   0.11 -> 0.0125   0.1399 -> 0.049875
 * so with threshold 0.05 the weights are 0.5 1 0.5 1 1 1 0.5 0.5. */
static void test_hand_example(void)
{
    const float attn[8] = {0.10f, 0.30f, 0.13f, 0.50f, 0.90f, 0.16f, 0.11f, 0.1399f};
    const float weight[8] = {0.5f, 1, 0.5f, 1, 1, 1, 0.5f, 0.5f};
    float scores[8] = {0.2f, 0.4f, 0.6f, 0.8f, 1.0f, 1.2f, 1.4f, 1.6f};
    const float want[8] = {0.1f, 0.4f, 0.3f, 0.8f, 1.0f, 1.2f, 0.7f, 0.8f};
    pe_apply_attention_mask(scores, attn, 8, 0.05f, 0.5f);
    for (int i = 0; i < 8; i++) CHECK_NEAR(scores[i], want[i], 1e-6);

    /* same attention, other parameters: threshold 0.3, low weight 0.2:
     * only 0.50 (0.5) and 0.90 (1.0) stay; 0.30 (0.25) is now below */
    float s2[8] = {1, 1, 1, 1, 1, 1, 1, 1};
    pe_apply_attention_mask(s2, attn, 8, 0.3f, 0.2f);
    const float want2[8] = {0.2f, 0.2f, 0.2f, 1, 1, 0.2f, 0.2f, 0.2f};
    for (int i = 0; i < 8; i++) CHECK_NEAR(s2[i], want2[i], 1e-7);

    /* low weight 0 zeroes the background; threshold 0 keeps all but the minimum */
    float s3[8] = {1, 1, 1, 1, 1, 1, 1, 1}, s4[8] = {1, 1, 1, 1, 1, 1, 1, 1};
    pe_apply_attention_mask(s3, attn, 8, 0.05f, 0.0f);
    pe_apply_attention_mask(s4, attn, 8, 0.0f, 0.5f);
    for (int i = 0; i < 8; i++) {
        CHECK(s3[i] == (weight[i] == 1 ? 1.0f : 0.0f));
        CHECK(s4[i] == (i == 0 ? 0.5f : 1.0f));
    }
}

/* Exactly at the threshold is "not above": down-weighted. Values exact in binary. */
static void test_threshold_boundary(void)
{
    const float attn[3] = {0.0f, 1.0f, 0.0625f};
    float s[3] = {2, 2, 2};
    pe_apply_attention_mask(s, attn, 3, 0.0625f, 0.5f);
    CHECK(s[0] == 1 && s[1] == 2 && s[2] == 1);
    float t[3] = {2, 2, 2};
    pe_apply_attention_mask(t, attn, 3, 0.0624f, 0.5f);
    CHECK(t[0] == 1 && t[1] == 2 && t[2] == 2);
}

/* Min-max normalisation makes the mask independent of the attention's offset and
 * scale; random maps agree with the double-precision reference rule. */
static void test_invariance_and_reference(void)
{
    enum { N = 1024 };
    static float attn[N], attn2[N], s1[N], s2[N], base[N];
    static double w[N];
    uint64_t state = 12345;
    for (int i = 0; i < N; i++) {
        state = state * 6364136223846793005ULL + 1442695040888963407ULL;
        float u = (float)((state >> 40) / 16777216.0);
        attn[i] = u * u * 0.02f; /* skewed, like CLS attention: a few large, many small */
        attn2[i] = attn[i] * 37.0f + 5.0f;
        base[i] = s1[i] = s2[i] = 0.1f + (float)(i % 17) * 0.05f;
    }
    reference_weights(attn, N, 0.05, 0.5, w);
    pe_apply_attention_mask(s1, attn, N, 0.05f, 0.5f);
    pe_apply_attention_mask(s2, attn2, N, 0.05f, 0.5f);
    double lo = attn[0], hi = attn[0];
    for (int i = 1; i < N; i++) lo = fmin(lo, attn[i]), hi = fmax(hi, attn[i]);
    int low = 0, mismatch = 0, mismatch2 = 0;
    for (int i = 0; i < N; i++) {
        double m = (attn[i] - lo) / (hi - lo);
        if (fabs(m - 0.05) < 1e-4) continue; /* too close to the threshold for float vs double */
        mismatch += fabs(s1[i] - base[i] * w[i]) > 1e-7;
        mismatch2 += s1[i] != s2[i];
        low += w[i] != 1.0;
    }
    CHECK_MSG(mismatch == 0, "%d patches differ from the reference rule", mismatch);
    CHECK_MSG(mismatch2 == 0, "%d patches change with the attention's scale/offset", mismatch2);
    CHECK(low > N / 10 && low < N - N / 10); /* the example exercises both weights */
}

/* A flat attention map carries no foreground: scores are left unchanged (score.c's
 * documented choice); n <= 0 and NULL are no-ops. */
static void test_flat_and_degenerate(void)
{
    const float attn[4] = {0.25f, 0.25f, 0.25f, 0.25f};
    float s[4] = {1, 2, 3, 4};
    pe_apply_attention_mask(s, attn, 4, 0.05f, 0.5f);
    CHECK(s[0] == 1 && s[1] == 2 && s[2] == 3 && s[3] == 4);
    pe_apply_attention_mask(s, attn, 0, 0.05f, 0.5f);
    pe_apply_attention_mask(s, NULL, 4, 0.05f, 0.5f);
    CHECK(s[0] == 1 && s[3] == 4);
    const float one[1] = {3};
    float s1[1] = {7};
    pe_apply_attention_mask(s1, one, 1, 0.05f, 0.5f);
    CHECK(s1[0] == 7);
}

/* The paper's parameters are the defaults of every preset. */
static void test_defaults(void)
{
    const char *presets[] = {"patchead", "anomalydino", "musc"};
    for (int i = 0; i < 3; i++)
        for (int z = 0; z < 2; z++) {
            pe_score_params p = pe_score_default_params(presets[i], z);
            CHECK_NEAR(p.mask_threshold, 0.05, 1e-9);
            CHECK_NEAR(p.mask_low_weight, 0.5, 1e-9);
        }
    pe_detect_params d = pe_detect_default_params(1);
    CHECK(d.mask == 0 && d.align == 0); /* PatchEAD+ is opt-in */
}

/* Batch zero-shot from features: with mask on, every image's patch scores are the
 * unmasked ones times its own attention weights, and the image score is Eq. 4 of the
 * masked patches (masking comes before the top-r mean). */
static void test_zeroshot_masking(void)
{
    enum { B = 5, GH = 3, GW = 4, G = GH * GW, D = 6 };
    static float data[B][G * D], attn[B][G];
    pe_features feats[B];
    uint64_t state = 777;
    for (int b = 0; b < B; b++) {
        for (int i = 0; i < G * D; i++) {
            state = state * 6364136223846793005ULL + 1442695040888963407ULL;
            data[b][i] = (float)((state >> 40) / 16777216.0) - 0.5f;
        }
        for (int i = 0; i < G; i++) attn[b][i] = (float)((i * 7 + b * 3) % G) / (float)(G - 1) * 0.3f + 0.01f;
        feats[b] = (pe_features){GH, GW, D, data[b], attn[b]};
    }
    pe_detect_params p = pe_detect_default_params(1);
    p.score.top_count = 2;
    pe_result plain[B], masked[B];
    CHECK(pe_zeroshot_features(feats, B, &p, plain) == PE_OK);
    p.mask = 1;
    CHECK(pe_zeroshot_features(feats, B, &p, masked) == PE_OK);
    if (tl_current_failed) return;
    int any_low = 0;
    for (int b = 0; b < B; b++) {
        double w[G];
        reference_weights(attn[b], G, 0.05, 0.5, w);
        double top[2] = {-1e30, -1e30};
        for (int i = 0; i < G; i++) {
            double v = plain[b].patch_scores[i] * w[i];
            CHECK_NEAR(masked[b].patch_scores[i], v, 1e-6);
            if (v > top[0]) top[1] = top[0], top[0] = v;
            else if (v > top[1]) top[1] = v;
            any_low |= w[i] != 1.0;
        }
        CHECK_NEAR(masked[b].image_score, 0.5 * (top[0] + top[1]), 1e-6);
        pe_result_free(&plain[b]);
        pe_result_free(&masked[b]);
    }
    CHECK(any_low);
    /* masking without attention is an error, not a silent no-op */
    feats[2].attn = NULL;
    pe_result r[B];
    CHECK(pe_zeroshot_features(feats, B, &p, r) == PE_ERR_ARG);
    CHECK(strstr(pe_last_error(), "attention") != NULL);
}

/* End to end with a ViT: a random-weight DINOv2 fixture, images drawn here. pe_zeroshot
 * with mask must equal the unmasked run re-weighted by the model's own CLS attention. */
static void test_vit_end_to_end(void)
{
    const char *dir = "tests/fixtures/vit/dinov2";
    if (access("tests/fixtures/vit/dinov2/model.safetensors", R_OK) != 0) {
        SKIP("tests/fixtures/vit/dinov2 not present");
        return;
    }
    pe_model *model = NULL;
    CHECK_MSG(pe_model_load(dir, NULL, &model) == PE_OK, "%s", pe_last_error());
    if (!model) return;
    pe_model_info info;
    CHECK(pe_model_get_info(model, &info) == PE_OK && info.has_attention);
    enum { B = 4, W = 84, H = 70 };
    pe_image imgs[B];
    for (int b = 0; b < B; b++) { /* stripes + a bright square that moves */
        imgs[b] = (pe_image){W, H, malloc(W * H * 3)};
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++)
                for (int c = 0; c < 3; c++) {
                    int v = 60 + 40 * ((x / 6 + y / 9 + c) % 3);
                    if (x >= 20 + 10 * b && x < 34 + 10 * b && y >= 25 && y < 40) v = 230;
                    imgs[b].rgb[(y * W + x) * 3 + c] = (uint8_t)v;
                }
    }
    pe_detect_params p = pe_detect_default_params(1);
    p.size = 56; /* 4 x 4 patches of 14 */
    pe_result plain[B], masked[B];
    CHECK_MSG(pe_zeroshot(model, imgs, B, &p, NULL, NULL, plain) == PE_OK, "%s", pe_last_error());
    p.mask = 1;
    CHECK_MSG(pe_zeroshot(model, imgs, B, &p, NULL, NULL, masked) == PE_OK, "%s", pe_last_error());
    if (!tl_current_failed) {
        int any_low = 0;
        for (int b = 0; b < B; b++) {
            pe_extract_params e = pe_extract_default_params();
            e.size = 56;
            e.want_attn = 1;
            pe_features f;
            CHECK(pe_model_extract(model, &imgs[b], &e, &f) == PE_OK && f.attn);
            if (!f.attn) continue;
            int g = f.grid_h * f.grid_w;
            CHECK(g == masked[b].grid_h * masked[b].grid_w);
            double w[64];
            reference_weights(f.attn, g, 0.05, 0.5, w);
            for (int i = 0; i < g; i++) {
                CHECK_NEAR(masked[b].patch_scores[i], plain[b].patch_scores[i] * w[i], 1e-5);
                any_low |= w[i] != 1.0;
            }
            CHECK_NEAR(masked[b].image_score, pe_image_score(masked[b].patch_scores, g, &p.score), 1e-6);
            pe_features_free(&f);
        }
        CHECK(any_low);
        for (int b = 0; b < B; b++) pe_result_free(&plain[b]), pe_result_free(&masked[b]);
    }
    for (int b = 0; b < B; b++) free(imgs[b].rgb);
    pe_model_free(model);
}

int main(void)
{
    RUN(test_hand_example);
    RUN(test_threshold_boundary);
    RUN(test_invariance_and_reference);
    RUN(test_flat_and_degenerate);
    RUN(test_defaults);
    RUN(test_zeroshot_masking);
    RUN(test_vit_end_to_end);
    return test_summary();
}
