/* test_metrics.c — image metrics vs scikit-learn and pixel AUROC / PRO vs the MVTec AD
 * reference (golden values from tools/make_metric_fixtures.py), plus the streaming
 * accumulator's error bound. */
#include "patchead.h"
#include "testlib.h"

#include <stdint.h>

/* ------------------------------------------------------------------ fixture reading */

typedef struct {
    char name[64];
    int n;
    float *scores;
    uint8_t *labels;
    double auroc, ap, f1;
} image_case;

typedef struct {
    char name[64];
    int num, w, h;
    float **maps;
    uint8_t **masks;
    double auroc, pro30, pro05, pro100;
} pixel_case;

static double read_gold(FILE *f)
{
    char tok[64];
    if (fscanf(f, "%63s", tok) != 1) return -999;
    return strtod(tok, NULL); /* strtod parses "nan" */
}

static void skip_comments(FILE *f)
{
    int c;
    while ((c = fgetc(f)) == '#')
        while ((c = fgetc(f)) != '\n' && c != EOF) {}
    if (c != EOF) ungetc(c, f);
}

static int load_image_cases(image_case *cases, int cap)
{
    FILE *f = fopen(FIXTURE("metrics/image_cases.txt"), "r");
    if (!f) return -1;
    skip_comments(f);
    int k = 0;
    while (k < cap && fscanf(f, " case %63s %d", cases[k].name, &cases[k].n) == 2) {
        image_case *c = &cases[k];
        c->scores = malloc(sizeof(float) * c->n);
        c->labels = malloc(c->n);
        for (int i = 0; i < c->n; i++)
            if (fscanf(f, "%f", &c->scores[i]) != 1) return -1;
        for (int i = 0; i < c->n; i++) {
            int v;
            if (fscanf(f, "%d", &v) != 1) return -1;
            c->labels[i] = (uint8_t)v;
        }
        c->auroc = read_gold(f);
        c->ap = read_gold(f);
        c->f1 = read_gold(f);
        k++;
    }
    fclose(f);
    return k;
}

static int load_pixel_cases(pixel_case *cases, int cap)
{
    FILE *f = fopen(FIXTURE("metrics/pixel_cases.txt"), "r");
    if (!f) return -1;
    skip_comments(f);
    int k = 0;
    while (k < cap && fscanf(f, " pcase %63s %d %d %d", cases[k].name, &cases[k].num, &cases[k].w,
                             &cases[k].h) == 4) {
        pixel_case *c = &cases[k];
        int np = c->w * c->h;
        c->maps = malloc(sizeof *c->maps * c->num);
        c->masks = malloc(sizeof *c->masks * c->num);
        for (int m = 0; m < c->num; m++) {
            c->masks[m] = malloc(np);
            c->maps[m] = malloc(sizeof(float) * np);
            for (int i = 0; i < np; i++) {
                int v;
                if (fscanf(f, "%d", &v) != 1) return -1;
                c->masks[m][i] = (uint8_t)v;
            }
            for (int i = 0; i < np; i++)
                if (fscanf(f, "%f", &c->maps[m][i]) != 1) return -1;
        }
        c->auroc = read_gold(f);
        c->pro30 = read_gold(f);
        c->pro05 = read_gold(f);
        c->pro100 = read_gold(f);
        k++;
    }
    fclose(f);
    return k;
}

static image_case icases[32];
static pixel_case pcases[32];
static int n_icases, n_pcases;

/* Equal within tol, or both NaN. */
static int same(double a, double b, double tol)
{
    if (isnan(a) || isnan(b)) return isnan(a) && isnan(b);
    return fabs(a - b) <= tol;
}

/* ------------------------------------------------------------------ image level */

static void test_image_metrics_vs_sklearn(void)
{
    CHECK(n_icases >= 10);
    for (int k = 0; k < n_icases; k++) {
        image_case *c = &icases[k];
        pe_image_metrics m;
        CHECK(pe_image_metrics_compute(c->scores, c->labels, c->n, &m) == PE_OK);
        CHECK_MSG(same(m.auroc, c->auroc, 1e-9), "%s auroc %.12g vs %.12g", c->name, m.auroc,
                  c->auroc);
        CHECK_MSG(same(m.ap, c->ap, 1e-9), "%s ap %.12g vs %.12g", c->name, m.ap, c->ap);
        CHECK_MSG(same(m.f1_max, c->f1, 1e-9), "%s f1 %.12g vs %.12g", c->name, m.f1_max, c->f1);
    }
}

