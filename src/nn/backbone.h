/* backbone.h — the internal interface every backbone family implements.
 * model.c opens the weights (safetensors + config.json), picks the family and
 * calls its loader; pe_model_extract/pe_model_forward call backbone->forward. */
#ifndef PE_BACKBONE_H
#define PE_BACKBONE_H

#include "core/internal.h"
#include "io/safetensors.h"

#include <cjson/cJSON.h>

typedef struct backbone backbone;

struct backbone {
    pe_model_info info; /* filled by the loader (weights_hash, dtype filled by model.c) */
    /* Input: normalised (3, H, W) float tensor. Output: malloc'd (G, D) features and,
     * if attn != NULL and the family has attention, malloc'd (G) CLS attention.
     * layer: 0 = default (last block + final norm), L >= 1 = block L + final norm. */
    pe_status (*forward)(backbone *self, const float *chw, int height, int width, int layer,
                         float **features, int *grid_h, int *grid_w, int *dim, float **attn);
    void (*destroy)(backbone *self);
};

/* Loaders. `config` is config.json (may be NULL when only a .safetensors file was
 * given: then the family is inferred from tensor names and shapes). `path` is for
 * error messages. Each returns PE_ERR_UNSUPPORTED if the weights are not its family. */
pe_status vit_load(const st_file *weights, const cJSON *config, const char *path, backbone **out);
pe_status cnn_load(const st_file *weights, const cJSON *config, const char *path, backbone **out);

/* 1 if this looks like the family's weights (cheap test on tensor names / config). */
int vit_detect(const st_file *weights, const cJSON *config);
int cnn_detect(const st_file *weights, const cJSON *config);

#endif
