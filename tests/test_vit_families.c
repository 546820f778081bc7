/* test_vit_families.c — the newer ViT families against their PyTorch references.
 *
 * Fixtures: tests/fixtures/vit/<case>/ (tools/make_vit_fixtures.py, NEW_FIXTURES): a
 * tiny random-weight model in its hub layout (model.safetensors + config.json) and the
 * reference outputs of tools/vit_refs.py for one input at a rectangular, non-native
 * size: patch.npy (G, D), layer1.npy (block 1 + final norm), attn.npy (G) (CLS
 * attention, or SigLIP's pooling-head attention), meta.json (family, parameter count,
 * patch size). Each case checks info facts, the last layer, layer 1 (with and without
 * attention), that a grid change rebuilds the RoPE / relative-bias tables (another
 * size, then the fixture size again: identical bytes) and bad arguments. */
#include "patchead.h"
#include "testlib.h"

#include <cjson/cJSON.h>

typedef struct {
    const char *dir;
    const char *family; /* pe_model_info.family */
    float mean0;        /* first input mean */
} fam_case;

static const fam_case cases[] = {
    {"dinov3", "dinov3", 0.485f},
    {"dinov3_glu", "dinov3", 0.485f},
    {"eva02", "eva02", 0.48145466f},
    {"pe_spatial", "pe_spatial", 0.5f},
    {"mae", "mae", 0.485f},
    {"beit", "beit", 0.5f},
    {"siglip", "siglip", 0.5f},
    {"siglip2", "siglip2", 0.5f},
    {"dinov3_timm", "dinov3", 0.485f},
    {"beit_shared", "beit", 0.5f},
};

static float *load_npy(const char *dir, const char *name, int64_t shape[4], int *ndim)
{
    char path[256];
    float *d = NULL;
    snprintf(path, sizeof path, "tests/fixtures/vit/%s/%s.npy", dir, name);
    if (pe_npy_load(path, &d, ndim, shape) != PE_OK) return NULL;
    return d;
}

static cJSON *load_meta(const char *dir)
{
    char path[256], buf[1024] = {0};
    snprintf(path, sizeof path, "tests/fixtures/vit/%s/meta.json", dir);
    FILE *f = fopen(path, "r");
    if (!f) return NULL;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    return cJSON_Parse(buf);
}

static void compare(const char *dir, const char *what, const float *got, int64_t n, int64_t want_n)
{
    int64_t shape[4];
    int nd;
    float *ref = load_npy(dir, what, shape, &nd);
    CHECK_MSG(ref && got, "%s/%s.npy missing or no output", dir, what);
    if (ref && got) {
        int64_t rn = shape[0] * (nd > 1 ? shape[1] : 1);
        CHECK_MSG(rn == n && n == want_n, "%s %s: %lld values vs %lld", dir, what, (long long)n,
                  (long long)rn);
        if (rn == n) {
            double d = tl_rel_diff(got, ref, (size_t)n);
            printf("  %-11s %-6s rel diff %.3g\n", dir, what, d);
            CHECK_MSG(d <= 1e-4, "%s %s: rel diff %g > 1e-4", dir, what, d);
        }
    }
    free(ref);
}

