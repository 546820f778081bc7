/* options.c — the one option table of every subcommand, its parser and its --help
 * printer (see options.h). */
#include "options.h"
#include "cli.h"

#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#define F(field) offsetof(cli_opts, field)
#define CMD_MODEL (CMD_INFO | CMD_FEATURES | CMD_FIT | CMD_ZEROSHOT | CMD_EVAL | CMD_BENCH)

/* One row per option. Rows taken by one subcommand are listed under "options:" in its
 * --help, rows taken by several under "shared options:", both in this order. Append new
 * rows to the block they belong to; the table ends with a row whose name is NULL. */
const cli_option cli_option_table[] = {
    /* ---- info */
    {"json", 0, ARG_FLAG, F(json), 0, 0, NULL, "one JSON object instead of the table", CMD_INFO},
    /* ---- features */
    {"output", 'o', ARG_TEXT, F(output), 0, 0, "OUT", "the (G, D) float32 features .npy (required)",
     CMD_FEATURES},
    {"attn", 0, ARG_TEXT, F(attn), 0, 0, "FILE",
     "also the last block's CLS->patch attention, mean over heads,\nas a (S/p, S/p) .npy (ViT "
     "backbones; SigLIP, which has no CLS\ntoken: its attention-pooling head's probe attention)",
     CMD_FEATURES},
    {"input-npy", 0, ARG_TEXT, F(input_npy), 0, 0, "X",
     "developer: feed a normalised (3, H, W) float tensor instead\nof IMAGE", CMD_FEATURES},
    /* ---- fit */
    {"output", 'o', ARG_TEXT, F(output), 0, 0, "BANK", "the bank file to write (.pead; required)",
     CMD_FIT},
    {"shots", 0, ARG_TEXT, F(shots_text), 0, 0, "N|all",
     "use N references sampled from REF... (the references of eval's\n--shots N for --seed X); "
     "all (default): every image",
     CMD_FIT},
    {"seed", 0, ARG_INT, F(seed), 0, 2147483647, "X",
     "sampling seed (default 0): pe_sample_refs over the sorted\npaths, see docs/METHOD.md",
     CMD_FIT},
    {"calibrate", 0, ARG_TEXT, F(calibrate), 0, 0, "X",
     "calibrate the threshold on normal images that are not\nreferences: a folder/file, or a "
     "fraction of REF... held out\n(0.3 or 30%: the last of the seeded order)",
     CMD_FIT},
    /* ---- fit and eval: beyond the paper (docs/BEYOND.md) */
    {"rotations", 0, ARG_INT, F(rotations), 1, 360, "N",
     "also store each reference turned by 360/N degrees, N times\n(4: 0/90/180/270; 8: every 45, "
     "border replicated)",
     CMD_FIT | CMD_EVAL},
    {"flips", 0, ARG_FLAG, F(flips), 0, 0, NULL, "also store the mirrored references (2 x cost)",
     CMD_FIT | CMD_EVAL},
    {"window", 0, ARG_INT, F(window), 0, 4096, "R",
     "positional scoring: each query patch only against reference\npatches within R patches of "
     "its position (0 = same patch)",
     CMD_FIT | CMD_EVAL},
    {"coreset", 0, ARG_COUNT_FRACTION, F(coreset), 0, 0, "F",
     "greedy k-center coreset of all reference patches: a fraction\n(0.1, 10%) or a count; "
     "nearest neighbour over their union",
     CMD_FIT | CMD_EVAL},
    {"coreset-proj", 0, ARG_INT, F(coreset_proj), -1, 65536, "P",
     "random projection to P dims for the coreset distances\n(default 0: 128 when the features "
     "are wider, else none;\n-1: none)",
     CMD_FIT | CMD_EVAL},
    /* ---- fit and predict */
    {"fpr", 0, ARG_FLOAT, F(fpr), 1e-6, 0.999999, "A",
     "target false-alarm rate of the threshold (conformal quantile;\nfit: default 0.05 with "
     "--calibrate; predict: re-threshold a\ncalibrated bank)",
     CMD_FIT | CMD_PREDICT},
    /* ---- predict */
    {"bank", 0, ARG_TEXT, F(bank), 0, 0, "BANK", "the bank written by patchead fit (required)",
     CMD_PREDICT},
    {"model", 'm', ARG_TEXT, F(model), 0, 0, "PATH",
     "backbone (default: the path recorded in the bank; must be\nthe same weights)",
     CMD_PREDICT | CMD_SERVE | CMD_WATCH},
    {"threshold", 0, ARG_FLOAT, F(threshold), -1e30, 1e30, "T",
     "is_anomalous = score > T (default: the bank's threshold)", CMD_PREDICT | CMD_WATCH},
    {"recalibrate", 0, ARG_TEXT, F(recalibrate), 0, 0, "DIR",
     "re-fit the threshold on the normal images in DIR (files or\nfolders; the bank's rate, or "
     "--fpr) before scoring, keep\nthe references; the new bank is written to "
     "DIR_OUT/recalibrated.pead",
     CMD_PREDICT},
    {"drift-level", 0, ARG_FLOAT, F(drift_level), 1e-9, 0.5, "D",
     "warning level of the drift check of a calibrated bank\n(default 0.05: about 5 % of runs "
     "on undrifted normal\nimages warn)",
     CMD_PREDICT},
    /* ---- zeroshot */
    {"threshold", 0, ARG_FLOAT, F(threshold), -1e30, 1e30, "T", "add is_anomalous = score > T",
     CMD_ZEROSHOT},
    /* ---- predict and zeroshot */
    {"out", 0, ARG_TEXT, F(out), 0, 0, "DIR", "output folder (default ./patchead-out)",
     CMD_PREDICT | CMD_ZEROSHOT | CMD_WATCH},
    {"no-maps", 0, ARG_FLAG, F(no_maps), 0, 0, NULL, "only scores.csv / scores.jsonl",
     CMD_PREDICT | CMD_ZEROSHOT | CMD_WATCH},
    /* ---- eval */
    {"data", 'd', ARG_TEXT, F(data), 0, 0, "ROOT", "dataset root or one category folder (required)",
     CMD_EVAL},
    {"layout", 0, ARG_TEXT, F(layout), 0, 0, "L",
     "auto (default), mvtec, mvtec3d, visa, btad, ksdd, dagm, loco\n(mpdd, dtd = mvtec); see "
     "docs/DATASETS.md",
     CMD_EVAL},
    {"category", 0, ARG_LIST, F(categories), 0, 0, "C",
     "evaluate only these categories (repeat or comma-separate)", CMD_EVAL},
    {"shots", 0, ARG_TEXT, F(shots_list), 0, 0, "LIST",
     "few-shot settings, e.g. 1,2,4 or all (references per seed: see\ndocs/METHOD.md, the same "
     "as fit --shots N --seed X; all:\nevery training image, as fit --shots all)",
     CMD_EVAL},
    {"seeds", 0, ARG_INT, F(seeds), 1, 100, "N", "seeds 0..N-1 for few-shot (default 3)", CMD_EVAL},
    {"zeroshot", 0, ARG_FLAG, F(zeroshot), 0, 0, NULL,
     "batch zero-shot (all test images of a category as the batch)", CMD_EVAL},
    {"ablation", 0, ARG_FLAG, F(ablation), 0, 0, NULL,
     "run the 2x2 alignment x masking table for each setting", CMD_EVAL},
    {"out", 'o', ARG_TEXT, F(out), 0, 0, "DIR", "output folder (default ./eval_out)", CMD_EVAL},
    {"max-test", 0, ARG_INT, F(max_test), 2, 1 << 30, "N",
     "at most N test images per category, evenly spaced in path\norder (quick runs; default all)",
     CMD_EVAL},
    {"pixel-bins", 0, ARG_INT, F(pixel_bins), 16, 1 << 24, "N",
     "histogram bins of the pixel metrics (default 262144)", CMD_EVAL},
    /* ---- bench */
    {"sgemm", 0, ARG_FLAG, F(sgemm), 0, 0, NULL, "OpenBLAS sgemm GFLOP/s on an N x N x N product",
     CMD_BENCH},
    {"n", 0, ARG_INT, F(n), 64, 16384, "N", "--sgemm matrix side (default 2048)", CMD_BENCH},
    {"reps", 0, ARG_INT, F(reps), 1, 1000, "R", "--model: timed runs after a warm-up (default 3)",
     CMD_BENCH},
    {"profile", 0, ARG_FLAG, F(profile), 0, 0, NULL,
     "--model: time each step of the forward (layer norms, qkv,\nattention, out-projection, fc1, "
     "fc2) and print ms per image",
     CMD_BENCH},
    {"random-vit", 0, ARG_TEXT, F(random_vit), 0, 0, "SIZE",
     "write random DINOv2 ViT-S/B/L-14 weights (small|base|large)\nas a hub folder -o DIR",
     CMD_BENCH},
    {"output", 'o', ARG_TEXT, F(output), 0, 0, "DIR", "--random-vit: the folder to write",
     CMD_BENCH},
    {"gemm", 0, ARG_FLAG, F(gemm), 0, 0, NULL,
     "engine GEMM GFLOP/s (oneDNN) at --shape, with the kernel\nand the ISA dispatched to",
     CMD_BENCH},
    {"shape", 0, ARG_TEXT, F(shape), 0, 0, "MxNxK",
     "--gemm shape (default 1025x1536x384, a ViT MLP GEMM)", CMD_BENCH},

    /* ---- zeroshot and eval at scale (docs/SCALE.md) */
    {"comparators", 0, ARG_INT, F(comparators), 1, 1 << 30, "R",
     "score each image against R others of the batch instead of\nall (seeded, balanced; K's "
     "fraction applies to R; R >= n-1 = all)",
     CMD_ZEROSHOT | CMD_EVAL},
    {"comparator-seed", 0, ARG_INT, F(comparator_seed), 0, 1 << 30, "S",
     "seed of the comparator draw (default 0)", CMD_ZEROSHOT | CMD_EVAL},
    {"spill", 0, ARG_TEXT, F(spill), 0, 0, "DIR",
     "keep the batch's features in a memory-mapped file in DIR\n(deleted on exit) instead of RAM",
     CMD_ZEROSHOT | CMD_EVAL},
    {"mem-limit", 0, ARG_TEXT, F(mem_limit), 0, 0, "SIZE",
     "refuse a batch estimated above SIZE (e.g. 8G, 512M; default:\nthe machine's available "
     "memory)",
     CMD_ZEROSHOT | CMD_EVAL},
    {"max-time", 0, ARG_FLOAT, F(max_time), 0, 1e12, "SECONDS",
     "refuse a run estimated (short calibration: one forward and\none pair timed) above SECONDS, "
     "before the bulk of the work\n(default 0 = no limit); fit: a coreset selection estimated\n"
     "above SECONDS (the selection on 1/16 of the patches timed)",
     CMD_ZEROSHOT | CMD_EVAL | CMD_FIT},
    /* ---- serve */
    {"bank", 0, ARG_LIST, F(banks), 0, 0, "[NAME=]B",
     "a bank written by patchead fit (repeat for more); NAME\ndefaults to the file's stem "
     "(A-Z a-z 0-9 . _ -)",
     CMD_SERVE},
    {"host", 0, ARG_TEXT, F(host), 0, 0, "ADDR",
     "address to listen on (default 127.0.0.1: this machine only)", CMD_SERVE},
    {"port", 0, ARG_INT, F(port), 0, 65535, "N",
     "TCP port (default 8080; 0 picks a free one); the address\nbound is printed on stdout as "
     "\"listening http://HOST:PORT/\"",
     CMD_SERVE},
    {"workers", 0, ARG_INT, F(workers), 1, 64, "N",
     "threads that decode, score and render (default 1); still one\ninference at a time per "
     "backbone (each uses all cores)",
     CMD_SERVE},
    {"queue", 0, ARG_INT, F(queue), 1, 4096, "N",
     "predict requests admitted at once, receiving + waiting +\nrunning (default 16); more get "
     "503 with Retry-After",
     CMD_SERVE},
    {"max-body", 0, ARG_INT, F(max_body_mb), 1, 4096, "MB",
     "largest request body in MiB (default 32)", CMD_SERVE},
    {"max-connections", 0, ARG_INT, F(max_connections), 4, 65536, "N",
     "open connections at once (default 256)", CMD_SERVE},
    {"timeout", 0, ARG_INT, F(timeout_s), 1, 3600, "S",
     "close a connection idle for S seconds (default 10); a\nrequest body must arrive within 6 x S",
     CMD_SERVE},
    {"drain", 0, ARG_INT, F(drain_s), 0, 3600, "S",
     "on SIGTERM wait at most S seconds for requests in flight\n(default 30)", CMD_SERVE},
    /* ---- serve and watch: the drift check of calibrated banks (docs/SERVE.md, "Drift") */
    {"drift-level", 0, ARG_FLOAT, F(drift_level), 1e-9, 0.5, "D",
     "warning level of each bank's drift check, run after every\nimage (default 0.01; "
     "calibrated banks only)",
     CMD_SERVE | CMD_WATCH},
    {"drift-window", 0, ARG_INT, F(drift_window), 10, 1000000, "N",
     "the drift check compares the last N images judged normal\n(default 200)",
     CMD_SERVE | CMD_WATCH},
    /* ---- watch */
    {"bank", 0, ARG_TEXT, F(bank), 0, 0, "BANK", "the bank written by patchead fit (required)",
     CMD_WATCH},
    {"in", 0, ARG_TEXT, F(in), 0, 0, "DIR", "folder to watch (required)", CMD_WATCH},
    {"settle", 0, ARG_INT, F(settle_ms), 0, 600000, "MS",
     "quiet time before a file counts as complete (default 500)", CMD_WATCH},

    /* ---- shared options (several subcommands; one meaning, range and message) */
    {"model", 'm', ARG_TEXT, F(model), 0, 0, "PATH",
     "backbone weights: a .safetensors file or a hub folder\n(fit, zeroshot, eval: default "
     "weights/" CLI_DEFAULT_MODEL " when present)",
     CMD_MODEL},
    {"size", 's', ARG_INT, F(size), 32, 4096, "S", "square input side (default: the model's, 448)",
     CMD_FEATURES | CMD_DETECT | CMD_BENCH},
    {"layer", 'l', ARG_INT, F(layer), 0, 1000, "L",
     "ViT block L (1-based) + final norm instead of the last block", CMD_FEATURES | CMD_DETECT},
    {"preset", 0, ARG_TEXT, F(preset), 0, 0, "P",
     "scoring preset: patchead (default), anomalydino, musc\n(eval: several, comma-separated)",
     CMD_DETECT},
    {"order", 0, ARG_TEXT, F(order), 0, 0, "O", "Eq. 3 reference selection: lowest or highest",
     CMD_DETECT},
    {"k", 0, ARG_COUNT_FRACTION, F(k), 0, 0, "K",
     "Eq. 3 K: a count (3) or a fraction of M (0.3 or 30%)", CMD_DETECT},
    {"top", 0, ARG_COUNT_FRACTION, F(top), 0, 0, "R",
     "Eq. 4: mean of the top R (fraction 0.01 / 1%) or count (5)\npatches", CMD_DETECT},
    {"align", 0, ARG_FLAG, F(align), 0, 0, NULL,
     "PatchEAD+ alignment of the references to each query", CMD_DETECT},
    {"mask", 0, ARG_FLAG, F(mask), 0, 0, NULL, "PatchEAD+ attention masking (ViT backbones only)",
     CMD_DETECT},
    {"plus", 0, ARG_FLAG, F(plus), 0, 0, NULL, "both --align and --mask", CMD_DETECT},
    {"sigma", 0, ARG_FLOAT, F(sigma), 0, 1000, "PX",
     "Gaussian sigma of the anomaly maps in pixels (default 4;\npredict: the bank's)",
     CMD_FIT | CMD_PREDICT | CMD_ZEROSHOT | CMD_EVAL},
    {"threads", 't', ARG_INT, F(threads), 0, 4096, "N", "worker threads (default 0: all cores)",
     CMD_ALL},
    {"quiet", 0, ARG_FLAG, F(quiet), 0, 0, NULL, "no progress bar or warnings", CMD_ALL},
    {"precision", 0, ARG_TEXT, F(precision), 0, 0, "P",
     "GEMM arithmetic: fp32 (default), bf16, auto (bf16 when\nthe CPU has native bf16), or int8 "
     "(ViT "
     "linears in int8,\nscoring in fp32; not for CNNs); predict: default the bank's",
     CMD_FEATURES | CMD_DETECT | CMD_PREDICT | CMD_BENCH},
    {NULL, 0, 0, 0, 0, 0, NULL, NULL, 0},
};

