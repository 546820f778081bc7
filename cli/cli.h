/* cli.h — shared helpers of the `patchead` command-line tool (uses only patchead.h). */
#ifndef PE_CLI_H
#define PE_CLI_H

#include "patchead.h"

#include <stdio.h>

/* Subcommands: each parses its own options (getopt_long) and returns the exit code. */
int cmd_info(int argc, char **argv);
int cmd_features(int argc, char **argv);
int cmd_fit(int argc, char **argv);
int cmd_predict(int argc, char **argv);
int cmd_zeroshot(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_watch(int argc, char **argv);

/* Exit codes shared by all subcommands. */
enum { EXIT_OK = 0, EXIT_ERROR = 1, EXIT_USAGE = 2, EXIT_SOME_FAILED = 3 };

/* "patchead: error: <msg>" on stderr (one line). Returns EXIT_ERROR. */
int cli_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* "patchead: warning: <msg>" on stderr unless quiet. */
void cli_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Report the library's last error (pe_last_error()) as a CLI error. */
int cli_lib_error(pe_status status);
extern int cli_quiet;

/* Parse helpers: print a usage error and return -1 on bad input. */
int cli_parse_int(const char *opt, const char *text, int min, int max, int *out);
int cli_parse_float(const char *opt, const char *text, double min, double max, double *out);
/* --precision fp32|bf16|auto|int8, resolved for this CPU (auto -> bf16 iff native bf16). */
int cli_parse_precision(const char *text, pe_precision *out);

/* Image inputs: each arg is a file or a folder (walked recursively, sorted by path).
 * Links are followed; each folder is walked once and each file taken once (device +
 * inode), so link loops end and duplicates are skipped with a warning. Folder entries
 * whose extension is not an image (.png .jpg .jpeg .bmp, any case), that are not regular
 * files, or that cannot be stat'ed are skipped with a warning, as are folders deeper than
 * CLI_MAX_DEPTH. An arg that is not a folder is kept as given even when missing or
 * unreadable: reading it fails later with the reason (predict/zeroshot: that input's
 * row gets the error, exit 3; fit: an error). Returns the number of paths (malloc'd
 * array of malloc'd strings in *paths), or -1 with an error printed (more than
 * CLI_MAX_INPUTS inputs, out of memory). */
#define CLI_MAX_INPUTS 1000000
#define CLI_MAX_DEPTH 64
int cli_collect_images(char **args, int nargs, char ***paths);
void cli_free_paths(char **paths, int n);
int cli_is_image_name(const char *path);

/* mkdir -p; 0 on success, -1 with an error printed. */
int cli_mkdirs(const char *path);

/* Progress bar with ETA on stderr, shown only when stderr is a terminal and not quiet. */
typedef struct {
    const char *label;
    int total, done;
    double start;
    int active;
    double estimate; /* ETA shown before the first step (seconds; 0 = none) */
} cli_progress;
void cli_progress_begin(cli_progress *p, const char *label, int total);
void cli_progress_step(cli_progress *p, int done);
void cli_progress_end(cli_progress *p);

double cli_now(void); /* seconds, monotonic */

/* Output helpers for scores.csv / scores.jsonl / results.* */
void cli_csv_field(FILE *f, const char *s);
void cli_json_string(FILE *f, const char *s);

#endif
