/* test_beyond.c — detection beyond the paper (docs/BEYOND.md):
 *   positional scoring (window) and grouped Eq. 3 against NumPy fixtures
 *     (tools/make_beyond_fixtures.py), window R = infinity == global scoring;
 *   greedy k-center coreset against NumPy, deterministic, 100 % coreset == full bank;
 *   rotated references end to end through a small CNN: a quarter-turned reference
 *     scores ~0 with --rotations 4 and high without;
 *   conformal threshold: false-alarm bound over many trials of exchangeable scores,
 *     p-value <=> threshold, too few scores;
 *   bank file version 2 round trip and version 1 still loading. */
#include "detect/bank.h"
#include "score/beyond.h"
#include "detect/ref_views.h"
#include "score/score.h"
#include "patchead.h"
#include "testlib.h"

#include <stdint.h>
#include <unistd.h>

enum { GH = 5, GW = 6, G = GH * GW, D = 16, V = 4 };

static float *load_npy(const char *path, int64_t expect_elems)
{
    float *data = NULL;
    int ndim;
    int64_t shape[4];
    if (pe_npy_load(path, &data, &ndim, shape) != PE_OK) {
        printf("# %s: %s\n", path, pe_last_error());
        return NULL;
    }
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) n *= shape[i];
    if (n != expect_elems) {
        printf("# %s: %lld elements, want %lld\n", path, (long long)n, (long long)expect_elems);
        free(data);
        return NULL;
    }
    return data;
}

static double max_abs_diff(const float *a, const float *b, int n)
{
    double m = 0;
    for (int i = 0; i < n; i++) m = tl_worse(m, fabs((double)a[i] - b[i]));
    return m;
}

/* ------------------------------------------------------------------ window / groups */

static void test_window_matches_numpy(void)
{
    float *q = load_npy(FIXTURE("beyond/query.npy"), G * D);
    float *views = load_npy(FIXTURE("beyond/views.npy"), V * G * D);
    CHECK(q && views);
    if (!q || !views) return;
    float qinv[G], vinv[V][G], out[G];
    pe_inv_norms(q, G, D, qinv);
    for (int v = 0; v < V; v++) pe_inv_norms(views + (size_t)v * G * D, G, D, vinv[v]);
    for (int r = 0; r <= 2; r++) {
        char path[128];
        snprintf(path, sizeof path, FIXTURE("beyond/window_r%d.npy"), r);
        float *want = load_npy(path, V * G);
        CHECK(want);
        for (int v = 0; want && v < V; v++) {
            pe_score_window(q, qinv, views + (size_t)v * G * D, vinv[v], GH, GW, D, r, out);
            CHECK_MSG(max_abs_diff(out, want + v * G, G) < 2e-6, "R %d view %d: max diff %g", r, v,
                      max_abs_diff(out, want + v * G, G));
        }
        free(want);
    }
    free(q);
    free(views);
}

static void test_groups_match_numpy(void)
{
    float *q = load_npy(FIXTURE("beyond/query.npy"), G * D);
    float *views = load_npy(FIXTURE("beyond/views.npy"), V * G * D);
    CHECK(q && views);
    if (!q || !views) return;
    float qinv[G], inv[V * G], out[G];
    pe_inv_norms(q, G, D, qinv);
    pe_inv_norms(views, V * G, D, inv);
    const float *vf[V], *vi[V];
    int gh[V], gw[V], starts[3] = {0, 2, 4};
    for (int v = 0; v < V; v++) {
        vf[v] = views + (size_t)v * G * D;
        vi[v] = inv + v * G;
        gh[v] = GH;
        gw[v] = GW;
    }
    const char *wname[2] = {"global", "r1"};
    const int window[2] = {-1, 1};
    for (int w = 0; w < 2; w++)
        for (int order = 0; order < 2; order++)
            for (int k = 1; k <= 2; k++) {
                char path[128];
                snprintf(path, sizeof path, FIXTURE("beyond/groups_%s_%s%d.npy"), wname[w],
                         order ? "highest" : "lowest", k);
                float *want = load_npy(path, G);
                CHECK(want);
                if (!want) continue;
                pe_score_params p = pe_score_default_params("patchead", 0);
                p.k_count = k;
                p.order = order ? PE_ORDER_HIGHEST : PE_ORDER_LOWEST;
                CHECK(pe_score_groups(q, qinv, GH, GW, vf, vi, gh, gw, NULL, starts, 2, D,
                                      window[w], &p, out) == PE_OK);
                CHECK_MSG(max_abs_diff(out, want, G) < 2e-6, "%s: max diff %g", path,
                          max_abs_diff(out, want, G));
                free(want);
            }
    free(q);
    free(views);
}