/* The ROC/PR curve agrees with the metrics it should integrate to. */
static void test_curve_consistent(void)
{
    for (int k = 0; k < n_icases; k++) {
        image_case *c = &icases[k];
        pe_curve cv;
        pe_image_metrics m;
        CHECK(pe_curve_compute(c->scores, c->labels, c->n, &cv) == PE_OK);
        CHECK(pe_image_metrics_compute(c->scores, c->labels, c->n, &m) == PE_OK);
        if (isnan(m.auroc)) {
            pe_curve_free(&cv);
            continue;
        }
        double area = 0, ap = 0;
        for (int i = 1; i < cv.n; i++) {
            area += 0.5 * (cv.tpr[i] + cv.tpr[i - 1]) * (cv.fpr[i] - cv.fpr[i - 1]);
            ap += (cv.tpr[i] - cv.tpr[i - 1]) * cv.precision[i];
            CHECK(cv.threshold[i] < cv.threshold[i - 1]);
        }
        CHECK_MSG(fabs(area - m.auroc) < 1e-12, "%s curve area %.12g vs %.12g", c->name, area,
                  m.auroc);
        CHECK_MSG(fabs(ap - m.ap) < 1e-12, "%s curve AP %.12g vs %.12g", c->name, ap, m.ap);
        CHECK(cv.fpr[cv.n - 1] == 1 && cv.tpr[cv.n - 1] == 1);
        pe_curve_free(&cv);
    }
}

static void test_image_metrics_errors(void)
{
    float s[3] = {0.1f, NAN, 0.3f};
    uint8_t y[3] = {0, 1, 0}, bad[3] = {0, 2, 1};
    pe_image_metrics m;
    CHECK(pe_image_metrics_compute(s, y, 3, &m) == PE_ERR_ARG);
    CHECK(strstr(pe_last_error(), "NaN") != NULL);
    s[1] = 0.2f;
    CHECK(pe_image_metrics_compute(s, bad, 3, &m) == PE_ERR_ARG);
    CHECK(pe_image_metrics_compute(s, y, -1, &m) == PE_ERR_ARG);
    CHECK(pe_image_metrics_compute(s, y, 0, &m) == PE_OK && isnan(m.auroc));
}

/* ------------------------------------------------------------------ pixel level */

static pe_status run_pixel(const pixel_case *c, int bins, double max_fpr, pe_pixel_metrics *out)
{
    float lo = INFINITY, hi = -INFINITY;
    for (int m = 0; m < c->num; m++)
        for (int i = 0; i < c->w * c->h; i++) {
            lo = fminf(lo, c->maps[m][i]);
            hi = fmaxf(hi, c->maps[m][i]);
        }
    pe_pixel_acc *acc;
    pe_status st = pe_pixel_acc_create(lo, hi, bins, &acc);
    if (st) return st;
    for (int m = 0; m < c->num && !st; m++) {
        int empty = 1;
        for (int i = 0; i < c->w * c->h; i++) empty &= !c->masks[m][i];
        /* normal images go in without a mask, as eval passes them */
        st = pe_pixel_acc_add(acc, c->maps[m], empty ? NULL : c->masks[m], c->w, c->h);
    }
    if (!st) st = pe_pixel_acc_result(acc, max_fpr, out);
    pe_pixel_acc_free(acc);
    return st;
}

