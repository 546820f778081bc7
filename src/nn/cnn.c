/* cnn.c — CNN backbones: MobileNetV2, EfficientNet-Lite, torchvision ResNet family, with
 * PatchCore-style patch features.
 *
 * Network = stem conv (+ 3x3/2 max pool for ResNet) + a list of blocks:
 *   MBConv (MobileNetV2 InvertedResidual / EfficientNet-Lite MBConvBlock without SE):
 *       [1x1 expand + act] -> kxk depthwise/stride + act -> 1x1 project (linear) [+ x]
 *   ResNet BasicBlock:   3x3/stride + relu -> 3x3 -> + (x | downsample(x)) -> relu
 *   ResNet Bottleneck:   1x1 + relu -> 3x3/stride + relu -> 1x1 -> + (x | downsample(x)) -> relu
 * Channel counts and kernel sizes come from the tensor shapes; the per-block strides of
 * the MBConv families from config.json "block_strides" (standard values if absent), the
 * ResNet strides from torchvision's rule (first block of layer2..4: stride 2 on the 3x3).
 * BatchNorm is folded into each conv at load (see conv.h).
 *
 * Patch features (see docs/BACKBONES.md): the outputs of the last block at stride 8
 * (A: C8 x H/8 x W/8) and the last block at stride 16 (B: C16 x H/16 x W/16), each
 * average-pooled 3x3/1 with zero padding counted (PatchCore's local neighbourhood
 * aggregation), B upsampled bilinearly (align_corners=False) to A's grid, concatenated
 * along channels: features (G, D) with G = ceil(H/8) * ceil(W/8), D = C8 + C16.
 * Blocks after the stride-16 stage are neither loaded nor run. */
#include "backbone.h"
#include "conv.h"

#include <math.h>
#include <string.h>

typedef enum { FAM_MOBILENET_V2 = 0, FAM_EFFICIENTNET_LITE, FAM_RESNET } cnn_family;
static const char *const family_names[] = {"mobilenet_v2", "efficientnet_lite0", "resnet"};

typedef enum { BLOCK_MBCONV = 0, BLOCK_BASIC, BLOCK_BOTTLENECK } block_kind;

typedef struct {
    block_kind kind;
    /* MBConv: conv[0] expand (if has_expand), conv[1] depthwise, conv[2] project.
     * Basic: conv[0], conv[1]. Bottleneck: conv[0..2]. conv[3]: downsample (if has_down). */
    conv_layer conv[4];
    int has_expand, has_down;
    int residual;   /* MBConv: add the block input (stride 1 and cin == cout) */
    int stride;     /* of the block */
    int cin, cout;
} cnn_block;

typedef struct {
    float *data;
    size_t cap; /* floats */
} scratch;

typedef struct {
    backbone base;
    cnn_family family;
    conv_pad pad;
    conv_layer stem;
    int stem_maxpool;      /* ResNet */
    cnn_block *blocks;     /* the blocks run: 0 .. stage16 */
    int num_blocks;
    int alloc_blocks;      /* entries of `blocks` (may hold loaded layers past num_blocks) */
    int stage8, stage16;   /* indices of the blocks whose outputs are the features */
    char name[64];
    /* Scratch, grown on demand, owned by the model (forward is not reentrant). */
    scratch cur, next, t1, t2, t3, cols, pool8, pool16;
} cnn_net;

/* ------------------------------------------------------------------ loading */

/* Weight name suffixes of a BatchNorm2d. */
static const char *const bn_parts[4] = {"weight", "bias", "running_mean", "running_var"};

/* Load conv `wname` (shape (cout, cin/groups, k, k), square k) and BatchNorm `bn` (C,),
 * fold the BN into weight/bias. cin/cout/k are taken from the tensor; `depthwise`
 * requires shape (C, 1, k, k). expect_cin > 0 checks the input channels. */