/* A window at least as large as the grid is the global Eq. 2-4: the bank's positional
 * path (pe_score_window, no GEMM) against pe_score_query (score.c's GEMM path). */
static void test_window_infinite_is_global(void)
{
    float *q = load_npy(FIXTURE("beyond/query.npy"), G * D);
    float *views = load_npy(FIXTURE("beyond/views.npy"), V * G * D);
    CHECK(q && views);
    if (!q || !views) return;
    pe_features refs[3];
    for (int k = 0; k < 3; k++) refs[k] = (pe_features){GH, GW, D, views + (size_t)k * G * D, NULL};
    pe_features query = {GH, GW, D, q, NULL};
    const float *rp[3] = {refs[0].data, refs[1].data, refs[2].data};
    const int rn[3] = {G, G, G};
    for (int k = 1; k <= 2; k++) {
        pe_detect_params p = pe_detect_default_params(0);
        p.score.k_count = k;
        p.score.top_count = 3;
        float want[G], want_score;
        CHECK(pe_score_query(q, G, rp, rn, 3, D, &p.score, want, &want_score) == PE_OK);
        p.window = GH + GW; /* larger than the grid */
        pe_bank *b;
        CHECK(pe_bank_fit_features(NULL, refs, 3, &p, &b) == PE_OK);
        pe_result r;
        CHECK(pe_bank_predict_features(b, &query, &r) == PE_OK);
        CHECK_MSG(max_abs_diff(r.patch_scores, want, G) < 2e-6, "K %d: max diff %g", k,
                  max_abs_diff(r.patch_scores, want, G));
        CHECK_NEAR(r.image_score, want_score, 2e-6);
        /* and a small window really is different (and never lower: fewer candidates) */
        pe_result_free(&r);
        pe_bank_free(b);
        p.window = 0;
        CHECK(pe_bank_fit_features(NULL, refs, 3, &p, &b) == PE_OK);
        CHECK(pe_bank_predict_features(b, &query, &r) == PE_OK);
        int lower = 0, higher = 0;
        for (int i = 0; i < G; i++) {
            lower += r.patch_scores[i] < want[i] - 1e-6f;
            higher += r.patch_scores[i] > want[i] + 1e-6f;
        }
        CHECK(lower == 0 && higher > G / 2);
        pe_result_free(&r);
        pe_bank_free(b);
    }
    /* a query of another grid cannot be scored positionally: one clear error */
    pe_detect_params p = pe_detect_default_params(0);
    p.window = 1;
    pe_bank *b;
    CHECK(pe_bank_fit_features(NULL, refs, 3, &p, &b) == PE_OK);
    pe_features other = {GW, GH, D, q, NULL};
    pe_result r;
    CHECK(pe_bank_predict_features(b, &other, &r) == PE_ERR_SHAPE);
    CHECK(strstr(pe_last_error(), "positional") != NULL);
    pe_bank_free(b);
    /* zero-shot has no bank: it refuses the bank options instead of ignoring them */
    pe_detect_params z = pe_detect_default_params(1);
    z.window = 1;
    pe_result zr[3];
    CHECK(pe_zeroshot_features(refs, 3, &z, zr) == PE_ERR_UNSUPPORTED);
    free(q);
    free(views);
}

/* ------------------------------------------------------------------ coreset */

