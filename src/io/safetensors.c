/* safetensors.c — read-only .safetensors access: mmap the file, parse and validate
 * the JSON header once (cJSON), then hand out tensors as pointers into the mapping
 * or as float32 copies (F32 / F16 / BF16 are converted).
 *
 * Layout: [u64 LE header length N][N bytes JSON][data]; every tensor's
 * data_offsets = [begin, end) are relative to the data section. st_open checks,
 * before anything is used: N fits in the file, the JSON is an object of objects,
 * dtype is known, shape is a list of non-negative integers whose product times the
 * element size equals end - begin (no overflow), end <= data size, and no two
 * tensors overlap. */
#include "safetensors.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* Headers larger than this are rejected (the reference implementation uses 100 MB). */
#define ST_MAX_HEADER ((uint64_t)100 * 1024 * 1024)

struct st_file {
    char path[4096];
    const uint8_t *map; /* whole file */
    size_t map_size;
    const uint8_t *data; /* data section (after the header) */
    size_t data_size;
    st_tensor *tensors; /* sorted by data offset */
    int count;
    char *names;         /* all tensor names, NUL-separated (tensors[i].name points here) */
    int *by_name;        /* tensor indices sorted by name, for st_find */
    char dtype_summary[8];
};

typedef struct {
    const char *name;
    int size;
} dtype_desc;

/* Every dtype the format defines (so a file with an I64 buffer still opens); only the
 * float ones can be loaded as float32. */
static const dtype_desc dtypes[] = {
    {"F32", 4}, {"F16", 2}, {"BF16", 2}, {"F64", 8}, {"I64", 8}, {"I32", 4}, {"I16", 2},
    {"I8", 1},  {"U8", 1},  {"U16", 2},  {"U32", 4}, {"U64", 8}, {"BOOL", 1},
    {"F8_E4M3", 1}, {"F8_E5M2", 1},
};

static int dtype_size(const char *name)
{
    for (size_t i = 0; i < sizeof dtypes / sizeof *dtypes; i++)
        if (!strcmp(dtypes[i].name, name)) return dtypes[i].size;
    return 0;
}

const char *st_path(const st_file *f) { return f ? f->path : ""; }
int st_count(const st_file *f) { return f ? f->count : 0; }

const st_tensor *st_at(const st_file *f, int index)
{
    return f && index >= 0 && index < f->count ? &f->tensors[index] : NULL;
}

static int cmp_offset(const void *a, const void *b)
{
    const st_tensor *x = a, *y = b;
    return x->data < y->data ? -1 : x->data > y->data ? 1 : 0;
}
static int cmp_name_index(const void *a, const void *b, void *ctx)
{
    const st_tensor *tensors = ctx;
    return strcmp(tensors[*(const int *)a].name, tensors[*(const int *)b].name);
}

const st_tensor *st_find(const st_file *f, const char *name)
{
    if (!f || !name) return NULL;
    int lo = 0, hi = f->count - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        const st_tensor *t = &f->tensors[f->by_name[mid]];
        int c = strcmp(name, t->name);
        if (c == 0) return t;
        if (c < 0) hi = mid - 1;
        else lo = mid + 1;
    }
    return NULL;
}

void st_close(st_file *f)
{
    if (!f) return;
    if (f->map && f->map_size) munmap((void *)f->map, f->map_size);
    free(f->tensors);
    free(f->names);
    free(f->by_name);
    free(f);
}

