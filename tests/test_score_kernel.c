/* test_score_kernel.c — the fused scoring kernel (score_kernel.c) against a double
 * reference: row and column maxima of scaled dot products, for odd row counts (micro-
 * tile tails), a reference count that is not a multiple of the 32-column panels, a
 * reference large enough to be cache-blocked (column chunks, row groups), both
 * fp32 copies (AVX-512 and AVX2) and bf16 where the CPU has it. */
#include "compute/engine.h"
#include "scale/scale.h"
#include "score/score.h"
#include "score/score_kernel.h"
#include "testlib.h"
#include "compute/vecmath.h"

#include <stdint.h>

static uint64_t rng = 0x2545f4914f6cdd1dull;
static float urand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (float)((rng >> 40) * (1.0 / 16777216.0)) * 2.0f - 1.0f;
}

/* rowmax / colmax of (A_r . B_j) scaled, in double, on the values as given */
static void reference(const float *A, int rows, const float *B, int G, int dim, const float *ri,
                      const float *ci, double *rowmax, double *colmax)
{
    for (int j = 0; j < G; j++) colmax[j] = -INFINITY;
    for (int r = 0; r < rows; r++) {
        rowmax[r] = -INFINITY;
        for (int j = 0; j < G; j++) {
            double d = 0;
            for (int k = 0; k < dim; k++)
                d += (double)A[(size_t)r * dim + k] * B[(size_t)j * dim + k];
            rowmax[r] = fmax(rowmax[r], d * ci[j]);
            colmax[j] = fmax(colmax[j], d * ri[r]);
        }
    }
}

static void run_case(int bf16, int rows, int G, int dim, const char *label)
{
    float *A = malloc((size_t)rows * dim * sizeof *A), *B = malloc((size_t)G * dim * sizeof *B);
    float *ri = malloc((size_t)rows * sizeof *ri), *ci = malloc((size_t)G * sizeof *ci);
    float *rowmax = malloc((size_t)rows * sizeof *rowmax),
          *colmax = malloc((size_t)G * sizeof *colmax);
    double *rr = malloc((size_t)rows * sizeof *rr), *rc = malloc((size_t)G * sizeof *rc);
    for (int i = 0; i < rows * dim; i++) A[i] = urand();
    for (int i = 0; i < G * dim; i++) B[i] = urand();
    for (int i = 0; i < rows; i++) ri[i] = 0.5f + 0.5f * urand();
    for (int i = 0; i < G; i++) ci[i] = 0.5f + 0.5f * urand();
    if (bf16) { /* the kernel sees bf16 values: the reference takes the same ones */
        for (int i = 0; i < rows * dim; i++) A[i] = eng_round_bf16(A[i]);
        for (int i = 0; i < G * dim; i++) B[i] = eng_round_bf16(B[i]);
    }
    reference(A, rows, B, G, dim, ri, ci, rr, rc);
    void *packed = malloc(sk_panel_bytes(G, dim, bf16));
    bf16_t *A16 = malloc((size_t)rows * dim * sizeof *A16),
           *B16 = malloc((size_t)G * dim * sizeof *B16);
    eng_to_bf16(A16, A, (size_t)rows * dim);
    eng_to_bf16(B16, B, (size_t)G * dim);
    sk_pack(bf16 ? (const void *)B16 : B, G, dim, bf16, packed);
    for (int j = 0; j < G; j++) colmax[j] = -INFINITY;
    /* rows in two calls (a split the scorer's row tiles make), colmax running across */
    const int split = rows / 3;
    const size_t esz = bf16 ? sizeof(bf16_t) : sizeof(float);
    const char *a = bf16 ? (const char *)A16 : (const char *)A;
    sk_rows(bf16, a, split, dim, packed, G, ri, ci, rowmax, colmax);
    sk_rows(bf16, a + (size_t)split * dim * esz, rows - split, dim, packed, G, ri + split, ci,
            rowmax + split, colmax);
    double worst = 0;
    for (int r = 0; r < rows; r++) worst = tl_worse(worst, fabs(rowmax[r] - rr[r]));
    for (int j = 0; j < G; j++) worst = tl_worse(worst, fabs(colmax[j] - rc[j]));
    /* |dot| <= dim; fp32 accumulation of exact products: ~dim * 2^-24 * |terms| */
    const double tol = 1e-6 * dim;
    printf("  %s rows %d G %d dim %d: max |diff| %.3g\n", label, rows, G, dim, worst);
    CHECK_MSG(worst <= tol, "%s: max |diff| %g > %g", label, worst, tol);
    /* fp32: the AVX2 copy gives the same bits as the AVX-512 one (same FMA chains) */
    if (!bf16 && vec_avx512()) {
        float *rm2 = malloc((size_t)rows * sizeof *rm2), *cm2 = malloc((size_t)G * sizeof *cm2);
        for (int j = 0; j < G; j++) cm2[j] = -INFINITY;
        vec_set_avx512(0);
        sk_rows(0, a, rows, dim, packed, G, ri, ci, rm2, cm2);
        vec_set_avx512(1);
        CHECK_MSG(!memcmp(rm2, rowmax, (size_t)rows * sizeof *rm2) &&
                      !memcmp(cm2, colmax, (size_t)G * sizeof *cm2),
                  "%s: the AVX2 copy differs from the AVX-512 one", label);
        free(rm2), free(cm2);
    }
    /* only one side asked: the other is not touched */
    colmax[0] = 12345.0f;
    sk_rows(bf16, a, rows, dim, packed, G, ri, ci, rowmax, NULL);
    CHECK(colmax[0] == 12345.0f);
    free(A), free(B), free(ri), free(ci), free(rowmax), free(colmax), free(rr), free(rc);
    free(packed), free(A16), free(B16);
}

