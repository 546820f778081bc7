/* report.c — writes the result files of `patchead eval` (see report.h):
 * results.md, results.csv, results.json (cJSON), scores.csv and report.html, each
 * atomically (pe_atomic_*: temp file + fsync + rename). The HTML is self-contained: inline CSS, inline SVG
 * charts drawn here, example heatmaps embedded as base64 PNG data URIs. */
#include "report.h"
#include "cli.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

const char *const ev_metric_names[EV_NUM_METRICS] = {"I-AUROC", "I-AP", "F1-max", "P-AUROC",
                                                     "PRO"};
static const char *const metric_keys[EV_NUM_METRICS] = {"i_auroc", "i_ap", "f1_max", "p_auroc",
                                                        "pro"};

double ev_metric_value(const ev_metrics *m, int which)
{
    if (!m->done) return NAN;
    switch (which) {
    case EV_I_AUROC: return m->i_auroc;
    case EV_I_AP: return m->i_ap;
    case EV_F1: return m->f1_max;
    case EV_P_AUROC: return m->p_auroc;
    default: return m->pro;
    }
}

/* Value of category c (or of the category mean, c = -1) for one seed. */
static double seed_value(const ev_run *r, int s, int c, int seed, int which)
{
    if (c >= 0) return ev_metric_value(ev_cell(r, s, c, seed), which);
    double sum = 0;
    int n = 0;
    for (int k = 0; k < r->num_categories; k++) {
        double v = ev_metric_value(ev_cell(r, s, k, seed), which);
        if (!isnan(v)) {
            sum += v;
            n++;
        }
    }
    return n ? sum / n : NAN;
}

void ev_aggregate(const ev_run *r, int s, int c, int which, double *mean, double *std)
{
    double sum = 0, sq = 0;
    int n = 0;
    for (int seed = 0; seed < r->settings[s].num_seeds; seed++) {
        double v = seed_value(r, s, c, seed, which);
        if (isnan(v)) continue;
        sum += v;
        sq += v * v;
        n++;
    }
    *mean = n ? sum / n : NAN;
    *std = n ? sqrt(fmax(0.0, sq / n - (*mean) * (*mean))) : NAN;
}

void ev_format_cell(const ev_run *r, int s, int c, int which, char *buf, size_t cap)
{
    double mean, std;
    ev_aggregate(r, s, c, which, &mean, &std);
    if (isnan(mean)) snprintf(buf, cap, "n/a");
    else if (r->settings[s].num_seeds > 1) snprintf(buf, cap, "%.1f ± %.1f", 100 * mean, 100 * std);
    else snprintf(buf, cap, "%.1f", 100 * mean);
}

/* ------------------------------------------------------------------ file helpers */

/* Each result file goes through the library's atomic writer (temp + fsync + rename). */
typedef struct {
    FILE *f;
    pe_atomic_file *af;
    char path[4200];
} out_file;

static int out_open(out_file *o, const char *dir, const char *name)
{
    snprintf(o->path, sizeof o->path, "%s/%s", dir, name);
    pe_status s = pe_atomic_open(o->path, &o->af);
    if (s) {
        cli_lib_error(s);
        return -1;
    }
    o->f = pe_atomic_stream(o->af);
    return 0;
}

static int out_close(out_file *o)
{
    pe_status s = pe_atomic_commit(o->af);
    if (s) {
        cli_lib_error(s);
        return -1;
    }
    return 0;
}

static void csv_num(FILE *f, double v)
{
    if (isnan(v)) fputs(",", f);
    else fprintf(f, ",%.6f", v);
}

static void html_text(FILE *f, const char *s)
{
    for (; *s; s++) {
        switch (*s) {
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '&': fputs("&amp;", f); break;
        case '"': fputs("&quot;", f); break;
        default: fputc(*s, f);
        }
    }
}

/* Largest error bound of the pixel metrics over a setting (0 when exact or n/a). */
static void worst_bounds(const ev_run *r, int s, double *auroc_b, double *pro_b)
{
    *auroc_b = *pro_b = 0;
    for (int c = 0; c < r->num_categories; c++)
        for (int seed = 0; seed < r->settings[s].num_seeds; seed++) {
            const ev_metrics *m = ev_cell(r, s, c, seed);
            if (!m->done) continue;
            if (!isnan(m->p_auroc_bound)) *auroc_b = fmax(*auroc_b, m->p_auroc_bound);
            if (!isnan(m->pro_bound)) *pro_b = fmax(*pro_b, m->pro_bound);
        }
}

