/* report.h — the result files of `patchead eval`: results.md (paper-style tables),
 * results.csv, results.json, scores.csv and the self-contained report.html (tables,
 * ROC / PR curves and score histograms as inline SVG, example heatmaps as PNG data URIs).
 *
 * The run is a 3-D grid of metrics: setting x category x seed. Zero-shot settings have a
 * single (deterministic) seed. Aggregation: a category's cell is mean ± std (population
 * std, numpy's default) over seeds; the mean row takes, for each seed, the mean over the
 * categories where the metric is defined, then mean ± std of those over seeds. */
#ifndef PE_EVAL_REPORT_H
#define PE_EVAL_REPORT_H

#include "patchead.h"

#include <stdio.h>

#define EV_MAX(a, b) ((a) > (b) ? (a) : (b))

/* Metrics of one (setting, category, seed); NAN = n/a. */
typedef struct {
    double i_auroc, i_ap, f1_max, p_auroc, pro;
    double p_auroc_bound, pro_bound; /* streaming-histogram error bounds */
    double seconds;                  /* scoring + metrics wall time */
    int done;                        /* 0 if the cell was skipped (e.g. no train images) */
} ev_metrics;

typedef struct {
    char name[96];   /* "1-shot", "zero-shot", "4-shot +align+mask", with preset if several */
    int shots;       /* 0 = batch zero-shot, EV_SHOTS_ALL = every training image (the
                        count differs per category: ev_shots) */
    int align, mask;
    char preset[32];
    int num_seeds;   /* seeds actually run (1 for zero-shot) */
} ev_setting;

/* One example heatmap of a category (file under DIR/heatmaps/). */
typedef struct {
    char file[256];    /* relative to the output folder */
    char caption[256];
} ev_example;

typedef struct {
    const pe_category *cat;
    int num_test;              /* after --max-test */
    const pe_sample **test;    /* (num_test) the evaluated samples */
    double extract_seconds;    /* feature extraction of test + train images */
    ev_example examples[4];
    int num_examples;
    char examples_setting[128]; /* which setting / seed the examples come from */
} ev_category;

typedef struct {
    /* provenance */
    const char *version, *git_commit, *started; /* started: ISO 8601 UTC */
    const char *model_path, *backbone, *family, *weights_hash;
    const char *data_root, *layout, *out_dir;
    int size, threads, max_test, pixel_bins;
    const char *precision; /* "fp32" / "bf16" (resolved --precision) */
    float map_sigma;
    const char *beyond;    /* few-shot options beyond the paper (docs/BEYOND.md) */
    const int *seed_list;
    int num_seed_list;
    double total_seconds;
    long peak_rss_kb;
    /* the grid */
    int num_settings, num_categories;
    ev_setting *settings;
    ev_category *cats;
    ev_metrics *metrics;   /* [setting][category][seed], seed < num_seed_list */
    float *scores;         /* [setting][category][seed][test] image scores (NAN = not run) */
    int max_test_count;    /* stride of the last axis of scores */
    int comparators, comparator_seed; /* zero-shot comparators R (0 = all) and their seed */
    int mpi_ranks;                    /* ranks that shared the run (1 without MPI) */
} ev_run;

#define EV_SHOTS_ALL (-1) /* eval --shots all: fit --shots all, the category's sorted train set */

/* References of setting s for a category with num_train normal training images. */
static inline int ev_shots(const ev_setting *s, int num_train)
{
    return s->shots == EV_SHOTS_ALL ? num_train : s->shots;
}

static inline ev_metrics *ev_cell(const ev_run *r, int s, int c, int seed)
{
    return &r->metrics[((size_t)s * r->num_categories + c) * r->num_seed_list + seed];
}

static inline float *ev_scores(const ev_run *r, int s, int c, int seed)
{
    return &r->scores[(((size_t)s * r->num_categories + c) * r->num_seed_list + seed) *
                      r->max_test_count];
}

/* Each writes DIR/<file> atomically; 0 on success, -1 with an error printed. */
int ev_write_markdown(const ev_run *r, const char *dir);
int ev_write_csv(const ev_run *r, const char *dir);
int ev_write_json(const ev_run *r, const char *dir);
int ev_write_scores(const ev_run *r, const char *dir);
int ev_write_html(const ev_run *r, const char *dir);

/* "96.0 ± 0.3" (percent) into buf; "n/a" when no seed has the value. */
void ev_format_cell(const ev_run *r, int s, int c, int which, char *buf, size_t cap);
/* Metric index for ev_format_cell / ev_metric_value. */
enum { EV_I_AUROC, EV_I_AP, EV_F1, EV_P_AUROC, EV_PRO, EV_NUM_METRICS };
extern const char *const ev_metric_names[EV_NUM_METRICS];
double ev_metric_value(const ev_metrics *m, int which);
/* mean and std over seeds for category c (c = -1: the mean row); NAN when undefined. */
void ev_aggregate(const ev_run *r, int s, int c, int which, double *mean, double *std);

/* Between report.c and report_html.c. Each result file goes through the library's atomic
 * writer (temp + fsync + rename): ev_out_open, write to .f, ev_out_close commits;
 * 0, or -1 with an error printed. */
typedef struct {
    FILE *f;
    pe_atomic_file *af;
    char path[4200];
} ev_out_file;
int ev_out_open(ev_out_file *o, const char *dir, const char *name);
int ev_out_close(ev_out_file *o);
/* Scoring + metrics seconds of setting s, summed over its cells. */
double ev_setting_seconds(const ev_run *r, int s);
/* The seeds as "0,1,2" into buf. */
void ev_seeds_text(const ev_run *r, char *buf, size_t cap);

#endif
