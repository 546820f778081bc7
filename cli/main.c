/* main.c — the `patchead` command: dispatches to one subcommand per file. */
#include "cli.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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
    {"serve", cmd_serve, "HTTP inspection service with a web page (banks loaded once)"},
    {"watch", cmd_watch, "score every image that appears in a folder"},
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

/* How idle OpenMP workers wait between parallel loops. libgomp's default spins up to
 * 300,000 rounds of `pause` (milliseconds on recent CPUs) and took the cores OpenBLAS's
 * own threads needed (MobileNetV2 at 448, 2 threads, when its convolutions went through
 * OpenBLAS: 616-930 ms spinning vs 115-150 ms with GOMP_SPINCOUNT=0). Not spinning at all
 * costs a futex wake-up per loop instead, which on a virtual machine's halted vCPU is
 * tens of microseconds: a ViT forward runs ~150 loops. Every backbone GEMM now runs on
 * the OpenMP team itself (oneDNN), so a short spin is the better trade (2 threads,
 * Xeon with AMX, 448 px: ViT-S/14 bf16 76 -> 71 ms, MobileNetV2 fp32 29 -> 24 ms,
 * EfficientNet-Lite0 32 -> 28 ms; tire zero-shot with MobileNetV2 unchanged within noise).
 * libgomp reads its environment once, before main, so when the user set neither variable
 * we set both and re-execute ourselves once. */
#define CLI_SPINCOUNT "10000"
static void prefer_passive_openmp(char **argv)
{
    if (getenv("OMP_WAIT_POLICY") || getenv("GOMP_SPINCOUNT")) return;
    setenv("OMP_WAIT_POLICY", "passive", 1);
    setenv("GOMP_SPINCOUNT", CLI_SPINCOUNT, 1);
    execv("/proc/self/exe", argv); /* only returns on failure: then run as we are */
}

int main(int argc, char **argv)
{
    prefer_passive_openmp(argv);
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
        if (!strcmp(argv[1], commands[i].name)) {
            /* under mpirun (make MPI=1): rank 0 talks and writes, the others only compute */
            if (pe_dist_init(&argc, &argv)) return cli_lib_error(PE_ERR_IO);
            if (pe_dist_rank() != 0) cli_quiet = 1;
            int rc = commands[i].run(argc - 1, argv + 1);
            /* The closing agreement: a failed rank makes every rank exit non-zero, and
             * rank 0 prints its one line, before MPI_Finalize (mpirun may end the job
             * as soon as one rank has exited non-zero). */
            pe_dist_check();
            char why[512];
            int failed = pe_dist_failure(why, sizeof why);
            if (failed >= 0) {
                if (pe_dist_rank() == 0)
                    fprintf(stderr, "patchead: error: MPI rank %d: %s\n", failed, why);
                if (rc == EXIT_OK || rc == EXIT_SOME_FAILED) rc = EXIT_ERROR;
            }
            pe_dist_finalize();
            return rc;
        }
    cli_error("unknown command '%s' (see patchead --help)", argv[1]);
    return EXIT_USAGE;
}
