/* npy.c — NumPy .npy files: write float32 C-order arrays byte-for-byte as numpy.save does,
 * read little-endian float32 / float64 C-order arrays with the header checked against the
 * file length.
 *
 * Layout: "\x93NUMPY" major minor, header length (u16 LE for v1.0, u32 LE for v2/v3), then
 * a Python dict literal {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), } padded
 * with spaces and a final '\n' so that the data starts on a 64-byte boundary. */
#include "core/internal.h"

#include <errno.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "npy.c reads and writes little-endian data directly: port the byte order first"
#endif

#define NPY_MAX_DIMS 4
#define NPY_ALIGN 64
/* numpy >= 1.24 leaves room for the first axis to grow to 21 digits in place. */
#define NPY_GROWTH_DIGITS 21
#define NPY_MAX_HEADER (1 << 20)

/* ------------------------------------------------------------------ save */

pe_status pe_npy_save(const char *path, const float *data, int ndim, const int64_t *shape)
{
    if (!path) return pe_fail(PE_ERR_ARG, "pe_npy_save: path is NULL");
    if (ndim < 0 || ndim > NPY_MAX_DIMS || (ndim > 0 && !shape))
        return pe_fail(PE_ERR_ARG, "%s: bad array rank %d (0..%d)", path, ndim, NPY_MAX_DIMS);
    uint64_t count = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0)
            return pe_fail(PE_ERR_ARG, "%s: negative dimension %lld", path, (long long)shape[i]);
        if (shape[i] && count > UINT64_MAX / 4 / (uint64_t)shape[i])
            return pe_fail(PE_ERR_ARG, "%s: array too large", path);
        count *= (uint64_t)shape[i];
    }
    if (count && !data) return pe_fail(PE_ERR_ARG, "%s: no data", path);

    /* Header text exactly as numpy writes it: Python tuple repr ("()", "(5,)", "(2, 3)"),
     * growth spaces after the dict, then padding so that 10 + len + 1 is a multiple of 64. */
    char header[512];
    int len = snprintf(header, sizeof header, "{'descr': '<f4', 'fortran_order': False, 'shape': (");
    for (int i = 0; i < ndim; i++)
        len += snprintf(header + len, sizeof header - len, i ? ", %lld" : "%lld",
                        (long long)shape[i]);
    len += snprintf(header + len, sizeof header - len, "%s), }", ndim == 1 ? "," : "");
    if (ndim > 0) {
        char digits[32];
        int d = snprintf(digits, sizeof digits, "%lld", (long long)shape[0]);
        for (int i = d; i < NPY_GROWTH_DIGITS; i++) header[len++] = ' ';
    }
    int pad = NPY_ALIGN - (10 + len + 1) % NPY_ALIGN;
    memset(header + len, ' ', (size_t)pad);
    len += pad;
    header[len++] = '\n';

    uint8_t prefix[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (uint8_t)(len & 0xFF),
                          (uint8_t)(len >> 8)};
    pe_atomic_file *af;
    pe_status s = pe_atomic_open(path, &af);
    if (s) return s;
    FILE *f = pe_atomic_stream(af);
    if (fwrite(prefix, 1, sizeof prefix, f) != sizeof prefix ||
        fwrite(header, 1, (size_t)len, f) != (size_t)len ||
        (count && fwrite(data, sizeof(float), (size_t)count, f) != (size_t)count)) {
        s = pe_atomic_abort(af);
        return s ? s : pe_fail(PE_ERR_IO, "%s: write failed", path);
    }
    return pe_atomic_commit(af);
}

/* ------------------------------------------------------------------ header parsing */

/* A cursor over the header's Python-literal dict. */
typedef struct {
    const char *p, *end;
} npy_text;

static void skip_space(npy_text *t)
{
    while (t->p < t->end && (*t->p == ' ' || *t->p == '\t')) t->p++;
}

static int accept_char(npy_text *t, char c)
{
    skip_space(t);
    if (t->p < t->end && *t->p == c) {
        t->p++;
        return 1;
    }
    return 0;
}

