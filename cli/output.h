/* output.h — result files of `patchead predict` / `zeroshot` (and reusable by
 * eval): scores.csv, scores.jsonl, maps/<stem>.npy, heatmaps/<stem>.png.
 *
 *   scores.csv    header "path,score[,is_anomalous][,p_value]", one row per input in
 *                 input order; an input that failed has an empty score (and flag).
 *                 p_value: conformal p-value, when the bank is calibrated. RFC 4180
 *                 quoting (fields with , " CR LF are quoted, quotes doubled; LF line
 *                 ends); the path is written with its exact bytes.
 *   scores.jsonl  one JSON object per input: path, score, is_anomalous (when a
 *                 threshold is known), map, heatmap (only when that input's map files
 *                 were written), grid, aligned, align_failed, or error. RFC 8259: every
 *                 string is escaped; bytes that are not valid UTF-8 become U+FFFD.
 *   maps/         (H, W) float32 anomaly map at the input's own size (.npy)
 *   heatmaps/     map over the image, colour scale shared by the whole run, with a
 *                 colour bar on the right (top = vmax, bottom = vmin).
 * Stems: pe_output_stems (file name without extension, parent folders in front when
 * names clash, then _2, _3, ...).
 * Commit point: everything is written into a staging folder and published as a whole
 * (pe_run_*): a run that fails leaves the previous output folder untouched.
 */
#ifndef PE_DETECT_OUTPUT_H
#define PE_DETECT_OUTPUT_H

#include "patchead.h"

#include <stdio.h>

typedef struct {
    const char *path;   /* input path as given */
    char *stem;         /* unique output stem (det_assign_stems) */
    int ok;             /* scored */
    int has_map;        /* its map + heatmap were written */
    char error[512];    /* why not, when !ok */
    pe_result result;   /* when ok */
} det_item;

/* Fill items[i].stem for n inputs (malloc'd). 0 on success. */
int det_assign_stems(det_item *items, int n);
void det_free_items(det_item *items, int n);

/* Start a run into the output folder `dir` (checked now, before any work): NULL with an
 * error printed when it cannot be used. */
pe_run_dir *det_begin(const char *dir);

/* Write the run's files into the staging folder and publish them as one: maps (when
 * write_maps; failures are reported and counted in *map_failed, the item keeps its
 * score but gets no map fields), then scores.csv and scores.jsonl, then the commit.
 * threshold is NAN when unknown (no is_anomalous column). Returns 0, or -1 with an error
 * printed that says the previous outputs were left unchanged (run is freed either way). */
int det_publish(pe_run_dir *run, det_item *items, int n, float threshold, int write_maps,
                float sigma, int *map_failed);

/* One input's scores.csv row and scores.jsonl line (the format above; map fields only when
 * it->has_map, p_value only when pval), and the CSV header; also used by `patchead watch`,
 * which appends rows as images arrive. */
void det_write_header(FILE *csv, float threshold, int pval);
void det_write_row(FILE *csv, FILE *js, const det_item *it, float threshold, int pval);

#endif
