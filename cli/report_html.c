/* report_html.c — report.html of `patchead eval` (see report.h): self-contained, with
 * inline CSS, inline SVG charts drawn here (ROC / PR curves, score histograms) and the
 * example heatmaps embedded as base64 PNG data URIs. Written atomically through
 * ev_out_open / ev_out_close (report.c). */
#include "cli.h"
#include "report.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

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
    ev_out_file o;
    if (ev_out_open(&o, dir, "report.html")) return -1;
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
    ev_seeds_text(r, seeds, sizeof seeds);
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
                ev_setting_seconds(r, s));
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
    return ev_out_close(&o);
}
