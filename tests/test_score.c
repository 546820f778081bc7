/* test_score.c — Eq. 1-4 scoring and anomaly maps.
 * The tiled GEMM paths are checked against a brute-force double-precision
 * implementation written here, and against NumPy / PyTorch / SciPy fixtures
 * (tools/make_score_fixtures.py -> tests/fixtures/score/). */
#include "patchead.h"
#include "testlib.h"

#include <stdint.h>

/* ------------------------------------------------------------------ helpers */

static uint64_t rng_state = 42;
static float frand(void) /* standard-ish normal via sum of uniforms */
{
    double s = 0;
    for (int i = 0; i < 4; i++) {
        rng_state = rng_state * 6364136223846793005ULL + 1442695040888963407ULL;
        s += (double)(rng_state >> 11) / 9007199254740992.0;
    }
    return (float)(s - 2.0);
}

static float *rand_feats(int n, int dim)
{
    float *f = malloc((size_t)n * dim * sizeof *f);
    for (int i = 0; i < n * dim; i++) f[i] = frand();
    return f;
}

static double dist(const float *a, const float *b, int dim)
{
    double ab = 0, aa = 0, bb = 0;
    for (int d = 0; d < dim; d++) {
        ab += (double)a[d] * b[d];
        aa += (double)a[d] * a[d];
        bb += (double)b[d] * b[d];
    }
    return 1.0 - ab / (sqrt(aa) * sqrt(bb));
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Brute force Eq. 2-4: s (G, M), sort each row, mean of the K lowest/highest; then
 * image score = mean of the top k. K and k computed by the rules documented in
 * docs/SCORING.md (floor with at least 1). */
static void brute(const float *q, int gq, const float *const *refs, const int *gr, int m, int dim,
                  const pe_score_params *p, double *patch, double *img)
{
    int K = p->k_count > 0 ? p->k_count : (int)floor(p->k_fraction * m + 1e-6);
    if (K < 1) K = 1;
    if (K > m) K = m;
    double *s = malloc((size_t)m * sizeof *s);
    for (int i = 0; i < gq; i++) {
        for (int k = 0; k < m; k++) {
            double best = 1e30;
            for (int j = 0; j < gr[k]; j++) {
                double d = dist(q + (size_t)i * dim, refs[k] + (size_t)j * dim, dim);
                if (d < best) best = d;
            }
            s[k] = best;
        }
        qsort(s, (size_t)m, sizeof *s, cmp_double);
        double sum = 0;
        for (int k = 0; k < K; k++) sum += p->order == PE_ORDER_LOWEST ? s[k] : s[m - 1 - k];
        patch[i] = sum / K;
    }
    free(s);
    int top = p->top_count > 0 ? p->top_count : (int)floor(p->top_fraction * gq + 1e-6);
    if (top < 1) top = 1;
    if (top > gq) top = gq;
    double *sorted = malloc((size_t)gq * sizeof *sorted);
    memcpy(sorted, patch, (size_t)gq * sizeof *sorted);
    qsort(sorted, (size_t)gq, sizeof *sorted, cmp_double);
    double sum = 0;
    for (int k = 0; k < top; k++) sum += sorted[gq - 1 - k];
    *img = sum / top;
    free(sorted);
}

static int read_all(const char *path, uint8_t **buf, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    rewind(f);
    *buf = malloc((size_t)len);
    *n = fread(*buf, 1, (size_t)len, f);
    fclose(f);
    return *n == (size_t)len ? 0 : -1;
}

/* ------------------------------------------------------------------ tests */

static void test_presets(void)
{
    pe_score_params p;
    CHECK(pe_score_preset("patchead", 0, &p) == PE_OK);
    CHECK(p.order == PE_ORDER_LOWEST && p.k_count == 1 && fabsf(p.top_fraction - 0.01f) < 1e-9);
    CHECK(pe_score_preset("patchead", 1, &p) == PE_OK);
    CHECK(p.order == PE_ORDER_LOWEST && p.k_count == 0 && fabsf(p.k_fraction - 0.3f) < 1e-9);
    CHECK(pe_score_preset("anomalydino", 1, &p) == PE_OK && p.k_count == 1);
    CHECK(pe_score_preset("musc", 0, &p) == PE_OK && p.top_count == 1 && p.k_count == 0);
    CHECK(pe_score_preset("nope", 0, &p) == PE_ERR_ARG);
    CHECK(strstr(pe_last_error(), "nope") != NULL);
    pe_score_params d = pe_score_default_params(NULL, 0);
    CHECK(d.k_count == 1 && d.mask_threshold == 0.05f && d.mask_low_weight == 0.5f);
}

/* Fast path == brute force over odd sizes, K count / fraction, both orders, tiles 1/7/auto. */
static void test_fewshot_vs_brute(void)
{
    const int dim = 13, gq = 37, m = 5;
    const int gr[5] = {11, 29, 1, 40, 17};
    float *q = rand_feats(gq, dim);
    float *refs[5];
    for (int k = 0; k < m; k++) refs[k] = rand_feats(gr[k], dim);
    double patch[37], img;
    float fast[37], fimg;
    int tiles[3] = {1, 7, 0};
    for (int order = 0; order < 2; order++)
        for (int kc = 0; kc < 4; kc++)
            for (int t = 0; t < 3; t++) {
                pe_score_params p = pe_score_default_params("patchead", 0);
                p.order = (pe_order)order;
                p.k_count = kc == 0 ? 1 : kc == 1 ? 3 : 0;
                p.k_fraction = kc == 2 ? 0.4f : 1.0f; /* 0.4*5 = 2, 1.0*5 = 5 */
                p.top_fraction = 0.1f;                /* floor(3.7) = 3 */
                p.tile = tiles[t];
                brute(q, gq, (const float *const *)refs, gr, m, dim, &p, patch, &img);
                CHECK(pe_score_query(q, gq, (const float *const *)refs, gr, m, dim, &p, fast,
                                     &fimg) == PE_OK);
                for (int i = 0; i < gq; i++) CHECK_NEAR(fast[i], patch[i], 2e-5);
                CHECK_NEAR(fimg, img, 2e-5);
            }
    free(q);
    for (int k = 0; k < m; k++) free(refs[k]);
}

static void test_fewshot_properties(void)
{
    const int dim = 24, g = 50, m = 4;
    float *refs[4];
    int gr[4];
    for (int k = 0; k < m; k++) {
        refs[k] = rand_feats(g, dim);
        gr[k] = g;
    }
    pe_score_params p = pe_score_default_params("patchead", 0);
    float a[50], b[50], ia, ib;
    /* a query identical to a reference scores 0 (lowest, K = 1) */
    CHECK(pe_score_query(refs[2], g, (const float *const *)refs, gr, m, dim, &p, a, &ia) == PE_OK);
    for (int i = 0; i < g; i++) CHECK_NEAR(a[i], 0, 1e-5);
    CHECK_NEAR(ia, 0, 1e-5);
    /* scaling features does not change cosine distances */
    float *q = rand_feats(g, dim), *q3 = malloc(sizeof(float) * g * dim);
    for (int i = 0; i < g * dim; i++) q3[i] = 3.5f * q[i];
    p.k_count = 2;
    CHECK(pe_score_query(q, g, (const float *const *)refs, gr, m, dim, &p, a, &ia) == PE_OK);
    CHECK(pe_score_query(q3, g, (const float *const *)refs, gr, m, dim, &p, b, &ib) == PE_OK);
    for (int i = 0; i < g; i++) CHECK_NEAR(a[i], b[i], 1e-5);
    /* permuting references changes nothing */
    float *perm[4] = {refs[3], refs[0], refs[2], refs[1]};
    for (int order = 0; order < 2; order++) {
        p.order = (pe_order)order;
        CHECK(pe_score_query(q, g, (const float *const *)refs, gr, m, dim, &p, a, &ia) == PE_OK);
        CHECK(pe_score_query(q, g, (const float *const *)perm, gr, m, dim, &p, b, &ib) == PE_OK);
        for (int i = 0; i < g; i++) CHECK_NEAR(a[i], b[i], 1e-6);
        CHECK_NEAR(ia, ib, 1e-6);
    }
    /* lowest K=1 over M refs == 1-NN over the union (one reference holding all patches) */
    float *uni = malloc(sizeof(float) * m * g * dim);
    for (int k = 0; k < m; k++) memcpy(uni + (size_t)k * g * dim, refs[k], sizeof(float) * g * dim);
    int gu = m * g;
    const float *up[1] = {uni};
    p = pe_score_default_params("anomalydino", 0);
    CHECK(pe_score_query(q, g, (const float *const *)refs, gr, m, dim, &p, a, &ia) == PE_OK);
    CHECK(pe_score_query(q, g, up, &gu, 1, dim, &p, b, &ib) == PE_OK);
    for (int i = 0; i < g; i++) CHECK_NEAR(a[i], b[i], 1e-6);
    /* bad arguments fail with a message */
    CHECK(pe_score_query(q, g, (const float *const *)refs, gr, 0, dim, &p, a, &ia) == PE_ERR_ARG);
    p.k_count = 0;
    p.k_fraction = 0;
    CHECK(pe_score_query(q, g, (const float *const *)refs, gr, m, dim, &p, a, &ia) == PE_ERR_ARG);
    CHECK(strlen(pe_last_error()) > 0);
    free(uni);
    free(q);
    free(q3);
    for (int k = 0; k < m; k++) free(refs[k]);
}

/* Symmetric batch path == naive per-query path (each image vs the others). */
static void test_batch_vs_naive(void)
{
    const int dim = 9, g = 31, B = 7;
    float *f[7];
    for (int b = 0; b < B; b++) f[b] = rand_feats(g, dim);
    float *fast = malloc(sizeof(float) * B * g), fimg[7], slow[31], simg;
    struct { int order, count; float frac; int tile; } cases[] = {
        {0, 0, 0.3f, 0}, {0, 1, 0, 1}, {1, 2, 0, 7}, {1, 0, 0.5f, 0}, {0, 6, 0, 5}};
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        pe_score_params p = pe_score_default_params("patchead", 1);
        p.order = (pe_order)cases[c].order;
        p.k_count = cases[c].count;
        p.k_fraction = cases[c].frac;
        p.tile = cases[c].tile;
        p.top_count = 3;
        CHECK(pe_score_batch((const float *const *)f, B, g, dim, &p, fast, fimg) == PE_OK);
        for (int b = 0; b < B; b++) {
            const float *others[6];
            int go[6], n = 0;
            for (int o = 0; o < B; o++)
                if (o != b) {
                    others[n] = f[o];
                    go[n++] = g;
                }
            CHECK(pe_score_query(f[b], g, others, go, n, dim, &p, slow, &simg) == PE_OK);
            for (int i = 0; i < g; i++) CHECK_NEAR(fast[b * g + i], slow[i], 1e-5);
            CHECK_NEAR(fimg[b], simg, 1e-5);
        }
    }
    pe_score_params p = pe_score_default_params(NULL, 1);
    CHECK(pe_score_batch((const float *const *)f, 1, g, dim, &p, fast, fimg) == PE_ERR_ARG);
    free(fast);
    for (int b = 0; b < B; b++) free(f[b]);
}

