/* bench.c — `patchead bench`: the measurements behind `make bench` (bench/run.sh).
 *
 *   patchead bench --sgemm [--threads N] [--n N]
 *       OpenBLAS sgemm peak: best GFLOP/s of a large square GEMM; names the kernel.
 *   patchead bench --random-vit small|base|large -o DIR
 *       writes a DINOv2 hub folder (model.safetensors F32 + config.json) with random
 *       weights, for timing without downloads.
 *   patchead bench --gemm [--precision P] [--threads N] [--shape MxNxK]
 *       the engine's GEMM peak (oneDNN, weights reordered once) in one precision, the
 *       oneDNN kernel that ran and the ISA dispatched to.
 *   patchead bench --model PATH [--size S] [--threads N] [--reps R] [--precision P]
 *       ms/image of the backbone on an S x S input (one warm-up, best and median of R),
 *       the forward's FLOPs and achieved GFLOP/s, peak RSS of the process.
 *
 * FLOPs of a ViT forward (multiply-add = 2), T tokens, G patches, width D, MLP 4D:
 *   patch embedding 2 G (3 p^2) D + per block 2 T D (3D + D + 4D + 4D) + 4 T^2 D. */
#include "cli.h"
#include "options.h"

#include <cblas.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>

char *openblas_get_corename(void);
char *openblas_get_config(void);

static const char *USAGE =
    "usage: patchead bench --sgemm [--threads N] [--n N]\n"
    "       patchead bench --gemm [--precision P] [--threads N] [--shape MxNxK]\n"
    "       patchead bench --model PATH [--size S] [--threads N] [--reps R] [--precision P]\n"
    "                          [--profile]\n"
    "       patchead bench --random-vit small|base|large -o DIR\n\n"
    "--sgemm: OpenBLAS sgemm GFLOP/s. --gemm: the engine's (oneDNN) GEMM GFLOP/s, kernel\n"
    "and ISA. --model: ms/image, GFLOP/s and peak RSS of the backbone at S x S (default\n"
    "S = the model's, 448); --profile adds the time of each step. --random-vit: random weights.\n";

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double peak_rss_mb(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss / 1024.0; /* Linux: kilobytes */
}

static int bench_sgemm(int n, int threads)
{
    pe_set_threads(threads);
    float *a = malloc((size_t)n * n * sizeof *a), *b = malloc((size_t)n * n * sizeof *b),
          *c = malloc((size_t)n * n * sizeof *c);
    if (!a || !b || !c) {
        free(a);
        free(b);
        free(c);
        return cli_error("bench: out of memory for %d x %d matrices", n, n);
    }
    for (size_t i = 0; i < (size_t)n * n; i++) {
        a[i] = (float)((i * 7919) % 1000) * 1e-3f - 0.5f;
        b[i] = (float)((i * 104729) % 1000) * 1e-3f - 0.5f;
    }
    double best = 1e30;
    for (int r = 0; r < 4; r++) { /* first run warms up threads and caches */
        double t0 = cli_now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
        double t = cli_now() - t0;
        if (r > 0 && t < best) best = t;
    }
    printf("sgemm n %d threads %d gflops %.1f core %s\n", n, pe_get_threads(),
           2.0 * n * n * (double)n / best * 1e-9, openblas_get_corename());
    free(a);
    free(b);
    free(c);
    return EXIT_OK;
}

/* ------------------------------------------------------------------ random weights */

typedef struct {
    char name[96];
    int ndim;
    int64_t shape[4];
    float init; /* 0: normal * scale; >0: constant */
    float scale;
} spec;

static int add(spec *s, int n, const char *name, int ndim, int64_t a, int64_t b, int64_t c, int64_t d,
               float init, float scale)
{
    snprintf(s[n].name, sizeof s[n].name, "%s", name);
    s[n].ndim = ndim;
    s[n].shape[0] = a;
    s[n].shape[1] = b;
    s[n].shape[2] = c;
    s[n].shape[3] = d;
    s[n].init = init;
    s[n].scale = scale;
    return n + 1;
}

static int64_t spec_numel(const spec *s)
{
    int64_t n = 1;
    for (int i = 0; i < s->ndim; i++) n *= s->shape[i];
    return n;
}