_Static_assert(PE_PIXEL_BINS_DEFAULT == 262144, "update the --pixel-bins help");
_Static_assert(PE_DRIFT_MIN == 10, "update the --drift-window minimum");

#define MAX_ROWS 128
#define HELP_COLUMN 24 /* where the help text of each option starts */

void cli_opts_init(cli_opts *o)
{
    memset(o, 0, sizeof *o);
    o->sigma = -1;
    o->threshold = NAN;
    o->drift_level = 0.05;
    o->seeds = 3;
    o->rotations = 1;
    o->host = "127.0.0.1";
    o->port = 8080;
    o->workers = 1;
    o->queue = 16;
    o->max_body_mb = 32;
    o->max_connections = 256;
    o->timeout_s = 10;
    o->drain_s = 30;
    o->settle_ms = 500;
    o->window = -1;
    o->pixel_bins = PE_PIXEL_BINS_DEFAULT;
    o->n = 2048;
    o->reps = 3;
}

void cli_opts_free(cli_opts *o)
{
    cli_free_paths(o->categories.items, o->categories.n);
    o->categories.items = NULL;
    o->categories.n = 0;
    cli_free_paths(o->banks.items, o->banks.n);
    o->banks.items = NULL;
    o->banks.n = 0;
}

static int shared(const cli_option *r)
{
    return (r->cmds & (r->cmds - 1)) != 0; /* more than one bit */
}