static void run_case(const fam_case *c)
{
    int64_t is[4];
    int nd;
    float *input = load_npy(c->dir, "input", is, &nd);
    cJSON *meta = load_meta(c->dir);
    CHECK_MSG(input && nd == 3 && is[0] == 3 && meta, "%s: fixture unreadable", c->dir);
    char path[256];
    snprintf(path, sizeof path, "tests/fixtures/vit/%s", c->dir);
    pe_model *m = NULL;
    pe_status s = input && meta ? pe_model_load(path, NULL, &m) : PE_ERR_IO;
    CHECK_MSG(s == PE_OK, "load %s: %s", path, pe_last_error());
    if (s) {
        free(input);
        cJSON_Delete(meta);
        return;
    }
    pe_model_info info;
    CHECK(pe_model_get_info(m, &info) == PE_OK);
    const int patch = cJSON_GetObjectItem(meta, "patch")->valueint;
    CHECK_MSG(!strcmp(info.family, c->family), "family %s, want %s", info.family, c->family);
    CHECK(info.is_vit && info.has_attention && info.feature_dim == 32 && info.hidden_dim == 32);
    CHECK(info.num_layers == 2 && info.patch_size == patch && info.default_size == 448);
    CHECK_MSG(info.num_params == (int64_t)cJSON_GetObjectItem(meta, "num_params")->valuedouble,
              "num_params %lld", (long long)info.num_params);
    CHECK_NEAR(info.mean[0], c->mean0, 1e-6);

    const int H = (int)is[1], W = (int)is[2], G = (H / patch) * (W / patch);
    pe_extract_params ep = pe_extract_default_params();
    ep.want_attn = 1;
    pe_features f, g;
    s = pe_model_forward(m, input, H, W, &ep, &f);
    CHECK_MSG(s == PE_OK, "forward: %s", pe_last_error());
    if (s == PE_OK) {
        CHECK(f.grid_h == H / patch && f.grid_w == W / patch && f.dim == 32);
        compare(c->dir, "patch", f.data, (int64_t)f.grid_h * f.grid_w * f.dim, (int64_t)G * 32);
        compare(c->dir, "attn", f.attn, (int64_t)f.grid_h * f.grid_w, G);
        /* another grid (square, larger) then this one again: tables rebuilt, same bytes */
        const int S = 8 * patch;
        float *big = calloc((size_t)3 * S * S, sizeof *big);
        for (int i = 0; big && i < 3 * S * S; i++) big[i] = sinf(0.37f * i);
        CHECK(big && pe_model_forward(m, big, S, S, &ep, &g) == PE_OK && g.grid_h == 8);
        pe_features_free(&g);
        free(big);
        CHECK(pe_model_forward(m, input, H, W, &ep, &g) == PE_OK);
        CHECK(g.data && !memcmp(g.data, f.data, (size_t)G * 32 * sizeof(float)));
        CHECK(g.attn && !memcmp(g.attn, f.attn, (size_t)G * sizeof(float)));
        pe_features_free(&g);
        pe_features_free(&f);
    }
    for (int want_attn = 0; want_attn < 2; want_attn++) { /* block 1 + final norm */
        ep.layer = 1;
        ep.want_attn = want_attn;
        s = pe_model_forward(m, input, H, W, &ep, &f);
        CHECK_MSG(s == PE_OK, "forward layer 1: %s", pe_last_error());
        if (s) continue;
        compare(c->dir, "layer1", f.data, (int64_t)f.grid_h * f.grid_w * f.dim, (int64_t)G * 32);
        pe_features_free(&f);
    }
    ep.layer = 3;
    CHECK(pe_model_forward(m, input, H, W, &ep, &f) == PE_ERR_ARG && f.data == NULL);
    ep.layer = 0;
    CHECK(pe_model_forward(m, input, H - 1, W, &ep, &f) == PE_ERR_SHAPE);
    pe_model_free(m);
    free(input);
    cJSON_Delete(meta);
}

static void test_dinov3(void) { run_case(&cases[0]); }
static void test_dinov3_glu(void) { run_case(&cases[1]); }
static void test_eva02(void) { run_case(&cases[2]); }
static void test_pe_spatial(void) { run_case(&cases[3]); }
static void test_mae(void) { run_case(&cases[4]); }
static void test_beit(void) { run_case(&cases[5]); }
static void test_siglip(void) { run_case(&cases[6]); }
static void test_siglip2(void) { run_case(&cases[7]); }
static void test_dinov3_timm(void) { run_case(&cases[8]); }
static void test_beit_shared(void) { run_case(&cases[9]); }

int main(void)
{
    pe_set_threads(2);
    RUN(test_dinov3);
    RUN(test_dinov3_glu);
    RUN(test_eva02);
    RUN(test_pe_spatial);
    RUN(test_mae);
    RUN(test_beit);
    RUN(test_siglip);
    RUN(test_siglip2);
    RUN(test_dinov3_timm);
    RUN(test_beit_shared);
    return test_summary();
}
