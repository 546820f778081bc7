/* live.h — what the long-running commands (`patchead serve`, `patchead watch`) share:
 * banks loaded once with their backbones (a backbone used by several banks is loaded
 * once), scoring one encoded image with per-stage timings, and the fixed heatmap
 * colour scale of a live service.
 *
 * Threads: a live_model carries a mutex; live_score() holds it for the whole
 * inference, so one image at a time runs per backbone (the backbone's own GEMMs and
 * loops already use all cores). A bank's drift check has its own mutex (live_drift_*).
 * Everything else in a live_set is read-only once loaded. */
#ifndef PE_CLI_LIVE_H
#define PE_CLI_LIVE_H

#include "patchead.h"

#include <pthread.h>
#include <stdint.h>

#define LIVE_NAME_MAX 64

typedef struct {
    char *path; /* model path as given or recorded in the bank */
    pe_model *model;
    pe_model_info info;
    pthread_mutex_t lock; /* one inference at a time per backbone */
} live_model;

typedef struct {
    char name[LIVE_NAME_MAX + 1]; /* URL-safe: [A-Za-z0-9._-], not "." or ".." */
    char *path;                   /* .pead file */
    pe_bank *bank;
    live_model *model;
    float threshold; /* the bank's label-free threshold (NAN if none) */
    /* drift check (live_drift_start; NULL when the bank has no calibration scores) */
    pe_drift *drift;
    pthread_mutex_t drift_lock; /* guards the fields below */
    int drift_window;
    int drift_alarm; /* a drift episode: from a warning until a whole window of judged-normal
                        images has passed with no warning (no flicker around the level) */
    int drift_quiet; /* judged-normal images since the last warning */
} live_bank;

typedef struct {
    live_bank *banks;
    int num_banks;
    live_model **models;
    int num_models;
} live_set;

/* 1 if `name` is a valid bank name (see live_bank.name). */
int live_valid_name(const char *name);

/* Load banks from specs "NAME=PATH.pead" or "PATH.pead" (name = the file's stem) and
 * their backbones (model_override, when not NULL, replaces every bank's recorded
 * model path). threads: worker threads for the backbones (0 = all cores).
 * Returns 0, or -1 with one error line printed (and nothing left loaded). */
int live_open(live_set *set, char *const *specs, int num_specs, const char *model_override,
              int threads);
void live_close(live_set *set);
live_bank *live_find(live_set *set, const char *name);

/* Drift check of a long-running service (docs/SERVE.md, "Drift"; the test itself is
 * pe_drift, docs/BEYOND.md "Drift alarms"): every calibrated bank keeps the scores of its
 * last `window` judged-normal images (score <= the bank's threshold) and tests them against
 * its calibration after each image at level `level`. Defaults: the last 200 judged-normal
 * images (enough for power against a small shift, recent enough to follow the line within a
 * shift's production) at 0.01 (the level holds per check; a service checks after every
 * image, so a stricter level than predict's 0.05 keeps the false warnings rare). */
#define LIVE_DRIFT_WINDOW 200
#define LIVE_DRIFT_LEVEL 0.01
/* Give every bank of the set that carries calibration scores a drift check. 0, or -1 with
 * an error printed. Returns the number of banks checked in *checked (may be NULL). */
int live_drift_start(live_set *set, double level, int window, int *checked);
/* Record one image score of bank b and fill *r with the check after it and *alarm with
 * the episode state (under the bank's drift mutex). The alarm starts at the first check that
 * warns and ends once `window` judged-normal images in a row have been checked without a
 * warning, i.e. when none of the images that warned is left in the window: a check that
 * flickers around the level (it does, as the window slides over a drifted stretch) makes one
 * episode, not a line per flicker. Returns -1 when the bank has no drift check (r, alarm
 * untouched), 1 when the alarm started or ended with this image, else 0. */
int live_drift_add(live_bank *b, float score, pe_drift_report *r, int *alarm);
/* The current check and alarm of bank b without adding a score: 0, or -1 when it has none. */
int live_drift_get(live_bank *b, pe_drift_report *r, int *alarm);

typedef struct {
    double decode_ms, features_ms, scoring_ms; /* features+scoring together in
                                                  features_ms when the bank aligns */
} live_timings;

/* Decode `bytes` (PNG/JPEG/BMP; `name` for messages) and score it against the bank,
 * holding the backbone's lock for the inference. On success *img holds the decoded
 * image and *res the result (free both). On failure the library's error is set. */
pe_status live_score(live_bank *b, const uint8_t *bytes, size_t len, const char *name,
                     pe_image *img, pe_result *res, live_timings *t);

/* Colour scale of live heatmaps: one fixed scale per bank so that images can be compared
 * across requests (a batch's min/max, as predict uses, does not exist here):
 * [threshold / 2, 3 threshold / 2]: the threshold in the middle of the ramp, patches
 * above it in the warm half (the image score is a mean of the top patches, so the
 * patches that make an image NG are those above the threshold); without a usable
 * threshold the image's own patch-score range. */
void live_heatmap_range(const pe_result *r, float threshold, float *vmin, float *vmax);

double live_now_ms(void); /* monotonic milliseconds */

/* SIGTERM and SIGINT as a readable descriptor: each signal writes its number (one byte)
 * to a pipe whose read end is returned (-1 with an error printed on failure). A handler,
 * not a blocked mask + sigwait: threads started before main (OpenBLAS's pool) do not
 * carry our mask, and a process-directed signal landing on one of them would otherwise
 * take the default action and kill the process. */
int live_stop_fd(void);

#endif
