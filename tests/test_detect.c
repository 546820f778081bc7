/* test_detect.c — the detection pipeline on features: bank predict == Eq. 1-4 scoring,
 * leave-one-out threshold, zero-shot with masking, result maps; and, when
 * weights/mobilenet_v2 exists, the image path (fit / predict / zeroshot). */
#include "detect/bank.h"
#include "patchead.h"
#include "score/score.h"
#include "score/score_kernel.h"
#include "testlib.h"

#include <pthread.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

static uint64_t rng_state = 99;
static float frand(void)
{
    rng_state = rng_state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (float)((double)(rng_state >> 11) / 9007199254740992.0 - 0.5);
}

static pe_features make_feats(int gh, int gw, int dim, int with_attn)
{
    pe_features f = {gh, gw, dim, malloc(sizeof(float) * gh * gw * dim), NULL};
    for (int i = 0; i < gh * gw * dim; i++) f.data[i] = frand();
    if (with_attn) {
        f.attn = malloc(sizeof(float) * gh * gw);
        for (int i = 0; i < gh * gw; i++) f.attn[i] = frand() + 0.5f;
    }
    return f;
}

static void test_predict_matches_score(void)
{
    const int m = 4, dim = 16;
    pe_features refs[4];
    for (int k = 0; k < m; k++) refs[k] = make_feats(6, 5 + k, dim, 1);
    pe_features q = make_feats(7, 6, dim, 1);
    for (int mask = 0; mask < 2; mask++) {
        pe_detect_params p = pe_detect_default_params(0);
        p.score.k_count = 2;
        p.score.top_fraction = 0.1f;
        p.mask = mask;
        pe_bank *b;
        CHECK(pe_bank_fit_features(NULL, refs, m, &p, &b) == PE_OK);
        if (!b) return;
        pe_result r;
        CHECK(pe_bank_predict_features(b, &q, &r) == PE_OK);
        const float *views[4];
        int patches[4];
        for (int k = 0; k < m; k++) {
            views[k] = refs[k].data;
            patches[k] = refs[k].grid_h * refs[k].grid_w;
        }
        float want[42], img;
        CHECK(pe_score_query(q.data, 42, views, patches, m, dim, &p.score, want, &img) == PE_OK);
        if (mask) pe_apply_attention_mask(want, q.attn, 42, 0.05f, 0.5f);
        img = pe_image_score(want, 42, &p.score);
        CHECK(r.grid_h == 7 && r.grid_w == 6 && r.aligned == 0 && r.align_failed == 0);
        for (int i = 0; i < 42; i++) CHECK_NEAR(r.patch_scores[i], want[i], 1e-6);
        CHECK_NEAR(r.image_score, img, 1e-6);

        /* leave-one-out threshold = max over refs of the score against the others */
        float worst = -1;
        for (int k = 0; k < m; k++) {
            const float *others[3];
            int op[3], n = 0;
            for (int o = 0; o < m; o++)
                if (o != k) {
                    others[n] = refs[o].data;
                    op[n++] = refs[o].grid_h * refs[o].grid_w;
                }
            int g = refs[k].grid_h * refs[k].grid_w;
            float ps[64];
            CHECK(pe_score_query(refs[k].data, g, others, op, n, dim, &p.score, ps, NULL) == PE_OK);
            if (mask) pe_apply_attention_mask(ps, refs[k].attn, g, 0.05f, 0.5f);
            float s = pe_image_score(ps, g, &p.score);
            if (s > worst) worst = s;
        }
        CHECK_NEAR(pe_bank_threshold(b), worst, 1e-6);

        /* a query with other dims fails cleanly */
        pe_features bad = make_feats(2, 2, dim + 1, 1);
        pe_result rb;
        CHECK(pe_bank_predict_features(b, &bad, &rb) == PE_ERR_SHAPE);
        pe_features_free(&bad);
        if (mask) {
            pe_features noattn = q;
            noattn.attn = NULL;
            CHECK(pe_bank_predict_features(b, &noattn, &rb) == PE_ERR_ARG);
        }
        pe_result_free(&r);
        pe_bank_free(b);
    }
    for (int k = 0; k < m; k++) pe_features_free(&refs[k]);
    pe_features_free(&q);
}