static pe_status load_conv_bn(const st_file *f, const char *path, const char *wname, const char *bn,
                              int depthwise, int expect_cin, int stride, conv_act act, float eps,
                              conv_layer *out, int64_t *num_params)
{
    memset(out, 0, sizeof *out);
    const st_tensor *t = st_find(f, wname);
    if (!t) return pe_fail(PE_ERR_FORMAT, "%s: missing tensor '%s'", path, wname);
    if (t->ndim != 4 || t->shape[2] != t->shape[3] || t->shape[2] < 1 || t->shape[2] > 11 ||
        t->shape[0] < 1 || t->shape[0] > 65536 || t->shape[1] < 1 || t->shape[1] > 65536 ||
        (depthwise && t->shape[1] != 1))
        return pe_fail(PE_ERR_SHAPE, "%s: tensor '%s' is not a %s convolution weight", path, wname,
                       depthwise ? "depthwise" : "square");
    int cout = (int)t->shape[0], k = (int)t->shape[2];
    int cin = depthwise ? cout : (int)t->shape[1];
    if (expect_cin > 0 && cin != expect_cin)
        return pe_fail(PE_ERR_SHAPE, "%s: tensor '%s' takes %d channels, the layer before gives %d",
                       path, wname, cin, expect_cin);
    int64_t wshape[4] = {cout, depthwise ? 1 : cin, k, k};
    float *w = NULL, *p[4] = {0};
    pe_status s = st_load_f32(f, wname, 4, wshape, &w);
    for (int i = 0; i < 4 && !s; i++) {
        char name[256];
        snprintf(name, sizeof name, "%s.%s", bn, bn_parts[i]);
        int64_t cshape[1] = {cout};
        s = st_load_f32(f, name, 1, cshape, &p[i]);
    }
    float *bias = s ? NULL : pe_alloc((size_t)cout, sizeof(float), wname);
    if (!s && !bias) s = PE_ERR_NOMEM;
    if (!s) {
        /* w' = w * gamma / sqrt(var + eps); b' = beta - mean * gamma / sqrt(var + eps) */
        size_t per_out = (size_t)(depthwise ? 1 : cin) * k * k;
        for (int c = 0; c < cout; c++) {
            double scale = p[0][c] / sqrt((double)p[3][c] + eps);
            for (size_t i = 0; i < per_out; i++) w[c * per_out + i] = (float)(w[c * per_out + i] * scale);
            bias[c] = (float)(p[1][c] - p[2][c] * scale);
        }
        *num_params += (int64_t)cout * per_out + 4 * (int64_t)cout;
        out->cin = cin;
        out->cout = cout;
        out->k = k;
        out->stride = stride;
        out->depthwise = depthwise;
        out->act = act;
        out->weight = w;
        out->bias = bias;
        w = NULL;
    }
    free(w);
    for (int i = 0; i < 4; i++) free(p[i]);
    return s;
}

static void free_conv(conv_layer *l)
{
    free(l->weight);
    free(l->bias);
    l->weight = l->bias = NULL;
}

static int has_tensor(const st_file *f, const char *fmt, int a, int b)
{
    char name[256];
    snprintf(name, sizeof name, fmt, a, b);
    return st_find(f, name) != NULL;
}