static void test_coreset_matches_numpy(void)
{
    const int n = 300, keep = 30;
    float *pts = load_npy(FIXTURE("beyond/points.npy"), (int64_t)n * D);
    CHECK(pts);
    if (!pts) return;
    const int seeds[2] = {0, 7};
    for (int s = 0; s < 2; s++) {
        char path[128];
        snprintf(path, sizeof path, FIXTURE("beyond/coreset_seed%d.npy"), seeds[s]);
        float *want = load_npy(path, keep);
        int sel[30], sel1[30];
        CHECK(want && pe_coreset_select(pts, n, D, keep, 0, (uint64_t)seeds[s], sel) == PE_OK);
        int same = 0;
        for (int i = 0; want && i < keep; i++) same += sel[i] == (int)want[i];
        CHECK_MSG(same == keep, "seed %d: %d of %d centres as NumPy", seeds[s], same, keep);
        /* the same with one thread, and with a projection: deterministic for the seed */
        int threads = pe_get_threads();
        pe_set_threads(1);
        CHECK(pe_coreset_select(pts, n, D, keep, 0, (uint64_t)seeds[s], sel1) == PE_OK);
        CHECK(memcmp(sel, sel1, sizeof sel) == 0);
        int p1[30], p2[30];
        CHECK(pe_coreset_select(pts, n, D, keep, 8, (uint64_t)seeds[s], p1) == PE_OK);
        pe_set_threads(threads);
        CHECK(pe_coreset_select(pts, n, D, keep, 8, (uint64_t)seeds[s], p2) == PE_OK);
        CHECK(memcmp(p1, p2, sizeof p1) == 0 && p1[0] == sel[0]);
        free(want);
    }
    /* keep = n selects every row exactly once */
    int *all = malloc(sizeof(int) * n), *seen = calloc(n, sizeof(int));
    CHECK(pe_coreset_select(pts, n, D, n, 0, 3, all) == PE_OK);
    int dup = 0;
    for (int i = 0; i < n; i++) dup += seen[all[i]]++ != 0;
    CHECK(dup == 0);
    free(all);
    free(seen);
    CHECK(pe_coreset_size(1000, 0.1f, 0) == 100 && pe_coreset_size(1000, 0.0001f, 0) == 1);
    CHECK(pe_coreset_size(1000, 0, 5000) == 1000);
    free(pts);
}

static void test_coreset_full_equals_bank(void)
{
    float *views = load_npy(FIXTURE("beyond/views.npy"), V * G * D);
    float *q = load_npy(FIXTURE("beyond/query.npy"), G * D);
    CHECK(views && q);
    if (!views || !q) return;
    pe_features refs[V];
    for (int k = 0; k < V; k++) refs[k] = (pe_features){GH, GW, D, views + (size_t)k * G * D, NULL};
    pe_features query = {GH, GW, D, q, NULL};
    pe_detect_params p = pe_detect_default_params(0); /* K = 1, lowest: the union NN */
    pe_bank *full, *core, *small;
    CHECK(pe_bank_fit_features(NULL, refs, V, &p, &full) == PE_OK);
    p.coreset_fraction = 1.0f;
    CHECK(pe_bank_fit_features(NULL, refs, V, &p, &core) == PE_OK);
    p.coreset_fraction = 0.25f;
    CHECK(pe_bank_fit_features(NULL, refs, V, &p, &small) == PE_OK);
    CHECK(pe_bank_num_refs(full) == V && pe_bank_num_refs(core) == 1);
    CHECK(isnan(pe_bank_threshold(core))); /* nothing to leave out of a union bank */
    pe_result a, b, c;
    CHECK(pe_bank_predict_features(full, &query, &a) == PE_OK);
    CHECK(pe_bank_predict_features(core, &query, &b) == PE_OK);
    CHECK(pe_bank_predict_features(small, &query, &c) == PE_OK);
    CHECK(max_abs_diff(a.patch_scores, b.patch_scores, G) < 1e-6);
    CHECK_NEAR(a.image_score, b.image_score, 1e-6);
    /* a 25 % coreset can only lose nearest neighbours */
    int lower = 0;
    for (int i = 0; i < G; i++) lower += c.patch_scores[i] < a.patch_scores[i] - 1e-6f;
    CHECK(lower == 0 && c.image_score >= a.image_score - 1e-6f);
    /* a coreset bank survives the file round trip */
    char path[] = "/tmp/pe_test_beyond_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    if (fd >= 0) close(fd);
    pe_bank *loaded = NULL;
    CHECK(pe_bank_save(small, path) == PE_OK && pe_bank_load(path, NULL, &loaded) == PE_OK);
    pe_result d;
    CHECK(loaded && pe_bank_predict_features(loaded, &query, &d) == PE_OK);
    CHECK(loaded && pe_bank_num_refs(loaded) == 1 && d.image_score == c.image_score);
    CHECK(loaded && pe_bank_params(loaded)->coreset_fraction == 0.25f);
    if (loaded) pe_result_free(&d);
    remove(path);
    /* options that cannot combine: one clear error each */
    p.window = 1;
    pe_bank *bad = NULL;
    CHECK(pe_bank_fit_features(NULL, refs, V, &p, &bad) == PE_ERR_UNSUPPORTED && !bad);
    CHECK(strstr(pe_last_error(), "positional") || strstr(pe_last_error(), "window"));
    p = pe_detect_default_params(0);
    p.rotations = 4;
    CHECK(pe_bank_fit_features(NULL, refs, V, &p, &bad) == PE_ERR_UNSUPPORTED && !bad);
    CHECK(strstr(pe_last_error(), "images") != NULL);
    pe_result_free(&a);
    pe_result_free(&b);
    pe_result_free(&c);
    pe_bank_free(full);
    pe_bank_free(core);
    pe_bank_free(small);
    pe_bank_free(loaded);
    free(views);
    free(q);
}