/* The bank's reference cache (score.h, pe_ref_cache): what the scoring derives from a
 * reference alone (the fp32 screen's packed bf16 copy and bounds; the bf16 copy in bf16)
 * is prepared once per loaded bank, on its first query, and not again: every later predict
 * on that bank adds no preparation (pe_score_ref_preps), and gives the bits of the
 * uncached scoring (pe_score_query prepares its references on every call). Also with
 * queries scored from several threads at once against a fresh bank. */
typedef struct {
    const pe_bank *bank;
    const pe_features *q;
    float *scores; /* (G + 1): patch scores, image score */
    int G, ok;
} cache_job;

static void *cache_worker(void *arg)
{
    cache_job *j = arg;
    pe_result r;
    j->ok = pe_bank_predict_features(j->bank, j->q, &r) == PE_OK;
    if (j->ok) {
        memcpy(j->scores, r.patch_scores, (size_t)j->G * sizeof *j->scores);
        j->scores[j->G] = r.image_score;
        pe_result_free(&r);
    }
    return NULL;
}

static void test_bank_ref_cache(void)
{
    enum { M = 3, DIM = 64, GH = 12, GW = 10, G = GH * GW, NQ = 2 };
    pe_features refs[M], q[NQ];
    for (int k = 0; k < M; k++) refs[k] = make_feats(GH + k, GW, DIM, 0); /* 120..144 patches */
    for (int i = 0; i < NQ; i++) q[i] = make_feats(GH, GW, DIM, 0);
    const float *views[M];
    int patches[M];
    for (int k = 0; k < M; k++)
        views[k] = refs[k].data, patches[k] = refs[k].grid_h * refs[k].grid_w;
    char path[] = "/tmp/test_detect_cache_XXXXXX";
    const int fd = mkstemp(path);
    CHECK(fd >= 0);
    if (fd >= 0) close(fd);
    for (int prec = 0; prec < 2 && fd >= 0; prec++) {
        pe_detect_params p = pe_detect_default_params(0);
        p.score.precision = prec ? PE_PRECISION_BF16 : PE_PRECISION_FP32;
        /* preparations per reference set: fp32 prepares where the screen runs (AVX-512-BF16),
         * bf16 always (packed for the fused kernel or row-major for the engine) */
        const long long per_set = prec || pe_score_screen_runs(DIM) ? M : 0;
        const char *what = prec ? "bf16" : "fp32";
        float want[NQ][G], want_img[NQ];
        for (int i = 0; i < NQ; i++) {
            const long long c0 = pe_score_ref_preps();
            CHECK(pe_score_query(q[i].data, G, views, patches, M, DIM, &p.score, want[i],
                                 &want_img[i]) == PE_OK);
            CHECK_MSG(pe_score_ref_preps() - c0 == per_set, "%s: uncached scoring prepared %lld",
                      what, pe_score_ref_preps() - c0);
        }
        pe_bank *fit = NULL, *b = NULL;
        CHECK(pe_bank_fit_features(NULL, refs, M, &p, &fit) == PE_OK);
        if (!fit) break;
        /* fit's leave-one-out scoring used every reference: its cache is filled already */
        long long c0 = pe_score_ref_preps();
        pe_result r;
        CHECK(pe_bank_predict_features(fit, &q[0], &r) == PE_OK);
        CHECK_MSG(pe_score_ref_preps() == c0, "%s: predict after fit prepared %lld references",
                  what, pe_score_ref_preps() - c0);
        pe_result_free(&r);
        CHECK(pe_bank_save(fit, path) == PE_OK);
        pe_bank_free(fit);
        CHECK(pe_bank_load(path, NULL, &b) == PE_OK);
        if (!b) break;
        for (int k = 0; k < M; k++) CHECK(pe_ref_cache_bytes(&b->cache[k]) == 0);
        /* a loaded bank: the first predict prepares each reference once, the next none */
        for (int call = 0; call < 4; call++) {
            const int i = call % NQ;
            c0 = pe_score_ref_preps();
            CHECK(pe_bank_predict_features(b, &q[i], &r) == PE_OK);
            const long long made = pe_score_ref_preps() - c0;
            CHECK_MSG(made == (call ? 0 : per_set), "%s: predict %d prepared %lld references", what,
                      call, made);
            CHECK_MSG(r.patch_scores && !memcmp(r.patch_scores, want[i], sizeof want[i]) &&
                          r.image_score == want_img[i],
                      "%s: predict %d differs from the uncached scoring", what, call);
            pe_result_free(&r);
        }
        for (int k = 0; k < M; k++)
            CHECK_MSG((pe_ref_cache_bytes(&b->cache[k]) > 0) == (per_set > 0),
                      "%s: reference %d holds %zu cached bytes", what, k,
                      pe_ref_cache_bytes(&b->cache[k]));
        pe_bank_free(b);
        /* four threads predicting at once on a fresh bank: each reference built by one (or
         * a thread that lost the race), the same bits everywhere, nothing built afterwards */
        b = NULL;
        CHECK(pe_bank_load(path, NULL, &b) == PE_OK);
        if (!b) break;
        enum { NT = 4 };
        pthread_t th[NT];
        cache_job jobs[NT];
        float out[NT][G + 1];
        c0 = pe_score_ref_preps();
        for (int t = 0; t < NT; t++) {
            jobs[t] = (cache_job){b, &q[t % NQ], out[t], G, 0};
            CHECK(pthread_create(&th[t], NULL, cache_worker, &jobs[t]) == 0);
        }
        for (int t = 0; t < NT; t++) pthread_join(th[t], NULL);
        const long long made = pe_score_ref_preps() - c0;
        CHECK_MSG(made >= per_set && made <= NT * per_set, "%s: %d threads prepared %lld", what, NT,
                  made);
        for (int t = 0; t < NT; t++)
            CHECK_MSG(jobs[t].ok && !memcmp(out[t], want[t % NQ], sizeof want[0]) &&
                          out[t][G] == want_img[t % NQ],
                      "%s: thread %d differs from the uncached scoring", what, t);
        c0 = pe_score_ref_preps();
        CHECK(pe_bank_predict_features(b, &q[1], &r) == PE_OK);
        CHECK(pe_score_ref_preps() == c0);
        pe_result_free(&r);
        pe_bank_free(b);
    }
    unlink(path);
    for (int k = 0; k < M; k++) pe_features_free(&refs[k]);
    for (int i = 0; i < NQ; i++) pe_features_free(&q[i]);
}