static void test_fp32(void)
{
    const int avx512 = vec_set_avx512(1) && vec_avx512();
    for (int v = avx512 ? 1 : 0; v >= 0; v--) {
        vec_set_avx512(v);
        run_case(0, 37, 101, 64, v ? "fp32 avx512" : "fp32 avx2");
        run_case(0, 9, 32, 7, v ? "fp32 avx512" : "fp32 avx2");
        run_case(0, 70, 200, 128, v ? "fp32 avx512" : "fp32 avx2");
        /* packed reference > 1 MB: cache-blocked in column chunks (the last one ragged,
         * ending inside a panel) and row groups of 256 (the last one short) */
        run_case(0, 300, 2100, 128, v ? "fp32 avx512 blocked" : "fp32 avx2 blocked");
    }
    vec_set_avx512(avx512);
}

static void test_bf16(void)
{
    if (!sk_available(1, 64)) {
        printf("# test_bf16: no AVX-512-BF16 here; bf16 scoring uses the engine GEMM path\n");
        return;
    }
    run_case(1, 37, 101, 64, "bf16");
    run_case(1, 70, 200, 128, "bf16");
    run_case(1, 1, 33, 2, "bf16");
    run_case(1, 40, 4200, 128, "bf16 blocked");
}

/* ------------------------------------------------------------------ fp32 screen */

/* (G, dim) features of one kind: 0 random; 1 clustered (groups of 4 rows within ~2e-3 of
 * each other: several products per row inside the screen's window); 2 tied (three base
 * rows plus 1e-6 noise, exact duplicates: most products inside the window). Kinds 0 and 2
 * have a zero row (its maximum is +0 without a screen). */
static float *screen_feats(int G, int dim, int kind)
{
    float *f = malloc((size_t)G * dim * sizeof *f), base[3][256];
    for (int b = 0; b < 3; b++)
        for (int k = 0; k < dim; k++) base[b][k] = urand();
    for (int i = 0; i < G; i++)
        for (int k = 0; k < dim; k++) {
            float *x = &f[(size_t)i * dim + k];
            if (kind == 0) *x = urand();
            else if (kind == 1)
                *x = i % 4 ? f[(size_t)(i - i % 4) * dim + k] + 2e-3f * urand() : urand();
            else *x = base[i % 3][k] + (i % 5 ? 1e-6f * urand() : 0.0f);
        }
    if (kind != 1) memset(f + (size_t)(kind ? 7 : 5) * dim, 0, (size_t)dim * sizeof *f);
    return f;
}