/* ------------------------------------------------------------------ rotations */

/* A 64 x 64 image with no rotational symmetry: a gradient, a bright off-centre bar and
 * pseudo-random texture. */
static pe_image asymmetric_image(uint32_t h)
{
    pe_image img = {64, 64, malloc(64 * 64 * 3)};
    for (int y = 0; y < 64; y++)
        for (int x = 0; x < 64; x++) {
            h = h * 1664525u + 1013904223u;
            uint8_t *p = img.rgb + 3 * (y * 64 + x);
            int bar = x > 8 && x < 20 && y > 5 && y < 40;
            p[0] = (uint8_t)(bar ? 250 : 3 * x);
            p[1] = (uint8_t)(bar ? 30 : 2 * y + (h >> 28));
            p[2] = (uint8_t)((h >> 24) & 0x7f);
        }
    return img;
}

/* Quarter turn clockwise, written independently of ref_views.c. */
static pe_image turn(const pe_image *src)
{
    const int n = src->width;
    pe_image out = {n, n, malloc((size_t)n * n * 3)};
    for (int y = 0; y < n; y++)
        for (int x = 0; x < n; x++)
            memcpy(out.rgb + 3 * (x * n + (n - 1 - y)), src->rgb + 3 * (y * n + x), 3);
    return out;
}

