/* output.c — scores.csv / scores.jsonl / maps / heatmaps of a run (see output.h). */
#include "output.h"
#include "cli.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

int det_assign_stems(det_item *items, int n)
{
    const char **paths = calloc((size_t)(n > 0 ? n : 1), sizeof *paths);
    char **stems = malloc(sizeof *stems * (size_t)(n > 0 ? n : 1));
    int rc = -1;
    if (paths && stems) {
        for (int i = 0; i < n; i++) paths[i] = items[i].path;
        if (pe_output_stems(paths, n, stems) == PE_OK) {
            for (int i = 0; i < n; i++) items[i].stem = stems[i];
            rc = 0;
        }
    }
    free(paths);
    free(stems);
    return rc;
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

pe_run_dir *det_begin(const char *dir)
{
    pe_run_dir *run = NULL;
    pe_status s = pe_run_begin(dir, &run);
    if (s) cli_lib_error(s);
    return run;
}

void det_write_header(FILE *csv, float threshold, int pval)
{
    fprintf(csv, isnan(threshold) ? "path,score%s\n" : "path,score,is_anomalous%s\n",
            pval ? ",p_value" : "");
}

void det_write_row(FILE *csv, FILE *js, const det_item *it, float threshold, int pval)
{
    const int flag = !isnan(threshold);
    cli_csv_field(csv, it->path);
    fputs("{\"path\": ", js);
    cli_json_string(js, it->path);
    if (it->ok) {
        float sc = it->result.image_score;
        fprintf(csv, ",%.7g", sc);
        fprintf(js, ", \"score\": %.7g", sc);
        if (flag) {
            fprintf(csv, ",%d", sc > threshold);
            fprintf(js, ", \"is_anomalous\": %s", sc > threshold ? "true" : "false");
        }
        if (it->has_map) {
            char rel[600];
            snprintf(rel, sizeof rel, "maps/%s.npy", it->stem);
            fputs(", \"map\": ", js);
            cli_json_string(js, rel);
            snprintf(rel, sizeof rel, "heatmaps/%s.png", it->stem);
            fputs(", \"heatmap\": ", js);
            cli_json_string(js, rel);
        }
        if (pval) {
            fprintf(csv, ",%.6g", it->result.p_value);
            fprintf(js, ", \"p_value\": %.6g", it->result.p_value);
        }
        fprintf(js, ", \"grid\": [%d, %d], \"aligned\": %d, \"align_failed\": %d",
                it->result.grid_h, it->result.grid_w, it->result.aligned, it->result.align_failed);
    } else {
        fputs(flag ? ",," : ",", csv);
        if (pval) fputc(',', csv);
        fputs(", \"error\": ", js);
        cli_json_string(js, it->error);
    }
    fputc('\n', csv);
    fputs("}\n", js);
}

/* scores.csv and scores.jsonl into dir, each through the atomic writer. */
static int write_scores(const char *dir, const det_item *items, int n, float threshold)
{
    char pcsv[4200], pjson[4200];
    snprintf(pcsv, sizeof pcsv, "%s/scores.csv", dir);
    snprintf(pjson, sizeof pjson, "%s/scores.jsonl", dir);
    pe_atomic_file *acsv = NULL, *ajs = NULL;
    pe_status s = pe_atomic_open(pcsv, &acsv);
    if (!s) s = pe_atomic_open(pjson, &ajs);
    if (s) {
        cli_lib_error(s);
        pe_atomic_abort(acsv);
        return -1;
    }
    FILE *csv = pe_atomic_stream(acsv), *js = pe_atomic_stream(ajs);
    /* p_value column: the conformal p-value when the bank is calibrated (docs/BEYOND.md) */
    int pval = 0;
    for (int i = 0; i < n; i++) pval |= items[i].ok && !isnan(items[i].result.p_value);
    det_write_header(csv, threshold, pval);
    for (int i = 0; i < n; i++) det_write_row(csv, js, &items[i], threshold, pval);
    s = pe_atomic_commit(acsv);
    if (s) {
        cli_lib_error(s);
        pe_atomic_abort(ajs);
        return -1;
    }
    s = pe_atomic_commit(ajs);
    if (s) cli_lib_error(s);
    return s ? -1 : 0;
}

/* maps/<stem>.npy and heatmaps/<stem>.png into dir; sets has_map per item. An input that
 * cannot be re-read for its map (changed since it was scored) is reported and counted
 * (exit status 3, no map fields in its JSON line); an output file that cannot be written
 * (disk full, file too large) fails the whole run: nothing is published. */
static int write_maps(const char *dir, det_item *items, int n, float sigma, int *failed)
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
    int done = 0, rc = 0;
    for (int i = 0; i < n && rc == 0; i++) {
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
        int disk = 0;
        if (!s) {
            int64_t shape[2] = {img.height, img.width};
            snprintf(path, sizeof path, "%s/%s.npy", maps, items[i].stem);
            s = pe_npy_save(path, map, 2, shape);
            disk = s != PE_OK;
        }
        if (!s) {
            snprintf(path, sizeof path, "%s/%s.png", heat, items[i].stem);
            s = pe_save_heatmap_png(path, &img, map, vmin, vmax);
            disk = s != PE_OK;
        }
        if (s && disk) {
            cli_lib_error(s);
            rc = -1;
        } else if (s) {
            cli_warn("%s: map not written: %s", items[i].path, pe_last_error());
            (*failed)++;
        } else {
            items[i].has_map = 1;
        }
        free(map);
        pe_image_free(&img);
        cli_progress_step(&bar, ++done);
    }
    cli_progress_end(&bar);
    return rc;
}

int det_publish(pe_run_dir *run, det_item *items, int n, float threshold, int write_maps_too,
                float sigma, int *map_failed)
{
    const char *stage = pe_run_path(run);
    char out[4096];
    snprintf(out, sizeof out, "%s", pe_run_output(run));
    int rc = 0;
    if (write_maps_too) rc = write_maps(stage, items, n, sigma, map_failed);
    if (!rc) rc = write_scores(stage, items, n, threshold);
    if (rc) {
        pe_run_abort(run);
    } else {
        pe_status s = pe_run_commit(run);
        if (s) {
            cli_lib_error(s);
            rc = -1;
        }
    }
    if (rc) cli_error("%s: results not published; the previous contents (if any) are unchanged",
                      out);
    return rc;
}