/* With 2^20 bins every case here is exact (bound 0) and matches the reference. */
static void test_pixel_metrics_vs_reference(void)
{
    CHECK(n_pcases >= 7);
    for (int k = 0; k < n_pcases; k++) {
        pixel_case *c = &pcases[k];
        const double fprs[3] = {0.3, 0.05, 1.0}, gold[3] = {c->pro30, c->pro05, c->pro100};
        for (int t = 0; t < 3; t++) {
            pe_pixel_metrics r;
            CHECK(run_pixel(c, 1 << 20, fprs[t], &r) == PE_OK);
            CHECK_MSG(same(r.auroc, c->auroc, 1e-9), "%s pixel auroc %.12g vs %.12g", c->name,
                      r.auroc, c->auroc);
            CHECK_MSG(same(r.pro, gold[t], 1e-9), "%s pro@%g %.12g vs %.12g", c->name, fprs[t],
                      r.pro, gold[t]);
            CHECK_MSG(isnan(r.auroc) || r.auroc_bound == 0, "%s auroc bound %g", c->name,
                      r.auroc_bound);
            CHECK_MSG(isnan(r.pro) || r.pro_bound == 0, "%s pro bound %g", c->name, r.pro_bound);
        }
    }
}

/* Coarse bins: the result moves away from the exact value but never beyond the bound
 * the accumulator reports; ties that fall in a single bin stay exact. */
static void test_pixel_bound_holds(void)
{
    int moved = 0;
    const int bins_list[4] = {3, 16, 256, 4096};
    for (int k = 0; k < n_pcases; k++) {
        pixel_case *c = &pcases[k];
        for (int b = 0; b < 4; b++) {
            pe_pixel_metrics r;
            CHECK(run_pixel(c, bins_list[b], 0.3, &r) == PE_OK);
            if (isnan(c->auroc)) continue;
            double da = fabs(r.auroc - c->auroc);
            CHECK_MSG(da <= r.auroc_bound + 1e-12, "%s bins %d: auroc off by %g > bound %g",
                      c->name, bins_list[b], da, r.auroc_bound);
            if (!isnan(c->pro30)) {
                double dp = fabs(r.pro - c->pro30);
                CHECK_MSG(dp <= r.pro_bound + 1e-12, "%s bins %d: pro off by %g > bound %g",
                          c->name, bins_list[b], dp, r.pro_bound);
                moved += dp > 1e-6;
            }
            moved += da > 1e-6;
            if (!strcmp(c->name, "quantized") && bins_list[b] >= 16) /* 5 levels, 1 per bin */
                CHECK(r.auroc_bound == 0 && r.pro_bound == 0 && da < 1e-12);
            if (!strcmp(c->name, "all_tied")) CHECK(r.auroc_bound == 0 && da < 1e-12);
        }
    }
    CHECK_MSG(moved > 0, "coarse bins never changed a result: the bound test is vacuous");
}

/* 8-connectivity: the diagonal pair and the diagonal chain are one region each. */
static void test_regions_8_connected(void)
{
    pixel_case *c = NULL;
    for (int k = 0; k < n_pcases; k++)
        if (!strcmp(pcases[k].name, "single_and_diagonal")) c = &pcases[k];
    CHECK(c != NULL);
    if (!c) return;
    int32_t *labels = malloc(sizeof *labels * c->w * c->h);
    CHECK(pe_mask_regions(c->masks[0], c->w, c->h, labels) == 4);
    CHECK(labels[1 * 12 + 1] == labels[2 * 12 + 2] && labels[1 * 12 + 1] > 0);
    CHECK(labels[9 * 12 + 3] == labels[11 * 12 + 5]);
    CHECK(labels[0] == 0);
    /* a checkerboard is a single 8-connected region (worst case for provisional labels) */
    uint8_t board[7 * 9];
    for (int i = 0; i < 63; i++) board[i] = ((i / 9) + (i % 9)) % 2 == 0;
    int32_t bl[63];
    CHECK(pe_mask_regions(board, 9, 7, bl) == 1);
    /* isolated pixels every other column and row: 4 x 5 = 20 regions */
    for (int i = 0; i < 63; i++) board[i] = (i / 9) % 2 == 0 && (i % 9) % 2 == 0;
    CHECK(pe_mask_regions(board, 9, 7, bl) == 20);
    /* a U shape merges two provisional labels into one */
    uint8_t u[4 * 5] = {1, 0, 0, 0, 1, 1, 0, 0, 0, 1, 1, 0, 0, 0, 1, 1, 1, 1, 1, 1};
    int32_t ul[20];
    CHECK(pe_mask_regions(u, 5, 4, ul) == 1);
    free(labels);
}

/* Images of different sizes in one accumulator: pixel AUROC equals the exact AUROC of
 * all pixels concatenated (the image-level function, itself checked vs sklearn). */
