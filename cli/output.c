/* output.c — scores.csv / scores.jsonl / maps / heatmaps (see output.h). */
#include "output.h"
#include "cli.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char *stem_of(const char *path, int with_parent)
{
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    const char *dot = strrchr(base, '.');
    size_t n = dot && dot != base ? (size_t)(dot - base) : strlen(base);
    char parent[256] = "";
    if (with_parent && base != path) {
        const char *end = base - 1; /* the slash before base */
        const char *start = end;
        while (start > path && start[-1] != '/') start--;
        snprintf(parent, sizeof parent, "%.*s_", (int)(end - start), start);
    }
    size_t len = strlen(parent) + n + 1;
    char *s = malloc(len);
    if (s) snprintf(s, len, "%s%.*s", parent, (int)n, base);
    return s;
}

int det_assign_stems(det_item *items, int n)
{
    for (int i = 0; i < n; i++) {
        items[i].stem = stem_of(items[i].path, 0);
        if (!items[i].stem) return -1;
    }
    /* same stem twice -> parent_stem for all of them */
    char *dup = calloc((size_t)n + 1, 1);
    if (!dup) return -1;
    for (int i = 0; i < n; i++)
        for (int j = i + 1; j < n; j++)
            if (!strcmp(items[i].stem, items[j].stem)) dup[i] = dup[j] = 1;
    for (int i = 0; i < n; i++)
        if (dup[i]) {
            free(items[i].stem);
            if (!(items[i].stem = stem_of(items[i].path, 1))) {
                free(dup);
                return -1;
            }
        }
    free(dup);
    /* still clashing (same parent folder name) -> numbered suffixes */
    for (int i = 0; i < n; i++) {
        int copy = 1;
        for (int j = 0; j < i; j++)
            if (!strcmp(items[i].stem, items[j].stem)) {
                char buf[600];
                snprintf(buf, sizeof buf, "%s_%d", items[i].stem, ++copy);
                char *s = strdup(buf);
                if (!s) return -1;
                free(items[i].stem);
                items[i].stem = s;
                j = -1; /* re-check against all earlier ones */
            }
    }
    return 0;
}

void det_free_items(det_item *items, int n)
{
    if (!items) return;
    for (int i = 0; i < n; i++) {
        free(items[i].stem);
        pe_result_free(&items[i].result);
    }
    free(items);
}

/* Open <dir>/<name>.tmp.<pid>; commit renames it over <dir>/<name>. */
static FILE *open_tmp(const char *dir, const char *name, char *tmp, size_t cap)
{
    snprintf(tmp, cap, "%s/%s.tmp.%ld", dir, name, (long)getpid());
    FILE *f = fopen(tmp, "w");
    if (!f) cli_error("%s/%s: cannot write (%s)", dir, name, strerror(errno));
    return f;
}

static int commit_tmp(FILE *f, const char *tmp, const char *dir, const char *name)
{
    char final[4200];
    snprintf(final, sizeof final, "%s/%s", dir, name);
    int bad = ferror(f);
    if (fclose(f) != 0) bad = 1;
    if (bad || rename(tmp, final) != 0) {
        remove(tmp);
        cli_error("%s: write failed (%s)", final, strerror(errno));
        return -1;
    }
    return 0;
}

void det_write_header(FILE *csv, float threshold)
{
    fputs(isnan(threshold) ? "path,score\n" : "path,score,is_anomalous\n", csv);
}

void det_write_row(FILE *csv, FILE *js, const det_item *it, float threshold, int write_maps)
{
    const int flag = !isnan(threshold);
    cli_csv_field(csv, it->path);
    fputs("{\"path\": ", js);
    cli_json_string(js, it->path);
    if (it->ok) {
        float s = it->result.image_score;
        fprintf(csv, ",%.7g", s);
        fprintf(js, ", \"score\": %.7g", s);
        if (flag) {
            fprintf(csv, ",%d", s > threshold);
            fprintf(js, ", \"is_anomalous\": %s", s > threshold ? "true" : "false");
        }
        if (write_maps)
            fprintf(js, ", \"map\": \"maps/%s.npy\", \"heatmap\": \"heatmaps/%s.png\"", it->stem,
                    it->stem);
        fprintf(js, ", \"grid\": [%d, %d], \"aligned\": %d, \"align_failed\": %d",
                it->result.grid_h, it->result.grid_w, it->result.aligned, it->result.align_failed);
    } else {
        fputs(flag ? ",," : ",", csv);
        fputs(", \"error\": ", js);
        cli_json_string(js, it->error);
    }
    fputc('\n', csv);
    fputs("}\n", js);
}

int det_write_scores(const char *dir, const det_item *items, int n, float threshold, int write_maps)
{
    if (cli_mkdirs(dir)) return -1;
    char tcsv[4200], tjson[4200];
    FILE *csv = open_tmp(dir, "scores.csv", tcsv, sizeof tcsv);
    if (!csv) return -1;
    FILE *js = open_tmp(dir, "scores.jsonl", tjson, sizeof tjson);
    if (!js) {
        fclose(csv);
        remove(tcsv);
        return -1;
    }
    det_write_header(csv, threshold);
    for (int i = 0; i < n; i++) det_write_row(csv, js, &items[i], threshold, write_maps);
    int rc = commit_tmp(csv, tcsv, dir, "scores.csv");
    if (commit_tmp(js, tjson, dir, "scores.jsonl")) rc = -1;
    return rc;
}

int det_write_maps(const char *dir, det_item *items, int n, float sigma, int *failed)
{
    char maps[4200], heat[4200];
    snprintf(maps, sizeof maps, "%s/maps", dir);
    snprintf(heat, sizeof heat, "%s/heatmaps", dir);
    if (cli_mkdirs(maps) || cli_mkdirs(heat)) return -1;
    /* One colour scale for the run: the range of all patch scores (the smoothed map
     * stays inside it: bilinear and Gaussian weights are convex). */
    float vmin = INFINITY, vmax = -INFINITY;
    int todo = 0;
    for (int i = 0; i < n; i++) {
        if (!items[i].ok) continue;
        todo++;
        const pe_result *r = &items[i].result;
        for (int j = 0; j < r->grid_h * r->grid_w; j++) {
            vmin = fminf(vmin, r->patch_scores[j]);
            vmax = fmaxf(vmax, r->patch_scores[j]);
        }
    }
    cli_progress bar;
    cli_progress_begin(&bar, "maps", todo);
    int done = 0;
    for (int i = 0; i < n; i++) {
        if (!items[i].ok) continue;
        pe_image img = {0};
        float *map = NULL;
        pe_status s = pe_image_load(items[i].path, &img);
        if (!s) {
            map = malloc(sizeof(float) * (size_t)img.width * img.height);
            s = map ? pe_result_map(&items[i].result, img.width, img.height, sigma, map)
                    : PE_ERR_NOMEM;
        }
        char path[4400];
        if (!s) {
            int64_t shape[2] = {img.height, img.width};
            snprintf(path, sizeof path, "%s/%s.npy", maps, items[i].stem);
            s = pe_npy_save(path, map, 2, shape);
        }
        if (!s) {
            snprintf(path, sizeof path, "%s/%s.png", heat, items[i].stem);
            s = pe_save_heatmap_png(path, &img, map, vmin, vmax);
        }
        if (s) {
            cli_warn("%s: map not written: %s", items[i].path, pe_last_error());
            (*failed)++;
        }
        free(map);
        pe_image_free(&img);
        cli_progress_step(&bar, ++done);
    }
    cli_progress_end(&bar);
    return 0;
}