static double setting_seconds(const ev_run *r, int s)
{
    double t = 0;
    for (int c = 0; c < r->num_categories; c++)
        for (int seed = 0; seed < r->settings[s].num_seeds; seed++) t += ev_cell(r, s, c, seed)->seconds;
    return t;
}

static void seeds_text(const ev_run *r, char *buf, size_t cap)
{
    buf[0] = 0;
    for (int i = 0; i < r->num_seed_list; i++) {
        size_t n = strlen(buf);
        snprintf(buf + n, cap - n, "%s%d", i ? "," : "", r->seed_list[i]);
    }
}

/* ------------------------------------------------------------------ results.md */

int ev_write_markdown(const ev_run *r, const char *dir)
{
    out_file o;
    if (out_open(&o, dir, "results.md")) return -1;
    FILE *f = o.f;
    char seeds[256];
    seeds_text(r, seeds, sizeof seeds);
    fprintf(f, "# patchead eval — %s (%s layout)\n\n", r->data_root, r->layout);
    fprintf(f, "Backbone `%s` (%s, weights %s), input %d, map sigma %.0f px; seeds %s; "
               "patchead %s%s%.12s; %s; %.1f s, peak RSS %.0f MiB.\n\n",
            r->backbone, r->family, r->weights_hash, r->size, r->map_sigma, seeds, r->version,
            r->git_commit[0] ? " @ " : "", r->git_commit, r->started, r->total_seconds,
            r->peak_rss_kb / 1024.0);
    if (r->num_settings > 1) { /* overview: the mean row of every setting (Table 5 layout) */
        fprintf(f, "## Summary (mean over categories)\n\n| Setting | Align | Mask | Preset |");
        for (int k = 0; k < EV_NUM_METRICS; k++) fprintf(f, " %s |", ev_metric_names[k]);
        fprintf(f, "\n|---|:---:|:---:|---|");
        for (int k = 0; k < EV_NUM_METRICS; k++) fprintf(f, "---:|");
        fputc('\n', f);
        for (int s = 0; s < r->num_settings; s++) {
            const ev_setting *set = &r->settings[s];
            fprintf(f, "| %s | %s | %s | %s |", set->name, set->align ? "✓" : "", set->mask ? "✓" : "",
                    set->preset);
            for (int k = 0; k < EV_NUM_METRICS; k++) {
                char cell[64];
                ev_format_cell(r, s, -1, k, cell, sizeof cell);
                fprintf(f, " %s |", cell);
            }
            fputc('\n', f);
        }
        fputc('\n', f);
    }
    for (int s = 0; s < r->num_settings; s++) {
        const ev_setting *set = &r->settings[s];
        fprintf(f, "## %s (preset %s)%s\n\n", set->name, set->preset,
                set->num_seeds > 1 ? " — mean ± std over seeds" : "");
        fprintf(f, "| Category | Test (anom.) |");
        for (int k = 0; k < EV_NUM_METRICS; k++) fprintf(f, " %s |", ev_metric_names[k]);
        fprintf(f, "\n|---|---:|");
        for (int k = 0; k < EV_NUM_METRICS; k++) fprintf(f, "---:|");
        fputc('\n', f);
        for (int c = 0; c <= r->num_categories; c++) { /* the last row is the mean */
            int row = c < r->num_categories ? c : -1;
            char cell[64];
            if (row >= 0) {
                int anomalous = 0;
                for (int i = 0; i < r->cats[row].num_test; i++) anomalous += r->cats[row].test[i]->label;
                fprintf(f, "| %s | %d (%d) |", r->cats[row].cat->name, r->cats[row].num_test,
                        anomalous);
            } else fprintf(f, "| **mean** | |");
            for (int k = 0; k < EV_NUM_METRICS; k++) {
                ev_format_cell(r, s, row, k, cell, sizeof cell);
                fprintf(f, row < 0 ? " **%s** |" : " %s |", cell);
            }
            fputc('\n', f);
        }
        double ab, pb;
        worst_bounds(r, s, &ab, &pb);
        fprintf(f, "\nScoring + metrics %.1f s. Pixel metrics from a %d-bin histogram: "
                   "largest error bound P-AUROC ±%.2g, PRO ±%.2g (percentage points: ±%.2g, ±%.2g).\n\n",
                setting_seconds(r, s), r->pixel_bins, ab, pb, 100 * ab, 100 * pb);
    }
    fprintf(f, "Metrics in %%: image AUROC / AP / F1-max (sklearn definitions, ties grouped), "
               "pixel AUROC over all pixels, PRO up to FPR 0.3 (MVTec AD definition, 8-connected "
               "regions). n/a: undefined (one class, or masks missing).\n");
    return out_close(&o);
}