static const char *config_string(const cJSON *config, const char *key)
{
    const cJSON *v = config ? cJSON_GetObjectItemCaseSensitive(config, key) : NULL;
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* Family from config.json "architecture" (or "model_type"), else from tensor names; -1 if none. */
static int detect_family(const st_file *weights, const cJSON *config)
{
    const char *arch = config_string(config, "architecture");
    if (!arch) arch = config_string(config, "model_type");
    if (arch) {
        if (!strcmp(arch, "mobilenet_v2")) return FAM_MOBILENET_V2;
        if (!strncmp(arch, "efficientnet_lite", 17) || !strncmp(arch, "efficientnet-lite", 17))
            return FAM_EFFICIENTNET_LITE;
        if (!strncmp(arch, "resnet", 6) || !strncmp(arch, "wide_resnet", 11)) return FAM_RESNET;
    }
    if (st_find(weights, "features.0.0.weight") && st_find(weights, "features.1.conv.0.weight"))
        return FAM_MOBILENET_V2;
    if (st_find(weights, "_conv_stem.weight") && st_find(weights, "_blocks.0._depthwise_conv.weight"))
        return FAM_EFFICIENTNET_LITE;
    if (st_find(weights, "conv1.weight") && st_find(weights, "layer1.0.conv1.weight") &&
        st_find(weights, "bn1.running_var"))
        return FAM_RESNET;
    return -1;
}

int cnn_detect(const st_file *weights, const cJSON *config)
{
    return detect_family(weights, config) >= 0;
}

/* config.json "block_strides" (one int per block) or the standard network's; the count
 * must equal the number of blocks found in the weights. */
static pe_status block_strides(const cJSON *config, cnn_family fam, int count, const char *path,
                               int *strides)
{
    static const int mobilenet_v2[17] = {1, 2, 1, 2, 1, 1, 2, 1, 1, 1, 1, 1, 1, 2, 1, 1, 1};
    static const int efficientnet_lite0[16] = {1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1, 1, 1, 1};
    const cJSON *list = config ? cJSON_GetObjectItemCaseSensitive(config, "block_strides") : NULL;
    if (list) {
        if (!cJSON_IsArray(list) || cJSON_GetArraySize(list) != count)
            return pe_fail(PE_ERR_FORMAT,
                           "%s: config.json \"block_strides\" must list %d strides (one per block)",
                           path, count);
        int i = 0;
        const cJSON *v;
        cJSON_ArrayForEach(v, list)
        {
            if (!cJSON_IsNumber(v) || (v->valueint != 1 && v->valueint != 2))
                return pe_fail(PE_ERR_FORMAT, "%s: config.json \"block_strides\" holds a stride other than 1 or 2",
                               path);
            strides[i++] = v->valueint;
        }
        return PE_OK;
    }
    const int *std = fam == FAM_MOBILENET_V2 ? mobilenet_v2 : efficientnet_lite0;
    int std_count = fam == FAM_MOBILENET_V2 ? 17 : 16;
    if (count != std_count)
        return pe_fail(PE_ERR_UNSUPPORTED,
                       "%s: %d blocks is not the standard %s (%d blocks); give \"block_strides\" in config.json",
                       path, count, family_names[fam], std_count);
    memcpy(strides, std, sizeof(int) * count);
    return PE_OK;
}

/* Pick the feature stages: the last block at cumulative stride 8 and the last at 16.
 * Sets num_blocks to stage16 + 1 (later blocks are not needed). */
static pe_status choose_stages(cnn_net *net, int stem_stride, const char *path)
{
    int stride = stem_stride;
    net->stage8 = net->stage16 = -1;
    for (int i = 0; i < net->num_blocks; i++) {
        stride *= net->blocks[i].stride;
        if (stride == 8) net->stage8 = i;
        if (stride == 16) net->stage16 = i;
    }
    if (net->stage8 < 0 || net->stage16 < 0)
        return pe_fail(PE_ERR_UNSUPPORTED, "%s: the network has no blocks at stride 8 and 16", path);
    return PE_OK;
}

static pe_status load_mbconv_net(cnn_net *net, const st_file *f, const cJSON *config, const char *path,
                                 float eps)
{
    int mobilenet = net->family == FAM_MOBILENET_V2;
    int64_t params = 0;
    /* Stem: 3x3/2 conv + BN + ReLU6. */
    pe_status s = mobilenet ? load_conv_bn(f, path, "features.0.0.weight", "features.0.1", 0, 3, 2,
                                           CONV_ACT_RELU6, eps, &net->stem, &params)
                            : load_conv_bn(f, path, "_conv_stem.weight", "_bn0", 0, 3, 2,
                                           CONV_ACT_RELU6, eps, &net->stem, &params);
    if (s) return s;
    /* Count the blocks: MobileNetV2 features.1.. (the head features.18 has no ".conv"). */
    int count = 0;
    while (count < 256 && (mobilenet ? has_tensor(f, "features.%d.conv.0.weight", count + 1, 0)
                                     : has_tensor(f, "_blocks.%d._depthwise_conv.weight", count, 0)))
        count++;
    if (count == 0) return pe_fail(PE_ERR_FORMAT, "%s: no inverted-residual blocks found", path);
    int strides[256];
    if ((s = block_strides(config, net->family, count, path, strides))) return s;
    net->blocks = calloc((size_t)count, sizeof *net->blocks);
    if (!net->blocks) return pe_fail(PE_ERR_NOMEM, "%s: out of memory", path);
    net->num_blocks = net->alloc_blocks = count;
    for (int i = 0; i < count; i++) net->blocks[i].stride = strides[i];
    if ((s = choose_stages(net, 2, path))) return s;
    net->num_blocks = net->stage16 + 1;

    int cin = net->stem.cout;
    for (int i = 0; i < net->num_blocks; i++) {
        cnn_block *b = &net->blocks[i];
        b->kind = BLOCK_MBCONV;
        b->cin = cin;
        char w[3][128], bn[3][128];
        if (mobilenet) {
            int n = i + 1;
            b->has_expand = has_tensor(f, "features.%d.conv.6.weight", n, 0);
            /* expand: conv.0/1, dw: conv.3/4, project: conv.6/7; without expand: dw conv.0/1,
             * project conv.3/4 */
            int base = b->has_expand ? 0 : -3;
            for (int j = 0; j < 3; j++) {
                snprintf(w[j], sizeof w[j], "features.%d.conv.%d.weight", n, base + 3 * j);
                snprintf(bn[j], sizeof bn[j], "features.%d.conv.%d", n, base + 3 * j + 1);
            }
        } else {
            if (has_tensor(f, "_blocks.%d._se_reduce.weight", i, 0))
                return pe_fail(PE_ERR_UNSUPPORTED,
                               "%s: block %d has squeeze-excitation (EfficientNet-B*, not Lite)", path, i);
            b->has_expand = has_tensor(f, "_blocks.%d._expand_conv.weight", i, 0);
            static const char *const convs[3] = {"_expand_conv", "_depthwise_conv", "_project_conv"};
            for (int j = 0; j < 3; j++) {
                snprintf(w[j], sizeof w[j], "_blocks.%d.%s.weight", i, convs[j]);
                snprintf(bn[j], sizeof bn[j], "_blocks.%d._bn%d", i, j);
            }
        }
        int hidden = cin;
        if (b->has_expand) {
            s = load_conv_bn(f, path, w[0], bn[0], 0, cin, 1, CONV_ACT_RELU6, eps, &b->conv[0], &params);
            if (s) return s;
            hidden = b->conv[0].cout;
        }
        s = load_conv_bn(f, path, w[1], bn[1], 1, 0, b->stride, CONV_ACT_RELU6, eps, &b->conv[1], &params);
        if (s) return s;
        if (b->conv[1].cout != hidden)
            return pe_fail(PE_ERR_SHAPE, "%s: tensor '%s' has %d channels, expected %d", path, w[1],
                           b->conv[1].cout, hidden);
        s = load_conv_bn(f, path, w[2], bn[2], 0, hidden, 1, CONV_ACT_NONE, eps, &b->conv[2], &params);
        if (s) return s;
        b->cout = b->conv[2].cout;
        b->residual = b->stride == 1 && b->cin == b->cout;
        cin = b->cout;
    }
    net->base.info.num_params = params;
    return PE_OK;
}

static pe_status load_resnet(cnn_net *net, const st_file *f, const char *path, float eps)
{
    int64_t params = 0;
    pe_status s = load_conv_bn(f, path, "conv1.weight", "bn1", 0, 3, 2, CONV_ACT_RELU, eps, &net->stem,
                               &params);
    if (s) return s;
    net->stem_maxpool = 1;
    int counts[4] = {0};
    for (int l = 0; l < 4; l++)
        while (counts[l] < 256 && has_tensor(f, "layer%d.%d.conv1.weight", l + 1, counts[l])) counts[l]++;
    if (!counts[0] || !counts[1] || !counts[2])
        return pe_fail(PE_ERR_FORMAT, "%s: ResNet weights without layer1..layer3 blocks", path);
    int bottleneck = has_tensor(f, "layer1.0.conv3.weight", 0, 0);
    int total = counts[0] + counts[1] + counts[2];
    net->blocks = calloc((size_t)total, sizeof *net->blocks);
    if (!net->blocks) return pe_fail(PE_ERR_NOMEM, "%s: out of memory", path);
    net->num_blocks = net->alloc_blocks = total;

    int cin = net->stem.cout, i = 0;
    for (int l = 1; l <= 3; l++) {
        for (int j = 0; j < counts[l - 1]; j++, i++) {
            cnn_block *b = &net->blocks[i];
            b->kind = bottleneck ? BLOCK_BOTTLENECK : BLOCK_BASIC;
            b->stride = (l > 1 && j == 0) ? 2 : 1;
            b->cin = cin;
            int nconv = bottleneck ? 3 : 2;
            int prev = cin;
            for (int c = 0; c < nconv; c++) {
                char w[128], bn[128];
                snprintf(w, sizeof w, "layer%d.%d.conv%d.weight", l, j, c + 1);
                snprintf(bn, sizeof bn, "layer%d.%d.bn%d", l, j, c + 1);
                /* torchvision: the stride sits on the first 3x3 (BasicBlock conv1, Bottleneck conv2);
                 * the last conv's activation comes after the residual add. */
                int stride = (c == (bottleneck ? 1 : 0)) ? b->stride : 1;
                s = load_conv_bn(f, path, w, bn, 0, prev, stride, CONV_ACT_RELU, eps, &b->conv[c], &params);
                if (s) return s;
                prev = b->conv[c].cout;
            }
            b->cout = prev;
            b->has_down = has_tensor(f, "layer%d.%d.downsample.0.weight", l, j);
            if (b->has_down) {
                char w[128], bn[128];
                snprintf(w, sizeof w, "layer%d.%d.downsample.0.weight", l, j);
                snprintf(bn, sizeof bn, "layer%d.%d.downsample.1", l, j);
                s = load_conv_bn(f, path, w, bn, 0, cin, b->stride, CONV_ACT_NONE, eps, &b->conv[3], &params);
                if (s) return s;
                if (b->conv[3].cout != b->cout || b->conv[3].k != 1)
                    return pe_fail(PE_ERR_SHAPE, "%s: tensor '%s' is not a 1x1 projection to %d channels",
                                   path, w, b->cout);
            } else if (b->stride != 1 || cin != b->cout) {
                return pe_fail(PE_ERR_FORMAT, "%s: block layer%d.%d changes shape but has no downsample",
                               path, l, j);
            }
            cin = b->cout;
        }
    }
    if ((s = choose_stages(net, 4, path))) return s;
    net->num_blocks = net->stage16 + 1;
    net->base.info.num_params = params;

    /* Name from the block counts and the bottleneck width (torchvision's constructors). */
    const char *name = "resnet";
    int width = net->blocks[0].conv[0].cout; /* layer1.0.conv1 */
    if (!bottleneck && counts[0] == 2 && counts[1] == 2 && counts[2] == 2 && counts[3] == 2) name = "resnet18";
    if (!bottleneck && counts[0] == 3 && counts[1] == 4 && counts[2] == 6 && counts[3] == 3) name = "resnet34";
    if (bottleneck && counts[0] == 3 && counts[1] == 4 && counts[3] == 3) {
        if (counts[2] == 6) name = width == 128 ? "wide_resnet50_2" : width == 64 ? "resnet50" : name;
        if (counts[2] == 23) name = width == 128 ? "wide_resnet101_2" : width == 64 ? "resnet101" : name;
    }
    if (bottleneck && counts[0] == 3 && counts[1] == 8 && counts[2] == 36 && counts[3] == 3 && width == 64)
        name = "resnet152";
    snprintf(net->name, sizeof net->name, "%s", name);
    return PE_OK;
}

static void cnn_destroy(backbone *self)
{
    cnn_net *net = (cnn_net *)self;
    free_conv(&net->stem);
    if (net->blocks)
        for (int i = 0; i < net->alloc_blocks; i++)
            for (int j = 0; j < 4; j++) free_conv(&net->blocks[i].conv[j]);
    free(net->blocks);
    scratch *all[] = {&net->cur, &net->next, &net->t1, &net->t2, &net->t3, &net->cols, &net->pool8, &net->pool16};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) free(all[i]->data);
    free(net);
}