/* sk_screen_* on one pair against the fp32 kernel: rowmax and colmax bit for bit, where
 * the screen finished them (kind 2 leaves its ties to the fp32 kernel: checked that it
 * does) */
static void screen_pair(int G, int dim, int kind, const char *label)
{
    float *A = screen_feats(G, dim, kind), *B = screen_feats(G, dim, kind == 1 ? 1 : kind);
    if (kind == 1) /* B: A's rows shuffled and moved by ~1e-3 */
        for (int i = 0; i < G; i++)
            for (int k = 0; k < dim; k++)
                B[(size_t)i * dim + k] = A[(size_t)((i * 7) % G) * dim + k] + 1e-3f * urand();
    float *ia = malloc(G * sizeof *ia), *ib = malloc(G * sizeof *ib);
    pe_inv_norms(A, G, dim, ia);
    pe_inv_norms(B, G, dim, ib);
    /* the fp32 kernel */
    float *rm = malloc(G * sizeof *rm), *cm = malloc(G * sizeof *cm);
    void *packed = malloc(sk_panel_bytes(G, dim, 0));
    sk_pack(B, G, dim, 0, packed);
    for (int j = 0; j < G; j++) cm[j] = -INFINITY;
    sk_rows(0, A, G, dim, packed, G, ia, ib, rm, cm);
    /* the screen, rows in two calls */
    uint16_t *A16 = malloc((size_t)G * dim * 2), *B16 = malloc((size_t)G * dim * 2);
    float *sa = malloc((size_t)G * 3 * sizeof *sa), *sb = malloc((size_t)G * 3 * sizeof *sb);
    CHECK(sk_screen_stats(A, ia, G, dim, A16, sa) == 0 &&
          sk_screen_stats(B, ib, G, dim, B16, sb) == 0);
    float *rw = malloc(G * sizeof *rw), *cw = malloc(G * sizeof *cw);
    sk_screen_windows(sa, sb, G, dim, rw, cw);
    void *packed16 = malloc(sk_panel_bytes(G, dim, 1));
    sk_pack(B16, G, dim, 1, packed16);
    float *srm = malloc(G * sizeof *srm), *scm = malloc(G * sizeof *scm),
          *xcm = malloc(G * sizeof *xcm);
    for (int j = 0; j < G; j++) scm[j] = -INFINITY, srm[j] = NAN;
    sk_screen_seed(A16, B16, G, dim, scm);
    sk_screen_ws ws = {0};
    const int split = 96;
    CHECK(sk_screen_rows(A16, A, 0, split, dim, packed16, B, G, ib, rw, cw, srm, scm, &ws) == 0);
    CHECK(sk_screen_rows(A16, A, split, G - split, dim, packed16, B, G, ib, rw, cw, srm, scm,
                         &ws) == 0);
    /* rows the screen left to the fp32 kernel */
    char *redo = calloc(G, 1);
    for (size_t q = 0; q < ws.nredo; q++)
        for (int r = ws.redo[2 * q]; r < ws.redo[2 * q] + ws.redo[2 * q + 1]; r++) redo[r] = 1;
    const size_t nredo = ws.nredo;
    const int rc = sk_screen_finish_cols(&ws, 1, A, B, dim, G, G, ia, scm, cw, xcm);
    int rows_same = 1, rows_done = 0, cols_same = 1;
    for (int r = 0; r < G; r++)
        if (!redo[r]) rows_done++, rows_same &= !memcmp(&srm[r], &rm[r], sizeof *rm);
    if (rc == 0) cols_same = !memcmp(xcm, cm, (size_t)G * sizeof *cm);
    printf("  %s G %d dim %d: rows screened %d/%d, columns %s\n", label, G, dim, rows_done, G,
           rc == 0 ? "screened" : "left to fp32");
    CHECK_MSG(rows_same, "%s: a screened row maximum differs from the fp32 kernel's", label);
    CHECK_MSG(cols_same, "%s: a screened column maximum differs from the fp32 kernel's", label);
    CHECK(rc >= 0);
    if (kind < 2) CHECK_MSG(rc == 0 && nredo == 0, "%s: the screen gave up without ties", label);
    else CHECK_MSG(rc == 1 && nredo > 0, "%s: ties were not left to the fp32 kernel", label);
    sk_screen_ws_free(&ws);
    free(A), free(B), free(ia), free(ib), free(rm), free(cm), free(packed), free(A16), free(B16);
    free(sa), free(sb), free(rw), free(cw), free(packed16), free(srm), free(scm), free(xcm),
        free(redo);
}

