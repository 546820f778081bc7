/* output.h — result files of `patchead predict` / `zeroshot` (and reusable by
 * eval): scores.csv, scores.jsonl, maps/<stem>.npy, heatmaps/<stem>.png.
 *
 *   scores.csv    header "path,score[,is_anomalous]", one row per input in input
 *                 order; an input that failed has an empty score (and flag).
 *   scores.jsonl  one JSON object per input: path, score, is_anomalous (when a
 *                 threshold is known), map, heatmap, aligned, align_failed, or error.
 *   maps/         (H, W) float32 anomaly map at the input's own size (.npy)
 *   heatmaps/     map over the image, colour scale shared by the whole run, with a
 *                 colour bar on the right (top = vmax, bottom = vmin).
 * Stems: the file name without extension; when two inputs share one, both become
 * "<parent>_<stem>", and any remaining clash gets "_2", "_3", ...
 */
#ifndef PE_DETECT_OUTPUT_H
#define PE_DETECT_OUTPUT_H

#include "patchead.h"

#include <stdio.h>

typedef struct {
    const char *path;   /* input path as given */
    char *stem;         /* unique output stem (det_assign_stems) */
    int ok;             /* scored */
    char error[512];    /* why not, when !ok */
    pe_result result;   /* when ok */
} det_item;

/* Fill items[i].stem for n inputs (malloc'd). 0 on success. */
int det_assign_stems(det_item *items, int n);
void det_free_items(det_item *items, int n);

/* Write scores.csv and scores.jsonl into dir (atomically: temp + rename). threshold is
 * NAN when unknown (no is_anomalous column). write_maps: whether map/heatmap files are
 * (to be) written, so the JSON names them. Returns 0 or -1 with an error printed. */
int det_write_scores(const char *dir, const det_item *items, int n, float threshold, int write_maps);

/* One input's scores.csv row and scores.jsonl line (the format above), and the CSV
 * header; also used by `patchead watch`, which appends rows as images arrive. */
void det_write_header(FILE *csv, float threshold);
void det_write_row(FILE *csv, FILE *js, const det_item *it, float threshold, int write_maps);

/* Second pass: reload each scored image and write maps/<stem>.npy and
 * heatmaps/<stem>.png with one colour scale [min, max] of all patch scores of the
 * run. Failures are reported and counted in *failed (the item is kept in the CSV).
 * progress label shown on stderr. Returns 0, or -1 when the folders cannot be made. */
int det_write_maps(const char *dir, det_item *items, int n, float sigma, int *failed);

#endif
