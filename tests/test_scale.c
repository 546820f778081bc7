/* test_scale.c — batch zero-shot at scale: the comparator schedule (balance, seeds),
 * the scheduled scorer (R >= B-1 == pe_score_batch bit for bit; sampled R == scoring each
 * image against its own comparators; NumPy fixture of the documented rule), the memory
 * guard and the spill-file feature store. */
#include "scale/scale.h"
#include "score/score.h"
#include "testlib.h"

#include <dirent.h>
#include <stdint.h>
#include <unistd.h>

static float frand(uint64_t *s)
{
    *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
    return (float)((*s >> 40) / (double)(1 << 24)) * 2.0f - 1.0f;
}

static float **random_batch(int B, int g, int dim, uint64_t seed)
{
    float **f = malloc(sizeof(float *) * (size_t)B);
    for (int b = 0; b < B; b++) {
        f[b] = malloc(sizeof(float) * (size_t)g * dim);
        for (int i = 0; i < g * dim; i++) f[b][i] = frand(&seed);
    }
    return f;
}

static void free_batch(float **f, int B)
{
    for (int b = 0; b < B; b++) free(f[b]);
    free(f);
}

/* needs[i][j] = 1 when image i is scored against j, from a schedule. */
static int schedule_matrix(int n, int r, uint64_t seed, uint8_t *needs, int64_t *num_pairs)
{
    pe_pair *pairs;
    if (pe_comparator_schedule(n, r, seed, &pairs, num_pairs) != PE_OK) return -1;
    memset(needs, 0, (size_t)n * n);
    int bad = 0;
    for (int64_t e = 0; e < *num_pairs; e++) {
        const pe_pair *p = &pairs[e];
        if (!(p->lo < p->hi) || p->lo < 0 || p->hi >= n || !p->dirs) bad = 1;
        if (e &&
            !(pairs[e - 1].lo < p->lo || (pairs[e - 1].lo == p->lo && pairs[e - 1].hi < p->hi)))
            bad = 1; /* sorted, each unordered pair once */
        if (p->dirs & PE_PAIR_LO) needs[p->lo * n + p->hi] = 1;
        if (p->dirs & PE_PAIR_HI) needs[p->hi * n + p->lo] = 1;
    }
    free(pairs);
    return bad ? -1 : 0;
}

static void test_schedule_balanced(void)
{
    const int ns[] = {2, 3, 7, 8, 33, 112};
    const int rs[] = {1, 2, 3, 5, 8, 31, 32, 200};
    for (size_t a = 0; a < sizeof ns / sizeof *ns; a++)
        for (size_t c = 0; c < sizeof rs / sizeof *rs; c++) {
            int n = ns[a], r = rs[c], m = r < n - 1 ? r : n - 1;
            uint8_t *needs = malloc((size_t)n * n);
            int64_t np;
            CHECK(schedule_matrix(n, r, 7, needs, &np) == 0);
            int64_t gemms_min = ((int64_t)n * m + 1) / 2;
            CHECK_MSG(np >= gemms_min && np <= (int64_t)n * m, "n %d R %d: %lld pairs", n, r,
                      (long long)np);
            for (int i = 0; i < n; i++) {
                int out = 0, in = 0;
                for (int j = 0; j < n; j++) {
                    out += needs[i * n + j];
                    in += needs[j * n + i];
                }
                CHECK_MSG(out == m && in == m && !needs[i * n + i],
                          "n %d R %d image %d: %d comparators, comparator of %d", n, r, i, out, in);
            }
            free(needs);
        }
    /* the seed changes the draw, the same seed repeats it */
    uint8_t x[33 * 33], y[33 * 33], z[33 * 33];
    int64_t np;
    CHECK(schedule_matrix(33, 8, 1, x, &np) == 0 && schedule_matrix(33, 8, 1, y, &np) == 0);
    CHECK(schedule_matrix(33, 8, 2, z, &np) == 0);
    CHECK(!memcmp(x, y, sizeof x) && memcmp(x, z, sizeof x));
}

static void test_full_schedule_equals_batch(void)
{
    const int B = 9, g = 23, dim = 11;
    float **f = random_batch(B, g, dim, 42);
    float *a = malloc(sizeof(float) * B * g), *b = malloc(sizeof(float) * B * g);
    struct {
        int order, k;
        float frac;
        int tile, r;
    } cases[] = {{PE_ORDER_LOWEST, 0, 0.3f, 0, 0},
                 {PE_ORDER_LOWEST, 1, 0, 7, 8},
                 {PE_ORDER_HIGHEST, 3, 0, 5, 100},
                 {PE_ORDER_LOWEST, 0, 1.0f, 1, 8}};
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        pe_score_params p = pe_score_default_params(NULL, 1);
        p.order = cases[c].order;
        p.k_count = cases[c].k;
        p.k_fraction = cases[c].frac;
        p.tile = cases[c].tile;
        CHECK(pe_score_batch((const float *const *)f, B, g, dim, &p, a, NULL) == PE_OK);
        CHECK(pe_score_batch_scheduled((const float *const *)f, B, g, dim, &p, cases[c].r, 5, 0,
                                       NULL, NULL, b) == PE_OK);
        CHECK_MSG(!memcmp(a, b, sizeof(float) * B * g),
                  "case %zu: R >= B-1 differs from the full "
                  "batch",
                  c);
    }
    free(a);
    free(b);
    free_batch(f, B);
}

