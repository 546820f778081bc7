/* test_util.c — error text, atomic file output, hashing. */
#include "core/internal.h"
#include "testlib.h"

#include <sys/stat.h>
#include <unistd.h>

static void test_error_text(void)
{
    pe_status s = pe_fail(PE_ERR_FORMAT, "%s: bad\nthing", "x.png");
    CHECK(s == PE_ERR_FORMAT);
    CHECK(strcmp(pe_last_error(), "x.png: bad thing") == 0);
    CHECK(strcmp(pe_status_name(PE_ERR_IO), "io") == 0);
}

static void test_atomic_write(void)
{
    const char *path = "/tmp/pe_test_atomic.bin";
    remove(path);
    pe_atomic_file *af;
    CHECK(pe_atomic_open(path, &af) == PE_OK);
    fputs("hello", pe_atomic_stream(af));
    CHECK(access(path, F_OK) != 0); /* nothing visible before commit */
    CHECK(pe_atomic_commit(af) == PE_OK);
    uint8_t *data;
    size_t n;
    CHECK(pe_read_file(path, &data, &n) == PE_OK);
    CHECK(n == 5 && memcmp(data, "hello", 5) == 0);
    free(data);
    CHECK(pe_atomic_open(path, &af) == PE_OK);
    fputs("partial", pe_atomic_stream(af));
    CHECK(pe_atomic_abort(af) == PE_OK);
    CHECK(pe_read_file(path, &data, &n) == PE_OK && n == 5); /* old content kept */
    free(data);
    remove(path);
    CHECK(pe_read_file("/nonexistent/file", &data, &n) == PE_ERR_IO);
    CHECK(strstr(pe_last_error(), "/nonexistent/file") != NULL);
    CHECK(pe_read_file("/tmp", &data, &n) == PE_ERR_IO);
    CHECK(strstr(pe_last_error(), "not a regular file") != NULL);
}

/* A FIFO is refused at once (it used to block in open() waiting for a writer). The test
 * binary runs under alarm(): a regression ends with SIGALRM instead of hanging. */
static void test_fifo_refused(void)
{
    const char *fifo = "/tmp/pe_test_fifo.png";
    remove(fifo);
    CHECK(mkfifo(fifo, 0600) == 0);
    uint8_t *data;
    size_t n;
    CHECK(pe_read_file(fifo, &data, &n) == PE_ERR_IO);
    CHECK(strstr(pe_last_error(), "a FIFO") != NULL);
    pe_image img;
    CHECK(pe_image_load(fifo, &img) == PE_ERR_IO);
    float *arr;
    int nd;
    int64_t shape[4];
    CHECK(pe_npy_load(fifo, &arr, &nd, shape) == PE_ERR_IO);
    pe_model *m = NULL;
    CHECK(pe_model_load(fifo, NULL, &m) != PE_OK && m == NULL);
    CHECK(strstr(pe_last_error(), "regular file") != NULL);
    pe_bank *b = NULL;
    CHECK(pe_bank_load(fifo, NULL, &b) == PE_ERR_IO);
    remove(fifo);
}

/* pe_hash_fast_chunks callback: bytes and calls (arg size_t[2]); chunks arrive in order. */
static void count_chunk(const void *p, size_t n, void *arg)
{
    size_t *seen = arg;
    (void)p;
    seen[0] += n;
    seen[1]++;
}

static void test_fnv(void)
{
    /* FNV-1a 64 test vectors */
    CHECK(pe_fnv1a(PE_FNV_SEED, "", 0) == 0xcbf29ce484222325ULL);
    CHECK(pe_fnv1a(PE_FNV_SEED, "a", 1) == 0xaf63dc4c8601ec8cULL);
    /* the fast hash sees every byte, the tail and the length */
    uint8_t buf[100];
    for (int i = 0; i < 100; i++) buf[i] = (uint8_t)i;
    uint64_t base = pe_hash_fast(buf, 100);
    CHECK(base == pe_hash_fast(buf, 100));
    for (int pos = 0; pos < 100; pos += 9) {
        buf[pos] ^= 1;
        CHECK(pe_hash_fast(buf, 100) != base);
        buf[pos] ^= 1;
    }
    CHECK(pe_hash_fast(buf, 99) != base);
    CHECK(pe_hash_fast(buf, 64) != pe_hash_fast(buf, 65));
    /* walked in chunks: the same value, and the chunks cover the 32-byte blocks in order */
    for (size_t chunk = 0; chunk <= 128; chunk += 32) {
        size_t seen[2] = {0, 0}; /* bytes reported, calls */
        CHECK(pe_hash_fast_chunks(buf, 100, chunk, count_chunk, seen) == base);
        const size_t per = chunk / 32, calls = per ? (3 + per - 1) / per : 1; /* 3 blocks */
        CHECK_MSG(seen[0] == 96 && seen[1] == calls, "chunk %zu: %zu bytes, %zu calls", chunk,
                  seen[0], seen[1]);
    }
}

int main(void)
{
    alarm(60);
    RUN(test_error_text);
    RUN(test_atomic_write);
    RUN(test_fifo_refused);
    RUN(test_fnv);
    return test_summary();
}