static void test_image_score_and_mask(void)
{
    float s[10] = {0.1f, 0.9f, 0.3f, 0.7f, 0.5f, 0.2f, 0.8f, 0.4f, 0.6f, 0.0f};
    pe_score_params p = pe_score_default_params(NULL, 0);
    CHECK_NEAR(pe_image_score(s, 10, &p), 0.9, 1e-7); /* floor(0.1) -> k = 1 */
    p.top_fraction = 0.3f;                             /* k = 3: 0.9 0.8 0.7 */
    CHECK_NEAR(pe_image_score(s, 10, &p), 0.8, 1e-6);
    p.top_count = 10;
    CHECK_NEAR(pe_image_score(s, 10, &p), 0.45, 1e-6);
    p.top_count = 50; /* clamped to n */
    CHECK_NEAR(pe_image_score(s, 10, &p), 0.45, 1e-6);

    float attn[4] = {2.0f, 10.0f, 2.2f, 6.0f}; /* normalised: 0, 1, 0.025, 0.5 */
    float a[4] = {1, 1, 1, 1};
    pe_apply_attention_mask(a, attn, 4, 0.05f, 0.5f);
    CHECK(a[0] == 0.5f && a[1] == 1.0f && a[2] == 0.5f && a[3] == 1.0f);
    float flat[3] = {3, 3, 3}, b[3] = {1, 2, 3};
    pe_apply_attention_mask(b, flat, 3, 0.05f, 0.5f);
    CHECK(b[0] == 1 && b[1] == 2 && b[2] == 3);
}

