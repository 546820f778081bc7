/* vit.c — one Vision Transformer forward pass, driven by a config, for four weight
 * layouts: DINOv2 and DINOv2-with-registers (transformers hub layout), CLIP's
 * vision tower (transformers CLIPModel / CLIPVisionModel) and OpenCLIP's `visual`
 * tower (open_clip state dict, e.g. ViT-B-16-plus-240).
 *
 * All four are the same pre-norm transformer:
 *   tokens = [CLS, (registers), patches] (T, D);  patches = conv(p x p, stride p)
 *   x = tokens + pos            (registers get no position embedding)
 *   x = ln_pre(x)               (CLIP / OpenCLIP only)
 *   per block:  x += ls1 * attn(ln1(x));  x += ls2 * mlp(ln2(x))   (ls = 1 without LayerScale)
 *   patch features = final_norm(x)[1 + R:]
 *
 * Reference behaviour reproduced per family (checked by tests/test_vit.c and
 * tools/parity_vit.py against transformers 5.x / open_clip 3.x):
 *   dinov2      final norm = `layernorm` (x_norm_patchtokens). Position embeddings
 *               resized with bicubic, antialias=False (Dinov2Embeddings.interpolate_pos_encoding).
 *   dinov2_reg  same, but the resize uses antialias=True (its interpolate_pos_encoding).
 *   clip        patch features = last_hidden_state[:, 1:] of CLIPVisionModel: NO
 *               post_layernorm (transformers applies it to the pooled CLS only);
 *               resize as CLIPVisionEmbeddings.interpolate_pos_encoding (bicubic, no AA).
 *   openclip    patch features = the `tokens` open_clip's VisionTransformer returns with
 *               output_tokens=True: ln_post IS applied (before pooling), visual.proj is not.
 *               open_clip does not resize at forward time; the reference for another size
 *               is create_model(..., force_image_size=S) + checkpoint load, which calls
 *               resize_pos_embed: bicubic, antialias=True, skipped when the token count
 *               already matches (then the flat embedding is used as is).
 * Intermediate layer L: output of block L, then the same final norm as above (none for clip).
 * Attention: last block's softmax(QK^T / sqrt(dh)) row of the CLS query over the patch
 * keys (registers excluded), mean over heads.
 */
#include "backbone.h"
#include "ops.h"

#include <math.h>
#include <string.h>

typedef enum { VIT_DINOV2, VIT_DINOV2_REG, VIT_CLIP, VIT_OPENCLIP } vit_kind;
typedef enum { ACT_GELU, ACT_QUICK_GELU } vit_act;

typedef struct {
    vit_kind kind;
    int dim;        /* D */
    int layers;
    int heads;      /* D / heads = head dim */
    int mlp_dim;    /* hidden width of the MLP */
    int patch;      /* p */
    int registers;  /* R */
    int pos_grid;   /* the position embeddings cover pos_grid x pos_grid patches */
    float eps;
    vit_act act;
    int layerscale; /* DINOv2 LayerScale, OpenCLIP ls_1 / ls_2 */
    int pre_norm;   /* ln_pre / pre_layrnorm */
    int final_norm; /* applied to the patch features */
    int pos_antialias;
    int pos_skip_same_count; /* open_clip: no resize when the token count already matches */
} vit_config;

typedef struct {
    const float *ln1_w, *ln1_b;
    const float *qkv_w, *qkv_b; /* (3D, D), (3D): query rows, then key, then value */
    const float *out_w, *out_b; /* (D, D), (D) */
    const float *ls1, *ls2;     /* (D) or NULL */
    const float *ln2_w, *ln2_b;
    const float *fc1_w, *fc1_b; /* (M, D), (M) */
    const float *fc2_w, *fc2_b; /* (D, M), (D) */
} vit_block;

typedef struct {
    const float *patch_w, *patch_b; /* (D, 3*p*p) (conv weight flattened), (D) or NULL */
    const float *cls;               /* (D) */
    const float *reg;               /* (R, D) or NULL */
    const float *pos;               /* (1 + pos_grid^2, D) */
    const float *pre_w, *pre_b;     /* (D) */
    const float *norm_w, *norm_b;   /* final norm (D) */
    vit_block *blocks;              /* (layers) */
} vit_weights;

/* Scratch owned by the model, sized for the largest input seen so far. */
typedef struct {
    int tokens;         /* T capacity */
    float *x;           /* (T, D) residual stream */
    float *xn;          /* (T, D) normalised input of a sub-block / patch pixels */
    float *qkv;         /* (T, 3D) */
    float *ctx;         /* (T, D) attention output before out-proj */
    float *hidden;      /* (T, M) MLP hidden; also (G, 3*p*p) im2col */
    float *capture;     /* (T, D) block L output for an intermediate layer */
    int pos_h, pos_w;   /* grid of the cached resized position embeddings */
    float *pos;         /* (1 + pos_h*pos_w, D) */
} vit_scratch;

typedef struct {
    backbone base;
    vit_config cfg;
    vit_weights w;
    vit_scratch s;
    void **owned;       /* float32 copies / fused tensors to free */
    int n_owned, cap_owned;
    char name[64];
    char path[512]; /* weights file, for error messages */
} vit_model;

/* ------------------------------------------------------------------ loading */

typedef struct {
    const st_file *st;
    const char *path;
    vit_model *m;
    const char *prefix;
    int64_t params;
} loader;

static int keep(vit_model *m, void *p)
{
    if (m->n_owned == m->cap_owned) {
        int cap = m->cap_owned ? 2 * m->cap_owned : 64;
        void **o = realloc(m->owned, (size_t)cap * sizeof *o);
        if (!o) return -1;
        m->owned = o;
        m->cap_owned = cap;
    }
    m->owned[m->n_owned++] = p;
    return 0;
}