/* ------------------------------------------------------------------ forward */

/* Make `s` hold at least n floats (contents are not kept). */
static pe_status grow(scratch *s, size_t n)
{
    if (n <= s->cap) return PE_OK;
    free(s->data);
    s->cap = 0;
    s->data = pe_alloc(n, sizeof(float), "CNN activations");
    if (!s->data) return PE_ERR_NOMEM;
    s->cap = n;
    return PE_OK;
}

/* One conv into `out` (grown to fit), im2col scratch from net->cols. */
static pe_status run_conv(cnn_net *net, const conv_layer *l, const float *in, int h, int w, scratch *out,
                          int *oh, int *ow, const float *residual)
{
    int ho, wo, p;
    conv_geometry(h, l->k, l->stride, net->pad, &ho, &p);
    conv_geometry(w, l->k, l->stride, net->pad, &wo, &p);
    pe_status s = grow(out, (size_t)l->cout * ho * wo);
    if (!s) s = grow(&net->cols, conv_cols_size(l, h, w, net->pad));
    if (s) return s;
    conv_forward(l, net->pad, in, h, w, out->data, oh, ow, residual, net->cols.data);
    return PE_OK;
}

static void swap_scratch(scratch *a, scratch *b)
{
    scratch t = *a;
    *a = *b;
    *b = t;
}

