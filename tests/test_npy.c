/* test_npy.c — .npy read/write against files written by numpy (tests/fixtures/images/npy_*,
 * made by tools/make_image_fixtures.py): numpy's files load with the right shape and values,
 * pe_npy_save reproduces numpy's bytes exactly, hostile headers fail cleanly. */
#include "core/internal.h"
#include "testlib.h"

#include <unistd.h>

#define DIR "tests/fixtures/images/"

static int same_file_bytes(const char *a, const char *b)
{
    uint8_t *x, *y;
    size_t nx, ny;
    if (pe_read_file(a, &x, &nx) != PE_OK) return 0;
    if (pe_read_file(b, &y, &ny) != PE_OK) {
        free(x);
        return 0;
    }
    int same = nx == ny && memcmp(x, y, nx) == 0;
    free(x);
    free(y);
    return same;
}

static void test_numpy_files(void)
{
    FILE *list = fopen(DIR "npy.txt", "r");
    CHECK(list != NULL);
    if (!list) return;
    char line[512], name[256], dtype[16], shape_text[128], path[512];
    double expect;
    int files = 0, byte_identical = 0;
    const char *out = "/tmp/pe_test_npy_copy.npy";
    while (fgets(line, sizeof line, list)) {
        if (line[0] == '#') continue;
        if (sscanf(line, "%255s %15s %127s %lf", name, dtype, shape_text, &expect) != 4) continue;
        snprintf(path, sizeof path, DIR "%s", name);
        /* expected shape from "2x3x4", "7" or "scalar" */
        int64_t want[4] = {0};
        int want_ndim = 0;
        if (strcmp(shape_text, "scalar") != 0)
            for (char *p = shape_text; *p && want_ndim < 4; want_ndim++) {
                want[want_ndim] = strtoll(p, &p, 10);
                if (*p == 'x') p++;
            }
        float *data;
        int ndim;
        int64_t shape[4];
        pe_status s = pe_npy_load(path, &data, &ndim, shape);
        CHECK_MSG(s == PE_OK, "%s: %s", name, pe_last_error());
        if (s != PE_OK) continue;
        files++;
        CHECK_MSG(ndim == want_ndim, "%s: ndim %d, want %d", name, ndim, want_ndim);
        int64_t count = 1;
        for (int i = 0; i < ndim; i++) {
            CHECK_MSG(shape[i] == want[i], "%s: dim %d is %lld", name, i, (long long)shape[i]);
            count *= shape[i];
        }
        double weighted = 0;
        for (int64_t i = 0; i < count; i++) weighted += (double)data[i] * (double)(i % 7 + 1);
        double tol = 1e-6 * (fabs(expect) + 1);
        CHECK_MSG(fabs(weighted - expect) <= tol, "%s: weighted sum %.9g, numpy says %.9g", name,
                  weighted, expect);
        if (strcmp(dtype, "<f4") == 0) { /* our writer gives numpy's exact bytes */
            remove(out);
            CHECK(pe_npy_save(out, data, ndim, shape) == PE_OK);
            int same = same_file_bytes(out, path);
            CHECK_MSG(same, "%s: pe_npy_save bytes differ from numpy.save", name);
            byte_identical += same;
        }
        free(data);
    }
    fclose(list);
    remove(out);
    CHECK(files >= 7 && byte_identical >= 6);
    printf("# %d numpy files read; %d re-written byte-identical to numpy.save\n", files,
           byte_identical);
}

static void test_round_trip(void)
{
    const char *path = "/tmp/pe_test_npy_rt.npy";
    const int64_t shapes[][4] = {{3, 5, 0, 0}, {2, 1, 4, 3}, {1000, 0, 0, 0}, {0, 0, 0, 0}};
    const int ranks[] = {2, 4, 1, 0};
    float values[1000];
    for (int i = 0; i < 1000; i++) values[i] = (float)(i * 0.37 - 100) / (float)(1 + i % 13);
    values[3] = -0.0f;
    values[4] = 1e-40f; /* subnormal survives */
    for (int c = 0; c < 4; c++) {
        CHECK(pe_npy_save(path, values, ranks[c], shapes[c]) == PE_OK);
        float *data;
        int ndim;
        int64_t shape[4];
        CHECK(pe_npy_load(path, &data, &ndim, shape) == PE_OK);
        CHECK(ndim == ranks[c]);
        int64_t count = 1;
        for (int i = 0; i < ndim; i++) {
            CHECK(shape[i] == shapes[c][i]);
            count *= shape[i];
        }
        CHECK(data && memcmp(data, values, (size_t)count * sizeof(float)) == 0);
        free(data);
    }
    remove(path);
}