static void test_zeroshot_features(void)
{
    const int n = 6, dim = 12, gh = 5, gw = 4, g = 20;
    pe_features f[6];
    for (int b = 0; b < n; b++) f[b] = make_feats(gh, gw, dim, 1);
    const float *views[6];
    for (int b = 0; b < n; b++) views[b] = f[b].data;
    for (int mask = 0; mask < 2; mask++) {
        pe_detect_params p = pe_detect_default_params(1);
        p.mask = mask;
        pe_result r[6];
        CHECK(pe_zeroshot_features(f, n, &p, r) == PE_OK);
        float want[6 * 20], imgs[6];
        CHECK(pe_score_batch(views, n, g, dim, &p.score, want, imgs) == PE_OK);
        for (int b = 0; b < n; b++) {
            if (mask) pe_apply_attention_mask(want + b * g, f[b].attn, g, 0.05f, 0.5f);
            for (int i = 0; i < g; i++) CHECK_NEAR(r[b].patch_scores[i], want[b * g + i], 1e-6);
            CHECK_NEAR(r[b].image_score, pe_image_score(want + b * g, g, &p.score), 1e-6);
            CHECK(r[b].grid_h == gh && r[b].grid_w == gw);
        }
        /* the map of a result is pe_anomaly_map of its patch scores */
        float m1[30 * 40], m2[30 * 40];
        CHECK(pe_result_map(&r[2], 30, 40, 4, m1) == PE_OK);
        CHECK(pe_anomaly_map(r[2].patch_scores, gh, gw, 30, 40, 4, m2) == PE_OK);
        CHECK(memcmp(m1, m2, sizeof m1) == 0);
        for (int b = 0; b < n; b++) pe_result_free(&r[b]);
    }
    pe_result r[6];
    pe_detect_params p = pe_detect_default_params(1);
    CHECK(pe_zeroshot_features(f, 1, &p, r) == PE_ERR_ARG);
    f[3].grid_w = 5, f[3].grid_h = 4; /* same G, other grid */
    CHECK(pe_zeroshot_features(f, n, &p, r) == PE_ERR_SHAPE);
    CHECK(strstr(pe_last_error(), "image 3") != NULL);
    for (int b = 0; b < n; b++) pe_features_free(&f[b]);
}