/* The batch scorer with and without the screen: the same bits (its fallbacks included);
 * also through a sampled comparator schedule (pairs in another order than a < b: the
 * pair's bf16 copies are made in two slots that the pairs take in turn) */
static void screen_batch(int kind, const char *label)
{
    enum { B = 6 };
    const int G = 200, dim = 64;
    float *f[B], *s0 = malloc((size_t)B * G * sizeof *s0), *s1 = malloc((size_t)B * G * sizeof *s1);
    float i0[B], i1[B];
    for (int b = 0; b < B; b++) f[b] = screen_feats(G, dim, kind);
    pe_score_params p = pe_score_default_params("patchead", 1);
    p.precision = PE_PRECISION_FP32;
    pe_score_set_screen(0);
    CHECK(pe_score_batch((const float *const *)f, B, G, dim, &p, s0, i0) == PE_OK);
    pe_score_set_screen(1);
    CHECK(pe_score_batch((const float *const *)f, B, G, dim, &p, s1, i1) == PE_OK);
    int same = !memcmp(s0, s1, (size_t)B * G * sizeof *s0) && !memcmp(i0, i1, sizeof i0);
    CHECK_MSG(same, "%s: screened batch scores differ from the fp32 kernel's", label);
    if (same) printf("  batch %s: screened == fp32 kernel\n", label);
    pe_score_set_screen(0);
    CHECK(pe_score_batch_scheduled((const float *const *)f, B, G, dim, &p, 3, 7, 0, NULL, NULL,
                                   s0) == PE_OK);
    pe_score_set_screen(1);
    CHECK(pe_score_batch_scheduled((const float *const *)f, B, G, dim, &p, 3, 7, 0, NULL, NULL,
                                   s1) == PE_OK);
    same = !memcmp(s0, s1, (size_t)B * G * sizeof *s0);
    CHECK_MSG(same, "%s: screened sampled batch scores differ from the fp32 kernel's", label);
    if (same) printf("  sampled batch %s: screened == fp32 kernel\n", label);
    for (int b = 0; b < B; b++) free(f[b]);
    free(s0), free(s1);
}

/* sk_screen_convert (a zero-shot pair's copies, made per pair) writes the bits
 * sk_screen_stats measures its bounds on: widths with and without a 16-lane tail, rows
 * enough to run over the team, and values that round to even, overflow to infinity,
 * denormals, signed zeros, infinities and NaNs */