/* NumPy fixture: Eq. 1-4 for a few-shot query and a zero-shot batch. */
static void test_numpy_fixtures(void)
{
    uint8_t *buf;
    size_t n;
    if (read_all(FIXTURE("score/fewshot.bin"), &buf, &n)) {
        CHECK_MSG(0, "missing fixture score/fewshot.bin");
        return;
    }
    int32_t *hi = (int32_t *)buf;
    int dim = hi[0], gq = hi[1], m = hi[2];
    const int *gr = hi + 3;
    float *fp = (float *)(buf + 4 * (3 + m));
    const float *q = fp;
    fp += gq * dim;
    const float *refs[8];
    for (int k = 0; k < m; k++) {
        refs[k] = fp;
        fp += gr[k] * dim;
    }
    int cases[4][2] = {{0, 1}, {0, 2}, {1, 2}, {1, 3}};
    float out[64], img;
    for (int c = 0; c < 4; c++) {
        pe_score_params p = pe_score_default_params(NULL, 0);
        p.order = (pe_order)cases[c][0];
        p.k_count = cases[c][1];
        p.top_count = 3;
        CHECK(pe_score_query(q, gq, refs, gr, m, dim, &p, out, &img) == PE_OK);
        for (int i = 0; i < gq; i++) CHECK_NEAR(out[i], fp[i], 2e-5);
        CHECK_NEAR(img, fp[gq], 2e-5);
        fp += gq + 1;
    }
    CHECK((uint8_t *)fp == buf + n);
    free(buf);

    if (read_all(FIXTURE("score/batch.bin"), &buf, &n)) {
        CHECK_MSG(0, "missing fixture score/batch.bin");
        return;
    }
    hi = (int32_t *)buf;
    dim = hi[0];
    int g = hi[1], B = hi[2];
    fp = (float *)(buf + 12);
    const float *feats[16];
    for (int b = 0; b < B; b++) feats[b] = fp + (size_t)b * g * dim;
    fp += B * g * dim;
    int bcases[2][2] = {{0, 3}, {1, 2}};
    float *ps = malloc(sizeof(float) * B * g), imgs[16];
    for (int c = 0; c < 2; c++) {
        pe_score_params p = pe_score_default_params(NULL, 1);
        p.order = (pe_order)bcases[c][0];
        p.k_count = bcases[c][1];
        p.top_count = 2;
        p.tile = 4;
        CHECK(pe_score_batch(feats, B, g, dim, &p, ps, imgs) == PE_OK);
        for (int i = 0; i < B * g; i++) CHECK_NEAR(ps[i], fp[i], 2e-5);
        fp += B * g;
        for (int b = 0; b < B; b++) CHECK_NEAR(imgs[b], fp[b], 2e-5);
        fp += B;
    }
    CHECK((uint8_t *)fp == buf + n);
    free(ps);
    free(buf);
}