/* With the real MobileNetV2 weights (make weights): images end to end. */
static void test_model_pipeline(void)
{
    const char *wpath = "weights/mobilenet_v2";
    struct stat st;
    if (stat(wpath, &st) != 0) {
        SKIP("weights/mobilenet_v2 absent (make weights)");
        return;
    }
    pe_model *model;
    pe_model_params mp = pe_model_default_params();
    if (pe_model_load(wpath, &mp, &model) != PE_OK) {
        CHECK_MSG(0, "load: %s", pe_last_error());
        return;
    }
    /* small synthetic images: smooth gradients; the query has a bright square */
    pe_image imgs[4];
    for (int k = 0; k < 4; k++) {
        imgs[k].width = 96;
        imgs[k].height = 80;
        imgs[k].rgb = malloc(96 * 80 * 3);
        for (int y = 0; y < 80; y++)
            for (int x = 0; x < 96; x++) {
                uint8_t *px = imgs[k].rgb + 3 * (y * 96 + x);
                px[0] = (uint8_t)(x * 2 + k);
                px[1] = (uint8_t)(y * 3);
                px[2] = (uint8_t)(100 + ((x / 8 + y / 8) % 2) * 40);
                if (k == 3 && x > 40 && x < 60 && y > 30 && y < 50) px[0] = px[1] = px[2] = 250;
            }
    }
    pe_detect_params p = pe_detect_default_params(0);
    p.size = 128;
    pe_bank *b;
    CHECK(pe_bank_fit(model, imgs, 3, NULL, &p, &b) == PE_OK);
    if (b) {
        pe_result good, bad;
        CHECK(pe_bank_predict(b, model, &imgs[1], &good) == PE_OK);
        CHECK(pe_bank_predict(b, model, &imgs[3], &bad) == PE_OK);
        CHECK_NEAR(good.image_score, 0, 1e-5); /* a reference itself */
        CHECK(bad.image_score > good.image_score);
        CHECK(pe_bank_params(b)->size == 128);
        pe_result_free(&good);
        pe_result_free(&bad);
        pe_bank_free(b);
    }
    p.mask = 1; /* a CNN has no CLS attention */
    CHECK(pe_bank_fit(model, imgs, 3, NULL, &p, &b) == PE_ERR_UNSUPPORTED);
    CHECK(strstr(pe_last_error(), "attention") != NULL);
    pe_detect_params z = pe_detect_default_params(1);
    z.size = 128;
    pe_result r[4];
    CHECK(pe_zeroshot(model, imgs, 4, &z, NULL, NULL, r) == PE_OK);
    CHECK(r[3].image_score > r[0].image_score && r[3].image_score > r[1].image_score);
    for (int k = 0; k < 4; k++) pe_result_free(&r[k]);
    for (int k = 0; k < 4; k++) free(imgs[k].rgb);
    pe_model_free(model);
}

int main(void)
{
    pe_set_threads(2);
    RUN(test_predict_matches_score);
    RUN(test_bank_ref_cache);
    RUN(test_zeroshot_features);
    RUN(test_model_pipeline);
    return test_summary();
}
