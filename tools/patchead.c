/* patchead.c — the `patchead` command: dispatches to one subcommand per file. */
#include "cli.h"

#include <string.h>

typedef struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} subcommand;

static const subcommand commands[] = {
    {"info", cmd_info, "show a backbone's family, sizes, dtype and parameter count"},
    {"features", cmd_features, "write an image's patch features (and CLS attention) as .npy"},
    {"fit", cmd_fit, "build a reference bank (.pead) from a few normal images"},
    {"predict", cmd_predict, "score images against a bank: scores, maps, heatmaps"},
    {"zeroshot", cmd_zeroshot, "batch zero-shot: score each image against the others"},
    {"eval", cmd_eval, "evaluate on a dataset (MVTec, VisA, ...): tables and HTML report"},
    {"bench", cmd_bench, "measure sgemm peak and backbone speed"},
};

static void usage(FILE *out)
{
    fprintf(out,
            "patchead %s — training-free visual anomaly detection (PatchEAD)\n\n"
            "usage: patchead <command> [options]   (patchead <command> --help for details)\n\n"
            "commands:\n",
            PE_VERSION);
    for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
        fprintf(out, "  %-10s %s\n", commands[i].name, commands[i].summary);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return EXIT_USAGE;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return EXIT_OK;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("patchead %s\n", PE_VERSION);
        return EXIT_OK;
    }
    for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
        if (!strcmp(argv[1], commands[i].name)) return commands[i].run(argc - 1, argv + 1);
    cli_error("unknown command '%s' (see patchead --help)", argv[1]);
    return EXIT_USAGE;
}