/* ------------------------------------------------------------------ results.csv, scores.csv */

int ev_write_csv(const ev_run *r, const char *dir)
{
    out_file o;
    if (out_open(&o, dir, "results.csv")) return -1;
    FILE *f = o.f;
    fprintf(f, "setting,category,seed,shots,align,mask,preset,i_auroc,i_ap,f1_max,p_auroc,pro,"
               "p_auroc_bound,pro_bound,seconds\n");
    for (int s = 0; s < r->num_settings; s++) {
        const ev_setting *set = &r->settings[s];
        for (int c = 0; c <= r->num_categories; c++)
            for (int seed = 0; seed < set->num_seeds; seed++) {
                cli_csv_field(f, set->name);
                fputc(',', f);
                if (c < r->num_categories) {
                    const ev_metrics *m = ev_cell(r, s, c, seed);
                    if (!m->done) continue;
                    cli_csv_field(f, r->cats[c].cat->name);
                    fprintf(f, ",%d,%d,%d,%d,%s", r->seed_list[seed], set->shots, set->align,
                            set->mask, set->preset);
                    csv_num(f, m->i_auroc);
                    csv_num(f, m->i_ap);
                    csv_num(f, m->f1_max);
                    csv_num(f, m->p_auroc);
                    csv_num(f, m->pro);
                    csv_num(f, m->p_auroc_bound);
                    csv_num(f, m->pro_bound);
                    csv_num(f, m->seconds);
                } else { /* the mean over categories, per seed */
                    fprintf(f, "mean,%d,%d,%d,%d,%s", r->seed_list[seed], set->shots, set->align,
                            set->mask, set->preset);
                    for (int k = 0; k < EV_NUM_METRICS; k++) csv_num(f, seed_value(r, s, -1, seed, k));
                    fputs(",,,", f);
                }
                fputc('\n', f);
            }
    }
    return out_close(&o);
}

int ev_write_scores(const ev_run *r, const char *dir)
{
    out_file o;
    if (out_open(&o, dir, "scores.csv")) return -1;
    FILE *f = o.f;
    fprintf(f, "setting,category,seed,path,label,score\n");
    for (int s = 0; s < r->num_settings; s++)
        for (int c = 0; c < r->num_categories; c++)
            for (int seed = 0; seed < r->settings[s].num_seeds; seed++) {
                if (!ev_cell(r, s, c, seed)->done) continue;
                const float *sc = ev_scores(r, s, c, seed);
                const ev_category *ec = &r->cats[c];
                for (int i = 0; i < ec->num_test; i++) {
                    cli_csv_field(f, r->settings[s].name);
                    fputc(',', f);
                    cli_csv_field(f, ec->cat->name);
                    fprintf(f, ",%d,", r->seed_list[seed]);
                    cli_csv_field(f, ec->test[i]->path);
                    fprintf(f, ",%d,%.9g\n", ec->test[i]->label, sc[i]);
                }
            }
    return out_close(&o);
}

/* ------------------------------------------------------------------ results.json */

static cJSON *num_or_null(double v)
{
    return isnan(v) ? cJSON_CreateNull() : cJSON_CreateNumber(v);
}

