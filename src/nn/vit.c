/* vit.c — one Vision Transformer forward pass, driven by a config, for four weight
 * layouts: DINOv2 and DINOv2-with-registers (transformers hub layout), CLIP's
 * vision tower (transformers CLIPModel / CLIPVisionModel) and OpenCLIP's `visual`
 * tower (open_clip state dict, e.g. ViT-B-16-plus-240) -- and, through block options
 * (RoPE, gated MLP, MLP norm, relative position bias, no CLS token; section "generic
 * layouts" below, docs/VIT_FAMILIES.md), DINOv3, EVA-02, Perception Encoder spatial,
 * MAE, BEiT, SigLIP and SigLIP 2 NaFlex.
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
#include "compute/amx.h"
#include "compute/engine.h"
#include "ops.h"
#include "posenc.h"

#include <math.h>
#include <string.h>

typedef enum {
    VIT_DINOV2, VIT_DINOV2_REG, VIT_CLIP, VIT_OPENCLIP,
    /* block-options families (see "generic layouts" below) */
    VIT_DINOV3, VIT_TIMM_EVA, VIT_MAE, VIT_BEIT, VIT_SIGLIP, VIT_SIGLIP2
} vit_kind;
typedef enum { ACT_GELU, ACT_QUICK_GELU, ACT_SILU, ACT_GELU_TANH } vit_act;

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
    /* options of the newer families (all 0 for the four above): */
    int no_cls;        /* no CLS token (SigLIP): tokens = patches only */
    int no_pos;        /* no absolute position table (RoPE / relative-bias models) */
    int pos_no_cls;    /* the table has no CLS entry (SigLIP): (pos_grid^2, D) */
    int pos_bilinear;  /* resize the table bilinearly (SigLIP 2 NaFlex) instead of bicubic */
    int pos_timm_rule; /* timm resample_abs_pos_embed: skip only when the grid is identical */
    int glu;           /* gated MLP: down(act(gate(x)) * up(x)) (SwiGLU) */
    int mlp_norm;      /* LayerNorm on the (T, M) MLP hidden before fc2 (EVA-02 scale_mlp) */
    int relpos;        /* BEiT relative position bias, table for a relpos_grid^2 grid */
    int relpos_grid;
    int patch_hwc;     /* patch weight is a Linear over (ky, kx, c) pixels (SigLIP 2 NaFlex) */
    int pool_head;     /* SigLIP attention-pooling head: its probe attention is the mask attention */
    rope_config rope;  /* rope.grid != ROPE_NONE: RoPE on q/k of the patch tokens */
} vit_config;

typedef struct {
    const float *ln1_w, *ln1_b;
    const float *qkv_w, *qkv_b; /* (3D, D), (3D): query rows, then key, then value */
    const float *part_w[3];     /* qkv_w NULL: the q, k, v weights (D, D) each, as stored */
    const float *out_w, *out_b; /* (D, D), (D) */
    const float *ls1, *ls2;     /* (D) or NULL */
    const float *ln2_w, *ln2_b;
    const float *fc1_w, *fc1_b; /* (M, D), (M) */
    const float *fc2_w, *fc2_b; /* (D, M), (D) */
    const float *gate_w, *gate_b; /* glu: (M, D), (M); fc1 is then the "up" projection */
    const float *mlpn_w, *mlpn_b; /* mlp_norm: (M) */
    const float *rel_table;       /* relpos: ((2g-1)^2 + 3, H) */
} vit_block;

typedef struct {
    const float *patch_w, *patch_b; /* (D, 3*p*p) (conv weight flattened), (D) or NULL */
    const float *cls;               /* (D) */
    const float *reg;               /* (R, D) or NULL */
    const float *pos;               /* (1 + pos_grid^2, D) */
    const float *pre_w, *pre_b;     /* (D) */
    const float *norm_w, *norm_b;   /* final norm (D) */
    vit_block *blocks;              /* (layers) */
    const float *probe;             /* pool_head: (D) probe query */
    const float *head_q_w, *head_q_b, *head_k_w, *head_k_b; /* pool_head: (D, D), (D) each */
} vit_weights;

/* Scratch owned by the model, sized for the largest input seen so far. The attention
 * and the MLP of a block never run at once, so qkv and ctx live inside the MLP's hidden
 * buffer (one allocation: the peak memory of a 448-px ViT-S is 6 MB lower). */
typedef struct {
    int tokens;         /* T capacity */
    float *x;           /* (T, D) residual stream */
    float *xn;          /* (T, D) normalised input of a sub-block / patch pixels */
    float *qkv;         /* (T, 3D), in hidden: the attention's input */
    float *ctx;         /* (T, D), in hidden after qkv: attention output before out-proj */
    float *hidden;      /* (T, max(M, 4D)) MLP hidden; also (G, 3*p*p) im2col; owns qkv, ctx */
    float *capture;     /* (T, D) block L output for an intermediate layer; allocated on
                           first need (only a forward that runs past the layer it returns) */
    int pos_h, pos_w;   /* grid of the cached resized position embeddings */
    float *pos;         /* (1 + pos_h*pos_w, D) */
    float *gate;        /* glu: (T, M) gate branch */
    float *scores;      /* relative-bias attention (T, T) / pooling-head row (T), else NULL */
} vit_scratch;

/* Per-grid position data of the RoPE / relative-bias families, rebuilt when the grid changes. */
typedef struct {
    int rope_h, rope_w;         /* grid of the RoPE tables */
    float *rope_cos, *rope_sin; /* (G, dh/2) */
    int rel_h, rel_w;           /* grid of the relative position bias */
    float *rel_tables;          /* (layers, n, H) resized tables, n = (2*rel_h-1)*(2*rel_w-1) + 3 */
    int *rel_index;             /* (T, T) row of the table for each (query, key) pair */
} vit_grid_cache;

