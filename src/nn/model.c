/* model.c — pe_model: open weights (file or hub folder), pick the backbone family,
 * preprocess images and run the backbone. */
#include "backbone.h"
#include "compute/engine.h"

#include <errno.h>
#include <string.h>
#include <sys/stat.h>

struct pe_model {
    st_file *weights;
    backbone *net;
    eng_ctx *eng; /* GEMM precision + the weights reordered for it (engine.h) */
    char path[4096];
};

pe_model_params pe_model_default_params(void)
{
    pe_model_params p = {0};
    p.threads = 0;
    return p;
}

pe_extract_params pe_extract_default_params(void)
{
    pe_extract_params p = {0};
    return p;
}

void pe_features_free(pe_features *f)
{
    if (!f) return;
    free(f->data);
    free(f->attn);
    memset(f, 0, sizeof *f);
}

static int file_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* Parse a JSON file; NULL (no error) if it does not exist. */
static pe_status load_json(const char *path, cJSON **out)
{
    *out = NULL;
    struct stat st;
    if (stat(path, &st) != 0 && errno == ENOENT) return PE_OK;
    uint8_t *text; /* anything else that is not a regular file is refused by pe_read_file */
    size_t n;
    pe_status s = pe_read_file(path, &text, &n);
    if (s) return s;
    cJSON *j = cJSON_ParseWithLength((const char *)text, n);
    free(text);
    if (!j || !cJSON_IsObject(j)) {
        cJSON_Delete(j);
        return pe_fail(PE_ERR_FORMAT, "%s: not a valid JSON object", path);
    }
    *out = j;
    return PE_OK;
}

/* DIR/NAME, if it exists, parsed and added to *cfg (created if NULL) under KEY. */
static pe_status merge_json(cJSON **cfg, const char *dir, const char *name, const char *key)
{
    char path[4200];
    cJSON *j = NULL;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    pe_status s = load_json(path, &j);
    if (s || !j) return s;
    if (!*cfg) *cfg = cJSON_CreateObject();
    cJSON_AddItemToObject(*cfg, key, j);
    return PE_OK;
}

/* Resolve PATH (file or folder) to the weights file and the config files beside it.
 * config.json holds the hub config; open_clip_config.json (OpenCLIP) is merged under
 * the key "open_clip_config" and preprocessor_config.json (transformers) under
 * "preprocessor_config" so loaders see one object. */
static pe_status resolve_paths(const char *path, char *weights, size_t cap, cJSON **config)
{
    char dir[4096];
    *config = NULL;
    struct stat st;
    if (stat(path, &st) != 0)
        return pe_fail(PE_ERR_IO, "%s: no such file or directory", path);
    if (S_ISDIR(st.st_mode)) {
        snprintf(dir, sizeof dir, "%s", path);
        const char *names[] = {"model.safetensors", "open_clip_model.safetensors",
                               "open_clip_pytorch_model.safetensors"};
        weights[0] = 0;
        for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
            snprintf(weights, cap, "%s/%s", dir, names[i]);
            if (file_exists(weights)) break;
            weights[0] = 0;
        }
        if (!weights[0])
            return pe_fail(PE_ERR_IO,
                           "%s: directory has no model.safetensors (download the hub's "
                           "safetensors weights into it)",
                           path);
    } else {
        snprintf(weights, cap, "%s", path);
        snprintf(dir, sizeof dir, "%s", path);
        char *slash = strrchr(dir, '/');
        if (slash) *slash = 0;
        else snprintf(dir, sizeof dir, ".");
    }
    char cfg_path[4200];
    cJSON *cfg = NULL;
    snprintf(cfg_path, sizeof cfg_path, "%s/config.json", dir);
    pe_status s = load_json(cfg_path, &cfg);
    /* open_clip's config, and the transformers image processor's normalisation */
    if (!s) s = merge_json(&cfg, dir, "open_clip_config.json", "open_clip_config");
    if (!s) s = merge_json(&cfg, dir, "preprocessor_config.json", "preprocessor_config");
    if (s) {
        cJSON_Delete(cfg);
        return s;
    }
    *config = cfg;
    return PE_OK;
}