int ev_write_json(const ev_run *r, const char *dir)
{
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "patchead_version", r->version);
    cJSON_AddStringToObject(root, "git_commit", r->git_commit);
    cJSON_AddStringToObject(root, "started", r->started);
    cJSON *bb = cJSON_AddObjectToObject(root, "backbone");
    cJSON_AddStringToObject(bb, "name", r->backbone);
    cJSON_AddStringToObject(bb, "family", r->family);
    cJSON_AddStringToObject(bb, "weights_hash", r->weights_hash);
    cJSON_AddStringToObject(bb, "path", r->model_path);
    cJSON *pa = cJSON_AddObjectToObject(root, "parameters");
    cJSON_AddStringToObject(pa, "data", r->data_root);
    cJSON_AddStringToObject(pa, "layout", r->layout);
    cJSON_AddNumberToObject(pa, "size", r->size);
    cJSON_AddNumberToObject(pa, "map_sigma", r->map_sigma);
    cJSON_AddNumberToObject(pa, "threads", r->threads);
    if (r->precision) cJSON_AddStringToObject(pa, "precision", r->precision);
    cJSON_AddStringToObject(pa, "engine_isa", pe_engine_isa());
    cJSON_AddNumberToObject(pa, "max_test", r->max_test);
    cJSON_AddNumberToObject(pa, "pixel_bins", r->pixel_bins);
    cJSON_AddNumberToObject(pa, "pro_max_fpr", 0.3);
    if (r->beyond) cJSON_AddStringToObject(pa, "beyond", r->beyond);
    cJSON_AddNumberToObject(pa, "comparators", r->comparators);
    cJSON_AddNumberToObject(pa, "comparator_seed", r->comparator_seed);
    cJSON_AddNumberToObject(pa, "mpi_ranks", r->mpi_ranks);
    cJSON_AddItemToObject(root, "seeds", cJSON_CreateIntArray(r->seed_list, r->num_seed_list));
    cJSON *cats = cJSON_AddArrayToObject(root, "categories");
    for (int c = 0; c < r->num_categories; c++) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "name", r->cats[c].cat->name);
        cJSON_AddNumberToObject(o, "num_test", r->cats[c].num_test);
        cJSON_AddNumberToObject(o, "num_train", r->cats[c].cat->num_train);
        cJSON_AddBoolToObject(o, "has_masks", r->cats[c].cat->has_masks);
        cJSON_AddNumberToObject(o, "extract_seconds", r->cats[c].extract_seconds);
        cJSON_AddItemToArray(cats, o);
    }
    cJSON *sets = cJSON_AddArrayToObject(root, "settings");
    for (int s = 0; s < r->num_settings; s++) {
        const ev_setting *set = &r->settings[s];
        cJSON *so = cJSON_CreateObject();
        cJSON_AddStringToObject(so, "name", set->name);
        cJSON_AddStringToObject(so, "mode", set->shots ? "few-shot" : "zero-shot");
        cJSON_AddNumberToObject(so, "shots", set->shots);
        cJSON_AddBoolToObject(so, "align", set->align);
        cJSON_AddBoolToObject(so, "mask", set->mask);
        cJSON_AddStringToObject(so, "preset", set->preset);
        cJSON_AddNumberToObject(so, "seconds", setting_seconds(r, s));
        cJSON *mean = cJSON_AddObjectToObject(so, "mean");
        for (int k = 0; k < EV_NUM_METRICS; k++) {
            double mu, sd;
            ev_aggregate(r, s, -1, k, &mu, &sd);
            cJSON *mo = cJSON_AddObjectToObject(mean, metric_keys[k]);
            cJSON_AddItemToObject(mo, "mean", num_or_null(mu));
            cJSON_AddItemToObject(mo, "std", num_or_null(sd));
        }
        cJSON *per = cJSON_AddArrayToObject(so, "results");
        for (int c = 0; c < r->num_categories; c++)
            for (int seed = 0; seed < set->num_seeds; seed++) {
                const ev_metrics *m = ev_cell(r, s, c, seed);
                if (!m->done) continue;
                cJSON *o = cJSON_CreateObject();
                cJSON_AddStringToObject(o, "category", r->cats[c].cat->name);
                cJSON_AddNumberToObject(o, "seed", r->seed_list[seed]);
                for (int k = 0; k < EV_NUM_METRICS; k++)
                    cJSON_AddItemToObject(o, metric_keys[k], num_or_null(ev_metric_value(m, k)));
                cJSON_AddItemToObject(o, "p_auroc_bound", num_or_null(m->p_auroc_bound));
                cJSON_AddItemToObject(o, "pro_bound", num_or_null(m->pro_bound));
                cJSON_AddNumberToObject(o, "seconds", m->seconds);
                cJSON_AddItemToArray(per, o);
            }
        cJSON_AddItemToArray(sets, so);
    }
    cJSON *t = cJSON_AddObjectToObject(root, "timings");
    cJSON_AddNumberToObject(t, "total_seconds", r->total_seconds);
    cJSON_AddNumberToObject(t, "peak_rss_mib", r->peak_rss_kb / 1024.0);
    char *text = cJSON_Print(root);
    cJSON_Delete(root);
    if (!text) return cli_error("results.json: out of memory");
    out_file o;
    int rc = out_open(&o, dir, "results.json");
    if (!rc) {
        pe_utf8_write(o.f, text); /* paths may hold bytes that are not UTF-8 (RFC 8259) */
        fputc('\n', o.f);
        rc = out_close(&o);
    }
    free(text);
    return rc;
}