/* 'text' or "text" -> out (NUL-terminated, truncated to cap). */
static int parse_string(npy_text *t, char *out, size_t cap)
{
    skip_space(t);
    if (t->p >= t->end || (*t->p != '\'' && *t->p != '"')) return 0;
    char quote = *t->p++;
    size_t n = 0;
    while (t->p < t->end && *t->p != quote) {
        if (n + 1 < cap) out[n++] = *t->p;
        t->p++;
    }
    if (t->p >= t->end) return 0;
    t->p++;
    out[n] = '\0';
    return 1;
}

static int accept_word(npy_text *t, const char *word)
{
    skip_space(t);
    size_t n = strlen(word);
    if ((size_t)(t->end - t->p) >= n && memcmp(t->p, word, n) == 0) {
        t->p += n;
        return 1;
    }
    return 0;
}

/* (d0, d1, ...) with an optional trailing comma; at most NPY_MAX_DIMS + 1 read so that
 * a rank that is too high can be reported. */
static int parse_shape(npy_text *t, int64_t *dims, int *ndim)
{
    *ndim = 0;
    if (!accept_char(t, '(')) return 0;
    for (;;) {
        if (accept_char(t, ')')) return 1;
        skip_space(t);
        if (t->p >= t->end || *t->p < '0' || *t->p > '9') return 0;
        int64_t v = 0;
        while (t->p < t->end && *t->p >= '0' && *t->p <= '9') {
            if (v > (INT64_MAX - 9) / 10) return 0; /* absurd dimension */
            v = v * 10 + (*t->p++ - '0');
        }
        if (*ndim > NPY_MAX_DIMS) return 0; /* the caller reports the rank */
        dims[(*ndim)++] = v;
        if (!accept_char(t, ',')) return accept_char(t, ')');
    }
}

/* ------------------------------------------------------------------ load */

static pe_status npy_fail_close(FILE *f, pe_status status)
{
    fclose(f);
    return status;
}

