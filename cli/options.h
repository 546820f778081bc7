/* options.h — the ONE option table of the `patchead` command (cli/options.c).
 *
 * Every option of every subcommand is one row of cli_option_table[]: its name, value type,
 * range, help text, the field of cli_opts it sets and the subcommands that take it. One
 * parser (cli_parse_options) reads argv with getopt_long built from the rows of that
 * subcommand, checks every value with the same range and message, and one printer
 * (cli_print_help) writes --help. An option taken by several subcommands (a "shared"
 * option) is therefore parsed, checked and listed identically everywhere.
 *
 * Adding an option: a field in cli_opts (with its default in cli_opts_init if it is not
 * zero) and one row appended to its block in cli_option_table[]. */
#ifndef PE_CLI_OPTIONS_H
#define PE_CLI_OPTIONS_H

#include "patchead.h"

#include <stddef.h>
#include <stdio.h>

/* Subcommands, as bits of cli_option.cmds. */
enum {
    CMD_INFO = 1 << 0,
    CMD_FEATURES = 1 << 1,
    CMD_FIT = 1 << 2,
    CMD_PREDICT = 1 << 3,
    CMD_ZEROSHOT = 1 << 4,
    CMD_EVAL = 1 << 5,
    CMD_BENCH = 1 << 6,
    CMD_SERVE = 1 << 7,
    CMD_WATCH = 1 << 8,
};
#define CMD_DETECT (CMD_FIT | CMD_ZEROSHOT | CMD_EVAL) /* the scoring options */
#define CMD_ALL                                                                                    \
    (CMD_INFO | CMD_FEATURES | CMD_FIT | CMD_PREDICT | CMD_ZEROSHOT | CMD_EVAL | CMD_BENCH |       \
     CMD_SERVE | CMD_WATCH)

typedef enum {
    ARG_FLAG,           /* no value: sets an int field to 1 */
    ARG_INT,            /* int field, min..max */
    ARG_FLOAT,          /* double field, min..max */
    ARG_TEXT,           /* const char * field (points into argv) */
    ARG_COUNT_FRACTION, /* const char * field, checked: "3", "0.3" or "30%" (see cli_count_or_fraction) */
    ARG_LIST,           /* cli_list field: comma-separated, repeatable */
} cli_opt_type;

typedef struct {
    char **items; /* malloc'd strings */
    int n;
} cli_list;

/* Every option value of every subcommand; cli_opts_init sets the defaults. */
typedef struct {
    /* shared: backbone, input, scoring, PatchEAD+, maps, run */
    const char *model;
    int size, layer;
    const char *preset, *order, *k, *top; /* NULL: the preset's */
    int align, mask, plus;
    double sigma; /* < 0: the default (4 px, or the bank's) */
    int threads, quiet;
    const char *precision; /* fp32 | bf16 | auto | int8; NULL: fp32 (predict: the bank's) */
    /* outputs */
    const char *output; /* -o FILE of fit, features, bench */
    const char *out;    /* --out DIR of predict, zeroshot, eval */
    double threshold;   /* NAN: none (zeroshot) / the bank's (predict) */
    int no_maps;
    /* info */
    int json;
    /* features */
    const char *attn, *input_npy;
    /* fit */
    const char *shots_text; /* N or "all" */
    int seed;
    /* beyond the paper (docs/BEYOND.md): fit and eval's few-shot settings; --fpr also predict */
    int rotations, flips, window, coreset_proj; /* defaults 1, 0, -1 (global), 0 */
    const char *coreset, *calibrate;            /* count or fraction; folder/file or fraction */
    double fpr;                                 /* 0: none */
    /* predict */
    const char *bank;
    const char *recalibrate; /* predict --recalibrate DIR */
    double drift_level;      /* warning level of the drift check (default 0.05; serve and
                                watch set 0.01 before parsing) */
    int drift_window;        /* serve / watch: judged-normal images compared (0: 200) */
    /* eval */
    const char *data, *layout, *shots_list;
    cli_list categories;
    int seeds, zeroshot, ablation, max_test, pixel_bins;
    /* bench */
    int sgemm, n, reps, gemm, profile;
    const char *shape; /* --gemm MxNxK */
    const char *random_vit;
    /* zeroshot and eval at scale (docs/SCALE.md) */
    int comparators, comparator_seed; /* 0: all the others */
    const char *spill, *mem_limit;
    double max_time; /* seconds; 0 = no limit */
    /* serve */
    cli_list banks; /* [NAME=]BANK.pead, repeatable */
    const char *host;
    int port, workers, queue, max_body_mb, max_connections, timeout_s, drain_s;
    /* watch */
    const char *in;
    int settle_ms;
} cli_opts;

typedef struct {
    const char *name; /* long name: --name */
    char short_name;  /* -x, or 0 */
    cli_opt_type type;
    size_t offset;       /* offsetof(cli_opts, field) */
    double min, max;     /* ARG_INT / ARG_FLOAT range */
    const char *metavar; /* "S", "PATH", ... (NULL for flags) */
    const char *help;    /* one or more lines ('\n' between them) */
    unsigned cmds;       /* CMD_* bits of the subcommands that take it */
} cli_option;

extern const cli_option cli_option_table[];

void cli_opts_init(cli_opts *o);
void cli_opts_free(cli_opts *o); /* frees the cli_list fields */

/* Parse argv (argv[0] = the subcommand's name) for subcommand `cmd` (one CMD_* bit).
 * `usage` is the text before the option list in --help (usage line and description).
 * Returns 0 with the positional arguments in argv[*first_arg .. argc); 1 when --help was
 * printed (exit 0); -1 after a usage error was printed (exit 2). Sets cli_quiet. */
/* The backbone fit / zeroshot / eval use without --model (make weights writes it; chosen by
 * the tire measurements of docs/BACKBONES.md, "Which backbone is the default"). */
#define CLI_DEFAULT_MODEL "efficientnet_lite0"
/* weights/CLI_DEFAULT_MODEL in the working directory or beside the binary's folder; NULL
 * when absent. Filled in by cli_parse_options for CMD_DETECT commands. */
const char *cli_default_model(void);

int cli_parse_options(unsigned cmd, const char *usage, int argc, char **argv, cli_opts *o,
                      int *first_arg);

/* --help: `usage`, then "options:" (rows of this subcommand only) and "shared options:"
 * (rows that several subcommands take), in table order. */
void cli_print_help(FILE *f, unsigned cmd, const char *usage);

/* Detect parameters from the options: preset (the first of a comma list), then the
 * --order / --k / --top overrides, size, layer, align, mask, sigma. -1 on a bad value. */
int cli_detect_params(const cli_opts *o, int zeroshot, pe_detect_params *p);
/* Apply --order / --k / --top to scoring parameters (after a preset). -1 on a bad value. */
int cli_score_overrides(const cli_opts *o, pe_score_params *s);
/* "3" -> count 3; "0.3" or "30%" -> fraction 0.3 (the other set to 0). -1 + message if bad. */
int cli_count_or_fraction(const char *opt, const char *text, int *count, float *fraction);

/* "lowest K=30% top 1%" — a short description of the scoring rule. */
void detect_describe(const pe_score_params *s, char *buf, size_t cap);

#endif