/* Append the comma-separated items of `text` to a list. */
static int list_append(cli_list *l, const char *text)
{
    const char *p = text;
    while (*p) {
        size_t len = strcspn(p, ",");
        if (len) {
            char **grown = realloc(l->items, (size_t)(l->n + 1) * sizeof *grown);
            if (!grown) return -1;
            l->items = grown;
            if (!(l->items[l->n] = strndup(p, len))) return -1;
            l->n++;
        }
        p += len + (p[len] == ',');
    }
    return 0;
}

/* Store one option's value into its field; -1 after printing a usage error. */
static int set_value(const cli_option *r, const char *arg, cli_opts *o)
{
    char flag[64];
    snprintf(flag, sizeof flag, "--%s", r->name);
    void *field = (char *)o + r->offset;
    switch (r->type) {
    case ARG_FLAG: *(int *)field = 1; return 0;
    case ARG_INT: return cli_parse_int(flag, arg, (int)r->min, (int)r->max, (int *)field);
    case ARG_FLOAT: return cli_parse_float(flag, arg, r->min, r->max, (double *)field);
    case ARG_TEXT: *(const char **)field = arg; return 0;
    case ARG_COUNT_FRACTION: {
        int count;
        float fraction;
        if (cli_count_or_fraction(flag, arg, &count, &fraction)) return -1;
        *(const char **)field = arg;
        return 0;
    }
    case ARG_LIST:
        if (list_append((cli_list *)field, arg)) return cli_error("out of memory"), -1;
        return 0;
    }
    return -1;
}