static void screen_convert(void)
{
    static const int dims[] = {64, 152, 7};
    uint32_t special[] = {0x3f808000u, 0x3f818000u, 0x3f80ffffu, 0x7f7fffffu, 0x00000001u,
                          0x807fffffu, 0x80000000u, 0x00000000u, 0x7f800000u, 0xff800000u,
                          0x7fc00001u, 0xffbfffffu, 0x3f7fff7fu, 0xbf808000u};
    const int ns = (int)(sizeof special / sizeof *special);
    for (size_t d = 0; d < sizeof dims / sizeof *dims; d++) {
        const int dim = dims[d], G = 1200;
        float *X = malloc((size_t)G * dim * sizeof *X), *inv = malloc(G * sizeof *inv);
        float *st = malloc((size_t)G * 3 * sizeof *st);
        uint16_t *a = malloc((size_t)G * dim * 2), *b = malloc((size_t)G * dim * 2);
        for (int i = 0; i < G * dim; i++) X[i] = urand() * (i % 3 ? 1.0f : 1e3f);
        for (int i = 0; i < G; i++) inv[i] = i % 24 ? 0.5f + urand() * 0.25f : 1.0f;
        for (int i = 0; i < G; i += 24) /* rows scaled by 1: the special bit patterns as they are */
            for (int k = 0; k < dim; k++)
                memcpy(&X[(size_t)i * dim + k], &special[(i + k) % ns], 4);
        sk_screen_stats(X, inv, G, dim, a, st);
        memset(b, 0xa5, (size_t)G * dim * 2);
        sk_screen_convert(X, inv, G, dim, b);
        size_t diff = 0;
        for (size_t i = 0; i < (size_t)G * dim; i++) diff += a[i] != b[i];
        CHECK_MSG(diff == 0, "sk_screen_convert dim %d: %zu values differ from sk_screen_stats's",
                  dim, diff);
        free(X), free(inv), free(st), free(a), free(b);
    }
}

/* Few-shot (pe_score_query) with and without the screen: the same bits, for references of
 * other sizes than the query, a reference with a NaN feature (no bound: the fp32 kernel
 * for it) and tied features (row blocks left to the fp32 kernel) */
static void screen_query(int kind, const char *label)
{
    const int Gq = 200, dim = 64, R = 3, G[3] = {200, 150, 260};
    float *q = screen_feats(Gq, dim, kind), *refs[3];
    for (int k = 0; k < R; k++) refs[k] = screen_feats(G[k], dim, kind);
    refs[1][(size_t)9 * dim + 3] = NAN;
    float *s0 = malloc(Gq * sizeof *s0), *s1 = malloc(Gq * sizeof *s1), i0, i1;
    pe_score_params p = pe_score_default_params("patchead", 3);
    p.precision = PE_PRECISION_FP32;
    pe_score_set_screen(0);
    CHECK(pe_score_query(q, Gq, (const float *const *)refs, G, R, dim, &p, s0, &i0) == PE_OK);
    pe_score_set_screen(1);
    CHECK(pe_score_query(q, Gq, (const float *const *)refs, G, R, dim, &p, s1, &i1) == PE_OK);
    const int same = !memcmp(s0, s1, Gq * sizeof *s0) && !memcmp(&i0, &i1, sizeof i0);
    CHECK_MSG(same, "%s: screened few-shot scores differ from the fp32 kernel's", label);
    if (same) printf("  few-shot %s: screened == fp32 kernel\n", label);
    free(q), free(s0), free(s1);
    for (int k = 0; k < R; k++) free(refs[k]);
}

static void test_screen(void)
{
    if (!sk_screen_available(64)) {
        printf("# test_screen: no AVX-512-BF16 here; fp32 pairs run the fp32 kernel only\n");
        return;
    }
    screen_convert();
    for (int amx = 1; amx >= 0; amx--) {
        sk_screen_set_amx(amx);
        const char *isa = amx ? "(AMX where present)" : "(vdpbf16ps)";
        char l[64];
        snprintf(l, sizeof l, "random %s", isa);
        screen_pair(333, 128, 0, l);
        snprintf(l, sizeof l, "clustered %s", isa);
        screen_pair(256, 64, 1, l);
        snprintf(l, sizeof l, "tied %s", isa);
        screen_pair(256, 64, 2, l);
        screen_batch(0, amx ? "random" : "random (vdpbf16ps)");
        screen_batch(2, amx ? "tied" : "tied (vdpbf16ps)");
        screen_query(0, amx ? "random" : "random (vdpbf16ps)");
        screen_query(1, amx ? "clustered" : "clustered (vdpbf16ps)");
        screen_query(2, amx ? "tied" : "tied (vdpbf16ps)");
    }
    sk_screen_set_amx(1);
}

int main(void)
{
    RUN(test_fp32);
    RUN(test_bf16);
    RUN(test_screen);
    return test_summary();
}