pe_status pe_model_load(const char *path, const pe_model_params *params, pe_model **out)
{
    *out = NULL;
    pe_model_params defaults = pe_model_default_params();
    if (!params) params = &defaults;
    pe_set_threads(params->threads);

    pe_model *m = calloc(1, sizeof *m);
    if (!m) return pe_fail(PE_ERR_NOMEM, "%s: out of memory", path);
    snprintf(m->path, sizeof m->path, "%s", path);

    char weights_path[4200];
    cJSON *config = NULL;
    pe_status s = resolve_paths(path, weights_path, sizeof weights_path, &config);
    if (s) goto fail;
    s = st_open(weights_path, &m->weights);
    if (s) goto fail;

    if (vit_detect(m->weights, config)) s = vit_load(m->weights, config, weights_path, &m->net);
    else if (cnn_detect(m->weights, config)) s = cnn_load(m->weights, config, weights_path, &m->net);
    else
        s = pe_fail(PE_ERR_UNSUPPORTED,
                    "%s: unsupported architecture (not DINOv2, DINOv3, CLIP, OpenCLIP, SigLIP, "
                    "EVA-02, PE, MAE, BEiT, MobileNetV2, EfficientNet-Lite0 or ResNet weights)",
                    weights_path);
    if (s) goto fail;
    if (params->precision < PE_PRECISION_FP32 || params->precision > PE_PRECISION_INT8) {
        s = pe_fail(PE_ERR_ARG, "%s: unknown precision %d", path, (int)params->precision);
        goto fail;
    }
    if (params->precision == PE_PRECISION_INT8 && !m->net->info.is_vit) {
        /* the CNNs' GEMMs are im2col convolutions, not prepared linears: no int8 path */
        s = pe_fail(PE_ERR_UNSUPPORTED,
                    "%s: --precision int8 is for ViT backbones; %s is a CNN (use fp32 or bf16)",
                    path, m->net->info.name);
        goto fail;
    }
    m->eng = eng_ctx_create(params->precision);
    if (!m->eng) {
        s = pe_fail(PE_ERR_NOMEM, "%s: out of memory", path);
        goto fail;
    }
    m->net->info.precision = eng_ctx_precision(m->eng);
    size_t map_size;
    const void *map = st_map(m->weights, &map_size);
    eng_ctx_set_file_map(m->eng, map, map_size);
    st_hash(m->weights, m->net->info.weights_hash);
    m->net->info.dtype = st_dtype_summary(m->weights);
    cJSON_Delete(config);
    *out = m;
    return PE_OK;
fail:
    cJSON_Delete(config);
    pe_model_free(m);
    return s;
}

void pe_model_free(pe_model *m)
{
    if (!m) return;
    if (m->net) m->net->destroy(m->net);
    eng_ctx_free(m->eng);
    st_close(m->weights);
    free(m);
}

pe_status pe_model_get_info(const pe_model *m, pe_model_info *info)
{
    if (!m || !info) return pe_fail(PE_ERR_ARG, "pe_model_get_info: NULL argument");
    *info = m->net->info;
    return PE_OK;
}

pe_status pe_model_forward(pe_model *m, const float *chw, int height, int width,
                           const pe_extract_params *params, pe_features *out)
{
    memset(out, 0, sizeof *out);
    pe_extract_params defaults = pe_extract_default_params();
    if (!params) params = &defaults;
    if (params->want_attn && !m->net->info.has_attention)
        return pe_fail(PE_ERR_UNSUPPORTED,
                       "%s: %s has no CLS attention (attention maps need a ViT backbone)",
                       m->path, m->net->info.name);
    int ps = m->net->info.is_vit ? m->net->info.patch_size : 1;
    if (height <= 0 || width <= 0 || height % ps || width % ps)
        return pe_fail(PE_ERR_SHAPE, "%s: input %dx%d is not a positive multiple of the patch size %d",
                       m->path, width, height, ps);
    eng_ctx *previous = eng_set_current(m->eng); /* the backbone's GEMMs use the model's engine */
    pe_status s = m->net->forward(m->net, chw, height, width, params->layer, &out->data,
                                  &out->grid_h, &out->grid_w, &out->dim,
                                  params->want_attn ? &out->attn : NULL);
    eng_set_current(previous);
    return s;
}

pe_status pe_model_extract(pe_model *m, const pe_image *img, const pe_extract_params *params,
                           pe_features *out)
{
    memset(out, 0, sizeof *out);
    pe_extract_params defaults = pe_extract_default_params();
    if (!params) params = &defaults;
    const pe_model_info *info = &m->net->info;
    int size = params->size > 0 ? params->size : info->default_size;
    if (info->is_vit && size % info->patch_size)
        return pe_fail(PE_ERR_ARG, "input size %d is not a multiple of the patch size %d of %s",
                       size, info->patch_size, info->name);
    if (size < 32 || size > 4096)
        return pe_fail(PE_ERR_ARG, "input size %d is outside 32..4096", size);

    pe_image resized = {0};
    pe_status s = pe_image_resize(img, size, size, &resized);
    if (s) return s;
    size_t plane = (size_t)size * size;
    float *chw = pe_alloc(3 * plane, sizeof(float), "input tensor");
    if (!chw) {
        pe_image_free(&resized);
        return PE_ERR_NOMEM;
    }
    for (int c = 0; c < 3; c++) {
        float scale = 1.0f / (255.0f * info->std[c]), shift = info->mean[c] / info->std[c];
        float *dst = chw + c * plane;
        for (size_t i = 0; i < plane; i++) dst[i] = resized.rgb[3 * i + c] * scale - shift;
    }
    pe_image_free(&resized);
    s = pe_model_forward(m, chw, size, size, params, out);
    free(chw);
    return s;
}
