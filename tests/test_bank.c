/* test_bank.c — .pead bank files: round trip, and every corruption case fails with a
 * clear one-line message (bad magic, newer version, truncation, checksum, layout). */
#include "patchead.h"
#include "testlib.h"

#include <stdint.h>
#include <unistd.h>

static uint64_t rng_state = 7;
static float frand(void)
{
    rng_state = rng_state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (float)((double)(rng_state >> 11) / 9007199254740992.0 - 0.5);
}

#define M 3
#define DIM 10
static const int GH[M] = {4, 3, 5}, GW[M] = {4, 5, 2};
static pe_features refs[M];

static void make_refs(void)
{
    for (int k = 0; k < M; k++) {
        refs[k].grid_h = GH[k];
        refs[k].grid_w = GW[k];
        refs[k].dim = DIM;
        refs[k].data = malloc(sizeof(float) * GH[k] * GW[k] * DIM);
        for (int i = 0; i < GH[k] * GW[k] * DIM; i++) refs[k].data[i] = frand();
        refs[k].attn = NULL;
    }
}

static char tmpdir[256];
static char *tpath(const char *name)
{
    static char buf[4][512];
    static int i;
    i = (i + 1) % 4;
    snprintf(buf[i], sizeof buf[i], "%s/%s", tmpdir, name);
    return buf[i];
}

static uint8_t *slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    rewind(f);
    uint8_t *b = malloc((size_t)len + 1);
    *n = fread(b, 1, (size_t)len, f);
    fclose(f);
    return b;
}

static void spit(const char *path, const uint8_t *b, size_t n)
{
    FILE *f = fopen(path, "wb");
    fwrite(b, 1, n, f);
    fclose(f);
}