static int write_random_vit(const char *size, const char *dir)
{
    int D, L, H;
    if (!strcmp(size, "small")) D = 384, L = 12, H = 6;
    else if (!strcmp(size, "base")) D = 768, L = 12, H = 12;
    else if (!strcmp(size, "large")) D = 1024, L = 24, H = 16;
    else return cli_error("bench: --random-vit expects small, base or large, got '%s'", size);
    const int p = 14, grid = 37, M = 4 * D;
    if (cli_mkdirs(dir)) return EXIT_ERROR;
    int cap = 8 + 20 * L, n = 0; /* 18 tensors per block */
    spec *s = calloc((size_t)cap, sizeof *s);
    if (!s) return cli_error("bench: out of memory");
    float ws = 1.0f / sqrtf((float)D);
    n = add(s, n, "embeddings.cls_token", 3, 1, 1, D, 0, 0, 0.5f);
    n = add(s, n, "embeddings.mask_token", 2, 1, D, 0, 0, 0, 0.02f);
    n = add(s, n, "embeddings.position_embeddings", 3, 1, 1 + grid * grid, D, 0, 0, 0.5f);
    n = add(s, n, "embeddings.patch_embeddings.projection.weight", 4, D, 3, p, p, 0, 1.0f / sqrtf(3 * p * p));
    n = add(s, n, "embeddings.patch_embeddings.projection.bias", 1, D, 0, 0, 0, 0, 0.1f);
    for (int l = 0; l < L; l++) {
        char b[96];
#define K(suffix) (snprintf(b, sizeof b, "encoder.layer.%d.%s", l, suffix), b)
        n = add(s, n, K("norm1.weight"), 1, D, 0, 0, 0, 1, 0);
        n = add(s, n, K("norm1.bias"), 1, D, 0, 0, 0, 0, 0.1f);
        const char *qkv[3] = {"query", "key", "value"};
        for (int i = 0; i < 3; i++) {
            char w[64];
            snprintf(w, sizeof w, "attention.attention.%s.weight", qkv[i]);
            n = add(s, n, K(w), 2, D, D, 0, 0, 0, ws);
            snprintf(w, sizeof w, "attention.attention.%s.bias", qkv[i]);
            n = add(s, n, K(w), 1, D, 0, 0, 0, 0, 0.1f);
        }
        n = add(s, n, K("attention.output.dense.weight"), 2, D, D, 0, 0, 0, ws);
        n = add(s, n, K("attention.output.dense.bias"), 1, D, 0, 0, 0, 0, 0.1f);
        n = add(s, n, K("layer_scale1.lambda1"), 1, D, 0, 0, 0, 0.1f, 0);
        n = add(s, n, K("norm2.weight"), 1, D, 0, 0, 0, 1, 0);
        n = add(s, n, K("norm2.bias"), 1, D, 0, 0, 0, 0, 0.1f);
        n = add(s, n, K("mlp.fc1.weight"), 2, M, D, 0, 0, 0, ws);
        n = add(s, n, K("mlp.fc1.bias"), 1, M, 0, 0, 0, 0, 0.1f);
        n = add(s, n, K("mlp.fc2.weight"), 2, D, M, 0, 0, 0, 1.0f / sqrtf((float)M));
        n = add(s, n, K("mlp.fc2.bias"), 1, D, 0, 0, 0, 0, 0.1f);
        n = add(s, n, K("layer_scale2.lambda1"), 1, D, 0, 0, 0, 0.1f, 0);
#undef K
    }
    n = add(s, n, "layernorm.weight", 1, D, 0, 0, 0, 1, 0);
    n = add(s, n, "layernorm.bias", 1, D, 0, 0, 0, 0, 0.1f);

    /* header: {"name": {"dtype": "F32", "shape": [...], "data_offsets": [b, e]}, ...} */
    size_t hcap = (size_t)n * 200 + 64, hl = 0;
    char *hdr = malloc(hcap);
    int64_t off = 0;
    hl += (size_t)snprintf(hdr + hl, hcap - hl, "{");
    for (int i = 0; i < n; i++) {
        int64_t bytes = spec_numel(&s[i]) * 4;
        hl += (size_t)snprintf(hdr + hl, hcap - hl, "%s\"%s\":{\"dtype\":\"F32\",\"shape\":[", i ? "," : "",
                               s[i].name);
        for (int d = 0; d < s[i].ndim; d++)
            hl += (size_t)snprintf(hdr + hl, hcap - hl, "%s%lld", d ? "," : "", (long long)s[i].shape[d]);
        hl += (size_t)snprintf(hdr + hl, hcap - hl, "],\"data_offsets\":[%lld,%lld]}", (long long)off,
                               (long long)(off + bytes));
        off += bytes;
    }
    hl += (size_t)snprintf(hdr + hl, hcap - hl, "}");
    while (hl % 8) hdr[hl++] = ' '; /* keep the data 8-byte aligned, as the reference writer does */

    char path[4200];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    pe_atomic_file *af;
    if (pe_atomic_open(path, &af)) {
        free(hdr);
        free(s);
        return cli_lib_error(PE_ERR_IO);
    }
    FILE *f = pe_atomic_stream(af);
    uint64_t len = hl;
    unsigned char le[8];
    for (int i = 0; i < 8; i++) le[i] = (unsigned char)(len >> (8 * i));
    fwrite(le, 1, 8, f);
    fwrite(hdr, 1, hl, f);
    uint64_t state = 0x9e3779b97f4a7c15ULL;
    float *buf = malloc(65536 * sizeof *buf);
    for (int i = 0; i < n; i++) {
        int64_t left = spec_numel(&s[i]);
        while (left > 0) {
            int chunk = left > 65536 ? 65536 : (int)left;
            for (int j = 0; j < chunk; j++) {
                if (s[i].scale == 0) {
                    buf[j] = s[i].init;
                    continue;
                }
                /* xorshift64 -> approximately normal (sum of 4 uniforms, var 1/3 each) */
                float sum = 0;
                for (int k = 0; k < 4; k++) {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    sum += (float)(state >> 40) * (1.0f / 16777216.0f) - 0.5f;
                }
                buf[j] = sum * 1.7320508f * s[i].scale;
            }
            fwrite(buf, sizeof *buf, (size_t)chunk, f);
            left -= chunk;
        }
    }
    free(buf);
    free(hdr);
    free(s);
    if (pe_atomic_commit(af)) return cli_lib_error(PE_ERR_IO);
    snprintf(path, sizeof path, "%s/config.json", dir);
    if (pe_atomic_open(path, &af)) return cli_lib_error(PE_ERR_IO);
    fprintf(pe_atomic_stream(af),
            "{\"model_type\": \"dinov2\", \"hidden_size\": %d, \"num_hidden_layers\": %d, "
            "\"num_attention_heads\": %d, \"mlp_ratio\": 4, \"patch_size\": %d, \"image_size\": %d, "
            "\"layer_norm_eps\": 1e-06, \"hidden_act\": \"gelu\", \"layerscale_value\": 1.0}\n",
            D, L, H, p, grid * p);
    if (pe_atomic_commit(af)) return cli_lib_error(PE_ERR_IO);
    printf("%s: random dinov2-%s weights\n", dir, size);
    return EXIT_OK;
}