/* ------------------------------------------------------------------ report.html */

static const char *const palette[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e",
                                      "#9467bd", "#8c564b", "#e377c2", "#17becf"};

/* A square chart frame: 0..1 on both axes, ticks every 0.25. Data (x, y) maps to
 * (PX(x), PY(y)). */
#define CH_W 400
#define CH_H 260
#define CH_L 42
#define CH_T 24
#define CH_S 200
#define PX(x) (CH_L + (x) * CH_S)
#define PY(y) (CH_T + (1 - (y)) * CH_S)

static void svg_frame(FILE *f, const char *title, const char *xl, const char *yl, int diagonal)
{
    fprintf(f, "<svg class=\"chart\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
               "xmlns=\"http://www.w3.org/2000/svg\">\n", CH_W, CH_H, CH_W, CH_H);
    fprintf(f, "<text x=\"%d\" y=\"15\" class=\"t\">", CH_L);
    html_text(f, title);
    fprintf(f, "</text>\n");
    for (int i = 0; i <= 4; i++) {
        double v = i / 4.0;
        fprintf(f, "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" class=\"g\"/>", PX(v), CH_T,
                PX(v), CH_T + CH_S);
        fprintf(f, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" class=\"g\"/>", CH_L, PY(v),
                CH_L + CH_S, PY(v));
        fprintf(f, "<text x=\"%.1f\" y=\"%d\" class=\"k\" text-anchor=\"middle\">%.2g</text>",
                PX(v), CH_T + CH_S + 13, v);
        fprintf(f, "<text x=\"%d\" y=\"%.1f\" class=\"k\" text-anchor=\"end\">%.2g</text>\n",
                CH_L - 4, PY(v) + 4, v);
    }
    fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" class=\"b\"/>\n", CH_L, CH_T,
            CH_S, CH_S);
    if (diagonal)
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" class=\"d\"/>\n", PX(0.0),
                PY(0.0), PX(1.0), PY(1.0));
    fprintf(f, "<text x=\"%d\" y=\"%d\" class=\"k\" text-anchor=\"middle\">%s</text>\n",
            CH_L + CH_S / 2, CH_T + CH_S + 28, xl);
    fprintf(f, "<text x=\"12\" y=\"%d\" class=\"k\" text-anchor=\"middle\" transform=\"rotate(-90 12 %d)\">%s</text>\n",
            CH_T + CH_S / 2, CH_T + CH_S / 2, yl);
}

/* Labels of category c's evaluated test images, for pe_curve_compute. */
static int cell_labels(const ev_run *r, int c, uint8_t **labels)
{
    const ev_category *ec = &r->cats[c];
    *labels = malloc((size_t)EV_MAX(ec->num_test, 1));
    if (!*labels) return -1;
    for (int i = 0; i < ec->num_test; i++) (*labels)[i] = (uint8_t)ec->test[i]->label;
    return 0;
}