static void test_rotated_reference_end_to_end(void)
{
    pe_model *model = NULL;
    pe_model_params mp = pe_model_default_params();
    if (pe_model_load(FIXTURE("cnn/mobilenet_v2_025"), &mp, &model) != PE_OK) {
        CHECK_MSG(0, "cnn fixture: %s", pe_last_error());
        return;
    }
    pe_image ref = asymmetric_image(12345), query = turn(&ref), other = turn(&query);
    pe_image unrelated = asymmetric_image(777), unrelated_t = turn(&unrelated);
    /* the scale of "high": an unrelated image of the same kind, turned (the tiny random
     * CNN's features are nearly collinear, so absolute distances are small) */
    float score[4][2];
    for (int rot = 0; rot < 2; rot++) {
        pe_detect_params p = pe_detect_default_params(0);
        p.size = 64;
        p.rotations = rot ? 4 : 1;
        p.score.top_count = 1;
        pe_bank *b = NULL;
        CHECK(pe_bank_fit(model, &ref, 1, NULL, &p, &b) == PE_OK);
        if (!b) continue;
        CHECK(pe_bank_num_refs(b) == 1);
        pe_result r;
        const pe_image *qs[4] = {&ref, &query, &other, &unrelated_t};
        for (int i = 0; i < 4; i++) {
            score[i][rot] = NAN;
            CHECK(pe_bank_predict(b, model, qs[i], &r) == PE_OK);
            score[i][rot] = r.image_score;
            pe_result_free(&r);
        }
        pe_bank_free(b);
    }
    /* the reference itself: ~0 either way; turned 90 / 180: ~0 only with rotations,
     * without them as far as an unrelated image */
    const float far = score[3][0];
    CHECK_MSG(score[0][0] < 1e-6f && score[0][1] < 1e-6f, "self %g %g, unrelated %g", score[0][0],
              score[0][1], far);
    for (int i = 1; i < 3; i++)
        CHECK_MSG(score[i][1] < 1e-6f && score[i][0] > 0.3f * far && far > 1e-5f,
                  "turned x%d: %g with rotations, %g without, unrelated %g", i, score[i][1],
                  score[i][0], far);
    /* 8 rotations: the 45-degree view (replicated border) is matched exactly too */
    pe_image views[8];
    CHECK(pe_reference_views(&ref, 8, 0, views) == PE_OK);
    pe_detect_params p = pe_detect_default_params(0);
    p.size = 64;
    p.rotations = 8;
    pe_bank *b = NULL;
    pe_result r;
    CHECK(pe_bank_fit(model, &ref, 1, NULL, &p, &b) == PE_OK);
    CHECK(b && pe_bank_predict(b, model, &views[1], &r) == PE_OK);
    if (b) {
        CHECK_MSG(r.image_score < 1e-6f, "45 degrees: %g", r.image_score);
        pe_result_free(&r);
    }
    pe_bank_free(b);
    /* mirrored: views 0..3 rotations, 4..7 the mirror's rotations */
    pe_image mirrored[8];
    CHECK(pe_reference_views(&ref, 4, 1, mirrored) == PE_OK);
    CHECK(memcmp(mirrored[2].rgb, other.rgb, 64 * 64 * 3) == 0); /* 180 = two quarter turns */
    CHECK(memcmp(mirrored[1].rgb, query.rgb, 64 * 64 * 3) == 0);
    CHECK(mirrored[4].rgb[0] == ref.rgb[3 * 63] && mirrored[4].rgb[1] == ref.rgb[3 * 63 + 1]);
    for (int i = 0; i < 8; i++) {
        pe_image_free(&views[i]);
        pe_image_free(&mirrored[i]);
    }
    pe_image_free(&ref);
    pe_image_free(&query);
    pe_image_free(&other);
    pe_image_free(&unrelated);
    pe_image_free(&unrelated_t);
    pe_model_free(model);
}

/* ------------------------------------------------------------------ calibration */

static uint64_t rng = 2024;
static double uniform(void) { return (pe_splitmix64(&rng) >> 11) / 9007199254740992.0; }

/* Exchangeable scores: n calibration + 1 test draw from one distribution per trial. */
static void test_conformal_false_alarm_bound(void)
{
    const int trials = 20000;
    const struct {
        int n;
        float alpha;
    } cases[] = {{19, 0.1f}, {50, 0.05f}, {120, 0.01f}, {24, 0.1f}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        int n = cases[c].n, alarms = 0;
        float alpha = cases[c].alpha, *s = malloc(sizeof(float) * n);
        for (int t = 0; t < trials; t++) {
            double shape =
                1 + (t % 3); /* a different distribution each trial: still exchangeable */
            for (int i = 0; i < n; i++) s[i] = (float)pow(uniform(), shape);
            float test = (float)pow(uniform(), shape);
            float th = pe_conformal_threshold(s, n, alpha);
            double p = pe_conformal_p_value(s, n, test);
            alarms += test > th;
            if ((test > th) != (p <= alpha)) CHECK_MSG(0, "p %g vs threshold disagree", p);
        }
        /* exact rate: (n + 1 - k)/(n + 1) with k = ceil((1 - alpha)(n + 1)) <= alpha */
        double k = ceil((1.0 - alpha) * (n + 1) - 1e-9), exact = (n + 1 - k) / (n + 1);
        double rate = (double)alarms / trials, sd = sqrt(exact * (1 - exact) / trials);
        CHECK(exact <= alpha + 1e-9);
        CHECK_MSG(fabs(rate - exact) < 4 * sd + 1e-4, "n %d alpha %g: rate %g, exact %g", n, alpha,
                  rate, exact);
        CHECK_MSG(rate <= alpha + 4 * sd, "n %d alpha %g: rate %g above alpha", n, alpha, rate);
        free(s);
    }
    /* too few scores for alpha: no finite threshold */
    float few[5] = {0.1f, 0.2f, 0.3f, 0.4f, 0.5f};
    CHECK(isinf(pe_conformal_threshold(few, 5, 0.1f)));
    CHECK(pe_conformal_threshold(few, 5, 0.2f) == 0.5f); /* k = ceil(0.8 * 6) = 5 */
    CHECK_NEAR(pe_conformal_p_value(few, 5, 0.3f), 4.0 / 6, 1e-12);
    CHECK_NEAR(pe_conformal_p_value(few, 5, 9.0f), 1.0 / 6, 1e-12);
}