/* Tensor `prefix + name` as float32 with exactly `numel` elements laid out as `shape`.
 * F32 data aligned to 4 bytes is used in place (no copy); other dtypes are converted. */
static pe_status get(loader *L, const char *name, int ndim, const int64_t *shape, const float **out)
{
    char full[256];
    snprintf(full, sizeof full, "%s%s", L->prefix, name);
    const st_tensor *t = st_find(L->st, full);
    if (t && t->ndim == ndim && !strcmp(t->dtype, "F32") && ((uintptr_t)t->data & 3) == 0) {
        int same = 1;
        for (int i = 0; i < ndim; i++) same &= t->shape[i] == shape[i];
        if (same) {
            *out = (const float *)(const void *)t->data;
            L->params += t->numel;
            return PE_OK;
        }
    }
    float *buf;
    pe_status s = st_load_f32(L->st, full, ndim, shape, &buf);
    if (s) return s;
    if (keep(L->m, buf)) {
        free(buf);
        return pe_fail(PE_ERR_NOMEM, "%s: out of memory", L->path);
    }
    L->params += t ? t->numel : 0;
    *out = buf;
    return PE_OK;
}

static pe_status get1(loader *L, const char *name, int64_t n, const float **out)
{
    return get(L, name, 1, &n, out);
}
static pe_status get2(loader *L, const char *name, int64_t a, int64_t b, const float **out)
{
    int64_t shape[2] = {a, b};
    return get(L, name, 2, shape, out);
}

static int has(const loader *L, const char *name)
{
    char full[256];
    snprintf(full, sizeof full, "%s%s", L->prefix, name);
    return st_find(L->st, full) != NULL;
}

/* Fuse separate q, k, v (each (D, D) + (D)) into one (3D, D) / (3D) pair. */
static pe_status fuse_qkv(loader *L, const char *fmt_w, const char *fmt_b, int layer, int D,
                          vit_block *b)
{
    static const char *parts[3][2] = {{"query", "q_proj"}, {"key", "k_proj"}, {"value", "v_proj"}};
    float *w = pe_alloc((size_t)3 * D * D, sizeof(float), "fused qkv weight");
    float *bias = pe_alloc((size_t)3 * D, sizeof(float), "fused qkv bias");
    if (!w || !bias || keep(L->m, w) || keep(L->m, bias)) {
        free(w);
        free(bias);
        return pe_fail(PE_ERR_NOMEM, "%s: out of memory", L->path);
    }
    for (int i = 0; i < 3; i++) {
        char name[160];
        const float *src;
        /* fmt has "%d" for the layer then "%s" for the part name (both layouts share it) */
        int alt = 0;
        snprintf(name, sizeof name, fmt_w, layer, parts[i][0]);
        if (!has(L, name)) alt = 1;
        snprintf(name, sizeof name, fmt_w, layer, parts[i][alt]);
        pe_status s = get2(L, name, D, D, &src);
        if (s) return s;
        memcpy(w + (size_t)i * D * D, src, (size_t)D * D * sizeof(float));
        snprintf(name, sizeof name, fmt_b, layer, parts[i][alt]);
        s = get1(L, name, D, &src);
        if (s) return s;
        memcpy(bias + (size_t)i * D, src, (size_t)D * sizeof(float));
    }
    b->qkv_w = w;
    b->qkv_b = bias;
    return PE_OK;
}

/* Find the prefix before a known suffix (e.g. "dinov2." + "embeddings.cls_token"). */
static int find_prefix(const st_file *st, const char *suffix, char *prefix, size_t cap)
{
    size_t ls = strlen(suffix);
    for (int i = 0; i < st_count(st); i++) {
        const char *n = st_at(st, i)->name;
        size_t ln = strlen(n);
        if (ln >= ls && !strcmp(n + ln - ls, suffix) && ln - ls < cap) {
            if (ln > ls && n[ln - ls - 1] != '.') continue;
            memcpy(prefix, n, ln - ls);
            prefix[ln - ls] = 0;
            return 1;
        }
    }
    return 0;
}

static vit_kind detect_kind(const st_file *st, const cJSON *config, char *prefix, size_t cap, int *ok)
{
    *ok = 1;
    char p[128];
    if (find_prefix(st, "embeddings.patch_embeddings.projection.weight", p, sizeof p)) {
        snprintf(prefix, cap, "%s", p);
        char reg[200];
        snprintf(reg, sizeof reg, "%sembeddings.register_tokens", p);
        return st_find(st, reg) ? VIT_DINOV2_REG : VIT_DINOV2;
    }
    if (find_prefix(st, "embeddings.patch_embedding.weight", p, sizeof p)) {
        char cls[200];
        snprintf(cls, sizeof cls, "%sembeddings.class_embedding", p);
        if (st_find(st, cls)) {
            snprintf(prefix, cap, "%s", p);
            return VIT_CLIP;
        }
    }
    if (st_find(st, "visual.conv1.weight") && st_find(st, "visual.class_embedding")) {
        snprintf(prefix, cap, "visual.");
        return VIT_OPENCLIP;
    }
    (void)config;
    *ok = 0;
    return VIT_DINOV2;
}

int vit_detect(const st_file *weights, const cJSON *config)
{
    char prefix[128];
    int ok;
    detect_kind(weights, config, prefix, sizeof prefix, &ok);
    return ok;
}