static uint64_t fnv(const uint8_t *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

static void reseal(uint8_t *b, size_t n) /* recompute the trailing checksum */
{
    uint64_t h = fnv(b, n - 8);
    for (int i = 0; i < 8; i++) b[n - 8 + i] = (uint8_t)(h >> (8 * i));
}

static void test_roundtrip(void)
{
    pe_detect_params p = pe_detect_default_params(0);
    p.score.k_count = 2;
    p.score.top_count = 3;
    p.map_sigma = 2.5f;
    pe_bank *b;
    CHECK(pe_bank_fit_features(NULL, refs, M, &p, &b) == PE_OK);
    if (!b) return;
    pe_bank_set_model_path(b, "weights/some model");
    CHECK(isfinite(pe_bank_threshold(b)));
    CHECK(pe_bank_save(b, tpath("a.pead")) == PE_OK);
    pe_bank *c;
    CHECK(pe_bank_load(tpath("a.pead"), NULL, &c) == PE_OK);
    if (!c) {
        pe_bank_free(b);
        return;
    }
    CHECK(pe_bank_num_refs(c) == M);
    CHECK(!strcmp(pe_bank_model_path(c), "weights/some model"));
    CHECK(pe_bank_threshold(c) == pe_bank_threshold(b));
    const pe_detect_params *q = pe_bank_params(c);
    CHECK(q->score.k_count == 2 && q->score.top_count == 3 && q->map_sigma == 2.5f);
    CHECK(q->align == 0 && q->mask == 0);
    CHECK(q->align_params.seed == p.align_params.seed);
    /* the loaded bank predicts exactly as the original */
    pe_features query = refs[1];
    pe_result r1, r2;
    CHECK(pe_bank_predict_features(b, &query, &r1) == PE_OK);
    CHECK(pe_bank_predict_features(c, &query, &r2) == PE_OK);
    CHECK(r1.image_score == r2.image_score && r1.grid_h == GH[1] && r1.grid_w == GW[1]);
    for (int i = 0; i < GH[1] * GW[1]; i++) CHECK(r1.patch_scores[i] == r2.patch_scores[i]);
    /* saving again gives the same bytes (deterministic file) */
    CHECK(pe_bank_save(c, tpath("b.pead")) == PE_OK);
    size_t na, nb;
    uint8_t *ba = slurp(tpath("a.pead"), &na), *bb = slurp(tpath("b.pead"), &nb);
    CHECK(ba && bb && na == nb && memcmp(ba, bb, na) == 0);
    free(ba);
    free(bb);
    pe_result_free(&r1);
    pe_result_free(&r2);
    pe_bank_free(b);
    pe_bank_free(c);
}

/* Expect load to fail with `status` and a message containing `needle`. */
static void expect_fail(const char *path, pe_status status, const char *needle)
{
    pe_bank *b = (pe_bank *)1;
    pe_status s = pe_bank_load(path, NULL, &b);
    CHECK_MSG(s == status, "%s: status %d (%s), want %d", path, s, pe_last_error(), status);
    CHECK_MSG(strstr(pe_last_error(), needle) != NULL, "%s: message '%s' lacks '%s'", path,
              pe_last_error(), needle);
    CHECK_MSG(strchr(pe_last_error(), '\n') == NULL, "multi-line message");
    CHECK(b == NULL);
}

static void test_corruption(void)
{
    size_t n;
    uint8_t *good = slurp(tpath("a.pead"), &n);
    if (!good) {
        CHECK_MSG(0, "round trip file missing");
        return;
    }
    uint8_t *b = malloc(n);

    expect_fail(tpath("missing.pead"), PE_ERR_IO, "missing.pead");

    memcpy(b, good, n);
    b[0] = 'X';
    spit(tpath("magic.pead"), b, n);
    expect_fail(tpath("magic.pead"), PE_ERR_FORMAT, "not a patchead bank");

    spit(tpath("empty.pead"), b, 0);
    expect_fail(tpath("empty.pead"), PE_ERR_FORMAT, "not a patchead bank");

    memcpy(b, good, n);
    b[8] = 99; /* a version from the future */
    reseal(b, n);
    spit(tpath("newer.pead"), b, n);
    expect_fail(tpath("newer.pead"), PE_ERR_UNSUPPORTED, "newer patchead");

    for (size_t cut = 12; cut < n; cut += n / 7) {
        spit(tpath("trunc.pead"), good, cut);
        expect_fail(tpath("trunc.pead"), PE_ERR_FORMAT, "truncated");
    }
    spit(tpath("trunc.pead"), good, n - 1);
    expect_fail(tpath("trunc.pead"), PE_ERR_FORMAT, "truncated");

    /* one flipped bit anywhere in the body -> checksum */
    for (size_t pos = 24; pos < n - 8; pos += 97) {
        memcpy(b, good, n);
        b[pos] ^= 0x10;
        spit(tpath("flip.pead"), b, n);
        expect_fail(tpath("flip.pead"), PE_ERR_FORMAT, "checksum");
    }

    /* a valid checksum over a layout that lies: num_refs header field too large */
    memcpy(b, good, n);
    /* find the dims: they follow the fixed header; locate by scanning for M, DIM pair */
    int found = 0;
    for (size_t pos = 24; pos + 8 < n && !found; pos++) {
        int32_t a, d;
        memcpy(&a, b + pos, 4);
        memcpy(&d, b + pos + 4, 4);
        if (a == M && d == DIM) {
            int32_t big = M + 1;
            memcpy(b + pos, &big, 4);
            found = 1;
        }
    }
    CHECK(found);
    reseal(b, n);
    spit(tpath("layout.pead"), b, n);
    expect_fail(tpath("layout.pead"), PE_ERR_FORMAT, "corrupt");

    /* extra bytes after a valid file */
    uint8_t *big = malloc(n + 5);
    memcpy(big, good, n);
    memset(big + n, 0, 5);
    spit(tpath("long.pead"), big, n + 5);
    expect_fail(tpath("long.pead"), PE_ERR_FORMAT, "oversized");
    free(big);

    /* a folder is not a bank */
    expect_fail(tmpdir, PE_ERR_IO, tmpdir);
    free(b);
    free(good);
}

static void test_fit_errors(void)
{
    pe_bank *b;
    pe_detect_params p = pe_detect_default_params(0);
    CHECK(pe_bank_fit_features(NULL, refs, 0, &p, &b) == PE_ERR_ARG);
    p.align = 1;
    CHECK(pe_bank_fit_features(NULL, refs, M, &p, &b) == PE_ERR_UNSUPPORTED);
    CHECK(strstr(pe_last_error(), "alignment") != NULL);
    p.align = 0;
    p.mask = 1; /* no attention in the features */
    CHECK(pe_bank_fit_features(NULL, refs, M, &p, &b) == PE_ERR_ARG);
    p.mask = 0;
    pe_features odd[2] = {refs[0], refs[1]};
    odd[1].dim = DIM - 1;
    CHECK(pe_bank_fit_features(NULL, odd, 2, &p, &b) == PE_ERR_SHAPE);
    /* one reference: no leave-one-out threshold */
    CHECK(pe_bank_fit_features(NULL, refs, 1, &p, &b) == PE_OK);
    if (b) {
        CHECK(isnan(pe_bank_threshold(b)));
        pe_bank_set_threshold(b, 0.25f);
        CHECK(pe_bank_threshold(b) == 0.25f);
        CHECK(pe_bank_save(b, tpath("no/such/dir/x.pead")) == PE_ERR_IO);
        pe_bank_free(b);
    }
}

int main(void)
{
    pe_set_threads(2);
    snprintf(tmpdir, sizeof tmpdir, "/tmp/pe_test_bank.XXXXXX");
    if (!mkdtemp(tmpdir)) return 1;
    make_refs();
    RUN(test_roundtrip);
    RUN(test_corruption);
    RUN(test_fit_errors);
    for (int k = 0; k < M; k++) free(refs[k].data);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) return 1;
    return test_summary();
}