static void test_bank_calibration(void)
{
    float *views = load_npy(FIXTURE("beyond/views.npy"), V * G * D);
    float *pts = load_npy(FIXTURE("beyond/points.npy"), 300 * D);
    CHECK(views && pts);
    if (!views || !pts) return;
    pe_features refs[V], cal[10];
    for (int k = 0; k < V; k++) refs[k] = (pe_features){GH, GW, D, views + (size_t)k * G * D, NULL};
    for (int i = 0; i < 10; i++) cal[i] = (pe_features){GH, GW, D, pts + (size_t)i * G * D, NULL};
    /* leave-one-out calibration at fit: 4 scores, too few for alpha 0.1 */
    pe_detect_params p = pe_detect_default_params(0);
    p.fpr = 0.1f;
    pe_bank *b;
    CHECK(pe_bank_fit_features(NULL, refs, V, &p, &b) == PE_OK);
    pe_calibration c;
    CHECK(pe_bank_calibration(b, &c) == PE_OK);
    CHECK(c.n == V && !c.guaranteed && !strcmp(c.source, "leave-one-out"));
    float loo[V];
    for (int k = 0; k < V; k++) loo[k] = b->calib_scores[k];
    CHECK(pe_bank_threshold(b) == loo[V - 1]); /* no rank: the maximum, flagged */
    /* calibration images: 10 scores; alpha 0.2 -> rank ceil(0.8 * 11) = 9 */
    CHECK(pe_bank_calibrate_features(b, cal, 10, 0.2f) == PE_OK);
    float s[10];
    for (int i = 0; i < 10; i++) {
        pe_result r;
        CHECK(pe_bank_predict_features(b, &cal[i], &r) == PE_OK);
        s[i] = r.image_score;
        CHECK(!isnan(r.p_value) && r.p_value > 0 && r.p_value <= 1);
        pe_result_free(&r);
    }
    CHECK(pe_bank_calibration(b, &c) == PE_OK);
    CHECK(c.n == 10 && c.guaranteed && !strcmp(c.source, "images") && c.alpha == 0.2f);
    CHECK(pe_bank_threshold(b) == pe_conformal_threshold(s, 10, 0.2f));
    CHECK(pe_bank_set_fpr(b, 0.01f) == PE_OK); /* too few for 1 %: max, no guarantee */
    CHECK(pe_bank_calibration(b, &c) == PE_OK && !c.guaranteed);
    CHECK(pe_bank_set_fpr(b, 0.2f) == PE_OK && pe_bank_set_fpr(b, 1.5f) == PE_ERR_ARG);
    CHECK(pe_bank_calibration(b, &c) == PE_OK && c.guaranteed);
    /* round trip keeps scores, alpha, source */
    char path[] = "/tmp/pe_test_beyond_XXXXXX";
    int fd = mkstemp(path);
    if (fd >= 0) close(fd);
    pe_bank *l = NULL;
    CHECK(pe_bank_save(b, path) == PE_OK && pe_bank_load(path, NULL, &l) == PE_OK);
    pe_calibration lc;
    CHECK(l && pe_bank_calibration(l, &lc) == PE_OK && lc.n == 10 && lc.alpha == 0.2f &&
          lc.threshold == c.threshold && pe_bank_p_value(l, 0.5f) == pe_bank_p_value(b, 0.5f));
    remove(path);
    /* an uncalibrated bank has no p-values */
    pe_bank *u;
    p.fpr = 0;
    CHECK(pe_bank_fit_features(NULL, refs, V, &p, &u) == PE_OK);
    pe_result r;
    CHECK(pe_bank_predict_features(u, &cal[0], &r) == PE_OK && isnan(r.p_value));
    CHECK(pe_bank_set_fpr(u, 0.1f) == PE_ERR_ARG);
    pe_result_free(&r);
    pe_bank_free(u);
    pe_bank_free(l);
    pe_bank_free(b);
    free(views);
    free(pts);
}