static int json_int(const cJSON *obj, const char *key, int fallback)
{
    const cJSON *v = obj ? cJSON_GetObjectItemCaseSensitive(obj, key) : NULL;
    return cJSON_IsNumber(v) ? (int)v->valuedouble : fallback;
}
static double json_num(const cJSON *obj, const char *key, double fallback)
{
    const cJSON *v = obj ? cJSON_GetObjectItemCaseSensitive(obj, key) : NULL;
    return cJSON_IsNumber(v) ? v->valuedouble : fallback;
}
static const char *json_str(const cJSON *obj, const char *key)
{
    const cJSON *v = obj ? cJSON_GetObjectItemCaseSensitive(obj, key) : NULL;
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static const char *size_word(int dim)
{
    switch (dim) {
    case 384: return "small";
    case 768: return "base";
    case 1024: return "large";
    case 1280: return "huge";
    case 1536: return "giant";
    default: return NULL;
    }
}

static void vit_destroy(backbone *self);
static pe_status vit_forward(backbone *self, const float *chw, int height, int width, int layer,
                             float **features, int *grid_h, int *grid_w, int *dim, float **attn);

/* Shape-derived config, refined by config.json where it has the key. */
static pe_status read_config(loader *L, vit_kind kind, const cJSON *config, vit_config *c)
{
    const char *P = L->prefix;
    char name[256];
    const st_tensor *patch, *pos;
    memset(c, 0, sizeof *c);
    c->kind = kind;
    if (kind == VIT_DINOV2 || kind == VIT_DINOV2_REG) {
        snprintf(name, sizeof name, "%sembeddings.patch_embeddings.projection.weight", P);
        patch = st_find(L->st, name);
        snprintf(name, sizeof name, "%sembeddings.position_embeddings", P);
        pos = st_find(L->st, name);
    } else if (kind == VIT_CLIP) {
        snprintf(name, sizeof name, "%sembeddings.patch_embedding.weight", P);
        patch = st_find(L->st, name);
        snprintf(name, sizeof name, "%sembeddings.position_embedding.weight", P);
        pos = st_find(L->st, name);
    } else {
        patch = st_find(L->st, "visual.conv1.weight");
        pos = st_find(L->st, "visual.positional_embedding");
    }
    if (!patch || patch->ndim != 4 || patch->shape[1] != 3 || patch->shape[2] != patch->shape[3] ||
        patch->shape[0] <= 0 || patch->shape[0] > 8192 || patch->shape[2] <= 0 || patch->shape[2] > 64)
        return pe_fail(PE_ERR_SHAPE, "%s: patch embedding weight is missing or not (D, 3, p, p)",
                       L->path);
    c->dim = (int)patch->shape[0];
    c->patch = (int)patch->shape[2];
    int64_t npos = 0;
    if (pos && pos->ndim == 3 && pos->shape[0] == 1 && pos->shape[2] == c->dim) npos = pos->shape[1];
    else if (pos && pos->ndim == 2 && pos->shape[1] == c->dim) npos = pos->shape[0];
    int g = (int)sqrt((double)(npos > 0 ? npos - 1 : 0));
    while ((int64_t)(g + 1) * (g + 1) <= npos - 1) g++;
    while (g > 0 && (int64_t)g * g > npos - 1) g--;
    if (npos < 2 || (int64_t)g * g != npos - 1)
        return pe_fail(PE_ERR_SHAPE,
                       "%s: position embeddings missing or not (1 + n*n, %d) for a square grid",
                       L->path, c->dim);
    c->pos_grid = g;

    /* count blocks */
    const char *fmt = kind == VIT_DINOV2 || kind == VIT_DINOV2_REG ? "%sencoder.layer.%d.norm1.weight"
                      : kind == VIT_CLIP ? "%sencoder.layers.%d.layer_norm1.weight"
                                         : "%stransformer.resblocks.%d.ln_1.weight";
    for (;;) {
        snprintf(name, sizeof name, fmt, P, c->layers);
        if (!st_find(L->st, name)) break;
        c->layers++;
    }
    if (c->layers == 0) return pe_fail(PE_ERR_FORMAT, "%s: no transformer blocks found", L->path);

    const cJSON *cfg = config;
    if (kind == VIT_CLIP && cfg && cJSON_GetObjectItemCaseSensitive(cfg, "vision_config"))
        cfg = cJSON_GetObjectItemCaseSensitive(cfg, "vision_config");
    const cJSON *vcfg = NULL, *oc = NULL;
    if (kind == VIT_OPENCLIP && config) {
        oc = cJSON_GetObjectItemCaseSensitive(config, "open_clip_config");
        const cJSON *mc = oc ? cJSON_GetObjectItemCaseSensitive(oc, "model_cfg") : NULL;
        if (!mc && cJSON_GetObjectItemCaseSensitive(config, "vision_cfg")) mc = config;
        vcfg = mc ? cJSON_GetObjectItemCaseSensitive(mc, "vision_cfg") : NULL;
        if (mc && cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(mc, "quick_gelu"))) c->act = ACT_QUICK_GELU;
    }

    int head_dim = 64;
    if (kind == VIT_OPENCLIP) {
        head_dim = json_int(vcfg, "head_width", 64);
        c->heads = c->dim / (head_dim > 0 ? head_dim : 64);
        c->eps = 1e-5f;
        c->pre_norm = !cJSON_IsTrue(vcfg ? cJSON_GetObjectItemCaseSensitive(vcfg, "no_ln_pre") : NULL);
        c->final_norm = 1;
        c->pos_antialias = 1;
        c->pos_skip_same_count = 1;
        if (vcfg && (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(vcfg, "final_ln_after_pool")) ||
                     cJSON_GetObjectItemCaseSensitive(vcfg, "attentional_pool") ||
                     json_str(vcfg, "timm_model_name")))
            return pe_fail(PE_ERR_UNSUPPORTED,
                           "%s: OpenCLIP vision config (timm tower / attentional pool / "
                           "final_ln_after_pool) is not supported",
                           L->path);
    } else {
        c->heads = json_int(cfg, "num_attention_heads", c->dim / 64);
        c->eps = (float)json_num(cfg, "layer_norm_eps", kind == VIT_CLIP ? 1e-5 : 1e-6);
        const char *act = json_str(cfg, "hidden_act");
        if (!act) act = kind == VIT_CLIP ? "quick_gelu" : "gelu";
        if (!strcmp(act, "gelu")) c->act = ACT_GELU;
        else if (!strcmp(act, "quick_gelu")) c->act = ACT_QUICK_GELU;
        else
            return pe_fail(PE_ERR_UNSUPPORTED, "%s: activation '%s' is not supported (gelu, quick_gelu)",
                           L->path, act);
        if (kind == VIT_CLIP) {
            c->pre_norm = 1;
            c->final_norm = 0;
        } else {
            c->final_norm = 1;
            c->pos_antialias = kind == VIT_DINOV2_REG;
            if (cJSON_IsTrue(cfg ? cJSON_GetObjectItemCaseSensitive(cfg, "use_swiglu_ffn") : NULL))
                return pe_fail(PE_ERR_UNSUPPORTED, "%s: DINOv2 SwiGLU MLP (giant) is not supported",
                               L->path);
        }
    }
    if (c->heads <= 0 || c->dim % c->heads)
        return pe_fail(PE_ERR_FORMAT, "%s: width %d is not divisible by %d attention heads", L->path,
                       c->dim, c->heads);

    /* MLP width from fc1 */
    const char *fc1 = kind == VIT_DINOV2 || kind == VIT_DINOV2_REG ? "%sencoder.layer.0.mlp.fc1.weight"
                      : kind == VIT_CLIP ? "%sencoder.layers.0.mlp.fc1.weight"
                                         : "%stransformer.resblocks.0.mlp.c_fc.weight";
    snprintf(name, sizeof name, fc1, P);
    const st_tensor *t = st_find(L->st, name);
    if (!t) {
        snprintf(name, sizeof name, "%sencoder.layer.0.mlp.weights_in.weight", P);
        if (st_find(L->st, name))
            return pe_fail(PE_ERR_UNSUPPORTED, "%s: DINOv2 SwiGLU MLP (giant) is not supported", L->path);
        snprintf(name, sizeof name, fc1, P);
        return pe_fail(PE_ERR_FORMAT, "%s: missing tensor '%s'", L->path, name);
    }
    if (t->ndim != 2 || t->shape[1] != c->dim || t->shape[0] <= 0 || t->shape[0] > 65536)
        return pe_fail(PE_ERR_SHAPE, "%s: tensor '%s' is not (M, %d)", L->path, name, c->dim);
    c->mlp_dim = (int)t->shape[0];

    if (kind == VIT_DINOV2_REG) {
        snprintf(name, sizeof name, "%sembeddings.register_tokens", P);
        t = st_find(L->st, name);
        if (!t || t->ndim != 3 || t->shape[0] != 1 || t->shape[2] != c->dim || t->shape[1] > 256)
            return pe_fail(PE_ERR_SHAPE, "%s: tensor '%s' is not (1, R, %d)", L->path, name, c->dim);
        c->registers = (int)t->shape[1];
    }
    snprintf(name, sizeof name, kind == VIT_OPENCLIP ? "%stransformer.resblocks.0.ls_1.gamma"
                                                     : "%sencoder.layer.0.layer_scale1.lambda1",
             P);
    c->layerscale = st_find(L->st, name) != NULL;
    return PE_OK;
}

