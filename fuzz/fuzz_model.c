/* fuzz_model.c — libFuzzer target: model loading from a hub-layout folder, i.e. the
 * config.json parser, the safetensors header parser and the family/shape checks that
 * follow. Input layout: 2 bytes little-endian n, then n bytes of config.json, then the
 * model.safetensors bytes. Each process writes the pair into its own temporary folder
 * (removed at exit). */
#include "fuzz_util.h"
#include "patchead.h"

#include <string.h>
#include <sys/stat.h>

static char dir[64], cfg[96], wts[96];

static void cleanup(void)
{
    unlink(cfg);
    unlink(wts);
    rmdir(dir);
}

static int put(const char *path, const uint8_t *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = fwrite(p, 1, n, f);
    return fclose(f) == 0 && w == n ? 0 : -1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!dir[0]) {
        const char *base = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
        snprintf(dir, sizeof dir, "%.40s/pefuzz.XXXXXX", base);
        if (!mkdtemp(dir)) abort();
        snprintf(cfg, sizeof cfg, "%s/config.json", dir);
        snprintf(wts, sizeof wts, "%s/model.safetensors", dir);
        atexit(cleanup);
    }
    if (size < 2 || size > (1u << 20)) return 0;
    size_t n = (size_t)data[0] | (size_t)data[1] << 8;
    if (n > size - 2) n = size - 2;
    if (put(cfg, data + 2, n) || put(wts, data + 2 + n, size - 2 - n)) return 0;
    pe_model_params mp = pe_model_default_params();
    mp.threads = 1;
    pe_model *model = NULL;
    if (pe_model_load(dir, &mp, &model) == PE_OK) {
        pe_model_info info;
        (void)pe_model_get_info(model, &info);
        pe_model_free(model);
    }
    return 0;
}