/* ------------------------------------------------------------------ file versions */

/* Same generator as tools/make_bank_v1_fixture.c. */
static float v1_feature(int k, int i, int d)
{
    unsigned h = (unsigned)((k + 1) * 1000003 + (i + 1) * 7919 + (d + 1) * 104729) * 2654435761u;
    return (float)((int)((h >> 16) % 23) - 11) / 4.0f;
}

static void test_version1_bank_loads(void)
{
    enum { M = 3, H = 3, W = 4, DD = 8 };
    pe_bank *old = NULL;
    CHECK(pe_bank_load(FIXTURE("bank/v1.pead"), NULL, &old) == PE_OK);
    if (!old) {
        printf("# %s\n", pe_last_error());
        return;
    }
    const pe_detect_params *op = pe_bank_params(old);
    CHECK(pe_bank_num_refs(old) == M && op->rotations == 1 && op->window == -1 &&
          op->coreset_fraction == 0 && op->fpr == 0);
    pe_calibration c;
    CHECK(pe_bank_calibration(old, &c) == PE_OK && c.n == 0);
    /* the same features fit now predict exactly as the version 1 file */
    float data[M][H * W * DD];
    pe_features refs[M];
    for (int k = 0; k < M; k++) {
        for (int i = 0; i < H * W; i++)
            for (int d = 0; d < DD; d++) data[k][i * DD + d] = v1_feature(k, i, d);
        refs[k] = (pe_features){H, W, DD, data[k], NULL};
    }
    pe_detect_params p = pe_detect_default_params(0);
    p.score.k_count = 2;
    pe_bank *now;
    CHECK(pe_bank_fit_features(NULL, refs, M, &p, &now) == PE_OK);
    CHECK(pe_bank_threshold(now) == pe_bank_threshold(old));
    float qd[H * W * DD];
    for (int i = 0; i < H * W * DD; i++) qd[i] = v1_feature(5, i / DD, i % DD);
    pe_features q = {H, W, DD, qd, NULL};
    pe_result a, b;
    CHECK(pe_bank_predict_features(old, &q, &a) == PE_OK);
    CHECK(pe_bank_predict_features(now, &q, &b) == PE_OK);
    CHECK(a.image_score == b.image_score && isnan(a.p_value));
    CHECK(max_abs_diff(a.patch_scores, b.patch_scores, H * W) == 0);
    pe_result_free(&a);
    pe_result_free(&b);
    pe_bank_free(now);
    pe_bank_free(old);
}

/* The pruned greedy (default) selects exactly what the plain one (every centre against every
 * row, PE_CORESET_PLAIN=1) selects: clustered random rows with duplicates, with and without a
 * projection, 1 and 2 threads, keep up to n. */
static void test_coreset_pruned_equals_plain(void)
{
    const int n = 3000, dim = 48, clusters = 25;
    float *x = malloc(sizeof(float) * n * dim), *cent = malloc(sizeof(float) * clusters * dim);
    int *a = malloc(sizeof(int) * n), *b = malloc(sizeof(int) * n);
    CHECK(x && cent && a && b);
    if (!x || !cent || !a || !b) return;
    uint64_t st = 11;
    for (int i = 0; i < clusters * dim; i++)
        cent[i] = (float)((pe_splitmix64(&st) >> 40) / 16777216.0 - 0.5);
    for (int i = 0; i < n; i++) {
        int c = (int)(pe_splitmix64(&st) % clusters);
        for (int k = 0; k < dim; k++)
            x[(size_t)i * dim + k] =
                i % 97 == 5 ? x[(size_t)(i - 1) * dim + k] /* duplicates */
                            : cent[c * dim + k] +
                                  0.2f * (float)((pe_splitmix64(&st) >> 40) / 16777216.0 - 0.5);
    }
    const int keeps[3] = {30, 600, n};
    const int projs[2] = {0, 16};
    int threads = pe_get_threads();
    for (int th = 1; th <= 2; th++)
        for (int k = 0; k < 3; k++)
            for (int p = 0; p < 2; p++) {
                pe_set_threads(th);
                setenv("PE_CORESET_PLAIN", "1", 1);
                CHECK(pe_coreset_select(x, n, dim, keeps[k], projs[p], 9, a) == PE_OK);
                unsetenv("PE_CORESET_PLAIN");
                CHECK(pe_coreset_select(x, n, dim, keeps[k], projs[p], 9, b) == PE_OK);
                CHECK_MSG(!memcmp(a, b, sizeof(int) * keeps[k]),
                          "keep %d proj %d threads %d: pruned != plain", keeps[k], projs[p], th);
            }
    pe_set_threads(threads);
    free(x), free(cent), free(a), free(b);
}