/* Parse one header entry into *t (name not set). Errors name the file and tensor. */
static pe_status parse_entry(st_file *f, const cJSON *e, st_tensor *t)
{
    const char *name = e->string;
    if (!cJSON_IsObject(e))
        return pe_fail(PE_ERR_FORMAT, "%s: header entry '%s' is not an object", f->path, name);
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(e, "dtype");
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(e, "shape");
    const cJSON *offs = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    if (!cJSON_IsString(dt) || !cJSON_IsArray(shape) || !cJSON_IsArray(offs))
        return pe_fail(PE_ERR_FORMAT, "%s: tensor '%s' lacks dtype, shape or data_offsets", f->path,
                       name);
    int esize = dtype_size(dt->valuestring);
    if (!esize)
        return pe_fail(PE_ERR_FORMAT, "%s: tensor '%s' has unknown dtype '%.16s'", f->path, name,
                       dt->valuestring);
    snprintf(t->dtype, sizeof t->dtype, "%s", dt->valuestring);
    int ndim = cJSON_GetArraySize(shape);
    if (ndim > ST_MAX_DIMS)
        return pe_fail(PE_ERR_FORMAT, "%s: tensor '%s' has %d dims (max %d)", f->path, name, ndim,
                       ST_MAX_DIMS);
    t->ndim = ndim;
    uint64_t numel = 1;
    int i = 0;
    const cJSON *d;
    cJSON_ArrayForEach(d, shape)
    {
        /* JSON numbers arrive as doubles: exact for integers below 2^53. */
        if (!cJSON_IsNumber(d) || d->valuedouble < 0 || d->valuedouble > 9007199254740992.0 ||
            d->valuedouble != (double)(int64_t)d->valuedouble)
            return pe_fail(PE_ERR_FORMAT, "%s: tensor '%s' has an invalid shape entry", f->path, name);
        t->shape[i++] = (int64_t)d->valuedouble;
        uint64_t dim = (uint64_t)d->valuedouble;
        if (dim && numel > UINT64_MAX / dim / 8)
            return pe_fail(PE_ERR_FORMAT, "%s: tensor '%s' shape overflows", f->path, name);
        numel *= dim;
    }
    t->numel = (int64_t)numel;
    if (cJSON_GetArraySize(offs) != 2)
        return pe_fail(PE_ERR_FORMAT, "%s: tensor '%s' data_offsets is not [begin, end]", f->path,
                       name);
    const cJSON *jb = cJSON_GetArrayItem(offs, 0), *je = cJSON_GetArrayItem(offs, 1);
    if (!cJSON_IsNumber(jb) || !cJSON_IsNumber(je))
        return pe_fail(PE_ERR_FORMAT, "%s: tensor '%s' has invalid data_offsets", f->path, name);
    double b = jb->valuedouble, en = je->valuedouble;
    if (b < 0 || b > 9007199254740992.0 || en > 9007199254740992.0 || en < b || b != (double)(uint64_t)b || en != (double)(uint64_t)en)
        return pe_fail(PE_ERR_FORMAT, "%s: tensor '%s' has invalid data_offsets", f->path, name);
    uint64_t begin = (uint64_t)b, end = (uint64_t)en;
    if (end > f->data_size)
        return pe_fail(PE_ERR_FORMAT,
                       "%s: tensor '%s' data [%llu, %llu) lies beyond the end of the file "
                       "(data section %zu bytes; truncated?)",
                       f->path, name, (unsigned long long)begin, (unsigned long long)end,
                       f->data_size);
    if (end - begin != numel * (uint64_t)esize)
        return pe_fail(PE_ERR_FORMAT,
                       "%s: tensor '%s' has %llu bytes but dtype %s and its shape need %llu",
                       f->path, name, (unsigned long long)(end - begin), t->dtype,
                       (unsigned long long)(numel * (uint64_t)esize));
    t->data = f->data + begin;
    return PE_OK;
}