int cli_parse_options(unsigned cmd, const char *usage, int argc, char **argv, cli_opts *o,
                      int *first_arg)
{
    const char *name = argv[0];
    const cli_option *rows[MAX_ROWS];
    struct option longs[MAX_ROWS + 2];
    char shorts[2 * MAX_ROWS + 4] = ":h"; /* ':' first: a missing value returns ':' */
    int n = 0;
    size_t ns = strlen(shorts);
    for (const cli_option *r = cli_option_table; r->name && n < MAX_ROWS; r++) {
        if (!(r->cmds & cmd)) continue;
        rows[n] = r;
        longs[n] = (struct option){r->name, r->type == ARG_FLAG ? no_argument : required_argument,
                                   NULL, 1000 + n};
        if (r->short_name) {
            shorts[ns++] = r->short_name;
            if (r->type != ARG_FLAG) shorts[ns++] = ':';
        }
        n++;
    }
    shorts[ns] = 0;
    longs[n++] = (struct option){"help", no_argument, NULL, 'h'};
    longs[n] = (struct option){NULL, 0, NULL, 0};

    optind = 0; /* glibc: full re-initialisation, argv[0] is the subcommand */
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, shorts, longs, NULL)) != -1) {
        const cli_option *r = NULL;
        if (c == 'h') {
            cli_print_help(stdout, cmd, usage);
            return 1;
        } else if (c >= 1000) {
            r = rows[c - 1000];
        } else if (c == '?' || c == ':') {
            const char *what = argv[optind - 1];
            char buf[8];
            if (optopt > 0 && optopt < 1000) { /* a short option: name just that letter */
                snprintf(buf, sizeof buf, "-%c", optopt);
                what = buf;
            }
            cli_error(c == ':' ? "%s: option '%s' needs a value (see patchead %s --help)"
                               : "%s: unknown option '%s' (see patchead %s --help)",
                      name, what, name);
            return -1;
        } else {
            for (int i = 0; i < n - 1 && !r; i++)
                if (rows[i]->short_name == c) r = rows[i];
        }
        if (!r || set_value(r, optarg, o)) return -1;
    }
    if (o->plus) o->align = o->mask = 1;
    if (o->quiet) cli_quiet = 1;
    pe_score_params scratch = {0};
    if (cli_score_overrides(o, &scratch)) return -1;
    pe_precision precision; /* checked here, before the subcommand's own checks */
    if (o->precision && cli_parse_precision(o->precision, &precision)) return -1;
    if (!o->model && (cmd & CMD_DETECT)) {
        o->model = cli_default_model();
        if (o->model && !cli_quiet)
            fprintf(stderr, "patchead: no --model: using the default backbone %s\n", o->model);
    }
    *first_arg = optind;
    return 0;
}

