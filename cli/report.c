/* report.c — writes the result files of `patchead eval` (see report.h):
 * results.md, results.csv, results.json (cJSON), scores.csv and report.html, each
 * atomically (pe_atomic_*: temp file + fsync + rename). This file: the aggregation over
 * seeds, the file helpers and every file but report.html (report_html.c). */
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

int ev_out_open(ev_out_file *o, const char *dir, const char *name)
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

int ev_out_close(ev_out_file *o)
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

double ev_setting_seconds(const ev_run *r, int s)
{
    double t = 0;
    for (int c = 0; c < r->num_categories; c++)
        for (int seed = 0; seed < r->settings[s].num_seeds; seed++) t += ev_cell(r, s, c, seed)->seconds;
    return t;
}

void ev_seeds_text(const ev_run *r, char *buf, size_t cap)
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
    ev_out_file o;
    if (ev_out_open(&o, dir, "results.md")) return -1;
    FILE *f = o.f;
    char seeds[256];
    ev_seeds_text(r, seeds, sizeof seeds);
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
                ev_setting_seconds(r, s), r->pixel_bins, ab, pb, 100 * ab, 100 * pb);
    }
    fprintf(f, "Metrics in %%: image AUROC / AP / F1-max (sklearn definitions, ties grouped), "
               "pixel AUROC over all pixels, PRO up to FPR 0.3 (MVTec AD definition, 8-connected "
               "regions). n/a: undefined (one class, or masks missing).\n");
    return ev_out_close(&o);
}

/* ------------------------------------------------------------------ results.csv, scores.csv */

int ev_write_csv(const ev_run *r, const char *dir)
{
    ev_out_file o;
    if (ev_out_open(&o, dir, "results.csv")) return -1;
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
                    fprintf(f, ",%d,%d,%d,%d,%s", r->seed_list[seed],
                            ev_shots(set, r->cats[c].cat->num_train), set->align, set->mask,
                            set->preset);
                    csv_num(f, m->i_auroc);
                    csv_num(f, m->i_ap);
                    csv_num(f, m->f1_max);
                    csv_num(f, m->p_auroc);
                    csv_num(f, m->pro);
                    csv_num(f, m->p_auroc_bound);
                    csv_num(f, m->pro_bound);
                    csv_num(f, m->seconds);
                } else { /* the mean over categories, per seed */
                    fprintf(f, "mean,%d,", r->seed_list[seed]); /* all-shot: "all" */
                    if (set->shots == EV_SHOTS_ALL) fputs("all", f);
                    else fprintf(f, "%d", set->shots);
                    fprintf(f, ",%d,%d,%s", set->align, set->mask, set->preset);
                    for (int k = 0; k < EV_NUM_METRICS; k++) csv_num(f, seed_value(r, s, -1, seed, k));
                    fputs(",,,", f);
                }
                fputc('\n', f);
            }
    }
    return ev_out_close(&o);
}

int ev_write_scores(const ev_run *r, const char *dir)
{
    ev_out_file o;
    if (ev_out_open(&o, dir, "scores.csv")) return -1;
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
    return ev_out_close(&o);
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
        cJSON_AddStringToObject(so, "mode", set->shots == EV_SHOTS_ALL ? "all-shot"
                                            : set->shots             ? "few-shot"
                                                                     : "zero-shot");
        if (set->shots == EV_SHOTS_ALL) cJSON_AddStringToObject(so, "shots", "all");
        else cJSON_AddNumberToObject(so, "shots", set->shots);
        cJSON_AddBoolToObject(so, "align", set->align);
        cJSON_AddBoolToObject(so, "mask", set->mask);
        cJSON_AddStringToObject(so, "preset", set->preset);
        cJSON_AddNumberToObject(so, "seconds", ev_setting_seconds(r, s));
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
                if (set->shots == EV_SHOTS_ALL) /* the references this category's cell used */
                    cJSON_AddNumberToObject(o, "shots", r->cats[c].cat->num_train);
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
    ev_out_file o;
    int rc = ev_out_open(&o, dir, "results.json");
    if (!rc) {
        pe_utf8_write(o.f, text); /* paths may hold bytes that are not UTF-8 (RFC 8259) */
        fputc('\n', o.f);
        rc = ev_out_close(&o);
    }
    free(text);
    return rc;
}