static pe_status parse_header(st_file *f, const char *json, size_t n)
{
    cJSON *root = cJSON_ParseWithLength(json, n);
    if (!root || !cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return pe_fail(PE_ERR_FORMAT, "%s: header is not a valid JSON object", f->path);
    }
    int count = 0;
    size_t name_bytes = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, root)
    {
        if (!e->string) continue;
        if (!strcmp(e->string, "__metadata__")) continue;
        count++;
        name_bytes += strlen(e->string) + 1;
    }
    pe_status s = PE_OK;
    f->tensors = calloc((size_t)(count ? count : 1), sizeof *f->tensors);
    f->by_name = calloc((size_t)(count ? count : 1), sizeof *f->by_name);
    f->names = malloc(name_bytes ? name_bytes : 1);
    if (!f->tensors || !f->by_name || !f->names) {
        cJSON_Delete(root);
        return pe_fail(PE_ERR_NOMEM, "%s: out of memory for the tensor table", f->path);
    }
    char *np = f->names;
    int i = 0;
    cJSON_ArrayForEach(e, root)
    {
        if (!e->string || !strcmp(e->string, "__metadata__")) continue;
        st_tensor *t = &f->tensors[i];
        s = parse_entry(f, e, t);
        if (s) break;
        size_t len = strlen(e->string) + 1;
        memcpy(np, e->string, len);
        t->name = np;
        np += len;
        i++;
    }
    cJSON_Delete(root);
    if (s) return s;
    f->count = count;

    /* Non-overlap: sorted by begin, each tensor must start at or after the previous end. */
    qsort(f->tensors, (size_t)count, sizeof *f->tensors, cmp_offset);
    for (int k = 1; k < count; k++) {
        const st_tensor *a = &f->tensors[k - 1], *b = &f->tensors[k];
        size_t a_end = (size_t)(a->data - f->data) + (size_t)a->numel * (size_t)dtype_size(a->dtype);
        if ((size_t)(b->data - f->data) < a_end)
            return pe_fail(PE_ERR_FORMAT, "%s: tensors '%s' and '%s' overlap", f->path, a->name,
                           b->name);
    }
    for (int k = 0; k < count; k++) f->by_name[k] = k;
    qsort_r(f->by_name, (size_t)count, sizeof *f->by_name, cmp_name_index, f->tensors);
    for (int k = 1; k < count; k++)
        if (!strcmp(f->tensors[f->by_name[k - 1]].name, f->tensors[f->by_name[k]].name))
            return pe_fail(PE_ERR_FORMAT, "%s: tensor '%s' appears twice", f->path,
                           f->tensors[f->by_name[k]].name);

    /* Dominant float dtype, by bytes. */
    size_t bytes[3] = {0, 0, 0};
    const char *names[3] = {"F32", "F16", "BF16"};
    int other = 0;
    for (int k = 0; k < count; k++) {
        int j = 0;
        while (j < 3 && strcmp(f->tensors[k].dtype, names[j])) j++;
        if (j < 3) bytes[j] += (size_t)f->tensors[k].numel;
        else other = 1;
    }
    int kinds = (bytes[0] > 0) + (bytes[1] > 0) + (bytes[2] > 0);
    if (kinds == 1 && !other) snprintf(f->dtype_summary, sizeof f->dtype_summary, "%s",
                                       bytes[0] ? "F32" : bytes[1] ? "F16" : "BF16");
    else snprintf(f->dtype_summary, sizeof f->dtype_summary, "mixed");
    return PE_OK;
}