/* The default backbone folder: CLI_DEFAULT_MODEL under weights/ (what `make weights` writes)
 * in the working directory, else beside the binary's build folder (<exe>/../weights), so
 * `build/patchead fit ...` works from the repository root and from elsewhere. NULL when
 * neither exists: the subcommand then asks for --model as before. */
const char *cli_default_model(void)
{
    static char path[4096];
    struct stat st;
    snprintf(path, sizeof path, "weights/%s/model.safetensors", CLI_DEFAULT_MODEL);
    if (stat(path, &st) == 0) {
        snprintf(path, sizeof path, "weights/%s", CLI_DEFAULT_MODEL);
        return path;
    }
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) return NULL;
    exe[n] = 0;
    char *slash = strrchr(exe, '/');
    if (!slash) return NULL;
    *slash = 0; /* exe's folder, e.g. <repo>/build */
    slash = strrchr(exe, '/');
    if (!slash) return NULL;
    *slash = 0; /* its parent, e.g. <repo> */
    if (snprintf(path, sizeof path, "%s/weights/%s/model.safetensors", exe, CLI_DEFAULT_MODEL) >=
            (int)sizeof path ||
        stat(path, &st) != 0)
        return NULL;
    path[strlen(path) - strlen("/model.safetensors")] = 0; /* the folder */
    return path;
}

