/* test_safetensors.c — the safetensors reader on a file written by the reference
 * writer (tests/fixtures/safetensors/mixed.safetensors, tools/make_vit_fixtures.py)
 * and on hand-made good and corrupt files: every bad input must fail with a one-line
 * message naming the file, never crash. */
#include "io/safetensors.h"
#include "testlib.h"

#include <stdint.h>
#include <unistd.h>

static char tmpdir[64];

/* Write [u64 header length][header][data] to tmpdir/name; header_len_override >= 0
 * replaces the length field. Returns the path (static buffer). */
static const char *make_file(const char *name, const char *header, const void *data, size_t n,
                             long long header_len_override)
{
    static char path[256];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "wb");
    uint64_t len = header_len_override >= 0 ? (uint64_t)header_len_override : strlen(header);
    unsigned char le[8];
    for (int i = 0; i < 8; i++) le[i] = (unsigned char)(len >> (8 * i));
    fwrite(le, 1, 8, f);
    fwrite(header, 1, strlen(header), f);
    if (n) fwrite(data, 1, n, f);
    fclose(f);
    return path;
}

static void test_reference_writer_file(void)
{
    st_file *f = NULL;
    pe_status s = st_open(FIXTURE("safetensors/mixed.safetensors"), &f);
    CHECK_MSG(s == PE_OK, "%s", pe_last_error());
    if (s) return;
    CHECK(st_count(f) == 6);
    CHECK(!strcmp(st_dtype_summary(f), "mixed"));
    const st_tensor *t = st_find(f, "bf16");
    CHECK(t && t->ndim == 3 && t->shape[0] == 2 && t->shape[1] == 4 && t->shape[2] == 9 &&
          t->numel == 72 && !strcmp(t->dtype, "BF16"));
    CHECK(st_find(f, "nope") == NULL);
    const char *pairs[2][2] = {{"f16", "f16_as_f32"}, {"bf16", "bf16_as_f32"}};
    for (int k = 0; k < 2; k++) {
        float *a = NULL, *b = NULL;
        int nd;
        int64_t shape[ST_MAX_DIMS];
        CHECK(st_load_f32_any(f, pairs[k][0], &a, &nd, shape) == PE_OK);
        CHECK(st_load_f32_any(f, pairs[k][1], &b, &nd, shape) == PE_OK);
        /* bit-exact: the same conversion PyTorch does (incl. inf, -0, subnormals) */
        if (a && b) CHECK_MSG(memcmp(a, b, 72 * sizeof(float)) == 0, "%s differs from torch", pairs[k][0]);
        free(a);
        free(b);
    }
    float *v = NULL;
    int64_t want[1] = {72}, wrong[2] = {8, 9};
    CHECK(st_load_f32(f, "f32", 1, want, &v) == PE_OK);
    free(v);
    v = NULL;
    CHECK(st_load_f32(f, "f32", 2, wrong, &v) == PE_ERR_SHAPE && v == NULL);
    CHECK(strstr(pe_last_error(), "mixed.safetensors") && strstr(pe_last_error(), "'f32'") &&
          strstr(pe_last_error(), "(72)") && strstr(pe_last_error(), "(8, 9)"));
    CHECK(st_load_f32(f, "missing", 1, want, &v) == PE_ERR_FORMAT);
    CHECK(strstr(pe_last_error(), "missing tensor 'missing'"));
    int nd;
    int64_t shape[ST_MAX_DIMS];
    CHECK(st_load_f32_any(f, "i64", &v, &nd, shape) == PE_ERR_UNSUPPORTED);
    CHECK(strstr(pe_last_error(), "I64"));
    char h1[17], h2[17];
    st_hash(f, h1);
    CHECK(strlen(h1) == 16);
    st_close(f);
    CHECK(st_open(FIXTURE("safetensors/mixed.safetensors"), &f) == PE_OK);
    st_hash(f, h2);
    CHECK(!strcmp(h1, h2));
    st_close(f);
}