static int count_progress(int done, int total, void *user)
{
    int *seen = user;
    CHECK(done >= 1 && done <= total);
    seen[0]++;
    seen[1] = done;
    return seen[2] > 0 && done >= seen[2]; /* stop once past seen[2] centres */
}

/* Wider rows in a low-dimensional subspace plus noise (like backbone features): the pruned
 * selection with the principal-subspace bound and the default projection (D 160 > 128: 128
 * dims) equals the plain loop, 1 and 2 threads; the progress hook reports and can stop. */
static void test_coreset_bound_and_default_projection(void)
{
    const int n = 4000, dim = 160, rank = 6;
    float *x = malloc(sizeof(float) * n * dim), *basis = malloc(sizeof(float) * rank * dim);
    int *a = malloc(sizeof(int) * n), *b = malloc(sizeof(int) * n);
    CHECK(x && basis && a && b);
    if (!x || !basis || !a || !b) return;
    uint64_t st = 5;
    for (int i = 0; i < rank * dim; i++)
        basis[i] = (float)((pe_splitmix64(&st) >> 40) / 16777216.0 - 0.5);
    for (int i = 0; i < n; i++)
        for (int k = 0; k < dim; k++) {
            float v = 0.05f * (float)((pe_splitmix64(&st) >> 40) / 16777216.0 - 0.5);
            for (int r = 0; r < rank; r++)
                v += basis[r * dim + k] * (float)(((i * 7 + r * 13) % 50) / 50.0 - 0.5);
            x[(size_t)i * dim + k] = v;
        }
    CHECK(pe_coreset_proj_dims(160, 0) == 128 && pe_coreset_proj_dims(128, 0) == 0 &&
          pe_coreset_proj_dims(160, -1) == 0 && pe_coreset_proj_dims(64, 32) == 32);
    const int projs[2] = {-1, 0};
    int threads = pe_get_threads();
    for (int th = 1; th <= 2; th++)
        for (int p = 0; p < 2; p++) {
            pe_set_threads(th);
            setenv("PE_CORESET_PLAIN", "1", 1);
            CHECK(pe_coreset_select(x, n, dim, 400, projs[p], 4, a) == PE_OK);
            unsetenv("PE_CORESET_PLAIN");
            int seen[3] = {0, 0, 0};
            pe_coreset_hooks h = {count_progress, seen};
            CHECK(pe_coreset_select_hooked(x, n, dim, 400, projs[p], 4, &h, b) == PE_OK);
            CHECK_MSG(!memcmp(a, b, sizeof(int) * 400), "proj %d threads %d: pruned != plain",
                      projs[p], th);
            CHECK(seen[0] >= 100 && seen[1] == 400);
        }
    int seen[3] = {0, 0, 100};
    pe_coreset_hooks h = {count_progress, seen};
    CHECK(pe_coreset_select_hooked(x, n, dim, 400, 0, 4, &h, b) == PE_ERR_LIMIT);
    CHECK(seen[1] >= 100 && seen[1] < 400);
    CHECK(pe_coreset_bytes(n, dim, 400, 0) > 4.0 * n * dim);
    pe_set_threads(threads);
    free(x), free(basis), free(a), free(b);
}

int main(void)
{
    RUN(test_window_matches_numpy);
    RUN(test_groups_match_numpy);
    RUN(test_window_infinite_is_global);
    RUN(test_coreset_pruned_equals_plain);
    RUN(test_coreset_bound_and_default_projection);
    RUN(test_coreset_matches_numpy);
    RUN(test_coreset_full_equals_bank);
    RUN(test_rotated_reference_end_to_end);
    RUN(test_conformal_false_alarm_bound);
    RUN(test_bank_calibration);
    RUN(test_version1_bank_loads);
    return test_summary();
}