void cli_print_help(FILE *f, unsigned cmd, const char *usage)
{
    fputs(usage, f);
    for (int pass = 0; pass < 2; pass++) {
        int printed = 0;
        for (const cli_option *r = cli_option_table; r->name; r++) {
            if (!(r->cmds & cmd) || shared(r) != pass) continue;
            if (!printed++) fputs(pass ? "\nshared options:\n" : "\noptions:\n", f);
            char left[64];
            snprintf(left, sizeof left, "  %c%c%s--%s%s%s", r->short_name ? '-' : ' ',
                     r->short_name ? r->short_name : ' ', r->short_name ? ", " : "  ", r->name,
                     r->metavar ? " " : "", r->metavar ? r->metavar : "");
            /* help lines: the first beside the name, the others under it */
            const char *h = r->help;
            int first = 1;
            if (strlen(left) > HELP_COLUMN - 2) { /* a long name: help on the next lines */
                fprintf(f, "%s\n", left);
                first = 0;
            }
            while (*h) {
                size_t len = strcspn(h, "\n");
                fprintf(f, "%-*s%.*s\n", HELP_COLUMN, first ? left : "", (int)len, h);
                first = 0;
                h += len + (h[len] == '\n');
            }
        }
    }
    fprintf(f, "%-*s%s\n", HELP_COLUMN, "  -h, --help", "this help");
}

