/* test_util.c — error text, atomic file output, hashing. */
#include "internal.h"
#include "testlib.h"

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
    char tmp[512];
    remove(path);
    FILE *f = pe_open_temp(path, tmp, sizeof tmp);
    CHECK(f != NULL);
    fputs("hello", f);
    CHECK(access(path, F_OK) != 0); /* nothing visible before commit */
    CHECK(pe_commit_file(f, tmp, path) == PE_OK);
    uint8_t *data;
    size_t n;
    CHECK(pe_read_file(path, &data, &n) == PE_OK);
    CHECK(n == 5 && memcmp(data, "hello", 5) == 0);
    free(data);
    f = pe_open_temp(path, tmp, sizeof tmp);
    fputs("partial", f);
    pe_abort_file(f, tmp);
    CHECK(access(tmp, F_OK) != 0);
    CHECK(pe_read_file(path, &data, &n) == PE_OK && n == 5); /* old content kept */
    free(data);
    remove(path);
    CHECK(pe_read_file("/nonexistent/file", &data, &n) == PE_ERR_IO);
    CHECK(strstr(pe_last_error(), "/nonexistent/file") != NULL);
    CHECK(pe_read_file("/tmp", &data, &n) == PE_ERR_IO);
    CHECK(strstr(pe_last_error(), "not a regular file") != NULL);
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
}

int main(void)
{
    RUN(test_error_text);
    RUN(test_atomic_write);
    RUN(test_fnv);
    return test_summary();
}