static pe_status load_weights(loader *L)
{
    vit_model *m = L->m;
    const vit_config *c = &m->cfg;
    vit_weights *w = &m->w;
    const int D = c->dim, M = c->mlp_dim, p = c->patch;
    const int64_t npos = 1 + (int64_t)c->pos_grid * c->pos_grid;
    int64_t pshape[4] = {D, 3, p, p};
    pe_status s;
    char n[256];
    w->blocks = calloc((size_t)c->layers, sizeof *w->blocks);
    if (!w->blocks) return pe_fail(PE_ERR_NOMEM, "%s: out of memory", L->path);

#define TRY(expr)                                                                                  \
    do {                                                                                           \
        if ((s = (expr))) return s;                                                                \
    } while (0)

    if (c->kind == VIT_DINOV2 || c->kind == VIT_DINOV2_REG) {
        int64_t s3[3] = {1, 1, D};
        TRY(get(L, "embeddings.patch_embeddings.projection.weight", 4, pshape, &w->patch_w));
        TRY(get1(L, "embeddings.patch_embeddings.projection.bias", D, &w->patch_b));
        TRY(get(L, "embeddings.cls_token", 3, s3, &w->cls));
        s3[1] = npos;
        TRY(get(L, "embeddings.position_embeddings", 3, s3, &w->pos));
        if (c->registers) {
            s3[1] = c->registers;
            TRY(get(L, "embeddings.register_tokens", 3, s3, &w->reg));
        }
        if (has(L, "embeddings.mask_token")) L->params += (int64_t)D; /* part of the model, unused */
        for (int i = 0; i < c->layers; i++) {
            vit_block *b = &w->blocks[i];
#define NAME(fmt) (snprintf(n, sizeof n, "encoder.layer.%d." fmt, i), n)
            TRY(get1(L, NAME("norm1.weight"), D, &b->ln1_w));
            TRY(get1(L, NAME("norm1.bias"), D, &b->ln1_b));
            if (has(L, NAME("attention.attention.query.weight"))) {
                TRY(fuse_qkv(L, "encoder.layer.%d.attention.attention.%s.weight",
                             "encoder.layer.%d.attention.attention.%s.bias", i, D, b));
                TRY(get2(L, NAME("attention.output.dense.weight"), D, D, &b->out_w));
                TRY(get1(L, NAME("attention.output.dense.bias"), D, &b->out_b));
            } else { /* transformers >= 5 in-memory names */
                TRY(fuse_qkv(L, "encoder.layer.%d.attention.%s.weight",
                             "encoder.layer.%d.attention.%s.bias", i, D, b));
                TRY(get2(L, NAME("attention.o_proj.weight"), D, D, &b->out_w));
                TRY(get1(L, NAME("attention.o_proj.bias"), D, &b->out_b));
            }
            if (c->layerscale) {
                TRY(get1(L, NAME("layer_scale1.lambda1"), D, &b->ls1));
                TRY(get1(L, NAME("layer_scale2.lambda1"), D, &b->ls2));
            }
            TRY(get1(L, NAME("norm2.weight"), D, &b->ln2_w));
            TRY(get1(L, NAME("norm2.bias"), D, &b->ln2_b));
            TRY(get2(L, NAME("mlp.fc1.weight"), M, D, &b->fc1_w));
            TRY(get1(L, NAME("mlp.fc1.bias"), M, &b->fc1_b));
            TRY(get2(L, NAME("mlp.fc2.weight"), D, M, &b->fc2_w));
            TRY(get1(L, NAME("mlp.fc2.bias"), D, &b->fc2_b));
#undef NAME
        }
        TRY(get1(L, "layernorm.weight", D, &w->norm_w));
        TRY(get1(L, "layernorm.bias", D, &w->norm_b));
    } else if (c->kind == VIT_CLIP) {
        TRY(get(L, "embeddings.patch_embedding.weight", 4, pshape, &w->patch_w));
        TRY(get1(L, "embeddings.class_embedding", D, &w->cls));
        TRY(get2(L, "embeddings.position_embedding.weight", npos, D, &w->pos));
        TRY(get1(L, "pre_layrnorm.weight", D, &w->pre_w));
        TRY(get1(L, "pre_layrnorm.bias", D, &w->pre_b));
        for (int i = 0; i < c->layers; i++) {
            vit_block *b = &w->blocks[i];
#define NAME(fmt) (snprintf(n, sizeof n, "encoder.layers.%d." fmt, i), n)
            TRY(get1(L, NAME("layer_norm1.weight"), D, &b->ln1_w));
            TRY(get1(L, NAME("layer_norm1.bias"), D, &b->ln1_b));
            TRY(fuse_qkv(L, "encoder.layers.%d.self_attn.%s.weight", "encoder.layers.%d.self_attn.%s.bias",
                         i, D, b));
            TRY(get2(L, NAME("self_attn.out_proj.weight"), D, D, &b->out_w));
            TRY(get1(L, NAME("self_attn.out_proj.bias"), D, &b->out_b));
            TRY(get1(L, NAME("layer_norm2.weight"), D, &b->ln2_w));
            TRY(get1(L, NAME("layer_norm2.bias"), D, &b->ln2_b));
            TRY(get2(L, NAME("mlp.fc1.weight"), M, D, &b->fc1_w));
            TRY(get1(L, NAME("mlp.fc1.bias"), M, &b->fc1_b));
            TRY(get2(L, NAME("mlp.fc2.weight"), D, M, &b->fc2_w));
            TRY(get1(L, NAME("mlp.fc2.bias"), D, &b->fc2_b));
#undef NAME
        }
        /* post_layernorm is part of the tower (counted) but not applied to patch tokens */
        const float *unused;
        TRY(get1(L, "post_layernorm.weight", D, &unused));
        TRY(get1(L, "post_layernorm.bias", D, &unused));
    } else {
        TRY(get(L, "conv1.weight", 4, pshape, &w->patch_w));
        TRY(get1(L, "class_embedding", D, &w->cls));
        TRY(get2(L, "positional_embedding", npos, D, &w->pos));
        if (c->pre_norm) {
            TRY(get1(L, "ln_pre.weight", D, &w->pre_w));
            TRY(get1(L, "ln_pre.bias", D, &w->pre_b));
        }
        for (int i = 0; i < c->layers; i++) {
            vit_block *b = &w->blocks[i];
#define NAME(fmt) (snprintf(n, sizeof n, "transformer.resblocks.%d." fmt, i), n)
            TRY(get1(L, NAME("ln_1.weight"), D, &b->ln1_w));
            TRY(get1(L, NAME("ln_1.bias"), D, &b->ln1_b));
            TRY(get2(L, NAME("attn.in_proj_weight"), 3 * (int64_t)D, D, &b->qkv_w));
            TRY(get1(L, NAME("attn.in_proj_bias"), 3 * (int64_t)D, &b->qkv_b));
            TRY(get2(L, NAME("attn.out_proj.weight"), D, D, &b->out_w));
            TRY(get1(L, NAME("attn.out_proj.bias"), D, &b->out_b));
            if (c->layerscale) {
                TRY(get1(L, NAME("ls_1.gamma"), D, &b->ls1));
                TRY(get1(L, NAME("ls_2.gamma"), D, &b->ls2));
            }
            TRY(get1(L, NAME("ln_2.weight"), D, &b->ln2_w));
            TRY(get1(L, NAME("ln_2.bias"), D, &b->ln2_b));
            TRY(get2(L, NAME("mlp.c_fc.weight"), M, D, &b->fc1_w));
            TRY(get1(L, NAME("mlp.c_fc.bias"), M, &b->fc1_b));
            TRY(get2(L, NAME("mlp.c_proj.weight"), D, M, &b->fc2_w));
            TRY(get1(L, NAME("mlp.c_proj.bias"), D, &b->fc2_b));
#undef NAME
        }
        TRY(get1(L, "ln_post.weight", D, &w->norm_w));
        TRY(get1(L, "ln_post.bias", D, &w->norm_b));
        if (has(L, "proj")) L->params += st_find(L->st, "visual.proj")->numel; /* counted, unused */
    }
#undef TRY
    return PE_OK;
}