/* PyTorch bilinear (align_corners=False) + scipy gaussian_filter (reflect, truncate 4). */
static void test_anomaly_map_fixtures(void)
{
    for (int c = 0; c < 5; c++) {
        char path[256];
        snprintf(path, sizeof path, FIXTURE("score/map_%d.bin"), c);
        uint8_t *buf;
        size_t n;
        if (read_all(path, &buf, &n)) {
            CHECK_MSG(0, "missing fixture %s", path);
            return;
        }
        int32_t *hi = (int32_t *)buf;
        int gh = hi[0], gw = hi[1], ow = hi[2], oh = hi[3];
        float sigma;
        memcpy(&sigma, buf + 16, 4);
        const float *grid = (const float *)(buf + 20), *want = grid + gh * gw;
        CHECK(20 + 4 * (size_t)(gh * gw + ow * oh) == n);
        float *map = malloc(sizeof(float) * ow * oh);
        CHECK(pe_anomaly_map(grid, gh, gw, ow, oh, sigma, map) == PE_OK);
        double worst = 0;
        for (int i = 0; i < ow * oh; i++) worst = tl_worse(worst, fabs(map[i] - want[i]));
        CHECK_MSG(worst < 1e-5, "%s: max |diff| %g", path, worst);
        free(map);
        free(buf);
    }
    float g[4] = {1, 2, 3, 4}, out[4];
    CHECK(pe_anomaly_map(g, 2, 2, 0, 5, 4, out) == PE_ERR_SHAPE);
    CHECK(pe_anomaly_map(g, 2, 2, 2, 2, -1, out) == PE_ERR_ARG);
}

int main(void)
{
    pe_set_threads(2);
    RUN(test_presets);
    RUN(test_fewshot_vs_brute);
    RUN(test_fewshot_properties);
    RUN(test_batch_vs_naive);
    RUN(test_image_score_and_mask);
    RUN(test_numpy_fixtures);
    RUN(test_anomaly_map_fixtures);
    return test_summary();
}