pe_status pe_npy_load(const char *path, float **data, int *ndim, int64_t shape[4])
{
    if (!path || !data || !ndim || !shape) return pe_fail(PE_ERR_ARG, "pe_npy_load: NULL argument");
    *data = NULL;
    *ndim = 0;
    memset(shape, 0, sizeof(int64_t) * NPY_MAX_DIMS);
    struct stat st;
    int fd = pe_open_regular(path);
    if (fd < 0) return PE_ERR_IO;
    FILE *f = fstat(fd, &st) == 0 ? fdopen(fd, "rb") : NULL;
    if (!f) {
        close(fd);
        return pe_fail(PE_ERR_IO, "%s: cannot open (%s)", path, strerror(errno));
    }

    uint8_t prefix[12];
    if (fread(prefix, 1, 10, f) != 10 || memcmp(prefix, "\x93NUMPY", 6) != 0)
        return npy_fail_close(f, pe_fail(PE_ERR_FORMAT, "%s: not a .npy file (bad magic)", path));
    int major = prefix[6];
    size_t header_len, prefix_len = 10;
    if (major == 1) {
        header_len = (size_t)prefix[8] | (size_t)prefix[9] << 8;
    } else if (major == 2 || major == 3) { /* 4-byte header length */
        if (fread(prefix + 10, 1, 2, f) != 2)
            return npy_fail_close(f, pe_fail(PE_ERR_FORMAT, "%s: truncated .npy header", path));
        header_len = (size_t)prefix[8] | (size_t)prefix[9] << 8 | (size_t)prefix[10] << 16 |
                     (size_t)prefix[11] << 24;
        prefix_len = 12;
    } else {
        return npy_fail_close(f, pe_fail(PE_ERR_UNSUPPORTED, "%s: .npy format version %d.%d",
                                         path, major, prefix[7]));
    }
    if (header_len > NPY_MAX_HEADER || prefix_len + header_len > (uint64_t)st.st_size)
        return npy_fail_close(f, pe_fail(PE_ERR_FORMAT, "%s: truncated or oversized .npy header",
                                         path));
    char *header = malloc(header_len + 1);
    if (!header) return npy_fail_close(f, pe_fail(PE_ERR_NOMEM, "%s: out of memory", path));
    if (fread(header, 1, header_len, f) != header_len) {
        free(header);
        return npy_fail_close(f, pe_fail(PE_ERR_IO, "%s: short read", path));
    }
    header[header_len] = '\0';

    /* The dict: keys in any order, each exactly once; a trailing comma is allowed. */
    char descr[32] = "", key[32];
    int fortran = -1, dims_n = -1, closed = 0;
    int64_t dims[NPY_MAX_DIMS + 1];
    npy_text t = {header, header + header_len};
    int ok = accept_char(&t, '{');
    while (ok && !(closed = accept_char(&t, '}'))) {
        ok = parse_string(&t, key, sizeof key) && accept_char(&t, ':');
        if (ok && strcmp(key, "descr") == 0 && !descr[0])
            ok = parse_string(&t, descr, sizeof descr) && descr[0];
        else if (ok && strcmp(key, "fortran_order") == 0 && fortran < 0)
            ok = (fortran = accept_word(&t, "True") ? 1 : accept_word(&t, "False") ? 0 : -1) >= 0;
        else if (ok && strcmp(key, "shape") == 0 && dims_n < 0)
            ok = parse_shape(&t, dims, &dims_n);
        else
            ok = 0; /* unknown or repeated key */
        if (ok && !accept_char(&t, ',')) ok = closed = accept_char(&t, '}');
        if (closed) break;
    }
    if (ok) { /* only padding may follow the dict */
        while (t.p < t.end && (*t.p == ' ' || *t.p == '\n' || *t.p == '\0')) t.p++;
        ok = closed && t.p == t.end && descr[0] && fortran >= 0 && dims_n >= 0;
    }
    free(header);
    if (dims_n > NPY_MAX_DIMS)
        return npy_fail_close(f, pe_fail(PE_ERR_SHAPE, "%s: array has more than %d dimensions",
                                         path, NPY_MAX_DIMS));
    if (!ok) return npy_fail_close(f, pe_fail(PE_ERR_FORMAT, "%s: malformed .npy header", path));
    size_t item;
    if (strcmp(descr, "<f4") == 0) item = 4;
    else if (strcmp(descr, "<f8") == 0) item = 8;
    else
        return npy_fail_close(f, pe_fail(PE_ERR_UNSUPPORTED,
                                         "%s: .npy dtype '%s' is not supported (need '<f4' or "
                                         "'<f8')",
                                         path, descr));
    if (fortran)
        return npy_fail_close(
            f, pe_fail(PE_ERR_UNSUPPORTED, "%s: Fortran-order .npy arrays are not supported", path));

    /* Element count and the data size it implies, checked against the file's length. */
    uint64_t count = 1;
    for (int i = 0; i < dims_n; i++) {
        if (dims[i] && count > (uint64_t)(SIZE_MAX / 8) / (uint64_t)dims[i])
            return npy_fail_close(f, pe_fail(PE_ERR_FORMAT, "%s: .npy shape too large", path));
        count *= (uint64_t)dims[i];
    }
    uint64_t need = count * item, have = (uint64_t)st.st_size - prefix_len - header_len;
    if (have != need)
        return npy_fail_close(
            f, pe_fail(PE_ERR_FORMAT, "%s: .npy data is %llu bytes, shape and dtype need %llu (%s)",
                       path, (unsigned long long)have, (unsigned long long)need,
                       have < need ? "truncated" : "trailing bytes"));

    float *out = pe_alloc((size_t)count, sizeof(float), path);
    if (!out) return npy_fail_close(f, PE_ERR_NOMEM);
    size_t got = 0;
    if (item == 4) {
        got = fread(out, 4, (size_t)count, f);
    } else { /* float64 -> float32 through a small buffer */
        double buf[4096];
        while (got < count) {
            size_t want = PE_MIN((size_t)(count - got), sizeof buf / sizeof buf[0]);
            size_t r = fread(buf, 8, want, f);
            for (size_t i = 0; i < r; i++) out[got + i] = (float)buf[i];
            got += r;
            if (r != want) break;
        }
    }
    fclose(f);
    if (got != count) {
        free(out);
        return pe_fail(PE_ERR_IO, "%s: short read", path);
    }
    *data = out;
    *ndim = dims_n;
    for (int i = 0; i < dims_n; i++) shape[i] = dims[i];
    return PE_OK;
}