static void fill_info(vit_model *m, const cJSON *config)
{
    const vit_config *c = &m->cfg;
    pe_model_info *info = &m->base.info;
    const char *word = size_word(c->dim);
    char sz[32];
    if (word) snprintf(sz, sizeof sz, "%s", word);
    else snprintf(sz, sizeof sz, "d%d", c->dim);
    switch (c->kind) {
    case VIT_DINOV2:
        info->family = "dinov2";
        snprintf(m->name, sizeof m->name, "dinov2-%s", sz);
        break;
    case VIT_DINOV2_REG:
        info->family = "dinov2_reg";
        snprintf(m->name, sizeof m->name, "dinov2-with-registers-%s", sz);
        break;
    case VIT_CLIP:
        info->family = "clip";
        snprintf(m->name, sizeof m->name, "clip-vit-%s-patch%d", sz, c->patch);
        break;
    case VIT_OPENCLIP:
        info->family = "openclip";
        if (c->dim == 896 && c->patch == 16 && c->layers == 12)
            snprintf(m->name, sizeof m->name, "openclip-vit-b-16-plus-%d", c->pos_grid * c->patch);
        else
            snprintf(m->name, sizeof m->name, "openclip-vit-w%d-p%d-%d", c->dim, c->patch,
                     c->pos_grid * c->patch);
        break;
    }
    info->name = m->name;
    info->is_vit = 1;
    info->has_attention = 1;
    info->patch_size = c->patch;
    info->feature_dim = c->dim;
    info->num_layers = c->layers;
    info->hidden_dim = c->dim;
    info->default_size = 448;
    static const float imagenet_mean[3] = {0.485f, 0.456f, 0.406f}, imagenet_std[3] = {0.229f, 0.224f, 0.225f};
    static const float clip_mean[3] = {0.48145466f, 0.4578275f, 0.40821073f},
                       clip_std[3] = {0.26862954f, 0.26130258f, 0.27577711f};
    int dino = c->kind == VIT_DINOV2 || c->kind == VIT_DINOV2_REG;
    for (int i = 0; i < 3; i++) {
        info->mean[i] = dino ? imagenet_mean[i] : clip_mean[i];
        info->std[i] = dino ? imagenet_std[i] : clip_std[i];
    }
    /* OpenCLIP configs may carry their own normalisation */
    const cJSON *oc = config ? cJSON_GetObjectItemCaseSensitive(config, "open_clip_config") : NULL;
    const cJSON *pp = oc ? cJSON_GetObjectItemCaseSensitive(oc, "preprocess_cfg") : NULL;
    const cJSON *mean = pp ? cJSON_GetObjectItemCaseSensitive(pp, "mean") : NULL;
    const cJSON *std = pp ? cJSON_GetObjectItemCaseSensitive(pp, "std") : NULL;
    if (c->kind == VIT_OPENCLIP && cJSON_GetArraySize(mean) == 3 && cJSON_GetArraySize(std) == 3)
        for (int i = 0; i < 3; i++) {
            info->mean[i] = (float)cJSON_GetArrayItem(mean, i)->valuedouble;
            info->std[i] = (float)cJSON_GetArrayItem(std, i)->valuedouble;
        }
}

