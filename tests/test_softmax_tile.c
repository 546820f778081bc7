/* test_softmax_tile.c — the online-softmax tile step (src/compute/softmax_tile.c): every copy
 * this CPU runs (generic AVX2 / AVX-512, AVX-512 intrinsics, AVX-512-BF16) against a
 * double-precision reference and against each other bit for bit, for P in fp32 and in
 * bf16, on a first key block (m = -inf) and a later one (m, l, acc carried), with row
 * lengths that leave every tail; with the row maxima found by the step or given by the
 * GEMM (the same bits). */
#include "compute/softmax_tile.h"
#include "testlib.h"
#include "compute/vecmath.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>

static uint64_t rng = 0x2545f4914f6cdd1dull;
static float urand(float lo, float hi)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return lo + (hi - lo) * (float)((rng >> 40) * (1.0 / 16777216.0));
}

static float bf16_to_float(uint16_t h)
{
    const uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

enum { NQ = 5, DH = 40, NKMAX = 1100 };

typedef struct {
    float s[NQ * (NKMAX + 5)];      /* room for rows lds = nk + 5 apart */
    uint16_t p16[NQ * (NKMAX + 3)]; /* rows of ldp = nk + 3 */
    float m[NQ], l[NQ], acc[NQ * DH];
} tile_state;

/* the starting state: `later` = a second key block (finite m, l and acc carried over) */
static void init_state(tile_state *t, const float *scores, int nk, int later)
{
    memcpy(t->s, scores, (size_t)NQ * nk * sizeof(float));
    memset(t->p16, 0xff, sizeof t->p16);
    for (int r = 0; r < NQ; r++) {
        t->m[r] = later ? urand(-1.0f, 3.0f) : -INFINITY;
        t->l[r] = later ? urand(1.0f, 50.0f) : 0.0f;
    }
    for (int i = 0; i < NQ * DH; i++) t->acc[i] = later ? urand(-3.0f, 3.0f) : 0.0f;
}

static void check_case(int nk, int later, int bf16, float scale)
{
    static float scores[NQ * NKMAX];
    static tile_state start, out[3], given;
    for (int i = 0; i < NQ * nk; i++) scores[i] = urand(-30.0f, 30.0f);
    rng += 1; /* the state draws differ from case to case */
    init_state(&start, scores, nk, later);
    const int ldp = nk + 3; /* a stride wider than the row, as AMX's padded rows */
    const int best = softmax_tile_best();
    for (int w = 0; w <= best; w++) {
        out[w] = start;
        CHECK(softmax_tile_force(w) >= 0);
        softmax_tile(out[w].s, nk, bf16 ? out[w].p16 : NULL, ldp, NQ, nk, scale, out[w].m, out[w].l,
                     out[w].acc, DH, NULL);
        softmax_tile_force(-1);
    }
    /* reference in double from the starting state */
    for (int r = 0; r < NQ; r++) {
        double mx = start.m[r];
        for (int j = 0; j < nk; j++) mx = fmax(mx, (double)scale * scores[r * nk + j]);
        const double corr = start.m[r] == -INFINITY ? 0.0 : exp(start.m[r] - mx);
        double sum = 0.0;
        for (int j = 0; j < nk; j++) {
            const double p = exp((double)scale * scores[r * nk + j] - mx);
            sum += p;
            const double got = bf16 ? bf16_to_float(out[0].p16[r * ldp + j]) : out[0].s[r * nk + j];
            CHECK_MSG(fabs(got - p) <= (bf16 ? 4e-3 : 2e-6) * p + 1e-30,
                      "nk %d row %d key %d: P %.9g vs %.9g", nk, r, j, got, p);
        }
        CHECK_MSG(fabs(out[0].m[r] - mx) <= 1e-6 * fabs(mx) + 1e-6, "nk %d row %d: m", nk, r);
        const double l = start.l[r] * corr + sum;
        CHECK_MSG(fabs(out[0].l[r] - l) <= 1e-5 * l, "nk %d row %d: l %.9g vs %.9g", nk, r,
                  out[0].l[r], l);
        for (int i = 0; i < DH; i++) {
            const double a = start.acc[r * DH + i] * corr;
            CHECK_MSG(fabs(out[0].acc[r * DH + i] - a) <= 1e-5 * fabs(a) + 1e-30, "acc");
        }
    }
    for (int w = 1; w <= best; w++) {
        int same = !memcmp(out[w].m, out[0].m, sizeof out[0].m) &&
                   !memcmp(out[w].l, out[0].l, sizeof out[0].l) &&
                   !memcmp(out[w].acc, out[0].acc, sizeof out[0].acc);
        for (int r = 0; r < NQ && same; r++)
            same = bf16 ? !memcmp(out[w].p16 + r * ldp, out[0].p16 + r * ldp, (size_t)nk * 2)
                        : !memcmp(out[w].s + r * nk, out[0].s + r * nk, (size_t)nk * 4);
        CHECK_MSG(same, "copy %s differs from %s: nk %d, %s, %s", softmax_tile_name(w),
                  softmax_tile_name(0), nk, bf16 ? "bf16" : "fp32",
                  later ? "later block" : "first");
    }
    /* the row maxima given (as amx_gemm finds them), and S rows lds = nk + 5 apart (as AMX
     * stores them, aligned): every copy, the same bits */
    float rowmax[NQ];
    const int lds = nk + 5;
    for (int r = 0; r < NQ; r++) {
        rowmax[r] = -INFINITY;
        for (int j = 0; j < nk; j++) rowmax[r] = fmaxf(rowmax[r], scores[r * nk + j]);
    }
    for (int w = 0; w <= best; w++) {
        given = start;
        for (int r = 0; r < NQ; r++)
            memcpy(given.s + (size_t)r * lds, scores + r * nk, (size_t)nk * sizeof(float));
        CHECK(softmax_tile_force(w) >= 0);
        softmax_tile(given.s, lds, bf16 ? given.p16 : NULL, ldp, NQ, nk, scale, given.m, given.l,
                     given.acc, DH, rowmax);
        softmax_tile_force(-1);
        int same = !memcmp(given.m, out[0].m, sizeof given.m) &&
                   !memcmp(given.l, out[0].l, sizeof given.l) &&
                   !memcmp(given.acc, out[0].acc, sizeof given.acc);
        for (int r = 0; r < NQ && same; r++)
            same = bf16 ? !memcmp(given.p16 + r * ldp, out[0].p16 + r * ldp, (size_t)nk * 2)
                        : !memcmp(given.s + (size_t)r * lds, out[0].s + r * nk, (size_t)nk * 4);
        CHECK_MSG(same, "copy %s with the row maxima given differs: nk %d, %s, %s",
                  softmax_tile_name(w), nk, bf16 ? "bf16" : "fp32",
                  later ? "later block" : "first");
    }
}

static void test_copies(void)
{
    vec_set_avx512(1); /* where the CPU has it; the "vec" copy is then the AVX-512 one */
    printf("# copies run here: vec .. %s\n", softmax_tile_name(softmax_tile_best()));
    const int lengths[] = {1, 7, 16, 17, 31, 32, 33, 63, 64, 65, 100, 1025, 1040, NKMAX};
    for (size_t i = 0; i < sizeof lengths / sizeof *lengths; i++)
        for (int later = 0; later < 2; later++)
            for (int bf16 = 0; bf16 < 2; bf16++) check_case(lengths[i], later, bf16, 0.125f);
    /* the generic copy at AVX2 width too: it is the only one on AVX2 CPUs */
    vec_set_avx512(0);
    CHECK(softmax_tile_best() == SOFTMAX_TILE_VEC);
    check_case(1025, 1, 1, 0.125f);
    vec_set_avx512(1);
}

/* extreme scores: huge spreads underflow to exp's floor, not to NaN */
static void test_extremes(void)
{
    enum { NK = 50 };
    static tile_state t[3];
    float scores[NQ * NK];
    for (int i = 0; i < NQ * NK; i++) scores[i] = (i % 3 ? -1e30f : 1e30f) * (i % 7 ? 1 : -1);
    const int best = softmax_tile_best();
    for (int w = 0; w <= best; w++) {
        init_state(&t[w], scores, NK, 0);
        softmax_tile_force(w);
        softmax_tile(t[w].s, NK, t[w].p16, NK, NQ, NK, 1.0f, t[w].m, t[w].l, t[w].acc, DH, NULL);
        softmax_tile_force(-1);
        for (int r = 0; r < NQ; r++) CHECK(isfinite(t[w].l[r]) && t[w].l[r] >= 1.0f);
        if (w) CHECK(!memcmp(t[w].p16, t[0].p16, sizeof t[0].p16));
    }
}

int main(void)
{
    RUN(test_copies);
    RUN(test_extremes);
    return test_summary();
}