static int64_t progress_last, progress_total;
static void on_progress(int64_t done, int64_t total, void *user)
{
    (void)user;
    progress_last = done;
    progress_total = total;
}

/* Sampled: each image's scores equal pe_score_query against exactly its comparators. */
static void test_sampled_equals_own_comparators(void)
{
    const int B = 12, g = 17, dim = 9;
    float **f = random_batch(B, g, dim, 9);
    uint8_t needs[12 * 12];
    float *ps = malloc(sizeof(float) * B * g), slow[17], simg;
    for (int r = 1; r <= 6; r++) {
        pe_score_params p = pe_score_default_params(NULL, 1); /* lowest 30 % of R */
        int64_t np;
        CHECK(schedule_matrix(B, r, 3, needs, &np) == 0);
        progress_last = progress_total = -1;
        CHECK(pe_score_batch_scheduled((const float *const *)f, B, g, dim, &p, r, 3, 0, on_progress,
                                       NULL, ps) == PE_OK);
        CHECK(progress_last == np && progress_total == np);
        for (int b = 0; b < B; b++) {
            const float *others[12];
            int go[12], n = 0;
            for (int o = 0; o < B; o++)
                if (needs[b * B + o]) {
                    others[n] = f[o];
                    go[n++] = g;
                }
            CHECK(n == r);
            CHECK(pe_score_query(f[b], g, others, go, n, dim, &p, slow, &simg) == PE_OK);
            for (int i = 0; i < g; i++) CHECK_NEAR(ps[b * g + i], slow[i], 2e-6);
        }
    }
    free(ps);
    free_batch(f, B);
}

/* tools/make_scale_fixtures.py: the rule re-implemented in NumPy (float64 cosines). */
static void test_sampled_fixture(void)
{
    FILE *fp = fopen(FIXTURE("scale/sampled.bin"), "rb");
    CHECK(fp != NULL);
    if (!fp) return;
    int32_t hdr[6]; /* B, G, D, R, seed, K */
    CHECK(fread(hdr, sizeof hdr, 1, fp) == 1);
    int B = hdr[0], g = hdr[1], dim = hdr[2], r = hdr[3];
    float *feat = malloc(sizeof(float) * B * g * dim), *want = malloc(sizeof(float) * B * g);
    float *got = malloc(sizeof(float) * B * g);
    CHECK(fread(feat, sizeof(float), (size_t)B * g * dim, fp) == (size_t)B * g * dim);
    CHECK(fread(want, sizeof(float), (size_t)B * g, fp) == (size_t)B * g);
    fclose(fp);
    const float *views[64];
    for (int b = 0; b < B && b < 64; b++) views[b] = feat + (size_t)b * g * dim;
    pe_score_params p = pe_score_default_params(NULL, 1);
    p.k_count = hdr[5];
    CHECK(pe_score_batch_scheduled(views, B, g, dim, &p, r, (uint64_t)hdr[4], 0, NULL, NULL, got) ==
          PE_OK);
    for (int i = 0; i < B * g; i++) CHECK_NEAR(got[i], want[i], 2e-6);
    free(feat);
    free(want);
    free(got);
}

static void test_memory_guard(void)
{
    pe_detect_params dp = pe_detect_default_params(1);
    pe_memory_estimate e;
    CHECK(pe_zeroshot_estimate(10000, 3136, 128, 0, 0, &dp, &e) == PE_OK);
    CHECK(e.k == 2999); /* 30 % of 9,999 */
    CHECK_NEAR(e.features, 4.0 * 10000 * 3136 * 128, 1);
    CHECK(e.scoring > 4.0 * 10000 * 3136 * 2999);
    CHECK_NEAR(e.total, e.features + e.scoring, 1);
    CHECK(pe_zeroshot_check_memory(&e, 1e9) == PE_ERR_LIMIT);
    CHECK(strstr(pe_last_error(), "GiB") && strstr(pe_last_error(), "K = 2999"));
    if (e.available > 0) CHECK(pe_zeroshot_check_memory(&e, 0) == PE_ERR_LIMIT); /* 390 TB */
    dp.comparators = 32;
    CHECK(pe_zeroshot_estimate(10000, 3136, 128, 0, 1, &dp, &e) == PE_OK);
    CHECK(e.k == 9 && e.features == 0 && e.total < 24e9); /* spilled, sampled: fits 24 GiB */
    CHECK(pe_zeroshot_check_memory(&e, 24e9) == PE_OK);
    CHECK(pe_zeroshot_estimate(1, 3136, 128, 0, 0, &dp, &e) == PE_ERR_ARG);
}

