/* features.c — `patchead features`: one image's patch features (and CLS
 * attention) as .npy. Also the parity tools' entry point: --input-npy feeds an
 * already-normalised (3, H, W) tensor straight to the backbone (pe_model_forward). */
#include "cli.h"
#include "options.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *USAGE =
    "usage: patchead features --model PATH [options] IMAGE -o OUT.npy [--attn ATTN.npy]\n\n"
    "Resize IMAGE to S x S (PIL bicubic), normalise with the backbone's mean/std, run the\n"
    "backbone and write the patch features as a (G, D) float32 .npy, G = (S/p)^2 patches\n"
    "in raster order; a line naming the output and its shape on stdout (not with --quiet).\n";

int cmd_features(int argc, char **argv)
{
    cli_opts o;
    cli_opts_init(&o);
    int first, r = cli_parse_options(CMD_FEATURES, USAGE, argc, argv, &o, &first);
    if (r) return r > 0 ? EXIT_OK : EXIT_USAGE;
    const char *model_path = o.model, *output = o.output, *attn_path = o.attn,
               *input_npy = o.input_npy;
    int size = o.size, layer = o.layer, threads = o.threads;
    pe_precision precision = PE_PRECISION_FP32;
    if (o.precision && cli_parse_precision(o.precision, &precision)) return EXIT_USAGE;
    int nimages = argc - first;
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
        s = pe_image_load(argv[first], &img);
        if (s) return cli_lib_error(s);
    }

    pe_model_params mp = pe_model_default_params();
    mp.threads = threads;
    mp.precision = precision;
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
    if (!s && !cli_quiet)
        printf("%s: %d x %d patches, dim %d\n", output, f.grid_h, f.grid_w, f.dim);
    pe_features_free(&f);
    return rc;
}