typedef struct {
    backbone base;
    vit_config cfg;
    vit_weights w;
    vit_scratch s;
    vit_grid_cache gc;
    void **owned;       /* float32 copies / fused tensors to free */
    int n_owned, cap_owned;
    char name[64];
    char path[512]; /* weights file, for error messages */
    int int8_hinted; /* the INT8 smoothing hints were given to the engine (int8_hints) */
    /* bf16 on AMX (amx_block_ready): each block's linears packed once for amx_linear */
    struct vit_amx {
        uint16_t *qkv, *out, *fc1, *fc2;
    } *amx;
    int amx_state; /* 0 not tried yet, 1 packed, -1 this model / CPU does not take the path */
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

/* Separate q, k, v (each (D, D) + (D)): the weights are used where they are stored (three
 * GEMMs into the (T, 3D) qkv rows; measured within 6 % of one fused GEMM in fp32 and the
 * same in bf16, while a fused copy would hold the 3 D^2 weights twice in memory, +21 MB
 * for ViT-S, +85 MB for ViT-B); the three biases are copied into one (3D) vector. */
static pe_status load_qkv(loader *L, const char *fmt_w, const char *fmt_b, int layer, int D,
                          vit_block *b)
{
    static const char *parts[3][2] = {{"query", "q_proj"}, {"key", "k_proj"}, {"value", "v_proj"}};
    float *bias = pe_alloc((size_t)3 * D, sizeof(float), "qkv bias");
    if (!bias || keep(L->m, bias)) {
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
        pe_status s = get2(L, name, D, D, &b->part_w[i]);
        if (s) return s;
        snprintf(name, sizeof name, fmt_b, layer, parts[i][alt]);
        s = get1(L, name, D, &src);
        if (s) return s;
        memcpy(bias + (size_t)i * D, src, (size_t)D * sizeof(float));
    }
    b->qkv_w = NULL;
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

static int detect_generic(const st_file *st, const cJSON *config, char *prefix, size_t cap,
                          vit_kind *kind);

static vit_kind detect_kind(const st_file *st, const cJSON *config, char *prefix, size_t cap, int *ok)
{
    *ok = 1;
    char p[128];
    vit_kind generic;
    if (detect_generic(st, config, prefix, cap, &generic)) return generic;
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
                TRY(load_qkv(L, "encoder.layer.%d.attention.attention.%s.weight",
                             "encoder.layer.%d.attention.attention.%s.bias", i, D, b));
                TRY(get2(L, NAME("attention.output.dense.weight"), D, D, &b->out_w));
                TRY(get1(L, NAME("attention.output.dense.bias"), D, &b->out_b));
            } else { /* transformers >= 5 in-memory names */
                TRY(load_qkv(L, "encoder.layer.%d.attention.%s.weight",
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
            TRY(load_qkv(L, "encoder.layers.%d.self_attn.%s.weight", "encoder.layers.%d.self_attn.%s.bias",
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

/* ------------------------------------------------------------------ generic layouts
 * DINOv3 (transformers), timm's EVA layout (EVA-02, Perception Encoder spatial), MAE,
 * BEiT, SigLIP and SigLIP 2 NaFlex (transformers): the same pre-norm block as above
 * with options (RoPE, gated MLP, MLP norm, relative position bias, no CLS token),
 * loaded through one name table per layout. Reference rules per family: see
 * docs/BACKBONES.md ("Newer ViT families"). */

typedef struct {
    const char *blocks;          /* block prefix, "%d" = layer: "layer.%d." */
    const char *ln1, *ln2;       /* LayerNorms (".weight" / ".bias" appended) */
    const char *q, *k, *v;       /* separate projections (".weight", optional ".bias"), or */
    const char *qkv;             /* one fused (3D, D) projection, optional ".bias" */
    const char *q_bias, *v_bias; /* timm EVA fused qkv: separate q / v biases (no k bias) */
    const char *out;
    const char *up, *down;       /* MLP fc1 / fc2 */
    const char *gate;            /* gated MLP: separate gate projection (act(gate) * up) */
    int packed_glu;              /* gated MLP with up = fc1 rows [M, 2M), gate = rows [0, M) */
    const char *mlp_norm;        /* optional LayerNorm on the hidden */
    const char *ls1, *ls2;       /* LayerScale vectors (full names in the block), optional */
    const char *rel;             /* per-block relative position bias table, optional */
} block_names;

static const char *bname(char *buf, size_t cap, const block_names *bn, int i, const char *part,
                         const char *suffix)
{
    char blk[96];
    snprintf(blk, sizeof blk, bn->blocks, i);
    snprintf(buf, cap, "%s%s%s", blk, part, suffix);
    return buf;
}

/* Like get1/get2 but absent is fine (*out = NULL). */
static pe_status opt_get(loader *L, const char *name, int ndim, int64_t a, int64_t b, const float **out)
{
    *out = NULL;
    if (!has(L, name)) return PE_OK;
    int64_t shape[2] = {a, b};
    return get(L, name, ndim, shape, out);
}

/* Copy `src` (n floats) into an owned buffer at dst, or zeros when src is NULL. */
static float *owned_buf(loader *L, size_t n)
{
    float *p = pe_calloc(n, sizeof(float), "fused weights");
    if (p && keep(L->m, p)) {
        free(p);
        p = NULL;
    }
    return p;
}

static pe_status load_generic_block(loader *L, const block_names *bn, int i, vit_block *b)
{
    const vit_config *c = &L->m->cfg;
    const int64_t D = c->dim, M = c->mlp_dim;
    char n[256];
    pe_status s;
#define TRY(expr)                                                                                  \
    do {                                                                                           \
        if ((s = (expr))) return s;                                                                \
    } while (0)
    TRY(get1(L, bname(n, sizeof n, bn, i, bn->ln1, ".weight"), D, &b->ln1_w));
    TRY(get1(L, bname(n, sizeof n, bn, i, bn->ln1, ".bias"), D, &b->ln1_b));
    TRY(get1(L, bname(n, sizeof n, bn, i, bn->ln2, ".weight"), D, &b->ln2_w));
    TRY(get1(L, bname(n, sizeof n, bn, i, bn->ln2, ".bias"), D, &b->ln2_b));
    if (bn->qkv && has(L, bname(n, sizeof n, bn, i, bn->qkv, ".weight"))) {
        TRY(get2(L, n, 3 * D, D, &b->qkv_w));
        TRY(opt_get(L, bname(n, sizeof n, bn, i, bn->qkv, ".bias"), 1, 3 * D, 0, &b->qkv_b));
        const float *qb = NULL, *vb = NULL;
        if (bn->q_bias) TRY(opt_get(L, bname(n, sizeof n, bn, i, bn->q_bias, ""), 1, D, 0, &qb));
        if (bn->v_bias) TRY(opt_get(L, bname(n, sizeof n, bn, i, bn->v_bias, ""), 1, D, 0, &vb));
        if (qb || vb) { /* timm EVA: bias = cat(q_bias, zeros, v_bias) */
            float *bias = owned_buf(L, (size_t)3 * D);
            if (!bias) return pe_fail(PE_ERR_NOMEM, "%s: out of memory", L->path);
            if (qb) memcpy(bias, qb, (size_t)D * sizeof *bias);
            if (vb) memcpy(bias + 2 * D, vb, (size_t)D * sizeof *bias);
            b->qkv_b = bias;
        }
    } else { /* q, k, v separate: fuse into (3D, D) + (3D), zero bias where a part has none */
        const char *parts[3] = {bn->q, bn->k, bn->v};
        float *w = owned_buf(L, (size_t)3 * D * D), *bias = owned_buf(L, (size_t)3 * D);
        if (!w || !bias) return pe_fail(PE_ERR_NOMEM, "%s: out of memory", L->path);
        for (int j = 0; j < 3; j++) {
            const float *src;
            TRY(get2(L, bname(n, sizeof n, bn, i, parts[j], ".weight"), D, D, &src));
            memcpy(w + (size_t)j * D * D, src, (size_t)D * D * sizeof *w);
            TRY(opt_get(L, bname(n, sizeof n, bn, i, parts[j], ".bias"), 1, D, 0, &src));
            if (src) memcpy(bias + (size_t)j * D, src, (size_t)D * sizeof *bias);
        }
        b->qkv_w = w;
        b->qkv_b = bias;
    }
    TRY(get2(L, bname(n, sizeof n, bn, i, bn->out, ".weight"), D, D, &b->out_w));
    TRY(opt_get(L, bname(n, sizeof n, bn, i, bn->out, ".bias"), 1, D, 0, &b->out_b));
    if (c->glu && bn->packed_glu) { /* timm GluMlp: fc1 (2M, D) = [gate; up] */
        const float *fc1, *fc1b;
        TRY(get2(L, bname(n, sizeof n, bn, i, bn->up, ".weight"), 2 * M, D, &fc1));
        TRY(opt_get(L, bname(n, sizeof n, bn, i, bn->up, ".bias"), 1, 2 * M, 0, &fc1b));
        b->gate_w = fc1;
        b->fc1_w = fc1 + (size_t)M * D;
        b->gate_b = fc1b;
        b->fc1_b = fc1b ? fc1b + M : NULL;
    } else {
        TRY(get2(L, bname(n, sizeof n, bn, i, bn->up, ".weight"), M, D, &b->fc1_w));
        TRY(opt_get(L, bname(n, sizeof n, bn, i, bn->up, ".bias"), 1, M, 0, &b->fc1_b));
        if (c->glu) {
            TRY(get2(L, bname(n, sizeof n, bn, i, bn->gate, ".weight"), M, D, &b->gate_w));
            TRY(opt_get(L, bname(n, sizeof n, bn, i, bn->gate, ".bias"), 1, M, 0, &b->gate_b));
        }
    }
    if (c->mlp_norm) {
        TRY(get1(L, bname(n, sizeof n, bn, i, bn->mlp_norm, ".weight"), M, &b->mlpn_w));
        TRY(get1(L, bname(n, sizeof n, bn, i, bn->mlp_norm, ".bias"), M, &b->mlpn_b));
    }
    TRY(get2(L, bname(n, sizeof n, bn, i, bn->down, ".weight"), D, M, &b->fc2_w));
    TRY(opt_get(L, bname(n, sizeof n, bn, i, bn->down, ".bias"), 1, D, 0, &b->fc2_b));
    /* residual_add / op_add_bias take a bias: give absent ones zeros */
    if (!b->out_b && !(b->out_b = owned_buf(L, (size_t)D))) return PE_ERR_NOMEM;
    if (!b->fc2_b && !(b->fc2_b = owned_buf(L, (size_t)D))) return PE_ERR_NOMEM;
    if (c->layerscale) {
        TRY(get1(L, bname(n, sizeof n, bn, i, bn->ls1, ""), D, &b->ls1));
        TRY(get1(L, bname(n, sizeof n, bn, i, bn->ls2, ""), D, &b->ls2));
    }
    if (c->relpos && bn->rel) {
        const int64_t nrel = (int64_t)(2 * c->relpos_grid - 1) * (2 * c->relpos_grid - 1) + 3;
        TRY(get2(L, bname(n, sizeof n, bn, i, bn->rel, ""), nrel, c->heads, &b->rel_table));
    }
#undef TRY
    return PE_OK;
}

/* Number of blocks: consecutive i with `<blocks % i><ln1>.weight` present. */
static int count_blocks(loader *L, const block_names *bn)
{
    char n[256];
    int k = 0;
    while (k < 1000 && has(L, bname(n, sizeof n, bn, k, bn->ln1, ".weight"))) k++;
    return k;
}

/* Shape of a tensor (prefix applied), or NULL. */
static const st_tensor *tensor(loader *L, const char *name)
{
    char full[256];
    snprintf(full, sizeof full, "%s%s", L->prefix, name);
    return st_find(L->st, full);
}

static const cJSON *json_obj(const cJSON *obj, const char *key)
{
    const cJSON *v = obj ? cJSON_GetObjectItemCaseSensitive(obj, key) : NULL;
    return cJSON_IsObject(v) ? v : NULL;
}

static const char *timm_arch(const cJSON *config)
{
    const cJSON *v = config ? cJSON_GetObjectItemCaseSensitive(config, "architecture") : NULL;
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* The layouts recognised here (before the four older ones: MAE / BEiT share DINOv2's
 * embedding names). prefix gets the tensor-name prefix. Returns 1 if one matched. */
static int detect_generic(const st_file *st, const cJSON *config, char *prefix, size_t cap,
                          vit_kind *kind)
{
    char p[128], name[256];
    /* timm layout (the architecture in config.json is checked by load_generic) */
    if (st_find(st, "patch_embed.proj.weight") && st_find(st, "blocks.0.norm1.weight")) {
        snprintf(prefix, cap, "%s", "");
        *kind = VIT_TIMM_EVA;
        return 1;
    }
    if (find_prefix(st, "embeddings.patch_embeddings.weight", p, sizeof p)) {
        snprintf(name, sizeof name, "%sembeddings.cls_token", p);
        if (st_find(st, name)) {
            snprintf(prefix, cap, "%s", p);
            *kind = VIT_DINOV3;
            return 1;
        }
    }
    if (find_prefix(st, "embeddings.patch_embeddings.projection.weight", p, sizeof p)) {
        snprintf(name, sizeof name, "%sencoder.layer.0.layernorm_before.weight", p);
        if (st_find(st, name)) {
            snprintf(prefix, cap, "%s", p);
            snprintf(name, sizeof name, "%sembeddings.position_embeddings", p);
            *kind = st_find(st, name) ? VIT_MAE : VIT_BEIT;
            const cJSON *mt = config ? cJSON_GetObjectItemCaseSensitive(config, "model_type") : NULL;
            if (cJSON_IsString(mt) && !strcmp(mt->valuestring, "beit")) *kind = VIT_BEIT;
            return 1;
        }
    }
    if (find_prefix(st, "embeddings.patch_embedding.weight", p, sizeof p)) {
        const st_tensor *t;
        snprintf(name, sizeof name, "%sembeddings.class_embedding", p);
        if (!st_find(st, name)) {
            snprintf(name, sizeof name, "%sembeddings.patch_embedding.weight", p);
            t = st_find(st, name);
            snprintf(prefix, cap, "%s", p);
            *kind = t && t->ndim == 2 ? VIT_SIGLIP2 : VIT_SIGLIP;
            return 1;
        }
    }
    return 0;
}

/* Config + weights of a generic-layout family. */
static pe_status load_generic(loader *L, vit_kind kind, const cJSON *config)
{
    vit_model *m = L->m;
    vit_config *c = &m->cfg;
    vit_weights *w = &m->w;
    const cJSON *cfg = config;
    if (json_obj(cfg, "vision_config")) cfg = json_obj(cfg, "vision_config"); /* SigLIP full model */
    const char *arch = timm_arch(config);
    block_names bn = {0};
    const char *patch = NULL, *patch_bias = NULL, *cls = NULL, *reg = NULL, *pos = NULL;
    const char *final = NULL, *pre = NULL, *act = NULL;
    char blocks[128];
    memset(c, 0, sizeof *c);
    c->kind = kind;
    c->eps = 1e-6f;
    c->act = ACT_GELU;

    switch (kind) {
    case VIT_DINOV3: /* transformers DINOv3ViTModel (layer.N or model.layer.N) */
        patch = "embeddings.patch_embeddings.weight";
        patch_bias = "embeddings.patch_embeddings.bias";
        cls = "embeddings.cls_token";
        reg = "embeddings.register_tokens";
        final = "norm";
        snprintf(blocks, sizeof blocks, "%s%%d.", tensor(L, "model.layer.0.norm1.weight") ? "model.layer." : "layer.");
        bn = (block_names){.blocks = blocks, .ln1 = "norm1", .ln2 = "norm2", .q = "attention.q_proj",
                           .k = "attention.k_proj", .v = "attention.v_proj", .out = "attention.o_proj",
                           .up = "mlp.up_proj", .down = "mlp.down_proj", .gate = "mlp.gate_proj",
                           .ls1 = "layer_scale1.lambda1", .ls2 = "layer_scale2.lambda1"};
        c->no_pos = 1;
        c->eps = (float)json_num(cfg, "layer_norm_eps", 1e-5);
        c->rope = (rope_config){.grid = ROPE_CENTERED, .half = 1, .theta = json_num(cfg, "rope_theta", 100.0),
                                .scale = 6.283185307179586};
        act = json_str(cfg, "hidden_act");
        break;
    case VIT_TIMM_EVA: { /* timm Eva: EVA-02 (eva02_*), Perception Encoder (vit_pe_spatial_*) */
        /* timm checkpoints do not say how positions are encoded: the hub config's
         * "architecture" names the model, and with it the RoPE rule */
        if (!arch)
            return pe_fail(PE_ERR_UNSUPPORTED,
                           "%s: timm weights need the hub's config.json beside them (its "
                           "\"architecture\" names the model)",
                           L->path);
        const int pe = !strncmp(arch, "vit_pe_spatial_", 15), dv3 = strstr(arch, "_dinov3") != NULL;
        if (strncmp(arch, "eva02_", 6) && !pe && !dv3)
            return pe_fail(PE_ERR_UNSUPPORTED,
                           "%s: timm architecture '%s' is not supported (eva02_*, vit_pe_spatial_*, "
                           "vit_*_dinov3)",
                           L->path, arch);
        patch = "patch_embed.proj.weight";
        patch_bias = "patch_embed.proj.bias";
        cls = "cls_token";
        reg = "reg_token";
        pos = "pos_embed";
        final = "norm";
        pre = "norm_pre";
        bn = (block_names){.blocks = "blocks.%d.", .ln1 = "norm1", .ln2 = "norm2", .q = "attn.q_proj",
                           .k = "attn.k_proj", .v = "attn.v_proj", .qkv = "attn.qkv",
                           .q_bias = "attn.q_bias", .v_bias = "attn.v_bias", .out = "attn.proj",
                           .up = "mlp.fc1", .down = "mlp.fc2", .mlp_norm = "mlp.norm",
                           .ls1 = "gamma_1", .ls2 = "gamma_2"};
        if (has(L, "blocks.0.mlp.fc1_g.weight")) {
            bn.gate = "mlp.fc1_g";
            bn.up = "mlp.fc1_x";
            c->glu = 1;
        } else {
            const st_tensor *fc1 = tensor(L, "blocks.0.mlp.fc1.weight"), *fc2 = tensor(L, "blocks.0.mlp.fc2.weight");
            if (fc1 && fc2 && fc1->ndim == 2 && fc2->ndim == 2 && fc1->shape[0] == 2 * fc2->shape[1])
                bn.packed_glu = c->glu = 1; /* GluMlp: fc1 = [gate; up] */
        }
        if (has(L, "blocks.0.attn.norm.weight"))
            return pe_fail(PE_ERR_UNSUPPORTED, "%s: %s has an attention inner norm (not supported)",
                           L->path, arch);
        c->act = c->glu ? ACT_SILU : ACT_GELU;
        c->eps = pe || dv3 ? 1e-5f : 1e-6f;
        c->pos_timm_rule = 1;
        c->pos_antialias = 1;
        /* timm RotaryEmbeddingCat: index grid (+1 and x-first for PE) rescaled onto the
         * pretraining grid (EVA-02: 16x16 = 224/14; PE: 32x32), interleaved pairs */
        c->rope = (rope_config){.grid = ROPE_INDEX, .half = 0, .xy = pe, .offset = pe ? 1.0f : 0.0f,
                                .ref_h = pe ? 32 : 16, .ref_w = pe ? 32 : 16, .theta = 10000.0,
                                .scale = 1.0};
        if (dv3) /* RotaryEmbeddingDinoV3: the transformers DINOv3 rule (temperature 100) */
            c->rope = (rope_config){.grid = ROPE_CENTERED, .half = 1, .theta = 100.0,
                                    .scale = 6.283185307179586};
        break;
    }
    case VIT_MAE:
    case VIT_BEIT: /* transformers ViTMAEModel / BeitModel */
        patch = "embeddings.patch_embeddings.projection.weight";
        patch_bias = "embeddings.patch_embeddings.projection.bias";
        cls = "embeddings.cls_token";
        pos = "embeddings.position_embeddings";
        final = "layernorm";
        bn = (block_names){.blocks = "encoder.layer.%d.", .ln1 = "layernorm_before", .ln2 = "layernorm_after",
                           .q = "attention.attention.query", .k = "attention.attention.key",
                           .v = "attention.attention.value", .out = "attention.output.dense",
                           .up = "intermediate.dense", .down = "output.dense", .ls1 = "lambda_1",
                           .ls2 = "lambda_2",
                           .rel = "attention.attention.relative_position_bias.relative_position_bias_table"};
        c->eps = (float)json_num(cfg, "layer_norm_eps", 1e-12);
        act = json_str(cfg, "hidden_act");
        if (kind == VIT_BEIT) {
            if (has(L, pos))
                return pe_fail(PE_ERR_UNSUPPORTED,
                               "%s: BEiT with absolute position embeddings is not supported (only the "
                               "relative position bias of BEiT v2)",
                               L->path);
            pos = NULL;
            c->no_pos = 1;
            if (has(L, "encoder.relative_position_bias.relative_position_bias_table"))
                bn.rel = NULL; /* one table shared by every block (BEiT pre-training checkpoints) */
        }
        break;
    case VIT_SIGLIP:
    case VIT_SIGLIP2: /* transformers SiglipVisionModel (fixed size) / Siglip2VisionModel (NaFlex) */
        patch = "embeddings.patch_embedding.weight";
        patch_bias = "embeddings.patch_embedding.bias";
        pos = "embeddings.position_embedding.weight";
        final = "post_layernorm";
        bn = (block_names){.blocks = "encoder.layers.%d.", .ln1 = "layer_norm1", .ln2 = "layer_norm2",
                           .q = "self_attn.q_proj", .k = "self_attn.k_proj", .v = "self_attn.v_proj",
                           .out = "self_attn.out_proj", .up = "mlp.fc1", .down = "mlp.fc2"};
        c->no_cls = c->pos_no_cls = 1;
        c->pos_bilinear = kind == VIT_SIGLIP2;
        c->pos_timm_rule = kind == VIT_SIGLIP2; /* NaFlex always resizes (identity when equal) */
        c->eps = (float)json_num(cfg, "layer_norm_eps", 1e-6);
        act = json_str(cfg, "hidden_act");
        if (!act) act = "gelu_pytorch_tanh";
        break;
    default: return pe_fail(PE_ERR_UNSUPPORTED, "%s: not a generic ViT layout", L->path);
    }
    if (act) {
        if (!strcmp(act, "gelu")) c->act = ACT_GELU;
        else if (!strcmp(act, "silu") || !strcmp(act, "swish")) c->act = ACT_SILU;
        else if (!strcmp(act, "gelu_pytorch_tanh") || !strcmp(act, "gelu_new")) c->act = ACT_GELU_TANH;
        else if (!strcmp(act, "quick_gelu")) c->act = ACT_QUICK_GELU;
        else
            return pe_fail(PE_ERR_UNSUPPORTED, "%s: activation '%s' is not supported", L->path, act);
    }

    /* sizes from the tensors */
    const st_tensor *t = tensor(L, patch);
    if (!t || t->shape[0] <= 0 || t->shape[0] > 8192)
        return pe_fail(PE_ERR_SHAPE, "%s: patch embedding '%s%s' is missing or malformed", L->path,
                       L->prefix, patch);
    c->dim = (int)t->shape[0];
    if (kind == VIT_SIGLIP2) { /* Linear over p*p*3 pixels */
        c->patch = json_int(cfg, "patch_size", 16);
        if (t->ndim != 2 || c->patch <= 0 || c->patch > 64 || t->shape[1] != 3 * c->patch * c->patch)
            return pe_fail(PE_ERR_SHAPE, "%s: patch embedding is not (D, 3*%d*%d)", L->path, c->patch,
                           c->patch);
        c->patch_hwc = 1;
    } else {
        if (t->ndim != 4 || t->shape[1] != 3 || t->shape[2] != t->shape[3] || t->shape[2] <= 0 ||
            t->shape[2] > 64)
            return pe_fail(PE_ERR_SHAPE, "%s: patch embedding weight is not (D, 3, p, p)", L->path);
        c->patch = (int)t->shape[2];
    }
    const int D = c->dim;
    /* heads: transformers config; timm hub configs carry none unless model_args overrides
     * (all EVA-02 / PE sizes use 64-wide heads) */
    c->heads = kind == VIT_TIMM_EVA ? json_int(json_obj(config, "model_args"), "num_heads", D / 64)
                                    : json_int(cfg, "num_attention_heads", D / 64);
    if (c->heads <= 0 || D % c->heads || D / c->heads > 4096)
        return pe_fail(PE_ERR_FORMAT, "%s: width %d does not split into %d attention heads", L->path, D,
                       c->heads);
    if (c->rope.grid != ROPE_NONE && (D / c->heads) % 4) /* two axes x (cos, sin) pairs */
        return pe_fail(PE_ERR_FORMAT, "%s: RoPE needs a head width divisible by 4, not %d", L->path,
                       D / c->heads);
    c->layers = count_blocks(L, &bn);
    if (c->layers == 0) return pe_fail(PE_ERR_FORMAT, "%s: no transformer blocks found", L->path);
    char n[256];
    const st_tensor *down = tensor(L, bname(n, sizeof n, &bn, 0, bn.down, ".weight"));
    if (!down || down->ndim != 2 || down->shape[0] != D || down->shape[1] <= 0 || down->shape[1] > 65536)
        return pe_fail(PE_ERR_SHAPE, "%s: tensor '%s%s' is missing or not (%d, M)", L->path, L->prefix, n, D);
    c->mlp_dim = (int)down->shape[1];
    if (kind == VIT_DINOV3 && has(L, bname(n, sizeof n, &bn, 0, bn.gate, ".weight"))) c->glu = 1;
    c->mlp_norm = bn.mlp_norm && has(L, bname(n, sizeof n, &bn, 0, bn.mlp_norm, ".weight"));
    c->layerscale = bn.ls1 && has(L, bname(n, sizeof n, &bn, 0, bn.ls1, ""));
    c->pre_norm = pre && has(L, "norm_pre.weight");
    c->final_norm = final && (snprintf(n, sizeof n, "%s.weight", final), has(L, n));
    if (reg && (t = tensor(L, reg))) {
        if (t->ndim != 3 || t->shape[0] != 1 || t->shape[2] != D || t->shape[1] > 256)
            return pe_fail(PE_ERR_SHAPE, "%s: tensor '%s%s' is not (1, R, %d)", L->path, L->prefix, reg, D);
        c->registers = (int)t->shape[1];
    }
    if (!cls || !has(L, cls)) {
        if (!c->no_cls) return pe_fail(PE_ERR_FORMAT, "%s: no CLS token '%s%s'", L->path, L->prefix, cls);
    }
    if (pos && !(t = tensor(L, pos))) {
        if (kind != VIT_TIMM_EVA)
            return pe_fail(PE_ERR_FORMAT, "%s: missing tensor '%s%s'", L->path, L->prefix, pos);
        c->no_pos = 1;
    }
    if (!pos) c->no_pos = 1;
    if (!c->no_pos) { /* (1, pc + g*g, D) or (pc + g*g, D), pc = CLS entry */
        const int pc = c->pos_no_cls ? 0 : 1;
        int64_t npos = 0;
        if (t->ndim == 3 && t->shape[0] == 1 && t->shape[2] == D) npos = t->shape[1];
        else if (t->ndim == 2 && t->shape[1] == D) npos = t->shape[0];
        int g = (int)sqrt((double)(npos > pc ? npos - pc : 0));
        while ((int64_t)(g + 1) * (g + 1) <= npos - pc) g++;
        while (g > 0 && (int64_t)g * g > npos - pc) g--;
        if (g <= 0 || (int64_t)g * g != npos - pc || c->registers)
            return pe_fail(PE_ERR_SHAPE, "%s: position embeddings '%s%s' are not (%s n*n, %d)", L->path,
                           L->prefix, pos, pc ? "1 +" : "", D);
        c->pos_grid = g;
    }
    if (kind == VIT_BEIT) {
        if (bn.rel) bname(n, sizeof n, &bn, 0, bn.rel, "");
        else snprintf(n, sizeof n, "encoder.relative_position_bias.relative_position_bias_table");
        t = tensor(L, n);
        if (!t || t->ndim != 2 || t->shape[1] != c->heads || t->shape[0] < 4)
            return pe_fail(PE_ERR_SHAPE, "%s: relative position bias table '%s%s' missing or not (n, %d)",
                           L->path, L->prefix, n, c->heads);
        int side = (int)sqrt((double)(t->shape[0] - 3)); /* (2g - 1)^2 + 3 rows */
        while ((int64_t)side * side < t->shape[0] - 3) side++;
        if ((int64_t)side * side != t->shape[0] - 3 || side % 2 == 0)
            return pe_fail(PE_ERR_SHAPE, "%s: relative position bias table has %lld rows, not (2g-1)^2 + 3",
                           L->path, (long long)t->shape[0]);
        c->relpos = 1;
        c->relpos_grid = (side + 1) / 2;
    }

    /* weights */
    pe_status s;
    const int p = c->patch;
    w->blocks = calloc((size_t)c->layers, sizeof *w->blocks);
    if (!w->blocks) return pe_fail(PE_ERR_NOMEM, "%s: out of memory", L->path);
    if (c->patch_hwc) { /* reorder (D, ky, kx, c) -> (D, c, ky, kx) for the shared im2col */
        const float *src;
        if ((s = get2(L, patch, D, 3 * (int64_t)p * p, &src))) return s;
        float *dst = owned_buf(L, (size_t)D * 3 * p * p);
        if (!dst) return pe_fail(PE_ERR_NOMEM, "%s: out of memory", L->path);
        for (int o = 0; o < D; o++)
            for (int ky = 0; ky < p; ky++)
                for (int kx = 0; kx < p; kx++)
                    for (int ch = 0; ch < 3; ch++)
                        dst[(((size_t)o * 3 + ch) * p + ky) * p + kx] =
                            src[(((size_t)o * p + ky) * p + kx) * 3 + ch];
        w->patch_w = dst;
    } else {
        int64_t pshape[4] = {D, 3, p, p};
        if ((s = get(L, patch, 4, pshape, &w->patch_w))) return s;
    }
    if ((s = opt_get(L, patch_bias, 1, D, 0, &w->patch_b))) return s;
    if (!c->no_cls) {
        int64_t s3[3] = {1, 1, D};
        if ((s = get(L, cls, 3, s3, &w->cls))) return s;
    }
    if (c->registers) {
        int64_t s3[3] = {1, c->registers, D};
        if ((s = get(L, reg, 3, s3, &w->reg))) return s;
    }
    if (!c->no_pos) {
        const int64_t npos = (c->pos_no_cls ? 0 : 1) + (int64_t)c->pos_grid * c->pos_grid;
        t = tensor(L, pos);
        int64_t s3[3] = {1, npos, D};
        if ((s = t->ndim == 3 ? get(L, pos, 3, s3, &w->pos) : get2(L, pos, npos, D, &w->pos))) return s;
    }
    if (c->pre_norm) {
        if ((s = get1(L, "norm_pre.weight", D, &w->pre_w)) || (s = get1(L, "norm_pre.bias", D, &w->pre_b)))
            return s;
    }
    for (int i = 0; i < c->layers; i++)
        if ((s = load_generic_block(L, &bn, i, &w->blocks[i]))) return s;
    if (c->relpos && !bn.rel) { /* BEiT shared table: the same for every block */
        const int64_t nrel = (int64_t)(2 * c->relpos_grid - 1) * (2 * c->relpos_grid - 1) + 3;
        const float *shared;
        if ((s = get2(L, "encoder.relative_position_bias.relative_position_bias_table", nrel, c->heads,
                      &shared)))
            return s;
        for (int i = 0; i < c->layers; i++) w->blocks[i].rel_table = shared;
    }
    if (c->final_norm) {
        snprintf(n, sizeof n, "%s.weight", final);
        if ((s = get1(L, n, D, &w->norm_w))) return s;
        snprintf(n, sizeof n, "%s.bias", final);
        if ((s = get1(L, n, D, &w->norm_b))) return s;
    }
    if (kind == VIT_SIGLIP || kind == VIT_SIGLIP2) {
        if (!c->final_norm) return pe_fail(PE_ERR_FORMAT, "%s: missing post_layernorm", L->path);
        if (has(L, "head.probe")) { /* attention-pooling head: probe + q/k rows of in_proj */
            const float *inw, *inb;
            int64_t s3[3] = {1, 1, D};
            if ((s = get(L, "head.probe", 3, s3, &w->probe)) ||
                (s = get2(L, "head.attention.in_proj_weight", 3 * (int64_t)D, D, &inw)) ||
                (s = get1(L, "head.attention.in_proj_bias", 3 * (int64_t)D, &inb)))
                return s;
            w->head_q_w = inw;
            w->head_k_w = inw + (size_t)D * D;
            w->head_q_b = inb;
            w->head_k_b = inb + D;
            c->pool_head = 1;
        }
    }
    /* parameters: every tensor of the tower (those used above and the unused mask token,
     * pooling head, classifier norms), i.e. everything under the prefix */
    L->params = 0;
    for (int i = 0; i < st_count(L->st); i++)
        if (!strncmp(st_at(L->st, i)->name, L->prefix, strlen(L->prefix))) L->params += st_at(L->st, i)->numel;
    return PE_OK;
}

/* 3 numbers of a JSON array into out; 1 if it had them. */
static int json_vec3(const cJSON *arr, float *out)
{
    if (cJSON_GetArraySize(arr) != 3) return 0;
    for (int i = 0; i < 3; i++) {
        const cJSON *v = cJSON_GetArrayItem(arr, i);
        if (!cJSON_IsNumber(v)) return 0;
        out[i] = (float)v->valuedouble;
    }
    return 1;
}

/* Input normalisation of the generic layouts: the hub's preprocessor_config.json
 * (image_mean / image_std) or timm's pretrained_cfg when present, else the family's
 * published default (ImageNet for DINOv3 / MAE, CLIP's for EVA-02, 0.5 / 0.5 otherwise). */
static void generic_norm(vit_model *m, const cJSON *config)
{
    const vit_config *c = &m->cfg;
    pe_model_info *info = &m->base.info;
    static const float in_mean[3] = {0.485f, 0.456f, 0.406f}, in_std[3] = {0.229f, 0.224f, 0.225f};
    static const float clip_mean[3] = {0.48145466f, 0.4578275f, 0.40821073f},
                       clip_std[3] = {0.26862954f, 0.26130258f, 0.27577711f};
    const int imagenet = !strcmp(info->family, "dinov3") || c->kind == VIT_MAE;
    const int clip = !strcmp(info->family, "eva02");
    for (int i = 0; i < 3; i++) {
        info->mean[i] = imagenet ? in_mean[i] : clip ? clip_mean[i] : 0.5f;
        info->std[i] = imagenet ? in_std[i] : clip ? clip_std[i] : 0.5f;
    }
    const cJSON *pp = json_obj(config, "preprocessor_config");
    const cJSON *pc = json_obj(config, "pretrained_cfg");
    if (pp) json_vec3(cJSON_GetObjectItemCaseSensitive(pp, "image_mean"), info->mean);
    if (pp) json_vec3(cJSON_GetObjectItemCaseSensitive(pp, "image_std"), info->std);
    if (pc) json_vec3(cJSON_GetObjectItemCaseSensitive(pc, "mean"), info->mean);
    if (pc) json_vec3(cJSON_GetObjectItemCaseSensitive(pc, "std"), info->std);
    /* no CLS token and no pooling head: nothing to mask with */
    info->has_attention = !c->no_cls || c->pool_head;
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
    case VIT_DINOV3: { /* the hub's names: dinov3-vits16, -vitb16, -vitl16, -vits16plus, -vith16plus */
        const char *l = c->dim == 384 ? "s" : c->dim == 768 ? "b" : c->dim == 1024 ? "l" : c->dim == 1280 ? "h" : NULL;
        info->family = "dinov3";
        if (l) snprintf(m->name, sizeof m->name, "dinov3-vit%s%d%s", l, c->patch, c->glu ? "plus" : "");
        else snprintf(m->name, sizeof m->name, "dinov3-d%d-patch%d", c->dim, c->patch);
        break;
    }
    case VIT_TIMM_EVA: {
        const char *arch = timm_arch(config);
        info->family = !strncmp(arch, "eva02_", 6) ? "eva02" : strstr(arch, "_dinov3") ? "dinov3" : "pe_spatial";
        snprintf(m->name, sizeof m->name, "%s", arch);
        break;
    }
    default: { /* MAE, BEiT, SigLIP, SigLIP 2: "<family>" and a name in the hub's style */
        static const struct {
            vit_kind kind;
            const char *family, *fmt; /* fmt takes: size word, patch, native input side */
        } names[] = {{VIT_MAE, "mae", "vit-mae-%s"},
                     {VIT_BEIT, "beit", "beit-%s-patch%d"},
                     {VIT_SIGLIP, "siglip", "siglip-%s-patch%d-%d"},
                     {VIT_SIGLIP2, "siglip2", "siglip2-%s-patch%d-naflex"}};
        for (size_t i = 0; i < sizeof names / sizeof *names; i++)
            if (names[i].kind == c->kind) {
                info->family = names[i].family;
                snprintf(m->name, sizeof m->name, names[i].fmt, c->dim == 1152 ? "so400m" : sz, c->patch,
                         c->pos_grid * c->patch);
            }
        break;
    }
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
    if (c->kind >= VIT_DINOV3) generic_norm(m, config);
}

pe_status vit_load(const st_file *weights, const cJSON *config, const char *path, backbone **out)
{
    *out = NULL;
    char prefix[128];
    int ok;
    vit_kind kind = detect_kind(weights, config, prefix, sizeof prefix, &ok);
    if (!ok)
        return pe_fail(PE_ERR_UNSUPPORTED,
                       "%s: not ViT weights (DINOv2, DINOv3, CLIP, OpenCLIP, SigLIP, EVA-02, PE, MAE or "
                       "BEiT)",
                       path);
    vit_model *m = calloc(1, sizeof *m);
    if (!m) return pe_fail(PE_ERR_NOMEM, "%s: out of memory", path);
    m->base.forward = vit_forward;
    m->base.destroy = vit_destroy;
    snprintf(m->path, sizeof m->path, "%s", path);
    loader L = {weights, path, m, prefix, 0};
    pe_status s;
    if (kind >= VIT_DINOV3) {
        s = load_generic(&L, kind, config);
    } else {
        s = read_config(&L, kind, config, &m->cfg);
        if (!s) s = load_weights(&L);
    }
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
    free(s->hidden); /* (qkv and ctx point into it) */
    free(s->capture);
    free(s->pos);
    free(s->gate);
    free(s->scores);
    memset(s, 0, sizeof *s);
}

static void free_grid_cache(vit_grid_cache *gc)
{
    free(gc->rope_cos);
    free(gc->rope_sin);
    free(gc->rel_tables);
    free(gc->rel_index);
    memset(gc, 0, sizeof *gc);
}

static void free_amx(vit_model *m)
{
    for (int l = 0; m->amx && l < m->cfg.layers; l++) {
        free(m->amx[l].qkv);
        free(m->amx[l].out);
        free(m->amx[l].fc1);
        free(m->amx[l].fc2);
    }
    free(m->amx);
    m->amx = NULL;
}

static void vit_destroy(backbone *self)
{
    vit_model *m = (vit_model *)self;
    if (!m) return;
    free_amx(m);
    for (int i = 0; i < m->n_owned; i++) free(m->owned[i]);
    free(m->owned);
    free(m->w.blocks);
    free_scratch(&m->s);
    free_grid_cache(&m->gc);
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
    size_t hidden = PE_MAX(PE_MAX(T * M, T * 4 * D), (size_t)patches * kk);
    s->x = pe_alloc(T * D, sizeof(float), "ViT activations");
    s->xn = pe_alloc(T * D, sizeof(float), "ViT activations");
    s->hidden = pe_alloc(hidden, sizeof(float), "ViT MLP hidden");
    if (s->hidden) {
        s->qkv = s->hidden;
        s->ctx = s->hidden + T * 3 * D;
    }
    if (m->cfg.glu) s->gate = pe_alloc(T * M, sizeof(float), "ViT MLP gate");
    /* the full (T, T) scores of one head: only where the attention adds a relative position
     * bias (BEiT); SigLIP's pooling head needs one (T) row */
    const size_t nscores = m->cfg.relpos ? T * T : m->cfg.no_cls ? T : 0;
    if (nscores) s->scores = pe_alloc(nscores, sizeof(float), "ViT attention scores");
    if (!s->x || !s->xn || (nscores && !s->scores) || !s->hidden || (m->cfg.glu && !s->gate)) {
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
    const int D = c->dim, g0 = c->pos_grid, pc = c->pos_no_cls ? 0 : 1; /* pc: CLS entry */
    /* identical grid, or the reference's own "no resize" rule: use the table as stored */
    int same = gh == g0 && gw == g0;
    if (c->pos_skip_same_count) same |= gh * gw == g0 * g0;
    else if (!c->pos_timm_rule) same |= gh * gw == g0 * g0 && height == width;
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
    s->pos = pe_alloc((size_t)(pc + gh * gw) * D, sizeof(float), "position embeddings");
    if (!s->pos) return PE_ERR_NOMEM;
    memcpy(s->pos, m->w.pos, (size_t)pc * D * sizeof(float)); /* CLS entry unchanged */
    const float *grid0 = m->w.pos + (size_t)pc * D;
    if (c->pos_bilinear ? op_resize_bilinear(s->pos + (size_t)pc * D, grid0, D, g0, g0, gh, gw, 1)
                        : op_resize_bicubic(s->pos + (size_t)pc * D, grid0, D, g0, g0, gh, gw,
                                            c->pos_antialias)) {
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
    if (scale) { /* one GEMM with the scaling and the sum as post-ops, where the engine can */
        if (!eng_linear_scaled_add(eng_current(), T, D, K, in, 0, w, bias, scale, x, D)) return;
        op_linear(tmp, in, w, NULL, T, K, D);
        residual_add(x, tmp, bias, scale, T, D);
    } else {
        op_linear_acc(x, in, w, bias, T, K, D);
    }
}

/* In place, n elements: the block's MLP activation. */
static void activate(vit_act act, float *x, size_t n)
{
    switch (act) {
    case ACT_GELU: op_gelu(x, n); break;
    case ACT_QUICK_GELU: op_quick_gelu(x, n); break;
    case ACT_SILU: op_silu(x, n); break;
    case ACT_GELU_TANH: op_gelu_tanh(x, n); break; /* SigLIP's gelu_pytorch_tanh */
    }
}

/* RoPE on the query and key of every head for the patch rows of qkv (T, 3D); the
 * CLS / register rows before first_patch keep their vectors (all references do so). */
static void rope_qk(vit_model *m, int T, int first_patch)
{
    const int D = m->cfg.dim, dh = D / m->cfg.heads, G = T - first_patch;
    float *rows = m->s.qkv + (size_t)first_patch * 3 * D;
    for (int h = 0; h < m->cfg.heads; h++) {
        rope_apply(&m->cfg.rope, rows + h * dh, 3 * D, G, dh, m->gc.rope_cos, m->gc.rope_sin);
        rope_apply(&m->cfg.rope, rows + D + h * dh, 3 * D, G, dh, m->gc.rope_cos, m->gc.rope_sin);
    }
}

/* scores (T, T) of head h += the layer's relative position bias (BEiT). */
static void add_rel_bias(const vit_model *m, const vit_block *b, int h, int T, float *scores)
{
    const int H = m->cfg.heads, l = (int)(b - m->w.blocks);
    const size_t n = (size_t)(2 * m->gc.rel_h - 1) * (2 * m->gc.rel_w - 1) + 3;
    const float *tab = m->gc.rel_tables + (size_t)l * n * H + h;
    const int *idx = m->gc.rel_index;
    for (size_t i = 0; i < (size_t)T * T; i++) scores[i] += tab[(size_t)idx[i] * H];
}

/* the engine's name for each MLP activation (fused into a GEMM as a oneDNN post-op) */
static const int eng_act[] = {[ACT_GELU] = ENG_ACT_GELU,
                              [ACT_QUICK_GELU] = ENG_ACT_QUICK_GELU,
                              [ACT_SILU] = ENG_ACT_SILU,
                              [ACT_GELU_TANH] = ENG_ACT_GELU_TANH};

/* xn = ln(x) rounded to bf16 (the next bf16 product's input), timed as a layer norm;
 * returns the profile clock after it (pe_prof_add). */
static double norm_bf16(vit_model *m, const float *gamma, const float *beta, int T)
{
    const double t = pe_prof_now();
    op_layernorm_bf16((uint16_t *)(void *)m->s.xn, m->s.x, gamma, beta, T, m->cfg.dim, m->cfg.eps);
    return pe_prof_add(PE_PROF_LN, t);
}

/* x (T, D) += ls * (in16 (T, K) . W^T + bias) on the bf16 path, in16 bf16 rows (ls NULL:
 * no LayerScale). With LayerScale the scaling and the sum are the GEMM's post-ops, else
 * the product goes through xn (fp32, free by then). Returns 0, or -1 with x unchanged. */
static int residual_bf16(vit_model *m, eng_ctx *ec, int T, int K, const uint16_t *in16,
                         const float *w, const float *bias, const float *ls)
{
    vit_scratch *s = &m->s;
    const int D = m->cfg.dim;
    if (!ls) return eng_linear_bf16(ec, T, D, K, in16, w, bias, ENG_ACT_NONE, 1.0f, s->x, D, NULL);
    if (!eng_linear_scaled_add(ec, T, D, K, in16, 1, w, bias, ls, s->x, D)) return 0;
    if (eng_linear_bf16(ec, T, D, K, in16, w, NULL, ENG_ACT_NONE, 0.0f, s->xn, D, NULL)) return -1;
    residual_add(s->x, s->xn, bias, ls, T, D);
    return 0;
}

/* qkv = xn . Wqkv^T + b on the bf16 path, one GEMM for a fused weight, else one per
 * part. Into fp32 rows out32 (T, 3D), or bf16 out16: (T, 3D) rows for a fused weight,
 * else q, k, v as three dense (T, D) matrices one after another (*planar = 1: a bf16
 * output must be dense, eng_linear_bf16). Returns 0, or -1 when the engine refused (the
 * caller recomputes all of qkv on its fallback). */
static int qkv_linear_bf16(eng_ctx *ec, const vit_block *b, int T, int D, const uint16_t *xn16,
                           float *out32, uint16_t *out16, int *planar)
{
    if (planar) *planar = !b->qkv_w;
    if (b->qkv_w)
        return eng_linear_bf16(ec, T, 3 * D, D, xn16, b->qkv_w, b->qkv_b, ENG_ACT_NONE, 0.0f, out32,
                               3 * D, out16);
    for (int i = 0; i < 3; i++) {
        const size_t off = (size_t)i * D;
        if (eng_linear_bf16(ec, T, D, D, xn16, b->part_w[i], b->qkv_b + off, ENG_ACT_NONE, 0.0f,
                            out32 ? out32 + off : NULL, 3 * D, out16 ? out16 + off * T : NULL))
            return -1;
    }
    return 0;
}

/* qkv (T, 3D) = xn (T, D) . Wqkv^T + b in fp32 buffers (see qkv_linear_bf16). */
static void qkv_linear(const vit_block *b, int T, int D, const float *xn, float *qkv)
{
    if (b->qkv_w) {
        op_linear(qkv, xn, b->qkv_w, b->qkv_b, T, D, 3 * D);
        return;
    }
    for (int i = 0; i < 3; i++)
        op_linear_ld(qkv + (size_t)i * D, 3 * D, xn, b->part_w[i], b->qkv_b + (size_t)i * D, T, D, D);
}

/* The attention sub-block x += ls1 * (attn(ln1(x)) . Wo^T + bo) on the bf16 path (see
 * block_forward): ln1 writes bf16, the qkv GEMMs write bf16 into the qkv buffer (rows or
 * planes, qkv_linear_bf16), the attention writes its output rows as bf16 into the ctx
 * buffer, the out-projection reads them as is. Returns 0; -1 when the engine refused
 * before x was written (the caller then runs the fp32-buffer path; x is unchanged); -2
 * when the attention failed (out of memory: an error for the caller). */
static int attention_bf16(vit_model *m, const vit_block *b, eng_ctx *ec, int T)
{
    const vit_config *c = &m->cfg;
    vit_scratch *s = &m->s;
    const int D = c->dim, H = c->heads;
    const float scale = 1.0f / sqrtf((float)(D / H));
    uint16_t *xn16 = (uint16_t *)(void *)s->xn, *qkv16 = (uint16_t *)(void *)s->qkv,
             *ctx16 = (uint16_t *)(void *)s->ctx;
    int planar = 0;
    double t = norm_bf16(m, b->ln1_w, b->ln1_b, T);
    if (qkv_linear_bf16(ec, b, T, D, xn16, NULL, qkv16, &planar)) return -1;
    pe_prof_add(PE_PROF_QKV, t);
    if (op_attention_bf16(ctx16, qkv16, planar, T, D, H, scale)) return -2; /* (times itself) */
    t = pe_prof_now();
    const int rc = residual_bf16(m, ec, T, D, ctx16, b->out_w, b->out_b, b->ls1);
    pe_prof_add(PE_PROF_OUT, t);
    return rc;
}

/* The MLP sub-block x += ls2 * (act(ln2(x) . W1^T + b1) . W2^T + b2) on the bf16 path
 * (see block_forward): ln2 writes bf16, fc1 writes the activated hidden layer as bf16,
 * fc2 reads it as is. Returns 0, or -1 when the engine refused before writing x (the
 * caller then runs the fp32-buffer path from the start; x is unchanged). */
static int mlp_bf16(vit_model *m, const vit_block *b, eng_ctx *ec, int T)
{
    const vit_config *c = &m->cfg;
    vit_scratch *s = &m->s;
    const int D = c->dim, M = c->mlp_dim;
    uint16_t *xn16 = (uint16_t *)(void *)s->xn, *h16 = (uint16_t *)(void *)s->hidden;
    double t = norm_bf16(m, b->ln2_w, b->ln2_b, T);
    if (eng_linear_bf16(ec, T, M, D, xn16, b->fc1_w, b->fc1_b, eng_act[c->act], 0.0f, NULL, 0, h16))
        return -1;
    t = pe_prof_add(PE_PROF_FC1, t);
    const int rc = residual_bf16(m, ec, T, M, h16, b->fc2_w, b->fc2_b, b->ls2);
    pe_prof_add(PE_PROF_FC2, t);
    return rc;
}

/* ---- bf16 on AMX tiles: every linear of the block through amx_linear (compute/amx.h),
 * its epilogue fused: the qkv product writes q, k and v as bf16 per-head planes straight
 * into the attention's input (no split copy), fc1 writes its activated hidden layer as
 * bf16, the out-projection and fc2 add bias * LayerScale into the residual stream. The
 * weights are rounded to bf16 and packed into the tile layout once per model, at the
 * first forward that takes the path (the engine's bf16 copies of these weights are then
 * never made). Taken where the CPU has AMX and the widths tile (D and the MLP width
 * multiples of 32), without a gated MLP or an MLP norm; PE_NO_AMX_LINEAR=1 turns it off
 * (tests compare the two paths). */

/* W = the rows of parts[0..n) (each (rows, K) fp32) rounded to bf16 and packed for
 * amx_linear; NULL when memory is short. */
static uint16_t *amx_pack_weight(const float *const *parts, int n, int rows, int K)
{
    eng_ctx *ec = eng_current();
    uint16_t *packed = pe_alloc(amx_packed_bytes(K, n * rows), 1, "AMX weights");
    uint16_t *tmp = pe_alloc((size_t)rows * K, sizeof *tmp, "AMX weights");
    if (!packed || !tmp) {
        free(packed);
        free(tmp);
        return NULL;
    }
    for (int i = 0; i < n; i++) { /* rows is a multiple of 32: each part is whole panels */
        eng_to_bf16(tmp, parts[i], (size_t)rows * K);
        amx_pack(tmp, K, 1, K, rows, packed + (size_t)i * rows * K);
        eng_release_source(ec, parts[i], (size_t)rows * K); /* (the file's pages: not read again) */
    }
    free(tmp);
    return packed;
}

/* 1 if this model's bf16 blocks take the AMX path (packing every block's weights on the
 * first call), else 0. */
static int amx_block_ready(vit_model *m)
{
    if (m->amx_state) return m->amx_state > 0;
    const vit_config *c = &m->cfg;
    const int D = c->dim, M = c->mlp_dim;
    m->amx_state = -1;
    if (getenv("PE_NO_AMX_LINEAR") || !amx_ready() || D % 32 || M % 32 || c->glu || c->mlp_norm)
        return 0;
    m->amx = calloc((size_t)c->layers, sizeof *m->amx);
    int ok = m->amx != NULL;
    for (int l = 0; ok && l < c->layers; l++) {
        const vit_block *b = &m->w.blocks[l];
        struct vit_amx *a = &m->amx[l];
        const float *qkv[3] = {b->qkv_w, NULL, NULL};
        a->qkv = b->qkv_w ? amx_pack_weight(qkv, 1, 3 * D, D)
                          : amx_pack_weight((const float *const *)b->part_w, 3, D, D);
        a->out = amx_pack_weight(&b->out_w, 1, D, D);
        a->fc1 = amx_pack_weight(&b->fc1_w, 1, M, D);
        a->fc2 = amx_pack_weight(&b->fc2_w, 1, D, M);
        ok = a->qkv && a->out && a->fc1 && a->fc2;
    }
    if (!ok) { /* short of memory: the engine's path, as without AMX */
        free_amx(m);
        return 0;
    }
    m->amx_state = 1;
    return 1;
}

/* The attention sub-block on the AMX path (see above). Returns 0; -1 when a product
 * refused before writing (x unchanged: the caller runs another path); -2 when the
 * attention failed (out of memory). */
static int attention_amx(vit_model *m, const vit_block *b, const struct vit_amx *w, int T)
{
    const vit_config *c = &m->cfg;
    vit_scratch *s = &m->s;
    const int D = c->dim, H = c->heads, dh = D / H;
    uint16_t *xn16 = (uint16_t *)(void *)s->xn, *heads16 = (uint16_t *)(void *)s->qkv,
             *ctx16 = (uint16_t *)(void *)s->ctx;
    double t = norm_bf16(m, b->ln1_w, b->ln1_b, T);
    /* (T, 3D) = xn W^T + b, column n to plane n / dh: [q heads | k heads | v heads], the
     * attention's own layout; a head width that does not tile (not a multiple of 32)
     * gets q, k, v as three (T, D) planes, which the attention splits */
    const int per_head = dh % 32 == 0, group = per_head ? dh : D;
    const amx_epilogue qkv = {.bias = b->qkv_b, .out16 = heads16, .ld_out = group, .group = group,
                              .group_stride = (size_t)T * group};
    if (amx_linear(T, 3 * D, D, xn16, D, w->qkv, &qkv)) return -1;
    pe_prof_add(PE_PROF_QKV, t);
    const float scale = 1.0f / sqrtf((float)dh);
    if (per_head ? op_attention_bf16_heads(ctx16, heads16, T, D, H, scale)
                 : op_attention_bf16(ctx16, heads16, 1, T, D, H, scale))
        return -2;
    t = pe_prof_now();
    const amx_epilogue out = {.bias = b->out_b, .scale = b->ls1, .add_to = s->x, .ld_add = D};
    if (amx_linear(T, D, D, ctx16, D, w->out, &out)) return -2; /* (its checks passed above) */
    pe_prof_add(PE_PROF_OUT, t);
    return 0;
}

/* The MLP sub-block on the AMX path. Returns 0, or -1 before writing x (the caller then
 * runs another path). */
static int mlp_amx(vit_model *m, const vit_block *b, const struct vit_amx *w, int T)
{
    const vit_config *c = &m->cfg;
    vit_scratch *s = &m->s;
    const int D = c->dim, M = c->mlp_dim;
    uint16_t *xn16 = (uint16_t *)(void *)s->xn, *h16 = (uint16_t *)(void *)s->hidden;
    double t = norm_bf16(m, b->ln2_w, b->ln2_b, T);
    const amx_epilogue fc1 = {.bias = b->fc1_b, .act = eng_act[c->act], .out16 = h16, .ld_out = M};
    if (amx_linear(T, M, D, xn16, D, w->fc1, &fc1)) return -1;
    t = pe_prof_add(PE_PROF_FC1, t);
    const amx_epilogue fc2 = {.bias = b->fc2_b, .scale = b->ls2, .add_to = s->x, .ld_add = D};
    if (amx_linear(T, D, M, h16, M, w->fc2, &fc2)) return -1;
    pe_prof_add(PE_PROF_FC2, t);
    return 0;
}

/* INT8 contexts: tell the engine which linears read a layer norm's output (qkv, fc1 and
 * gate after ln1 / ln2; fc2 after the MLP's norm) and with which gamma / beta, so their
 * int8 products are smoothed per channel (engine.h, eng_int8_norm_input). Once per model,
 * before the first product. */
static void int8_hints(vit_model *m)
{
    eng_ctx *ec = eng_current();
    if (m->int8_hinted || eng_ctx_precision(ec) != PE_PRECISION_INT8) return;
    const int D = m->cfg.dim, M = m->cfg.mlp_dim;
    for (int l = 0; l < m->cfg.layers; l++) {
        const vit_block *b = &m->w.blocks[l];
        if (b->qkv_w) eng_int8_norm_input(ec, b->qkv_w, b->ln1_w, b->ln1_b, D);
        for (int i = 0; i < 3 && !b->qkv_w; i++)
            eng_int8_norm_input(ec, b->part_w[i], b->ln1_w, b->ln1_b, D);
        eng_int8_norm_input(ec, b->fc1_w, b->ln2_w, b->ln2_b, D);
        if (m->cfg.glu) eng_int8_norm_input(ec, b->gate_w, b->ln2_w, b->ln2_b, D);
        if (m->cfg.mlp_norm) eng_int8_norm_input(ec, b->fc2_w, b->mlpn_w, b->mlpn_b, M);
    }
    m->int8_hinted = 1;
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

    /* bf16 on bf16 kernels: the norms write bf16 rows straight into the GEMM's input
     * (in the fp32 buffer's memory), the qkv GEMM writes bf16 straight into the attention
     * and the attention its output rows in bf16 for the out-projection, and the MLP's
     * hidden layer is one bf16 GEMM output with the activation fused (eng_linear_bf16):
     * no fp32 copy is written and converted. RoPE, a relative position bias and the CLS
     * row of --mask need the fp32 qkv: those blocks take the fp32-buffer path. */
    eng_ctx *ec = eng_current();
    const int direct = eng_bf16_direct(ec);
    const struct vit_amx *aw = direct && amx_block_ready(m) ? &m->amx[b - m->w.blocks] : NULL;
    if (aw && c->rope.grid == ROPE_NONE && !b->rel_table && !cls_attn) {
        const int rc = attention_amx(m, b, aw, T);
        if (rc == -2) return -1;
        if (rc == 0) goto mlp;
    }
    if (direct && c->rope.grid == ROPE_NONE && !b->rel_table && !cls_attn) {
        const int rc = attention_bf16(m, b, ec, T);
        if (rc == -2) return -1;
        if (rc == 0) goto mlp;
    }

    /* attention: qkv (T, 3D) = ln1(x) . Wqkv^T + b; ctx (T, D) by blocked attention
     * (attention.c: only a tile of each head's (T, T) scores at a time) */
    uint16_t *xn16 = (uint16_t *)(void *)s->xn;
    double t = pe_prof_now();
    if (direct) op_layernorm_bf16(xn16, s->x, b->ln1_w, b->ln1_b, T, D, c->eps);
    if (!direct || qkv_linear_bf16(ec, b, T, D, xn16, s->qkv, NULL, NULL)) {
        op_layernorm(s->xn, s->x, b->ln1_w, b->ln1_b, T, D, c->eps);
        t = pe_prof_add(PE_PROF_LN, t);
        qkv_linear(b, T, D, s->xn, s->qkv);
    }
    if (c->rope.grid != ROPE_NONE) rope_qk(m, T, first_patch);
    t = pe_prof_add(PE_PROF_QKV, t); /* (RoPE counted with the projection) */
    if (!b->rel_table) {
        /* xn (T, D) is free until the out-projection: the heads' copies go there when
         * they fit (fp32, 2 heads of 6 per round on 2 threads: 1.6 MB less at the peak) */
        if (op_attention(s->ctx, s->qkv, T, D, H, scale, cls_attn, first_patch, s->xn,
                         (size_t)T * D * sizeof(float)))
            return -1;
    } else { /* relative position bias (BEiT): each head's full (T, T) scores, bias added */
        t = pe_prof_now();
        if (cls_attn) memset(cls_attn, 0, (size_t)(T - first_patch) * sizeof(float));
        for (int h = 0; h < H; h++) {
            const float *q = s->qkv + h * dh, *k = s->qkv + D + h * dh, *v = s->qkv + 2 * D + h * dh;
            /* scores (T, T) = q_h (T, dh) . k_h^T / sqrt(dh) + bias; rows softmaxed */
            op_gemm(0, 1, T, T, dh, scale, q, 3 * D, k, 3 * D, 0.0f, s->scores, T);
            add_rel_bias(m, b, h, T, s->scores);
            op_softmax_rows(s->scores, T, T, T);
            if (cls_attn)
                for (int j = first_patch; j < T; j++) cls_attn[j - first_patch] += s->scores[j] / (float)H;
            /* ctx[:, h*dh:(h+1)*dh] (T, dh) = scores (T, T) . v_h (T, dh) */
            op_gemm(0, 0, T, dh, T, 1.0f, s->scores, T, v, 3 * D, 0.0f, s->ctx + h * dh, D);
        }
        pe_prof_add(PE_PROF_ATTN_CORE, t); /* (op_attention times its own parts) */
    }
    t = pe_prof_now();
    project_residual(s->x, s->ctx, b->out_w, b->out_b, b->ls1, s->xn, T, D, D);
    pe_prof_add(PE_PROF_OUT, t);

mlp:
    /* MLP: x += ls2 * (act(ln2(x) . W1^T + b1) . W2^T + b2) */
    if (aw && !mlp_amx(m, b, aw, T)) return 0;
    if (direct && !c->glu && !c->mlp_norm && !mlp_bf16(m, b, ec, T)) return 0;
    double tm = pe_prof_now();
    op_layernorm(s->xn, s->x, b->ln2_w, b->ln2_b, T, D, c->eps);
    tm = pe_prof_add(PE_PROF_LN, tm);
    if (c->glu) { /* hidden = act(gate) * up */
        op_linear(s->hidden, s->xn, b->fc1_w, b->fc1_b, T, D, M);
        op_linear(s->gate, s->xn, b->gate_w, b->gate_b, T, D, M);
        activate(c->act, s->gate, (size_t)T * M);
        for (size_t i = 0; i < (size_t)T * M; i++) s->hidden[i] *= s->gate[i];
    } else if (eng_linear_act_f32(ec, T, M, D, s->xn, D, b->fc1_w, b->fc1_b, eng_act[c->act],
                                  s->hidden, M)) { /* (fp32: the activation inside the GEMM) */
        op_linear(s->hidden, s->xn, b->fc1_w, b->fc1_b, T, D, M);
        activate(c->act, s->hidden, (size_t)T * M);
    }
    if (c->mlp_norm) op_layernorm(s->hidden, s->hidden, b->mlpn_w, b->mlpn_b, T, M, c->eps);
    tm = pe_prof_add(PE_PROF_FC1, tm);
    project_residual(s->x, s->hidden, b->fc2_w, b->fc2_b, b->ls2, s->xn, T, M, D);
    pe_prof_add(PE_PROF_FC2, tm);
    return 0;
}

/* RoPE tables / relative position bias for a gh x gw grid, kept until the grid changes. */
static pe_status grid_cache(vit_model *m, int gh, int gw)
{
    const vit_config *c = &m->cfg;
    vit_grid_cache *gc = &m->gc;
    const int G = gh * gw, dh = c->dim / c->heads, H = c->heads;
    if (c->rope.grid != ROPE_NONE && (gc->rope_h != gh || gc->rope_w != gw)) {
        free(gc->rope_cos);
        free(gc->rope_sin);
        gc->rope_h = gc->rope_w = 0;
        gc->rope_cos = pe_alloc((size_t)G * dh / 2, sizeof(float), "RoPE table");
        gc->rope_sin = pe_alloc((size_t)G * dh / 2, sizeof(float), "RoPE table");
        if (!gc->rope_cos || !gc->rope_sin) return PE_ERR_NOMEM;
        rope_tables(&c->rope, gh, gw, dh, gc->rope_cos, gc->rope_sin);
        gc->rope_h = gh;
        gc->rope_w = gw;
    }
    if (c->relpos && (gc->rel_h != gh || gc->rel_w != gw)) {
        const size_t n = (size_t)(2 * gh - 1) * (2 * gw - 1) + 3, T = (size_t)G + 1;
        free(gc->rel_tables);
        free(gc->rel_index);
        gc->rel_h = gc->rel_w = 0;
        gc->rel_tables = pe_alloc((size_t)c->layers * n * H, sizeof(float), "relative position bias");
        gc->rel_index = pe_alloc(T * T, sizeof(int), "relative position index");
        if (!gc->rel_tables || !gc->rel_index) return PE_ERR_NOMEM;
        for (int l = 0; l < c->layers; l++)
            if (relpos_table_resize(gc->rel_tables + (size_t)l * n * H, m->w.blocks[l].rel_table, H,
                                    c->relpos_grid, c->relpos_grid, gh, gw))
                return pe_fail(PE_ERR_NOMEM, "relative position bias: cannot resize to %dx%d", gh, gw);
        relpos_index(gc->rel_index, gh, gw);
        gc->rel_h = gh;
        gc->rel_w = gw;
    }
    return PE_OK;
}

/* SigLIP has no CLS token: the mask attention is its attention-pooling head's, the probe
 * query over the G post-norm tokens of the last block, softmax per head, mean over heads
 * (nn.MultiheadAttention's averaged weights). out (G). Uses s->xn, s->qkv as scratch. */
static void pool_head_attention(vit_model *m, int G, float *out)
{
    const vit_config *c = &m->cfg;
    vit_scratch *s = &m->s;
    const int D = c->dim, H = c->heads, dh = D / H;
    float q[8192];
    op_layernorm(s->xn, s->x, m->w.norm_w, m->w.norm_b, G, D, c->eps);
    op_linear(q, m->w.probe, m->w.head_q_w, m->w.head_q_b, 1, D, D);
    op_linear(s->qkv, s->xn, m->w.head_k_w, m->w.head_k_b, G, D, D); /* keys (G, D) */
    memset(out, 0, (size_t)G * sizeof *out);
    for (int h = 0; h < H; h++) {
        float *row = s->scores; /* (G) logits of head h */
        op_gemm(0, 1, 1, G, dh, 1.0f / sqrtf((float)dh), q + h * dh, D, s->qkv + h * dh, D, 0.0f, row, G);
        op_softmax_rows(row, 1, G, G);
        for (int j = 0; j < G; j++) out[j] += row[j] / (float)H;
    }
}

/* Threads: every GEMM is one oneDNN call on the OpenMP team, and the row ops between
 * them (layer norms, residual copies, head splits) run on the same team (op_* split
 * rows over threads). They used to run on the calling thread only, to keep OpenBLAS's
 * own threads from competing with idle OpenMP workers; no ViT GEMM goes through
 * OpenBLAS now, and splitting them measured ViT-S/14 at 448 px, bf16, 2 threads:
 * 74 -> 71 ms; fp32 271 -> 258 ms (docs/ENGINE.md, "Threads and OpenMP"). */
static pe_status vit_forward(backbone *self, const float *chw, int height, int width, int layer,
                             float **features, int *grid_h, int *grid_w,
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
    const int first_patch = (c->no_cls ? 0 : 1) + R, T = first_patch + G;
    pe_status st = ensure_scratch(m, T, G);
    if (st) return st;
    const float *pos = NULL;
    if (!c->no_pos) st = position_embeddings(m, gh, gw, height, width, &pos);
    if (!st) st = grid_cache(m, gh, gw);
    if (st) return st;
    vit_scratch *s = &m->s;

    double tp = pe_prof_now();
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
    /* tokens: [CLS + pos0, registers, patches + pos[1:]] (no CLS / no table: those parts skipped) */
    const int pc = c->pos_no_cls ? 0 : 1;
    if (!c->no_cls)
        for (int i = 0; i < D; i++) s->x[i] = m->w.cls[i] + (pos && pc ? pos[i] : 0.0f);
    if (R) memcpy(s->x + (size_t)(first_patch - R) * D, m->w.reg, (size_t)R * D * sizeof(float));
    for (int g = 0; pos && g < G; g++) {
        float *xr = s->x + (size_t)(first_patch + g) * D;
        const float *pr = pos + (size_t)(pc + g) * D;
#pragma omp simd
        for (int i = 0; i < D; i++) xr[i] += pr[i];
    }
    if (c->pre_norm) op_layernorm(s->x, s->x, m->w.pre_w, m->w.pre_b, T, D, c->eps);

    int8_hints(m);
    pe_prof_add(PE_PROF_EMBED, tp);
    float *cls_attn = NULL;
    if (attn) {
        cls_attn = pe_alloc((size_t)G, sizeof(float), "CLS attention");
        if (!cls_attn) return PE_ERR_NOMEM;
    }
    const int want = layer ? layer : c->layers;
    const int run = attn ? c->layers : want; /* attention needs the last block */
    if (want != run && !s->capture) {
        s->capture = pe_alloc((size_t)s->tokens * D, sizeof(float), "ViT layer output");
        if (!s->capture) {
            free(cls_attn);
            return PE_ERR_NOMEM;
        }
    }
    for (int l = 0; l < run; l++) {
        if (block_forward(m, &m->w.blocks[l], T, first_patch,
                          l == c->layers - 1 && !c->no_cls ? cls_attn : NULL)) {
            free(cls_attn);
            return pe_fail(PE_ERR_NOMEM, "%s: attention of block %d failed (out of memory)", m->path,
                           l + 1);
        }
        if (l == want - 1 && want != run)
            memcpy(s->capture, s->x, (size_t)T * D * sizeof(float));
    }
    tp = pe_prof_now();
    const float *src = want == run ? s->x : s->capture;
    if (cls_attn && c->pool_head) pool_head_attention(m, T, cls_attn);

    float *feat = pe_alloc((size_t)G * D, sizeof(float), "patch features");
    if (!feat) {
        free(cls_attn);
        return PE_ERR_NOMEM;
    }
    const float *patch_rows = src + (size_t)first_patch * D;
    if (c->final_norm) op_layernorm(feat, patch_rows, m->w.norm_w, m->w.norm_b, G, D, c->eps);
    else memcpy(feat, patch_rows, (size_t)G * D * sizeof(float));
    pe_prof_add(PE_PROF_OTHER, tp);
    *features = feat;
    *grid_h = gh;
    *grid_w = gw;
    *dim = D;
    if (attn) *attn = cls_attn;
    return PE_OK;
}