pe_status vit_load(const st_file *weights, const cJSON *config, const char *path, backbone **out)
{
    *out = NULL;
    char prefix[128];
    int ok;
    vit_kind kind = detect_kind(weights, config, prefix, sizeof prefix, &ok);
    if (!ok) return pe_fail(PE_ERR_UNSUPPORTED, "%s: not ViT weights (DINOv2, CLIP or OpenCLIP)", path);
    vit_model *m = calloc(1, sizeof *m);
    if (!m) return pe_fail(PE_ERR_NOMEM, "%s: out of memory", path);
    m->base.forward = vit_forward;
    m->base.destroy = vit_destroy;
    snprintf(m->path, sizeof m->path, "%s", path);
    loader L = {weights, path, m, prefix, 0};
    pe_status s = read_config(&L, kind, config, &m->cfg);
    if (!s) s = load_weights(&L);
    if (s) {
        vit_destroy(&m->base);
        return s;
    }
    fill_info(m, config);
    m->base.info.num_params = L.params;
    *out = &m->base;
    return PE_OK;
}

static void free_scratch(vit_scratch *s)
{
    free(s->x);
    free(s->xn);
    free(s->qkv);
    free(s->ctx);
    free(s->hidden);
    free(s->capture);
    free(s->pos);
    memset(s, 0, sizeof *s);
}

static void vit_destroy(backbone *self)
{
    vit_model *m = (vit_model *)self;
    if (!m) return;
    for (int i = 0; i < m->n_owned; i++) free(m->owned[i]);
    free(m->owned);
    free(m->w.blocks);
    free_scratch(&m->s);
    free(m);
}

