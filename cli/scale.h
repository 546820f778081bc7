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
/* Scoring progress bar (pairs done / total, ETA) hooked into params; end it after. */
void scale_progress_hook(cli_progress *bar, const char *label, pe_detect_params *p);
/* MPI: 1 when every rank holds the same batch (fingerprint of its inputs and
 * features), else 0 with an error printed on rank 0. Always 1 on one rank. */
int scale_ranks_agree(uint64_t fingerprint);
/* MPI: 1 when every rank passes ok = 1 and none has failed (each rank must call it),
 * else 0 on every rank; a rank passing 0 is failed (pe_dist_fail) with its first error. */
int scale_ranks_all_ok(int ok);
/* FNV-1a of bytes, continuing from h (start with 0xcbf29ce484222325). */
uint64_t scale_hash(uint64_t h, const void *data, size_t n);

#endif
