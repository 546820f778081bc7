/* util.c — allocation, hashing, whole-file reads, atomic file output, threads. */
#include "internal.h"

#include <cblas.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* OpenBLAS's own thread control (declared here to avoid depending on its header name). */
void openblas_set_num_threads(int num_threads);

static int thread_count = 0;

void pe_set_threads(int n)
{
    if (n <= 0) {
        long cores = sysconf(_SC_NPROCESSORS_ONLN);
        n = cores > 0 ? (int)cores : 1;
    }
    thread_count = n;
    openblas_set_num_threads(n);
#ifdef _OPENMP
    omp_set_num_threads(n);
#endif
}

int pe_get_threads(void)
{
    if (thread_count <= 0) pe_set_threads(0);
    return thread_count;
}

void *pe_alloc(size_t count, size_t elem_size, const char *what)
{
    if (elem_size && count > SIZE_MAX / elem_size) {
        pe_fail(PE_ERR_NOMEM, "%s: size overflow (%zu x %zu bytes)", what, count, elem_size);
        return NULL;
    }
    size_t bytes = count * elem_size;
    bytes = (bytes + 63) & ~(size_t)63;
    if (bytes == 0) bytes = 64;
    void *p = NULL;
    if (posix_memalign(&p, 64, bytes) != 0) {
        pe_fail(PE_ERR_NOMEM, "%s: out of memory (%zu bytes)", what, bytes);
        return NULL;
    }
    return p;
}

void *pe_calloc(size_t count, size_t elem_size, const char *what)
{
    void *p = pe_alloc(count, elem_size, what);
    if (p) memset(p, 0, count * elem_size);
    return p;
}

uint64_t pe_fnv1a(uint64_t hash, const void *data, size_t n)
{
    const uint8_t *p = data;
    for (size_t i = 0; i < n; i++) {
        hash ^= p[i];
        hash *= 0x100000001b3ULL;
    }
    return hash;
}

uint64_t pe_hash_fast(const void *data, size_t n)
{
    return pe_hash_fast_chunks(data, n, 0, NULL, NULL);
}

uint64_t pe_hash_fast_chunks(const void *data, size_t n, size_t chunk,
                             void (*done)(const void *p, size_t n, void *arg), void *arg)
{
    /* Four independent FNV-1a-style lanes over 64-bit words (the multiplies overlap in
     * the pipeline: ~8 GB/s instead of ~0.7 GB/s bytewise), then the lanes, the length
     * and the tail bytes folded together with bytewise FNV-1a. The chunks only split
     * the walk (chunk a multiple of 32): the value is pe_hash_fast's. */
    const uint64_t prime = 0x100000001b3ULL;
    uint64_t lane[4] = {PE_FNV_SEED, PE_FNV_SEED ^ 1, PE_FNV_SEED ^ 2, PE_FNV_SEED ^ 3};
    const uint8_t *p = data;
    const size_t blocks = n / 32, per = chunk >= 32 ? chunk / 32 : blocks;
    for (size_t b0 = 0; b0 < blocks; b0 += per) {
        const size_t b1 = b0 + per < blocks ? b0 + per : blocks;
        const uint8_t *start = p;
        for (size_t b = b0; b < b1; b++, p += 32) {
            for (int l = 0; l < 4; l++) {
                uint64_t w;
                memcpy(&w, p + 8 * l, 8);
                lane[l] = (lane[l] ^ w) * prime;
            }
        }
        if (done) done(start, (size_t)(p - start), arg);
    }
    uint64_t h = pe_fnv1a(PE_FNV_SEED, lane, sizeof lane);
    uint64_t len = n;
    h = pe_fnv1a(h, &len, sizeof len);
    return pe_fnv1a(h, p, n - blocks * 32);
}

static const char *file_kind(mode_t m)
{
    return S_ISDIR(m)    ? "a folder"
           : S_ISFIFO(m) ? "a FIFO"
           : S_ISSOCK(m) ? "a socket"
           : S_ISCHR(m)  ? "a character device"
           : S_ISBLK(m)  ? "a block device"
                         : "not a plain file";
}

int pe_open_regular(const char *path)
{
    /* O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer forever;
     * the type is checked on the opened descriptor (no race with a rename in between). */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        pe_fail(PE_ERR_IO, "%s: cannot open (%s)", path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        pe_fail(PE_ERR_IO, "%s: not a regular file (%s)", path, file_kind(st.st_mode));
        close(fd);
        return -1;
    }
    int flags = fcntl(fd, F_GETFL);
    if (flags >= 0) fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
    return fd;
}

FILE *pe_fopen_regular(const char *path)
{
    int fd = pe_open_regular(path);
    if (fd < 0) return NULL;
    FILE *f = fdopen(fd, "r");
    if (!f) {
        pe_fail(PE_ERR_IO, "%s: cannot open (%s)", path, strerror(errno));
        close(fd);
    }
    return f;
}

pe_status pe_read_file(const char *path, uint8_t **data, size_t *size)
{
    *data = NULL;
    *size = 0;
    int fd = pe_open_regular(path);
    if (fd < 0) return PE_ERR_IO;
    struct stat st;
    if (fstat(fd, &st) != 0) {
        close(fd);
        return pe_fail(PE_ERR_IO, "%s: cannot read (%s)", path, strerror(errno));
    }
    if ((uint64_t)st.st_size >= PE_MAX_INPUT_FILE) {
        close(fd);
        return pe_fail(PE_ERR_LIMIT,
                       "%s: %lld bytes, more than the %llu MiB accepted for this kind "
                       "of file",
                       path, (long long)st.st_size, (unsigned long long)(PE_MAX_INPUT_FILE >> 20));
    }
    size_t len = (size_t)st.st_size;
    uint8_t *buf = malloc(len + 1);
    if (!buf) {
        close(fd);
        return pe_fail(PE_ERR_NOMEM, "%s: out of memory reading %zu bytes", path, len);
    }
    size_t got = 0;
    while (got < len) {
        ssize_t r = read(fd, buf + got, len - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        got += (size_t)r;
    }
    int e = errno;
    close(fd);
    if (got != len) {
        free(buf);
        return pe_fail(PE_ERR_IO, "%s: short read (%s)", path,
                       got < len && e ? strerror(e) : "file changed");
    }
    buf[len] = 0;
    *data = buf;
    *size = len;
    return PE_OK;
}