/* ------------------------------------------------------------------ forward */

static pe_status ensure_scratch(vit_model *m, int tokens, int patches)
{
    vit_scratch *s = &m->s;
    if (tokens <= s->tokens) return PE_OK;
    const size_t T = (size_t)tokens, D = (size_t)m->cfg.dim, M = (size_t)m->cfg.mlp_dim;
    const size_t kk = (size_t)3 * m->cfg.patch * m->cfg.patch;
    int pos_h = s->pos_h, pos_w = s->pos_w;
    float *pos = s->pos;
    s->pos = NULL;
    free_scratch(s);
    s->pos = pos;
    s->pos_h = pos_h;
    s->pos_w = pos_w;
    size_t hidden = PE_MAX(T * M, (size_t)patches * kk);
    s->x = pe_alloc(T * D, sizeof(float), "ViT activations");
    s->xn = pe_alloc(T * D, sizeof(float), "ViT activations");
    s->qkv = pe_alloc(T * 3 * D, sizeof(float), "ViT qkv");
    s->ctx = pe_alloc(T * D, sizeof(float), "ViT attention output");
    s->hidden = pe_alloc(hidden, sizeof(float), "ViT MLP hidden");
    s->capture = pe_alloc(T * D, sizeof(float), "ViT layer output");
    if (!s->x || !s->xn || !s->qkv || !s->ctx || !s->hidden || !s->capture) {
        free_scratch(s);
        return PE_ERR_NOMEM;
    }
    s->tokens = tokens;
    return PE_OK;
}

/* Position embeddings for a gh x gw grid: (1 + gh*gw, D), cached per grid. */
static pe_status position_embeddings(vit_model *m, int gh, int gw, int height, int width,
                                     const float **out)
{
    const vit_config *c = &m->cfg;
    const int D = c->dim, g0 = c->pos_grid;
    /* identical grid, or the reference's own "no resize" rule: use the table as stored */
    int same = gh == g0 && gw == g0;
    if (c->pos_skip_same_count) same |= gh * gw == g0 * g0;
    else same |= gh * gw == g0 * g0 && height == width;
    if (same) {
        *out = m->w.pos;
        return PE_OK;
    }
    vit_scratch *s = &m->s;
    if (s->pos && s->pos_h == gh && s->pos_w == gw) {
        *out = s->pos;
        return PE_OK;
    }
    free(s->pos);
    s->pos_h = s->pos_w = 0;
    s->pos = pe_alloc((size_t)(1 + gh * gw) * D, sizeof(float), "position embeddings");
    if (!s->pos) return PE_ERR_NOMEM;
    memcpy(s->pos, m->w.pos, (size_t)D * sizeof(float)); /* CLS entry unchanged */
    if (op_resize_bicubic(s->pos + D, m->w.pos + D, D, g0, g0, gh, gw, c->pos_antialias)) {
        free(s->pos);
        s->pos = NULL;
        return pe_fail(PE_ERR_NOMEM, "position embeddings: cannot resize %dx%d -> %dx%d", g0, g0, gh,
                       gw);
    }
    s->pos_h = gh;
    s->pos_w = gw;
    *out = s->pos;
    return PE_OK;
}

/* x (T, D) += scale (D or NULL) * (y (T, D) + bias (D)) */
static void residual_add(float *x, const float *y, const float *bias, const float *scale, int T, int D)
{
    for (int t = 0; t < T; t++) {
        float *xr = x + (size_t)t * D;
        const float *yr = y + (size_t)t * D;
        if (scale) {
#pragma omp simd
            for (int i = 0; i < D; i++) xr[i] += scale[i] * (yr[i] + bias[i]);
        } else {
#pragma omp simd
            for (int i = 0; i < D; i++) xr[i] += yr[i] + bias[i];
        }
    }
}

/* x (T, D) += scale * (in (T, K) . W^T + bias), W (D, K). Without LayerScale the GEMM
 * accumulates straight into x (beta = 1, bias fused); with it, through tmp (T, D). */
static void project_residual(float *x, const float *in, const float *w, const float *bias,
                             const float *scale, float *tmp, int T, int K, int D)
{
    if (scale) {
        op_linear(tmp, in, w, NULL, T, K, D);
        residual_add(x, tmp, bias, scale, T, D);
    } else {
        op_linear_acc(x, in, w, bias, T, K, D);
    }
}

/* One transformer block on s->x (T, D). If cls_attn != NULL, the CLS row of the
 * attention over the G patch keys (after `first_patch` tokens), mean over heads.
 * Returns 0, or -1 if the attention could not run (out of memory / engine failure). */
static int block_forward(vit_model *m, const vit_block *b, int T, int first_patch, float *cls_attn)
{
    const vit_config *c = &m->cfg;
    vit_scratch *s = &m->s;
    const int D = c->dim, H = c->heads, dh = D / H, M = c->mlp_dim;
    const float scale = 1.0f / sqrtf((float)dh);

    /* attention: qkv (T, 3D) = ln1(x) . Wqkv^T + b; ctx (T, D) by blocked attention
     * (attention.c: only a tile of each head's (T, T) scores at a time) */
    op_layernorm(s->xn, s->x, b->ln1_w, b->ln1_b, T, D, c->eps);
    op_linear(s->qkv, s->xn, b->qkv_w, b->qkv_b, T, D, 3 * D);
    if (op_attention(s->ctx, s->qkv, T, D, H, scale, cls_attn, first_patch)) return -1;
    project_residual(s->x, s->ctx, b->out_w, b->out_b, b->ls1, s->xn, T, D, D);

    /* MLP: x += ls2 * (act(ln2(x) . W1^T + b1) . W2^T + b2) */
    op_layernorm(s->xn, s->x, b->ln2_w, b->ln2_b, T, D, c->eps);
    op_linear(s->hidden, s->xn, b->fc1_w, b->fc1_b, T, D, M);
    if (c->act == ACT_GELU) op_gelu(s->hidden, (size_t)T * M);
    else op_quick_gelu(s->hidden, (size_t)T * M);
    project_residual(s->x, s->hidden, b->fc2_w, b->fc2_b, b->ls2, s->xn, T, M, D);
    return 0;
}

