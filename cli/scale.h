/* scale.h — options and helpers of batch zero-shot at scale, shared by `zeroshot` and
 * `eval`: --comparators, --comparator-seed, --spill, --mem-limit, the scoring progress
 * bar, and the MPI agreement check (docs/SCALE.md). */
#ifndef PE_CLI_SCALE_H
#define PE_CLI_SCALE_H

#include "cli.h"

#include "options.h"

typedef struct {
    int comparators;
    uint64_t seed;
    const char *spill;
    double mem_limit; /* bytes; 0 = MemAvailable */
    double max_time;  /* seconds; 0 = no limit */
} scale_opts;

/* --comparators, --comparator-seed, --spill, --mem-limit from the parsed options (the
 * rows are in cli/options.c); -1 with an error printed on a bad --mem-limit. */
int scale_opts_from(const cli_opts *o, scale_opts *so);
/* Copy --comparators / --comparator-seed into detect params. */
void scale_apply(const scale_opts *o, pe_detect_params *p);
/* The memory guard before a batch of n images is allocated: -1 with one error line
 * (estimate, available memory, the options that lower it) when it does not fit. */
int scale_check_memory(const scale_opts *o, int n, int patches, int dim, int want_attn,
                       const pe_detect_params *p);
/* The same guard with an estimate made by the caller (eval): -1 with one error line
 * "what: needs about ... (options)" when it does not fit; more_options: the caller's own
 * options that lower it, e.g. "--max-test N, " (or NULL). */
int scale_refuse_memory(const scale_opts *o, const char *what, const pe_memory_estimate *est,
                        const char *more_options);
/* Time guard, calibration: two forwards of a grey side x side image (the second timed)
 * give the batch's feature shape (*shape, data freed) and *forward_s; one pair scored on
 * those features (pe_zeroshot_pair_seconds) gives *pair_s. -1 with an error printed. */
int scale_calibrate(pe_model *model, const pe_extract_params *ep, int side,
                    const pe_detect_params *p, pe_features *shape, double *forward_s,
                    double *pair_s);
/* Time guard: prints the estimate (rank 0, unless quiet) "what: extraction ~X (images at
 * t) + scoring ~Y (pairs at t)", the per-rank share under MPI, and refuses (-1, one error
 * line with the options that lower it) when it exceeds --max-time. *score_s (may be
 * NULL): this rank's scoring estimate, the ETA of the scoring bar until its first step. */
int scale_check_time(const scale_opts *o, const char *what, double images, double forward_s,
                     double pairs, double pair_s, double *score_s);
/* Scoring progress bar (pairs done / total, ETA; the estimate until the first pair is
 * done) hooked into params; end it after. */
void scale_progress_hook(cli_progress *bar, const char *label, double estimate,
                         pe_detect_params *p);
/* MPI: 1 when every rank holds the same batch (fingerprint of its inputs and
 * features), else 0 with an error printed on rank 0. Always 1 on one rank. */
int scale_ranks_agree(uint64_t fingerprint);
/* MPI: 1 when every rank passes ok = 1 and none has failed (each rank must call it),
 * else 0 on every rank; a rank passing 0 is failed (pe_dist_fail) with its first error. */
int scale_ranks_all_ok(int ok);
/* FNV-1a of bytes, continuing from h (start with 0xcbf29ce484222325). */
uint64_t scale_hash(uint64_t h, const void *data, size_t n);

#endif