/* ROC (pr = 0) or PR (pr = 1) curves of seed 0 of every setting, one colour each. */
static void svg_curves(FILE *f, const ev_run *r, int c, int pr)
{
    svg_frame(f, pr ? "Precision-recall (seed 0)" : "ROC (seed 0)", pr ? "recall" : "FPR",
              pr ? "precision" : "TPR", !pr);
    int drawn = 0;
    for (int s = 0; s < r->num_settings; s++) {
        const ev_metrics *m = ev_cell(r, s, c, 0);
        if (!m->done || isnan(m->i_auroc)) continue;
        uint8_t *labels;
        if (cell_labels(r, c, &labels)) continue;
        pe_curve cv;
        if (pe_curve_compute(ev_scores(r, s, c, 0), labels, r->cats[c].num_test, &cv) == PE_OK) {
            const char *col = palette[s % 8];
            fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"1.6\" points=\"", col);
            for (int i = 0; i < cv.n; i++) {
                double x = pr ? cv.tpr[i] : cv.fpr[i], y = pr ? cv.precision[i] : cv.tpr[i];
                if (pr && i == 0) continue; /* the empty prediction has no meaningful precision */
                fprintf(f, "%.1f,%.1f ", PX(x), PY(y));
            }
            fprintf(f, "\"/>\n");
            /* legend */
            int ly = CH_T + 12 + 13 * drawn;
            fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"10\" height=\"3\" fill=\"%s\"/>"
                       "<text x=\"%d\" y=\"%d\" class=\"l\">",
                    CH_L + CH_S + 6, ly - 3, col, CH_L + CH_S + 18, ly);
            html_text(f, r->settings[s].name);
            fprintf(f, " %.1f</text>\n", 100 * (pr ? m->i_ap : m->i_auroc));
            drawn++;
            pe_curve_free(&cv);
        }
        free(labels);
    }
    if (!drawn)
        fprintf(f, "<text x=\"%d\" y=\"%d\" class=\"k\">undefined: one class only</text>\n",
                CH_L + 20, CH_T + 100);
    fprintf(f, "</svg>\n");
}

/* Histogram of image scores, normal vs anomalous, for the first setting's seed 0. */
static void svg_histogram(FILE *f, const ev_run *r, int c)
{
    enum { BINS = 24 };
    const ev_category *ec = &r->cats[c];
    const float *sc = ev_scores(r, 0, c, 0);
    float lo = INFINITY, hi = -INFINITY;
    for (int i = 0; i < ec->num_test; i++) {
        if (isnan(sc[i])) continue;
        lo = fminf(lo, sc[i]);
        hi = fmaxf(hi, sc[i]);
    }
    char title[160];
    snprintf(title, sizeof title, "Image scores, %s (seed 0)", r->settings[0].name);
    fprintf(f, "<svg class=\"chart\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
               "xmlns=\"http://www.w3.org/2000/svg\">\n<text x=\"%d\" y=\"15\" class=\"t\">",
            CH_W, CH_H, CH_W, CH_H, CH_L);
    html_text(f, title);
    fprintf(f, "</text>\n");
    if (!(hi >= lo)) {
        fprintf(f, "<text x=\"%d\" y=\"100\" class=\"k\">no scores</text></svg>\n", CH_L);
        return;
    }
    int counts[2][BINS] = {{0}}, maxc = 1;
    double width = hi > lo ? (hi - lo) / BINS : 1;
    for (int i = 0; i < ec->num_test; i++) {
        if (isnan(sc[i])) continue;
        int b = (int)((sc[i] - lo) / width);
        b = b < 0 ? 0 : (b >= BINS ? BINS - 1 : b);
        maxc = EV_MAX(maxc, ++counts[ec->test[i]->label ? 1 : 0][b]);
    }
    const int plot_w = CH_S + 40;
    fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" class=\"b\"/>\n", CH_L, CH_T,
            plot_w, CH_S);
    const char *col[2] = {"#2ca02c", "#d62728"};
    for (int k = 0; k < 2; k++)
        for (int b = 0; b < BINS; b++) {
            if (!counts[k][b]) continue;
            double bh = (double)counts[k][b] / maxc * (CH_S - 4);
            fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"%s\" "
                       "fill-opacity=\"0.55\"/>\n",
                    CH_L + (double)b * plot_w / BINS, CH_T + CH_S - bh, (double)plot_w / BINS - 1,
                    bh, col[k]);
        }
    fprintf(f, "<text x=\"%d\" y=\"%d\" class=\"k\">%.4g</text>", CH_L, CH_T + CH_S + 13, lo);
    fprintf(f, "<text x=\"%d\" y=\"%d\" class=\"k\" text-anchor=\"end\">%.4g</text>",
            CH_L + plot_w, CH_T + CH_S + 13, hi);
    fprintf(f, "<text x=\"%d\" y=\"%d\" class=\"k\" text-anchor=\"middle\">image score</text>",
            CH_L + plot_w / 2, CH_T + CH_S + 28);
    fprintf(f, "<text x=\"%d\" y=\"%d\" class=\"k\" text-anchor=\"end\">%d</text>", CH_L - 4,
            CH_T + 10, maxc);
    fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"10\" height=\"8\" fill=\"%s\"/><text x=\"%d\" "
               "y=\"%d\" class=\"l\">normal</text>",
            CH_L + plot_w + 6, CH_T + 6, col[0], CH_L + plot_w + 20, CH_T + 14);
    fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"10\" height=\"8\" fill=\"%s\"/><text x=\"%d\" "
               "y=\"%d\" class=\"l\">anomalous</text>\n</svg>\n",
            CH_L + plot_w + 6, CH_T + 20, col[1], CH_L + plot_w + 20, CH_T + 28);
}

