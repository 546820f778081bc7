/* info.c — `patchead info`: what a weights file or hub folder holds. */
#include "cli.h"
#include "options.h"

#include <string.h>

static const char *USAGE =
    "usage: patchead info --model PATH [--json]\n\n"
    "Load a backbone (a .safetensors file or a hub folder with model.safetensors +\n"
    "config.json) and print its family, name, sizes, dtype, parameter count, patch\n"
    "size, feature dimension, input normalisation and weights hash.\n";

int cmd_info(int argc, char **argv)
{
    cli_opts o;
    cli_opts_init(&o);
    int first, r = cli_parse_options(CMD_INFO, USAGE, argc, argv, &o, &first);
    if (r) return r > 0 ? EXIT_OK : EXIT_USAGE;
    const char *model_path = o.model;
    int json = o.json;
    if (first < argc) {
        cli_error("info: unexpected argument '%s'", argv[first]);
        return EXIT_USAGE;
    }
    if (!model_path) {
        cli_error("info: --model PATH is required (see patchead info --help)");
        return EXIT_USAGE;
    }
    if (o.threads) pe_set_threads(o.threads);
    pe_model *m = NULL;
    pe_status s = pe_model_load(model_path, NULL, &m);
    if (s) return cli_lib_error(s);
    pe_model_info in;
    pe_model_get_info(m, &in);
    if (json) {
        printf(
            "{\"family\": \"%s\", \"name\": \"%s\", \"dtype\": \"%s\", \"is_vit\": %s, "
            "\"has_attention\": %s, \"patch_size\": %d, \"feature_dim\": %d, \"num_layers\": %d, "
            "\"hidden_dim\": %d, \"default_size\": %d, \"num_params\": %lld, "
            "\"mean\": [%.8g, %.8g, %.8g], \"std\": [%.8g, %.8g, %.8g], \"weights_hash\": "
            "\"%s\"}\n",
            in.family, in.name, in.dtype, in.is_vit ? "true" : "false",
            in.has_attention ? "true" : "false", in.patch_size, in.feature_dim, in.num_layers,
            in.hidden_dim, in.default_size, (long long)in.num_params, in.mean[0], in.mean[1],
            in.mean[2], in.std[0], in.std[1], in.std[2], in.weights_hash);
    } else {
        int S = in.default_size, g = in.patch_size > 0 ? S / in.patch_size : 0;
        printf("model         %s\n", model_path);
        printf("family        %s\n", in.family);
        printf("name          %s\n", in.name);
        printf("kind          %s\n", in.is_vit ? "vision transformer" : "CNN");
        printf("weights dtype %s\n", in.dtype);
        printf("parameters    %lld (%.1f M)\n", (long long)in.num_params, in.num_params / 1e6);
        printf("layers        %d%s\n", in.num_layers, in.is_vit ? " blocks" : " stages");
        if (in.is_vit) printf("width         %d\n", in.hidden_dim);
        printf("%-13s %d\n", in.is_vit ? "patch size" : "feature stride", in.patch_size);
        printf("feature dim   %d\n", in.feature_dim);
        printf("default size  %d (%dx%d patches)\n", S, g, g);
        printf("attention     %s\n", in.has_attention ? "yes (CLS attention for masking)" : "no");
        printf("mean          %.6g %.6g %.6g\n", in.mean[0], in.mean[1], in.mean[2]);
        printf("std           %.6g %.6g %.6g\n", in.std[0], in.std[1], in.std[2]);
        printf("weights hash  %s\n", in.weights_hash);
    }
    pe_model_free(m);
    return EXIT_OK;
}
