/* features.c — `patchead features`: one image's patch features (and CLS
 * attention) as .npy. Also the parity tools' entry point: --input-npy feeds an
 * already-normalised (3, H, W) tensor straight to the backbone (pe_model_forward). */
#include "cli.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *out)
{
    fprintf(out,
            "usage: patchead features --model PATH [options] IMAGE -o OUT.npy [--attn ATTN.npy]\n\n"
            "Resize IMAGE to S x S (PIL bicubic), normalise with the backbone's mean/std, run the\n"
            "backbone and write the patch features as a (G, D) float32 .npy, G = (S/p)^2 patches\n"
            "in raster order. --attn also writes the last block's CLS->patch attention, mean over\n"
            "heads, as a (S/p, S/p) .npy (ViT backbones only; SigLIP, which has no CLS token:\n"
            "its attention-pooling head's probe attention).\n\n"
            "  -m, --model PATH     weights file or hub folder (required)\n"
            "  -o, --output OUT     features .npy (required)\n"
            "      --attn FILE      CLS attention .npy\n"
            "  -s, --size N         input side S (default: the model's, 448)\n"
            "  -l, --layer L        ViT block L (1-based) + final norm instead of the last block\n"
            "  -t, --threads N      worker threads (default: all cores)\n"
            "  -h, --help           this help\n"
            "developer option:\n"
            "      --input-npy X    feed a normalised (3, H, W) float tensor instead of IMAGE\n");
}

enum { OPT_ATTN = 256, OPT_INPUT_NPY };

int cmd_features(int argc, char **argv)
{
    static const struct option opts[] = {{"model", required_argument, 0, 'm'},
                                         {"output", required_argument, 0, 'o'},
                                         {"attn", required_argument, 0, OPT_ATTN},
                                         {"size", required_argument, 0, 's'},
                                         {"layer", required_argument, 0, 'l'},
                                         {"threads", required_argument, 0, 't'},
                                         {"input-npy", required_argument, 0, OPT_INPUT_NPY},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    const char *model_path = NULL, *output = NULL, *attn_path = NULL, *input_npy = NULL;
    int size = 0, layer = 0, threads = 0, c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "m:o:s:l:t:h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model_path = optarg; break;
        case 'o': output = optarg; break;
        case OPT_ATTN: attn_path = optarg; break;
        case OPT_INPUT_NPY: input_npy = optarg; break;
        case 's':
            if (cli_parse_int("--size", optarg, 32, 4096, &size)) return EXIT_USAGE;
            break;
        case 'l':
            if (cli_parse_int("--layer", optarg, 0, 1000, &layer)) return EXIT_USAGE;
            break;
        case 't':
            if (cli_parse_int("--threads", optarg, 0, 1024, &threads)) return EXIT_USAGE;
            break;
        case 'h': usage(stdout); return EXIT_OK;
        default:
            cli_error("features: unknown or incomplete option '%s' (see patchead features --help)",
                      argv[optind - 1]);
            return EXIT_USAGE;
        }
    }
    int nimages = argc - optind;
    if (!model_path || !output || (input_npy ? nimages != 0 : nimages != 1)) {
        cli_error("features needs --model, -o OUT.npy and exactly one IMAGE (or --input-npy) "
                  "(see patchead features --help)");
        return EXIT_USAGE;
    }

    /* Read the input before loading the model: a bad image fails fast. */
    pe_image img = {0};
    float *chw = NULL;
    int64_t shape[4];
    int ndim = 0;
    pe_status s;
    if (input_npy) {
        s = pe_npy_load(input_npy, &chw, &ndim, shape);
        if (s) return cli_lib_error(s);
        if (ndim != 3 || shape[0] != 3 || shape[1] <= 0 || shape[2] <= 0 || shape[1] > 8192 ||
            shape[2] > 8192) {
            free(chw);
            return cli_error("%s: expected a (3, H, W) array with H, W <= 8192", input_npy);
        }
    } else {
        s = pe_image_load(argv[optind], &img);
        if (s) return cli_lib_error(s);
    }

    pe_model_params mp = pe_model_default_params();
    mp.threads = threads;
    pe_model *m = NULL;
    s = pe_model_load(model_path, &mp, &m);
    pe_features f = {0};
    if (!s) {
        pe_extract_params ep = pe_extract_default_params();
        ep.size = size;
        ep.layer = layer;
        ep.want_attn = attn_path != NULL;
        if (input_npy) s = pe_model_forward(m, chw, (int)shape[1], (int)shape[2], &ep, &f);
        else s = pe_model_extract(m, &img, &ep, &f);
    }
    free(chw);
    pe_image_free(&img);
    pe_model_free(m);
    if (s) return cli_lib_error(s);

    int64_t fshape[2] = {(int64_t)f.grid_h * f.grid_w, f.dim};
    s = pe_npy_save(output, f.data, 2, fshape);
    if (!s && attn_path) {
        int64_t ashape[2] = {f.grid_h, f.grid_w};
        s = pe_npy_save(attn_path, f.attn, 2, ashape);
        if (s) remove(output); /* all or nothing */
    }
    int rc = s ? cli_lib_error(s) : EXIT_OK;
    if (!s) printf("%s: %d x %d patches, dim %d\n", output, f.grid_h, f.grid_w, f.dim);
    pe_features_free(&f);
    return rc;
}