static void test_bad_files(void)
{
    const struct {
        const char *name;
        pe_status status;
        const char *says;
    } cases[] = {
        {"npy_bad_be.npy", PE_ERR_UNSUPPORTED, ">f4"},
        {"npy_bad_i4.npy", PE_ERR_UNSUPPORTED, "<i4"},
        {"npy_bad_fortran.npy", PE_ERR_UNSUPPORTED, "Fortran"},
        {"npy_bad_short.npy", PE_ERR_FORMAT, "truncated"},
        {"npy_bad_long.npy", PE_ERR_FORMAT, "trailing"},
        {"npy_bad_magic.npy", PE_ERR_FORMAT, "magic"},
        {"npy_bad_5d.npy", PE_ERR_SHAPE, "dimensions"},
        {"npy_bad_header.npy", PE_ERR_FORMAT, "header"},
        {"npy_bad_overflow.npy", PE_ERR_FORMAT, "too large"},
        {"png_rgb8.png", PE_ERR_FORMAT, "magic"},
        {"bad_empty.png", PE_ERR_FORMAT, "magic"},
        {"no_such_file.npy", PE_ERR_IO, "cannot open"},
    };
    char path[512];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        snprintf(path, sizeof path, DIR "%s", cases[i].name);
        float *data = (float *)path; /* must come back NULL */
        int ndim = 9;
        int64_t shape[4] = {9, 9, 9, 9};
        pe_status s = pe_npy_load(path, &data, &ndim, shape);
        CHECK_MSG(s == cases[i].status, "%s: got %s (%s)", cases[i].name, pe_status_name(s),
                  pe_last_error());
        CHECK_MSG(strstr(pe_last_error(), cases[i].name) && strstr(pe_last_error(), cases[i].says),
                  "%s: message '%s'", cases[i].name, pe_last_error());
        CHECK(data == NULL && ndim == 0 && shape[0] == 0);
    }
    float *data;
    int ndim;
    int64_t shape[4];
    CHECK(pe_npy_load("tests/fixtures", &data, &ndim, shape) == PE_ERR_IO);
    /* every prefix of a valid file fails cleanly */
    uint8_t *bytes;
    size_t n;
    CHECK(pe_read_file(DIR "npy_f4_2x3.npy", &bytes, &n) == PE_OK);
    const char *cut_path = "/tmp/pe_test_npy_cut.npy";
    for (size_t cut = 0; cut < n; cut += 3) {
        FILE *f = fopen(cut_path, "wb");
        fwrite(bytes, 1, cut, f);
        fclose(f);
        CHECK_MSG(pe_npy_load(cut_path, &data, &ndim, shape) == PE_ERR_FORMAT, "cut at %zu", cut);
        CHECK(data == NULL);
    }
    free(bytes);
    remove(cut_path);
}

static void test_save_errors(void)
{
    float v[4] = {1, 2, 3, 4};
    int64_t shape5[5] = {1, 1, 1, 2, 2}, neg[2] = {2, -2};
    const char *path = "/tmp/pe_test_npy_err.npy";
    remove(path);
    CHECK(pe_npy_save(path, v, 5, shape5) == PE_ERR_ARG);
    CHECK(pe_npy_save(path, v, 2, neg) == PE_ERR_ARG);
    CHECK(pe_npy_save(path, NULL, 2, shape5) == PE_ERR_ARG);
    CHECK(access(path, F_OK) != 0);
    CHECK(pe_npy_save("/nonexistent_dir/a.npy", v, 1, shape5 + 3) == PE_ERR_IO);
    CHECK(strstr(pe_last_error(), "/nonexistent_dir/a.npy") != NULL);
}

int main(void)
{
    RUN(test_numpy_files);
    RUN(test_round_trip);
    RUN(test_bad_files);
    RUN(test_save_errors);
    return test_summary();
}