/* Block i: net->cur (cin, h, w) -> net->cur (cout, h', w'). */
static pe_status run_block(cnn_net *net, const cnn_block *b, int *h, int *w)
{
    int h1, w1, h2, w2, h3, w3;
    pe_status s;
    const float *x = net->cur.data;
    if (b->kind == BLOCK_MBCONV) {
        const float *hidden = x;
        h1 = *h, w1 = *w;
        if (b->has_expand) {
            if ((s = run_conv(net, &b->conv[0], x, *h, *w, &net->t1, &h1, &w1, NULL))) return s;
            hidden = net->t1.data;
        }
        if ((s = run_conv(net, &b->conv[1], hidden, h1, w1, &net->t2, &h2, &w2, NULL))) return s;
        s = run_conv(net, &b->conv[2], net->t2.data, h2, w2, &net->next, &h3, &w3, b->residual ? x : NULL);
    } else {
        const float *identity = x;
        if (b->has_down) {
            if ((s = run_conv(net, &b->conv[3], x, *h, *w, &net->t3, &h1, &w1, NULL))) return s;
            identity = net->t3.data;
        }
        if ((s = run_conv(net, &b->conv[0], x, *h, *w, &net->t1, &h1, &w1, NULL))) return s;
        if (b->kind == BLOCK_BASIC) {
            s = run_conv(net, &b->conv[1], net->t1.data, h1, w1, &net->next, &h3, &w3, identity);
        } else {
            if ((s = run_conv(net, &b->conv[1], net->t1.data, h1, w1, &net->t2, &h2, &w2, NULL))) return s;
            s = run_conv(net, &b->conv[2], net->t2.data, h2, w2, &net->next, &h3, &w3, identity);
        }
    }
    if (s) return s;
    swap_scratch(&net->cur, &net->next);
    *h = h3;
    *w = w3;
    return PE_OK;
}