pe_status st_open(const char *path, st_file **out)
{
    *out = NULL;
    st_file *f = calloc(1, sizeof *f);
    if (!f) return pe_fail(PE_ERR_NOMEM, "%s: out of memory", path);
    snprintf(f->path, sizeof f->path, "%s", path);
    int fd = pe_open_regular(path); /* a FIFO is refused, not waited on */
    if (fd < 0) {
        free(f);
        return PE_ERR_IO;
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        free(f);
        return pe_fail(PE_ERR_IO, "%s: not a regular file", path);
    }
    if (sb.st_size < 8) {
        close(fd);
        free(f);
        return pe_fail(PE_ERR_FORMAT, "%s: truncated safetensors file (%lld bytes, need at least 8)",
                       path, (long long)sb.st_size);
    }
    f->map_size = (size_t)sb.st_size;
    void *m = mmap(NULL, f->map_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (m == MAP_FAILED) {
        f->map_size = 0;
        st_close(f);
        return pe_fail(PE_ERR_IO, "%s: cannot map (%s)", path, strerror(errno));
    }
    f->map = m;
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = (n << 8) | f->map[i];
    if (n > f->map_size - 8 || n > ST_MAX_HEADER) {
        pe_status s = pe_fail(PE_ERR_FORMAT,
                              "%s: header length %llu exceeds the file size %zu (truncated or not "
                              "a safetensors file)",
                              path, (unsigned long long)n, f->map_size);
        st_close(f);
        return s;
    }
    f->data = f->map + 8 + n;
    f->data_size = f->map_size - 8 - (size_t)n;
    pe_status s = parse_header(f, (const char *)f->map + 8, (size_t)n);
    if (s) {
        st_close(f);
        return s;
    }
    *out = f;
    return PE_OK;
}

/* pe_hash_fast_chunks callback: unmap the pages of a chunk just read (see st_hash). */
static void unmap_read_chunk(const void *p, size_t n, void *arg)
{
    (void)arg;
    madvise((void *)p, n, MADV_DONTNEED);
}

void st_hash(const st_file *f, char out[17])
{
    /* The hash reads every page, and reading through the mapping maps the page into this
     * process. Each 4 MB chunk is unmapped again once read: the mapping is a read-only
     * file one, so a page read later comes back from the page cache unchanged
     * (MADV_DONTNEED discards nothing here). So loading never holds the whole file in
     * the process's memory, and afterwards only the weights a forward pass reads are
     * resident: a bf16 model, which reads each fp32 weight once to convert it (then
     * unmaps it, engine.c), never holds the fp32 file. */
    enum { CHUNK = 4 << 20 }; /* a multiple of the page size and of the hash's 32 bytes */
    uint64_t h = f ? pe_hash_fast_chunks(f->map, f->map_size, CHUNK, unmap_read_chunk, NULL)
                   : PE_FNV_SEED;
    snprintf(out, 17, "%016llx", (unsigned long long)h);
}

const void *st_map(const st_file *f, size_t *size)
{
    *size = f ? f->map_size : 0;
    return f ? f->map : NULL;
}

const char *st_dtype_summary(const st_file *f) { return f ? f->dtype_summary : "mixed"; }

/* IEEE half -> float (normals, subnormals, inf, NaN). */
static inline float half_to_float(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
    uint32_t bits;
    if (exp == 0x1f) bits = sign | 0x7f800000u | (mant << 13);
    else if (exp == 0) {
        /* zero or subnormal: value = mant * 2^-24, exact in float */
        float v = (float)mant * 5.9604644775390625e-08f;
        memcpy(&bits, &v, 4);
        bits |= sign;
    } else bits = sign | ((exp + 112) << 23) | (mant << 13);
    float out;
    memcpy(&out, &bits, 4);
    return out;
}

/* Convert n elements of `t` (F32/F16/BF16, any alignment) into dst. */
static void convert(const st_tensor *t, float *dst, size_t n)
{
    const uint8_t *src = t->data;
    if (!strcmp(t->dtype, "F32")) {
        memcpy(dst, src, n * 4);
    } else if (!strcmp(t->dtype, "BF16")) {
        for (size_t i = 0; i < n; i++) {
            uint32_t bits = (uint32_t)(src[2 * i] | src[2 * i + 1] << 8) << 16;
            memcpy(&dst[i], &bits, 4);
        }
    } else {
        for (size_t i = 0; i < n; i++) dst[i] = half_to_float((uint16_t)(src[2 * i] | src[2 * i + 1] << 8));
    }
}

static pe_status load_checked(const st_file *f, const st_tensor *t, float **out)
{
    if (strcmp(t->dtype, "F32") && strcmp(t->dtype, "F16") && strcmp(t->dtype, "BF16"))
        return pe_fail(PE_ERR_UNSUPPORTED, "%s: tensor '%s' has dtype %s (need F32, F16 or BF16)",
                       f->path, t->name, t->dtype);
    float *buf = pe_alloc((size_t)t->numel, sizeof(float), t->name);
    if (!buf) return PE_ERR_NOMEM;
    convert(t, buf, (size_t)t->numel);
    *out = buf;
    return PE_OK;
}

static void format_shape(char *buf, size_t cap, int ndim, const int64_t *shape)
{
    size_t used = 0;
    used += (size_t)snprintf(buf, cap, "(");
    for (int i = 0; i < ndim && used < cap; i++)
        used += (size_t)snprintf(buf + used, cap - used, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (used < cap) snprintf(buf + used, cap - used, ")");
}

pe_status st_load_f32(const st_file *f, const char *name, int ndim, const int64_t *shape, float **out)
{
    *out = NULL;
    const st_tensor *t = st_find(f, name);
    if (!t) return pe_fail(PE_ERR_FORMAT, "%s: missing tensor '%s'", f->path, name);
    int same = t->ndim == ndim;
    for (int i = 0; same && i < ndim; i++) same = t->shape[i] == shape[i];
    if (!same) {
        char want[128], got[128];
        format_shape(want, sizeof want, ndim, shape);
        format_shape(got, sizeof got, t->ndim, t->shape);
        return pe_fail(PE_ERR_SHAPE, "%s: tensor '%s' has shape %s, expected %s", f->path, name, got,
                       want);
    }
    return load_checked(f, t, out);
}

pe_status st_load_f32_any(const st_file *f, const char *name, float **out, int *ndim,
                          int64_t shape[ST_MAX_DIMS])
{
    *out = NULL;
    const st_tensor *t = st_find(f, name);
    if (!t) return pe_fail(PE_ERR_FORMAT, "%s: missing tensor '%s'", f->path, name);
    pe_status s = load_checked(f, t, out);
    if (s) return s;
    *ndim = t->ndim;
    for (int i = 0; i < t->ndim; i++) shape[i] = t->shape[i];
    return PE_OK;
}
