/* eval.h — what the files of `patchead eval` share (cli-private): the options of one
 * run (eval_opts) and the steps cmd_eval (eval.c) calls in order:
 *   eval_plan.c  parse --shots / --preset lists, build the settings grid, the memory and
 *                time guards checked before anything is extracted;
 *   eval_run.c   one category: extraction once, every (setting, seed) cell scored and
 *                measured, example heatmaps; the MPI gather of cells run on other ranks.
 * The run's grid (ev_run) and its writers are in report.h. */
#ifndef PE_CLI_EVAL_H
#define PE_CLI_EVAL_H

#include "options.h"
#include "report.h"
#include "scale.h"

#define MAX_SHOTS 16
#define MAX_PRESETS 8
#define EXAMPLE_SIDE 256 /* longest side of the report's example heatmaps */

typedef struct {
    const cli_opts *cli; /* the parsed options (scoring overrides) */
    const char *model_path, *data, *layout, *out;
    char *presets[MAX_PRESETS];
    int num_presets;
    char **only; /* --category filter */
    int num_only;
    int shots[MAX_SHOTS], num_shots;
    int num_seeds, zeroshot;
    int size, layer, align, mask, ablation, threads, max_test, bins;
    float sigma;            /* anomaly map Gaussian sigma (pixels) */
    pe_precision precision; /* backbone and scoring GEMMs (resolved) */
    /* beyond the paper (docs/BEYOND.md), applied to every few-shot setting */
    int rotations, flips, window, coreset_count, coreset_proj;
    float coreset_fraction;
    char beyond[160]; /* their description for results.json */
    scale_opts scale; /* --comparators, --comparator-seed (zero-shot settings) */
} eval_opts;

/* --shots 1,2,4 into o->shots (at most MAX_SHOTS); 0, or -1 with an error printed. */
int eval_parse_shots(const char *text, eval_opts *o);
/* A comma-separated list appended to *items (malloc'd strings); -1 when out of memory. */
int eval_parse_list(const char *text, char ***items, int *n);
/* run->settings: presets x (shots..., zero-shot) x ablation variants (masking variants
 * skipped, with a warning, when the backbone has no CLS attention). 0, or EXIT_ERROR. */
int eval_add_settings(ev_run *run, const eval_opts *o, int has_attn);
/* The memory and time guards (docs/SCALE.md); 0, or -1 with the refusal printed. */
int eval_check_memory(const ev_run *run, const eval_opts *o, const pe_model_info *info,
                      int need_attn);
int eval_check_time(const ev_run *run, const eval_opts *o, const pe_model_info *info, int need_attn,
                    pe_model *model);

/* Category ci of the run: every cell this rank owns (all of them unless shard_cells)
 * into run->metrics / run->scores, examples under o->out/heatmaps. 0, or -1 (printed). */
int eval_run_category(pe_model *model, const eval_opts *o, ev_run *run, int ci, int need_attn,
                      int shard_cells);
/* MPI, cells split across ranks: every cell and example to rank 0 (all ranks call it). */
int eval_gather_cells(ev_run *run, const char *out);

#endif