static pe_status vit_forward_serial_rows(backbone *self, const float *chw, int height, int width,
                                         int layer, float **features, int *grid_h, int *grid_w,
                                         int *dim, float **attn)
{
    vit_model *m = (vit_model *)self;
    const vit_config *c = &m->cfg;
    const int D = c->dim, p = c->patch, R = c->registers;
    *features = NULL;
    if (attn) *attn = NULL;
    if (layer < 0 || layer > c->layers)
        return pe_fail(PE_ERR_ARG, "%s: layer %d is outside 0..%d for %s", m->path, layer, c->layers,
                       m->name);
    if (height % p || width % p || height <= 0 || width <= 0)
        return pe_fail(PE_ERR_SHAPE, "%s: input %dx%d is not a multiple of the patch size %d", m->path,
                       width, height, p);
    const int gh = height / p, gw = width / p, G = gh * gw;
    if ((int64_t)G + 1 + R > 65536)
        return pe_fail(PE_ERR_LIMIT, "%s: input %dx%d gives %d patches (max 65535)", m->path, width,
                       height, G);
    const int T = 1 + R + G, first_patch = 1 + R;
    pe_status st = ensure_scratch(m, T, G);
    if (st) return st;
    const float *pos = NULL;
    st = position_embeddings(m, gh, gw, height, width, &pos);
    if (st) return st;
    vit_scratch *s = &m->s;

    /* patch embedding: im2col (G, 3*p*p) in the conv weight's (c, ky, kx) order, one GEMM */
    const int kk = 3 * p * p;
    float *cols = s->hidden;
    for (int g = 0; g < G; g++) {
        const int py = g / gw, px = g % gw;
        float *dst = cols + (size_t)g * kk;
        for (int ch = 0; ch < 3; ch++)
            for (int ky = 0; ky < p; ky++)
                memcpy(dst + (ch * p + ky) * p,
                       chw + ((size_t)ch * height + (size_t)py * p + ky) * width + (size_t)px * p,
                       (size_t)p * sizeof(float));
    }
    op_linear(s->x + (size_t)first_patch * D, cols, m->w.patch_w, m->w.patch_b, G, kk, D);
    /* tokens: [CLS + pos0, registers, patches + pos[1:]] */
    for (int i = 0; i < D; i++) s->x[i] = m->w.cls[i] + pos[i];
    if (R) memcpy(s->x + D, m->w.reg, (size_t)R * D * sizeof(float));
    for (int g = 0; g < G; g++) {
        float *xr = s->x + (size_t)(first_patch + g) * D;
        const float *pr = pos + (size_t)(1 + g) * D;
#pragma omp simd
        for (int i = 0; i < D; i++) xr[i] += pr[i];
    }
    if (c->pre_norm) op_layernorm(s->x, s->x, m->w.pre_w, m->w.pre_b, T, D, c->eps);

    float *cls_attn = NULL;
    if (attn) {
        cls_attn = pe_alloc((size_t)G, sizeof(float), "CLS attention");
        if (!cls_attn) return PE_ERR_NOMEM;
    }
    const int want = layer ? layer : c->layers;
    const int run = attn ? c->layers : want; /* attention needs the last block */
    for (int l = 0; l < run; l++) {
        if (block_forward(m, &m->w.blocks[l], T, first_patch, l == c->layers - 1 ? cls_attn : NULL)) {
            free(cls_attn);
            return pe_fail(PE_ERR_NOMEM, "%s: attention of block %d failed (out of memory)", m->path,
                           l + 1);
        }
        if (l == want - 1 && want != run)
            memcpy(s->capture, s->x, (size_t)T * D * sizeof(float));
    }
    const float *src = want == run ? s->x : s->capture;

    float *feat = pe_alloc((size_t)G * D, sizeof(float), "patch features");
    if (!feat) {
        free(cls_attn);
        return PE_ERR_NOMEM;
    }
    const float *patch_rows = src + (size_t)first_patch * D;
    if (c->final_norm) op_layernorm(feat, patch_rows, m->w.norm_w, m->w.norm_b, G, D, c->eps);
    else memcpy(feat, patch_rows, (size_t)G * D * sizeof(float));
    *features = feat;
    *grid_h = gh;
    *grid_w = gw;
    *dim = D;
    if (attn) *attn = cls_attn;
    return PE_OK;
}

/* Threads: every GEMM is one multi-threaded OpenBLAS call; the row ops between them
 * (layernorm, softmax, GELU, residuals: ~10% of the time) run on this thread, see
 * op_set_row_parallel for why. */
static pe_status vit_forward(backbone *self, const float *chw, int height, int width, int layer,
                             float **features, int *grid_h, int *grid_w, int *dim, float **attn)
{
    int previous = op_set_row_parallel(0);
    pe_status s = vit_forward_serial_rows(self, chw, height, width, layer, features, grid_h, grid_w,
                                          dim, attn);
    op_set_row_parallel(previous);
    return s;
}