/* ------------------------------------------------------------------ backbone timing */

static int bench_gemm(pe_precision prec, int threads, int M, int N, int K, int reps)
{
    pe_set_threads(threads);
    double g = pe_engine_gemm_gflops(prec, M, N, K, reps);
    if (g <= 0) return cli_error("bench: the engine's %s GEMM %dx%dx%d failed", pe_precision_name(prec), M, N, K);
    printf("gemm precision %s threads %d shape %dx%dx%d gflops %.1f impl %s isa %s\n",
           pe_precision_name(prec), pe_get_threads(), M, N, K, g, pe_engine_gemm_impl(prec, M, N, K),
           pe_engine_isa());
    return EXIT_OK;
}

static double vit_flops(const pe_model_info *in, int size)
{
    const double p = in->patch_size, D = in->hidden_dim, G = (size / in->patch_size) * (double)(size / in->patch_size);
    const double T = 1 + G + (strcmp(in->family, "dinov2_reg") ? 0 : 4);
    return 2 * G * 3 * p * p * D + in->num_layers * (2 * T * D * (3 * D + D + 8 * D) + 4 * T * T * D);
}

static int bench_model(const char *path, int size, int threads, int reps, pe_precision prec,
                       int profile)
{
    pe_model_params mp = pe_model_default_params();
    mp.threads = threads;
    mp.precision = prec;
    pe_model *m = NULL;
    pe_status s = pe_model_load(path, &mp, &m);
    if (s) return cli_lib_error(s);
    pe_model_info in;
    pe_model_get_info(m, &in);
    if (size <= 0) size = in.default_size;
    if (in.is_vit && size % in.patch_size) {
        pe_model_free(m);
        return cli_error("bench: --size %d is not a multiple of the patch size %d", size, in.patch_size);
    }
    float *chw = malloc((size_t)3 * size * size * sizeof *chw);
    if (!chw) {
        pe_model_free(m);
        return cli_error("bench: out of memory");
    }
    for (size_t i = 0; i < (size_t)3 * size * size; i++) chw[i] = sinf(0.001f * (float)i) * 1.5f;
    pe_extract_params ep = pe_extract_default_params();
    double *t = calloc((size_t)reps, sizeof *t);
    if (!t) {
        free(chw);
        pe_model_free(m);
        return cli_error("bench: out of memory");
    }
    for (int r = -1; r < reps && !s; r++) {
        pe_features f;
        if (profile && r == 0) pe_profile_start(); /* the timed runs only, not the warm-up */
        double t0 = cli_now();
        s = pe_model_forward(m, chw, size, size, &ep, &f);
        if (r >= 0) t[r] = (cli_now() - t0) * 1e3;
        pe_features_free(&f);
    }
    free(chw);
    if (s) {
        free(t);
        pe_model_free(m);
        return cli_lib_error(s);
    }
    qsort(t, (size_t)reps, sizeof *t, cmp_double);
    double flops = in.is_vit ? vit_flops(&in, size) : 0;
    printf("model %s size %d threads %d ms_best %.1f ms_median %.1f gflop %.2f gflops %.1f "
           "peak_rss_mb %.0f precision %s\n",
           in.name, size, pe_get_threads(), t[0], t[reps / 2], flops * 1e-9,
           flops > 0 ? flops / (t[0] * 1e-3) * 1e-9 : 0.0, peak_rss_mb(), pe_precision_name(in.precision));
    if (profile) {
        double total = 0;
        for (int r = 0; r < reps; r++) total += t[r];
        pe_profile_print(stdout, reps, total);
    }
    free(t);
    pe_model_free(m);
    return EXIT_OK;
}