static void base64_file(FILE *out, const char *path)
{
    static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    FILE *f = fopen(path, "rb");
    if (!f) return;
    unsigned char in[3];
    size_t n;
    while ((n = fread(in, 1, 3, f)) > 0) {
        unsigned v = in[0] << 16 | (n > 1 ? in[1] << 8 : 0) | (n > 2 ? in[2] : 0);
        fputc(tbl[v >> 18 & 63], out);
        fputc(tbl[v >> 12 & 63], out);
        fputc(n > 1 ? tbl[v >> 6 & 63] : '=', out);
        fputc(n > 2 ? tbl[v & 63] : '=', out);
    }
    fclose(f);
}

static void html_table(FILE *f, const ev_run *r, int s)
{
    fprintf(f, "<table><tr><th>Category</th><th>Test</th>");
    for (int k = 0; k < EV_NUM_METRICS; k++) fprintf(f, "<th>%s</th>", ev_metric_names[k]);
    fprintf(f, "</tr>\n");
    for (int c = 0; c <= r->num_categories; c++) {
        int row = c < r->num_categories ? c : -1;
        fprintf(f, row < 0 ? "<tr class=\"mean\"><td>mean</td><td></td>" : "<tr><td>");
        if (row >= 0) {
            html_text(f, r->cats[row].cat->name);
            fprintf(f, "</td><td>%d</td>", r->cats[row].num_test);
        }
        for (int k = 0; k < EV_NUM_METRICS; k++) {
            char cell[64];
            ev_format_cell(r, s, row, k, cell, sizeof cell);
            fprintf(f, "<td>%s</td>", cell);
        }
        fprintf(f, "</tr>\n");
    }
    fprintf(f, "</table>\n");
}