static void test_pixel_mixed_sizes(void)
{
    pe_pixel_acc *acc;
    CHECK(pe_pixel_acc_create(0.0f, 2.0f, 1 << 20, &acc) == PE_OK);
    int total = 0;
    for (int k = 0; k < n_pcases; k++) total += pcases[k].num * pcases[k].w * pcases[k].h;
    float *all = malloc(sizeof(float) * total);
    uint8_t *lab = malloc(total);
    int at = 0;
    for (int k = 0; k < n_pcases; k++) {
        pixel_case *c = &pcases[k];
        for (int m = 0; m < c->num; m++) {
            CHECK(pe_pixel_acc_add(acc, c->maps[m], c->masks[m], c->w, c->h) == PE_OK);
            for (int i = 0; i < c->w * c->h; i++) {
                all[at] = c->maps[m][i];
                lab[at++] = c->masks[m][i] != 0;
            }
        }
    }
    pe_pixel_metrics r;
    pe_image_metrics exact;
    CHECK(pe_pixel_acc_result(acc, 0.3, &r) == PE_OK);
    CHECK(pe_image_metrics_compute(all, lab, total, &exact) == PE_OK);
    CHECK_NEAR(r.auroc, exact.auroc, r.auroc_bound + 1e-9);
    CHECK(r.num_pos + r.num_neg == total);
    pe_pixel_acc_free(acc);
    free(all);
    free(lab);
}

static void test_pixel_errors(void)
{
    pe_pixel_acc *acc;
    CHECK(pe_pixel_acc_create(1.0f, 0.0f, 16, &acc) == PE_ERR_ARG);
    CHECK(pe_pixel_acc_create(0.0f, NAN, 16, &acc) == PE_ERR_ARG);
    CHECK(pe_pixel_acc_create(0.0f, 1.0f, 0, &acc) == PE_ERR_ARG);
    CHECK(pe_pixel_acc_create(0.5f, 0.5f, 16, &acc) == PE_OK); /* degenerate range: one bin */
    float map[4] = {0.1f, NAN, 0.2f, 0.3f};
    uint8_t mask[4] = {0, 1, 0, 0};
    CHECK(pe_pixel_acc_add(acc, map, mask, 2, 2) == PE_ERR_ARG);
    map[1] = 9.0f; /* outside the range: clamped into the last bin, still counted */
    CHECK(pe_pixel_acc_add(acc, map, mask, 2, 2) == PE_OK);
    pe_pixel_metrics r;
    CHECK(pe_pixel_acc_result(acc, 0.0, &r) == PE_ERR_ARG);
    CHECK(pe_pixel_acc_result(acc, 0.3, &r) == PE_OK);
    CHECK(r.num_pos == 1 && r.num_neg == 3 && r.num_regions == 1);
    CHECK(r.max_score == 9.0f && r.min_score == 0.1f);
    CHECK(r.auroc_bound > 0); /* all in one bin with different values: uncertain */
    CHECK(r.auroc - r.auroc_bound <= 1.0 && r.auroc + r.auroc_bound >= 1.0); /* exact is 1 */
    pe_pixel_acc_free(acc);
}

int main(void)
{
    n_icases = load_image_cases(icases, 32);
    n_pcases = load_pixel_cases(pcases, 32);
    if (n_icases < 0 || n_pcases < 0) {
        printf("FAIL fixtures: cannot read tests/fixtures/metrics/*.txt\n");
        return 1;
    }
    RUN(test_image_metrics_vs_sklearn);
    RUN(test_curve_consistent);
    RUN(test_image_metrics_errors);
    RUN(test_pixel_metrics_vs_reference);
    RUN(test_pixel_bound_holds);
    RUN(test_regions_8_connected);
    RUN(test_pixel_mixed_sizes);
    RUN(test_pixel_errors);
    for (int k = 0; k < n_icases; k++) {
        free(icases[k].scores);
        free(icases[k].labels);
    }
    for (int k = 0; k < n_pcases; k++) {
        for (int m = 0; m < pcases[k].num; m++) {
            free(pcases[k].maps[m]);
            free(pcases[k].masks[m]);
        }
        free(pcases[k].maps);
        free(pcases[k].masks);
    }
    return test_summary();
}