static pe_status cnn_forward(backbone *self, const float *chw, int height, int width, int layer,
                             float **features, int *grid_h, int *grid_w, int *dim, float **attn)
{
    cnn_net *net = (cnn_net *)self;
    (void)layer; /* CNNs have one feature layout (the two stages) */
    *features = NULL;
    if (attn) *attn = NULL;
    if (height > PE_MAX_IMAGE_SIDE || width > PE_MAX_IMAGE_SIDE)
        return pe_fail(PE_ERR_LIMIT, "%s: input %dx%d exceeds %d pixels per side", net->name, width,
                       height, PE_MAX_IMAGE_SIDE);
    int h = height, w = width, h8 = 0, w8 = 0, h16 = 0, w16 = 0;
    pe_status s = run_conv(net, &net->stem, chw, h, w, &net->cur, &h, &w, NULL);
    if (s) return s;
    if (net->stem_maxpool) {
        if ((s = grow(&net->next, (size_t)net->stem.cout * ((h + 1) / 2) * ((w + 1) / 2)))) return s;
        maxpool3x3s2(net->cur.data, net->stem.cout, h, w, net->next.data, &h, &w);
        swap_scratch(&net->cur, &net->next);
    }
    int c8 = net->blocks[net->stage8].cout, c16 = net->blocks[net->stage16].cout;
    for (int i = 0; i < net->num_blocks; i++) {
        if ((s = run_block(net, &net->blocks[i], &h, &w))) return s;
        if (i == net->stage8 || i == net->stage16) {
            scratch *dst = i == net->stage8 ? &net->pool8 : &net->pool16;
            int c = net->blocks[i].cout;
            if ((s = grow(dst, (size_t)c * h * w))) return s;
            avgpool3x3s1(net->cur.data, c, h, w, dst->data);
            if (i == net->stage8) h8 = h, w8 = w;
            else h16 = h, w16 = w;
        }
    }

    /* features (G, D): row g = [pool8[:, g], bilinear(pool16)[:, g]] */
    const int D = c8 + c16;
    const size_t G = (size_t)h8 * w8, plane16 = (size_t)h16 * w16;
    float *out = pe_alloc(G * D, sizeof(float), "CNN features");
    if (!out) return PE_ERR_NOMEM;
    const float *p8 = net->pool8.data, *p16 = net->pool16.data;
    const float sy = (float)h16 / (float)h8, sx = (float)w16 / (float)w8;
#pragma omp parallel for schedule(static) num_threads(pe_get_threads())
    for (int y = 0; y < h8; y++) {
        /* torch bilinear, align_corners=False: src = (dst + 0.5) * in/out - 0.5, clamped at 0 */
        float fy = PE_MAX((y + 0.5f) * sy - 0.5f, 0.0f);
        int y0 = (int)fy, y1 = y0 + (y0 < h16 - 1);
        float ly = fy - y0;
        for (int x = 0; x < w8; x++) {
            float fx = PE_MAX((x + 0.5f) * sx - 0.5f, 0.0f);
            int x0 = (int)fx, x1 = x0 + (x0 < w16 - 1);
            float lx = fx - x0;
            size_t g = (size_t)y * w8 + x;
            float *row = out + g * D;
            for (int c = 0; c < c8; c++) row[c] = p8[c * G + g];
            const size_t i00 = (size_t)y0 * w16 + x0, i01 = (size_t)y0 * w16 + x1;
            const size_t i10 = (size_t)y1 * w16 + x0, i11 = (size_t)y1 * w16 + x1;
            const float w00 = (1 - ly) * (1 - lx), w01 = (1 - ly) * lx, w10 = ly * (1 - lx), w11 = ly * lx;
            for (int c = 0; c < c16; c++) {
                const float *p = p16 + c * plane16;
                row[c8 + c] = w00 * p[i00] + w01 * p[i01] + w10 * p[i10] + w11 * p[i11];
            }
        }
    }
    *features = out;
    *grid_h = h8;
    *grid_w = w8;
    *dim = D;
    return PE_OK;
}