int ev_write_html(const ev_run *r, const char *dir)
{
    out_file o;
    if (out_open(&o, dir, "report.html")) return -1;
    FILE *f = o.f;
    fprintf(f, "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n<title>patchead "
               "eval — ");
    html_text(f, r->data_root);
    fprintf(f, "</title>\n<style>\n"
               "body{font-family:system-ui,-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;"
               "margin:24px auto;max-width:1320px;color:#222;padding:0 16px}\n"
               "h1{font-size:22px}h2{font-size:18px;margin-top:28px;border-bottom:1px solid #ddd}"
               "h3{font-size:15px;margin:6px 0}\n"
               ".meta{color:#555;font-size:13px;line-height:1.5}\n"
               "table{border-collapse:collapse;font-size:13px;margin:8px 0}"
               "th,td{border:1px solid #ccc;padding:3px 9px;text-align:right}"
               "th:first-child,td:first-child{text-align:left}th{background:#f3f3f3}"
               "tr.mean td{font-weight:600;background:#fafafa}\n"
               ".charts{display:flex;flex-wrap:wrap;gap:8px;align-items:flex-start}\n"
               ".chart{background:#fff;border:1px solid #eee}"
               ".chart .t{font-size:12px;font-weight:600}.chart .k{font-size:10px;fill:#444}"
               ".chart .l{font-size:10px}.chart .g{stroke:#eee}.chart .b{fill:none;stroke:#888}"
               ".chart .d{stroke:#bbb;stroke-dasharray:4 3}\n"
               ".ex{display:flex;flex-wrap:wrap;gap:10px}.ex figure{margin:0;width:300px;"
               "font-size:11px;color:#333}.ex img{max-width:300px;border:1px solid #ddd}\n"
               ".note{font-size:12px;color:#666}\n</style></head><body>\n");
    fprintf(f, "<h1>patchead eval — ");
    html_text(f, r->data_root);
    fprintf(f, "</h1>\n<div class=\"meta\">");
    char seeds[256];
    seeds_text(r, seeds, sizeof seeds);
    fprintf(f, "Backbone <b>");
    html_text(f, r->backbone);
    fprintf(f, "</b> (%s, weights %s) · input %d · layout %s · seeds %s · %d categor%s<br>"
               "patchead %s%s%.12s · started %s · total %.1f s · peak RSS %.0f MiB</div>\n",
            r->family, r->weights_hash, r->size, r->layout, seeds, r->num_categories,
            r->num_categories == 1 ? "y" : "ies", r->version, r->git_commit[0] ? " @ " : "",
            r->git_commit, r->started, r->total_seconds, r->peak_rss_kb / 1024.0);

    if (r->num_settings > 1) {
        fprintf(f, "<h2>Summary <span class=\"note\">mean over categories</span></h2>\n<table><tr>"
                   "<th>Setting</th><th>Align</th><th>Mask</th><th>Preset</th>");
        for (int k = 0; k < EV_NUM_METRICS; k++) fprintf(f, "<th>%s</th>", ev_metric_names[k]);
        fprintf(f, "</tr>\n");
        for (int s = 0; s < r->num_settings; s++) {
            const ev_setting *set = &r->settings[s];
            fprintf(f, "<tr><td>");
            html_text(f, set->name);
            fprintf(f, "</td><td>%s</td><td>%s</td><td>%s</td>", set->align ? "✓" : "",
                    set->mask ? "✓" : "", set->preset);
            for (int k = 0; k < EV_NUM_METRICS; k++) {
                char cell[64];
                ev_format_cell(r, s, -1, k, cell, sizeof cell);
                fprintf(f, "<td>%s</td>", cell);
            }
            fprintf(f, "</tr>\n");
        }
        fprintf(f, "</table>\n");
    }
    for (int s = 0; s < r->num_settings; s++) {
        fprintf(f, "<h2>");
        html_text(f, r->settings[s].name);
        fprintf(f, " <span class=\"note\">preset %s%s · %.1f s</span></h2>\n", r->settings[s].preset,
                r->settings[s].num_seeds > 1 ? " · mean ± std over seeds" : "",
                setting_seconds(r, s));
        html_table(f, r, s);
    }
    fprintf(f, "<p class=\"note\">Metrics in %%. Image AUROC / AP / F1-max as scikit-learn "
               "(ties grouped); pixel AUROC over all pixels; PRO to FPR 0.3 (MVTec AD definition, "
               "8-connected regions), from a %d-bin streaming histogram with a reported error "
               "bound (results.csv). n/a: undefined (one class, or no masks).</p>\n",
            r->pixel_bins);

    for (int c = 0; c < r->num_categories; c++) {
        const ev_category *ec = &r->cats[c];
        fprintf(f, "<h2>");
        html_text(f, ec->cat->name);
        fprintf(f, " <span class=\"note\">%d test images (%d anomalous in the full set), "
                   "%d normal training images, masks: %s, features %.1f s</span></h2>\n",
                ec->num_test, ec->cat->num_anomalous, ec->cat->num_train,
                ec->cat->has_masks ? "yes" : "no (pixel metrics n/a)", ec->extract_seconds);
        fprintf(f, "<div class=\"charts\">\n");
        svg_curves(f, r, c, 0);
        svg_curves(f, r, c, 1);
        svg_histogram(f, r, c);
        fprintf(f, "</div>\n");
        if (ec->num_examples) {
            fprintf(f, "<h3>Examples <span class=\"note\">(");
            html_text(f, ec->examples_setting);
            fprintf(f, "; colour scale = the category's patch-score range)</span></h3>\n"
                       "<div class=\"ex\">\n");
            for (int k = 0; k < ec->num_examples; k++) {
                char path[4400];
                snprintf(path, sizeof path, "%s/%s", dir, ec->examples[k].file);
                fprintf(f, "<figure><img alt=\"heatmap\" src=\"data:image/png;base64,");
                base64_file(f, path);
                fprintf(f, "\"><figcaption>");
                html_text(f, ec->examples[k].caption);
                fprintf(f, "</figcaption></figure>\n");
            }
            fprintf(f, "</div>\n");
        }
    }
    fprintf(f, "</body></html>\n");
    return out_close(&o);
}