int cli_count_or_fraction(const char *opt, const char *text, int *count, float *fraction)
{
    size_t n = strlen(text);
    char buf[64];
    if (n == 0 || n >= sizeof buf)
        return cli_error("%s expects a count or a fraction, got '%s'", opt, text), -1;
    memcpy(buf, text, n + 1);
    double v;
    if (buf[n - 1] == '%') {
        buf[n - 1] = 0;
        if (cli_parse_float(opt, buf, 1e-9, 100, &v)) return -1;
        *count = 0;
        *fraction = (float)(v / 100);
    } else if (strpbrk(buf, ".eE")) {
        if (cli_parse_float(opt, buf, 1e-9, 1, &v)) return -1;
        *count = 0;
        *fraction = (float)v;
    } else {
        int c;
        if (cli_parse_int(opt, buf, 1, 1 << 30, &c)) return -1;
        *count = c;
    }
    return 0;
}

int cli_score_overrides(const cli_opts *o, pe_score_params *s)
{
    if (o->order) {
        if (!strcasecmp(o->order, "lowest")) s->order = PE_ORDER_LOWEST;
        else if (!strcasecmp(o->order, "highest")) s->order = PE_ORDER_HIGHEST;
        else return cli_error("--order expects lowest or highest, got '%s'", o->order), -1;
    }
    if (o->k && cli_count_or_fraction("--k", o->k, &s->k_count, &s->k_fraction)) return -1;
    if (o->top && cli_count_or_fraction("--top", o->top, &s->top_count, &s->top_fraction))
        return -1;
    return 0;
}

int cli_detect_params(const cli_opts *o, int zeroshot, pe_detect_params *p)
{
    *p = pe_detect_default_params(zeroshot);
    if (o->preset && pe_score_preset(o->preset, zeroshot, &p->score) != PE_OK)
        return cli_error("--preset: %s", pe_last_error()), -1;
    if (cli_score_overrides(o, &p->score)) return -1;
    p->size = o->size;
    p->layer = o->layer;
    p->align = o->align;
    p->mask = o->mask;
    if (o->sigma >= 0) p->map_sigma = (float)o->sigma;
    p->rotations = o->rotations;
    p->flips = o->flips;
    p->window = o->window;
    p->coreset_proj = o->coreset_proj;
    if (o->coreset &&
        cli_count_or_fraction("--coreset", o->coreset, &p->coreset_count, &p->coreset_fraction))
        return -1;
    if (o->precision && cli_parse_precision(o->precision, &p->score.precision)) return -1;
    return 0;
}

void detect_describe(const pe_score_params *s, char *buf, size_t cap)
{
    char k[32], top[32];
    if (s->k_count > 0) snprintf(k, sizeof k, "%d", s->k_count);
    else snprintf(k, sizeof k, "%g%%", 100.0 * s->k_fraction);
    if (s->top_count > 0) snprintf(top, sizeof top, "%d", s->top_count);
    else snprintf(top, sizeof top, "%g%%", 100.0 * s->top_fraction);
    snprintf(buf, cap, "%s K=%s, top %s", s->order == PE_ORDER_LOWEST ? "lowest" : "highest", k,
             top);
}