static void test_handmade_valid(void)
{
    /* two F32 tensors, data out of header order, plus metadata; an empty tensor */
    float data[6] = {1, 2, 3, 4, 5, 6};
    const char *hdr = "{\"__metadata__\":{\"x\":\"y\"},"
                      "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[16,24]},"
                      "\"a\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]},"
                      "\"e\":{\"dtype\":\"F32\",\"shape\":[0,3],\"data_offsets\":[24,24]}}";
    const char *path = make_file("ok.safetensors", hdr, data, sizeof data, -1);
    st_file *f = NULL;
    CHECK_MSG(st_open(path, &f) == PE_OK, "%s", pe_last_error());
    if (!f) return;
    CHECK(st_count(f) == 3);
    CHECK(!strcmp(st_dtype_summary(f), "F32"));
    CHECK(!strcmp(st_path(f), path));
    float *v = NULL;
    int64_t shp[1] = {2};
    CHECK(st_load_f32(f, "b", 1, shp, &v) == PE_OK);
    if (v) CHECK(v[0] == 5 && v[1] == 6);
    free(v);
    const st_tensor *e = st_find(f, "e");
    CHECK(e && e->numel == 0);
    st_close(f);
}

typedef struct {
    const char *name, *header;
    size_t data_bytes;
    long long len_override;
    const char *expect; /* substring of the message */
} bad_case;

static void test_corrupt_files(void)
{
    static const bad_case cases[] = {
        {"hdrlen.safetensors", "{}", 0, 1000, "exceeds the file size"},
        {"json.safetensors", "{\"a\":{\"dtype\":\"F32\",", 0, -1, "not a valid JSON"},
        {"array.safetensors", "[1,2]", 0, -1, "not a valid JSON object"},
        {"nodtype.safetensors", "{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, -1,
         "lacks dtype"},
        {"dtype.safetensors", "{\"a\":{\"dtype\":\"Q7\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, -1,
         "unknown dtype"},
        {"trunc.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 8,
         -1, "beyond the end"},
        {"size.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,16]}}", 16,
         -1, "need 12"},
        {"overlap.safetensors",
         "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
         "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
         12, -1, "overlap"},
        {"negshape.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}",
         4, -1, "invalid shape"},
        {"fracshape.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}",
         4, -1, "invalid shape"},
        {"offs.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,4]}}", 8, -1,
         "invalid data_offsets"},
        {"offs3.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}", 8,
         -1, "data_offsets"},
        {"huge.safetensors",
         "{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4],\"data_offsets\":[0,4]}}", 4,
         -1, "overflows"},
        {"dup.safetensors",
         "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
         "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
         8, -1, "twice"},
        {"entry.safetensors", "{\"a\":3}", 0, -1, "not an object"},
    };
    unsigned char zeros[64] = {0};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        const bad_case *c = &cases[i];
        const char *path = make_file(c->name, c->header, zeros, c->data_bytes, c->len_override);
        st_file *f = (st_file *)1;
        pe_status s = st_open(path, &f);
        CHECK_MSG(s == PE_ERR_FORMAT && f == NULL, "%s: status %d", c->name, s);
        const char *msg = pe_last_error();
        CHECK_MSG(strstr(msg, c->name) && strstr(msg, c->expect) && !strchr(msg, '\n'),
                  "%s: message '%s' lacks '%s'", c->name, msg, c->expect);
    }
    /* shorter than the length field itself */
    char path[256];
    snprintf(path, sizeof path, "%s/tiny.safetensors", tmpdir);
    FILE *fp = fopen(path, "wb");
    fwrite("abc", 1, 3, fp);
    fclose(fp);
    st_file *f = NULL;
    CHECK(st_open(path, &f) == PE_ERR_FORMAT && strstr(pe_last_error(), "truncated"));
    /* missing file, directory */
    CHECK(st_open("/nonexistent/x.safetensors", &f) == PE_ERR_IO &&
          strstr(pe_last_error(), "/nonexistent/x.safetensors"));
    CHECK(st_open(tmpdir, &f) == PE_ERR_IO);
    /* a real file cut short: the last tensor's data is gone */
    uint8_t *bytes;
    size_t n;
    CHECK(pe_read_file(FIXTURE("safetensors/mixed.safetensors"), &bytes, &n) == PE_OK);
    snprintf(path, sizeof path, "%s/cut.safetensors", tmpdir);
    fp = fopen(path, "wb");
    fwrite(bytes, 1, n - 10, fp);
    fclose(fp);
    free(bytes);
    CHECK(st_open(path, &f) == PE_ERR_FORMAT && strstr(pe_last_error(), "truncated?"));
}

int main(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/pe_st_XXXXXX");
    if (!mkdtemp(tmpdir)) return 1;
    RUN(test_reference_writer_file);
    RUN(test_handmade_valid);
    RUN(test_corrupt_files);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    if (system(cmd) != 0) return 1;
    return test_summary();
}