/* The time guard's pair count is the schedule's length, for every shape of n and R. */
static void test_time_guard_pairs(void)
{
    for (int n = 2; n <= 13; n++)
        for (int r = 0; r <= n + 1; r++) {
            pe_pair *pairs;
            int64_t num = 0;
            CHECK(pe_comparator_schedule(n, r, 7, &pairs, &num) == PE_OK);
            free(pairs);
            CHECK_MSG(pe_zeroshot_num_pairs(n, r) == num, "n %d R %d: %lld vs %lld", n, r,
                      (long long)pe_zeroshot_num_pairs(n, r), (long long)num);
        }
    CHECK(pe_zeroshot_num_pairs(112, 0) == 6216);
    CHECK(pe_zeroshot_num_pairs(1, 0) == 0);
    /* the calibration times a real pair: positive, and well under a second at this size */
    const int G = 196, D = 64;
    pe_features f = {14, 14, D, calloc((size_t)G * D, sizeof(float)), NULL};
    for (int i = 0; f.data && i < G * D; i++) f.data[i] = (float)((i * 37) % 11) - 5;
    pe_detect_params dp = pe_detect_default_params(1);
    double t = -1;
    CHECK(pe_zeroshot_pair_seconds(&f, &dp, &t) == PE_OK);
    CHECK(t > 0 && t < 1);
    CHECK(pe_zeroshot_pair_seconds(NULL, &dp, &t) == PE_ERR_ARG);
    free(f.data);
}

static void test_feature_store(void)
{
    char dir[] = "/tmp/pe_spill_test_XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    const int B = 5, gh = 3, gw = 4, dim = 6, g = gh * gw;
    float **f = random_batch(B, g, dim, 11);
    float attn[12];
    for (int i = 0; i < g; i++) attn[i] = (float)i;
    for (int mode = 0; mode < 2; mode++) {
        pe_feature_store *st;
        CHECK(pe_feature_store_create(mode ? dir : NULL, B, g, dim, 1, &st) == PE_OK);
        if (mode) { /* the spill file is unlinked at once: nothing in the folder */
            DIR *d = opendir(dir);
            struct dirent *de;
            int files = 0;
            while (d && (de = readdir(d))) files += de->d_name[0] != '.';
            if (d) closedir(d);
            CHECK(files == 0);
        }
        for (int b = 0; b < B; b++) {
            pe_features in = {gh, gw, dim, f[b], attn};
            CHECK(pe_feature_store_put(st, b, &in) == PE_OK);
        }
        const pe_features *v = pe_feature_store_views(st);
        for (int b = 0; b < B; b++) {
            CHECK(v[b].grid_h == gh && v[b].grid_w == gw && v[b].dim == dim);
            CHECK(!memcmp(v[b].data, f[b], sizeof(float) * g * dim));
            CHECK(!memcmp(v[b].attn, attn, sizeof attn));
        }
        pe_features wrong = {gh, gw + 1, dim, f[0], attn};
        CHECK(pe_feature_store_put(st, 0, &wrong) == PE_ERR_SHAPE);
        /* the zero-shot results of spilled and in-RAM features are the same */
        pe_detect_params dp = pe_detect_default_params(1);
        dp.comparators = 2;
        pe_result r[5];
        CHECK(pe_zeroshot_features(v, B, &dp, r) == PE_OK);
        static float first[5];
        for (int b = 0; b < B; b++) {
            if (!mode) first[b] = r[b].image_score;
            else CHECK(first[b] == r[b].image_score);
            pe_result_free(&r[b]);
        }
        pe_feature_store_free(st);
    }
    pe_feature_store *st;
    CHECK(pe_feature_store_create("/nonexistent/spill", B, g, dim, 0, &st) == PE_ERR_IO);
    CHECK(strstr(pe_last_error(), "/nonexistent/spill") != NULL);
    rmdir(dir);
    free_batch(f, B);
}

int main(void)
{
    RUN(test_schedule_balanced);
    RUN(test_full_schedule_equals_batch);
    RUN(test_sampled_equals_own_comparators);
    RUN(test_sampled_fixture);
    RUN(test_memory_guard);
    RUN(test_feature_store);
    RUN(test_time_guard_pairs);
    return test_summary();
}
