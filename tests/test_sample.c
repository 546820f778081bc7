/* test_sample.c — pe_splitmix64 and pe_sample_refs (the one seeded reference sampler of
 * fit and eval) against tests/fixtures/sample/refs.txt, written by the independent Python
 * rule in tools/make_sample_fixtures.py; plus the properties the docs promise. */
#include "patchead.h"
#include "testlib.h"

#include <inttypes.h>
#include <stdint.h>

static void test_splitmix64_vectors(void)
{
    /* The published splitmix64 sequence from state 1234567 (Vigna's reference
     * implementation), independent of our fixture generator. */
    const uint64_t want[5] = {6457827717110365317ULL, 3203168211198807973ULL,
                              9817491932198370423ULL, 4593380528125082431ULL,
                              16408922859458223821ULL};
    uint64_t st = 1234567;
    for (int i = 0; i < 5; i++) CHECK(pe_splitmix64(&st) == want[i]);
}

static void test_fixture(void)
{
    FILE *f = fopen(FIXTURE("sample/refs.txt"), "r");
    CHECK_MSG(f, "cannot open %s", FIXTURE("sample/refs.txt"));
    if (!f) return;
    char kind[8];
    int records = 0;
    while (fscanf(f, "%7s", kind) == 1) {
        uint64_t seed;
        CHECK(fscanf(f, "%" SCNu64, &seed) == 1);
        if (!strcmp(kind, "mix")) {
            uint64_t st = seed;
            for (int i = 0; i < 5; i++) {
                uint64_t want;
                CHECK(fscanf(f, "%" SCNu64, &want) == 1);
                CHECK_MSG(pe_splitmix64(&st) == want, "mix seed %" PRIu64 " output %d", seed, i);
            }
        } else {
            int n;
            CHECK(!strcmp(kind, "perm") && fscanf(f, "%d", &n) == 1 && n >= 0 && n <= 1000);
            int perm[1000];
            CHECK(pe_sample_refs(seed, n, perm) == PE_OK);
            for (int i = 0; i < n; i++) {
                int want;
                CHECK(fscanf(f, "%d", &want) == 1);
                CHECK_MSG(perm[i] == want, "seed %" PRIu64 " n %d: perm[%d] = %d, want %d", seed, n,
                          i, perm[i], want);
            }
        }
        records++;
    }
    fclose(f);
    CHECK_MSG(records >= 50, "only %d records read", records);
}

/* A permutation; the same for the same seed; different seeds give different orders. */
static void test_properties(void)
{
    enum { N = 64 };
    int a[N], b[N], seen[N] = {0};
    CHECK(pe_sample_refs(7, N, a) == PE_OK);
    for (int i = 0; i < N; i++) {
        CHECK(a[i] >= 0 && a[i] < N);
        if (a[i] >= 0 && a[i] < N) seen[a[i]]++;
    }
    for (int i = 0; i < N; i++) CHECK(seen[i] == 1);
    CHECK(pe_sample_refs(7, N, b) == PE_OK);
    CHECK(!memcmp(a, b, sizeof a));
    CHECK(pe_sample_refs(8, N, b) == PE_OK);
    CHECK(memcmp(a, b, sizeof a) != 0);
    /* every index is drawn first by some seed (no stuck positions) */
    int first[N] = {0};
    for (uint64_t s = 0; s < 2000; s++) {
        pe_sample_refs(s, N, b);
        first[b[0]]++;
    }
    for (int i = 0; i < N; i++) CHECK_MSG(first[i] > 0, "index %d never first", i);
}

static void test_bad_arguments(void)
{
    int p[1];
    CHECK(pe_sample_refs(0, -1, p) == PE_ERR_ARG);
    CHECK(strstr(pe_last_error(), "pe_sample_refs") != NULL);
    CHECK(pe_sample_refs(0, 3, NULL) == PE_ERR_ARG);
    CHECK(pe_sample_refs(0, 0, NULL) == PE_OK);
}

int main(void)
{
    RUN(test_splitmix64_vectors);
    RUN(test_fixture);
    RUN(test_properties);
    RUN(test_bad_arguments);
    return test_summary();
}