/* ------------------------------------------------------------------ loader */

static void config_floats(const cJSON *config, const char *key, float *dst, int n)
{
    const cJSON *a = config ? cJSON_GetObjectItemCaseSensitive(config, key) : NULL;
    if (!cJSON_IsArray(a) || cJSON_GetArraySize(a) != n) return;
    for (int i = 0; i < n; i++) {
        const cJSON *v = cJSON_GetArrayItem(a, i);
        if (cJSON_IsNumber(v)) dst[i] = (float)v->valuedouble;
    }
}

pe_status cnn_load(const st_file *weights, const cJSON *config, const char *path, backbone **out)
{
    *out = NULL;
    int fam = detect_family(weights, config);
    if (fam < 0) return pe_fail(PE_ERR_UNSUPPORTED, "%s: not CNN weights this build knows", path);
    cnn_net *net = calloc(1, sizeof *net);
    if (!net) return pe_fail(PE_ERR_NOMEM, "%s: out of memory", path);
    net->family = fam;
    net->base.forward = cnn_forward;
    net->base.destroy = cnn_destroy;

    const char *pad = config_string(config, "padding");
    net->pad = fam == FAM_EFFICIENTNET_LITE ? CONV_PAD_SAME : CONV_PAD_SYMMETRIC;
    if (pad && !strcmp(pad, "same")) net->pad = CONV_PAD_SAME;
    if (pad && !strcmp(pad, "symmetric")) net->pad = CONV_PAD_SYMMETRIC;
    float eps = fam == FAM_EFFICIENTNET_LITE ? 1e-3f : 1e-5f;
    const cJSON *e = config ? cJSON_GetObjectItemCaseSensitive(config, "bn_eps") : NULL;
    if (cJSON_IsNumber(e) && e->valuedouble > 0) eps = (float)e->valuedouble;

    snprintf(net->name, sizeof net->name, "%s", family_names[fam]);
    pe_status s = fam == FAM_RESNET ? load_resnet(net, weights, path, eps)
                                    : load_mbconv_net(net, weights, config, path, eps);
    if (s) {
        cnn_destroy(&net->base);
        return s;
    }
    /* Name: config "name", else a specific ResNet "architecture" (e.g. "wide_resnet50_2"),
     * else what the loader inferred. */
    const char *name = config_string(config, "name"), *arch = config_string(config, "architecture");
    if (!name && fam == FAM_RESNET && arch && strcmp(arch, "resnet") != 0) name = arch;
    if (name) snprintf(net->name, sizeof net->name, "%s", name);

    pe_model_info *info = &net->base.info;
    info->family = family_names[fam];
    info->name = net->name;
    info->is_vit = 0;
    info->has_attention = 0;
    info->patch_size = 8; /* feature stride */
    info->feature_dim = net->blocks[net->stage8].cout + net->blocks[net->stage16].cout;
    info->num_layers = net->num_blocks; /* blocks run, up to the stride-16 stage */
    info->hidden_dim = 0;
    info->default_size = 448;
    const float mean[3] = {0.485f, 0.456f, 0.406f}, std[3] = {0.229f, 0.224f, 0.225f};
    memcpy(info->mean, mean, sizeof mean);
    memcpy(info->std, std, sizeof std);
    config_floats(config, "mean", info->mean, 3);
    config_floats(config, "std", info->std, 3);
    for (int i = 0; i < 3; i++)
        if (!(info->std[i] > 0)) {
            cnn_destroy(&net->base);
            return pe_fail(PE_ERR_FORMAT, "%s: config.json \"std\" must be positive", path);
        }
    *out = &net->base;
    return PE_OK;
}