int cmd_bench(int argc, char **argv)
{
    cli_opts o;
    cli_opts_init(&o);
    int first, r = cli_parse_options(CMD_BENCH, USAGE, argc, argv, &o, &first);
    if (r) return r > 0 ? EXIT_OK : EXIT_USAGE;
    int sgemm = o.sgemm, gemm = o.gemm, n = o.n, size = o.size, threads = o.threads, reps = o.reps;
    int gm = 1025, gn = 1536, gk = 384;
    pe_precision prec = PE_PRECISION_FP32;
    if (o.precision && cli_parse_precision(o.precision, &prec)) return EXIT_USAGE;
    if (o.shape && (sscanf(o.shape, "%dx%dx%d", &gm, &gn, &gk) != 3 || gm < 1 || gn < 1 ||
                    gk < 1 || gm > 65536 || gn > 65536 || gk > 65536)) {
        cli_error("bench: --shape expects MxNxK (each 1..65536), got '%s'", o.shape);
        return EXIT_USAGE;
    }
    const char *model = o.model, *random = o.random_vit, *output = o.output;
    if (first < argc) {
        cli_error("bench: unexpected argument '%s'", argv[first]);
        return EXIT_USAGE;
    }
    if (sgemm + gemm + (model != NULL) + (random != NULL) != 1) {
        cli_error("bench: give exactly one of --sgemm, --gemm, --model PATH, --random-vit SIZE (see --help)");
        return EXIT_USAGE;
    }
    if (sgemm) return bench_sgemm(n, threads);
    if (gemm) return bench_gemm(prec, threads, gm, gn, gk, reps < 5 ? 5 : reps);
    if (random) {
        if (!output) {
            cli_error("bench: --random-vit needs -o DIR");
            return EXIT_USAGE;
        }
        return write_random_vit(random, output);
    }
    return bench_model(model, size, threads, reps, prec, o.profile);
}
