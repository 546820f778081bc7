/* testlib.h — a minimal test harness. Each test binary prints one line per check
 * group ("PASS name" / "FAIL name: why" / "SKIP name: why") and ends with
 * "# passed P failed F skipped S"; tests/run.sh counts the lines into the final
 * "N passed, N failed, N skipped" line.
 *
 *   static void test_something(void) { CHECK(x == 1); CHECK_NEAR(a, b, 1e-6); }
 *   int main(void) { RUN(test_something); return test_summary(); }
 */
#ifndef PE_TESTLIB_H
#define PE_TESTLIB_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int tl_passed, tl_failed, tl_skipped, tl_current_failed, tl_current_skipped;
static const char *tl_current;

#define CHECK(cond)                                                                          \
    do {                                                                                     \
        if (!(cond)) {                                                                       \
            if (!tl_current_failed)                                                          \
                printf("FAIL %s: %s:%d: %s\n", tl_current, __FILE__, __LINE__, #cond);       \
            tl_current_failed = 1;                                                           \
        }                                                                                    \
    } while (0)

#define CHECK_MSG(cond, ...)                                                                 \
    do {                                                                                     \
        if (!(cond)) {                                                                       \
            if (!tl_current_failed) {                                                        \
                printf("FAIL %s: %s:%d: ", tl_current, __FILE__, __LINE__);                  \
                printf(__VA_ARGS__);                                                         \
                printf("\n");                                                                \
            }                                                                                \
            tl_current_failed = 1;                                                           \
        }                                                                                    \
    } while (0)

#define CHECK_NEAR(a, b, tol)                                                                \
    do {                                                                                     \
        double tl_a = (a), tl_b = (b);                                                       \
        CHECK_MSG(fabs(tl_a - tl_b) <= (tol), "%s = %.9g vs %s = %.9g (tol %g)", #a, tl_a, #b, \
                  tl_b, (double)(tol));                                                      \
    } while (0)

#define RUN(fn)                                                                              \
    do {                                                                                     \
        tl_current = #fn;                                                                    \
        tl_current_failed = tl_current_skipped = 0;                                          \
        fn();                                                                                \
        if (tl_current_failed) tl_failed++;                                                  \
        else if (tl_current_skipped) tl_skipped++;                                           \
        else {                                                                               \
            tl_passed++;                                                                     \
            printf("PASS %s\n", #fn);                                                        \
        }                                                                                    \
        fflush(stdout);                                                                      \
    } while (0)

/* Print a skip line, e.g. when optional data is absent: the group is counted as skipped
 * (not passed) unless a check of it failed before. Return from the test after it. */
#define SKIP(why) (printf("SKIP %s: %s\n", tl_current, why), tl_current_skipped = 1)

static inline int test_summary(void)
{
    printf("# passed %d failed %d skipped %d\n", tl_passed, tl_failed, tl_skipped);
    return tl_failed ? 1 : 0;
}

/* Optional real data (MVTec subsets, not in the repository) is found ONLY through the
 * environment variable PATCHEAD_DATA (CI: ../shared/data). Writes "$PATCHEAD_DATA/rel"
 * into buf and returns it, or returns NULL when the variable is unset or empty (the test
 * then SKIPs; when it is set, missing files are failures, not skips). */
static inline const char *test_data_path(const char *rel, char *buf, size_t cap)
{
    const char *root = getenv("PATCHEAD_DATA");
    if (!root || !*root) return NULL;
    snprintf(buf, cap, "%s/%s", root, rel);
    return buf;
}

/* Path of the repository's tests/fixtures folder (tests run from the repo root). */
#define FIXTURE(name) ("tests/fixtures/" name)

/* The larger of a running worst error and a new one, where a NaN wins and stays: fmax
 * would drop a NaN the code under test produced, and a comparison with the tolerance
 * would then pass. Use it for every error accumulator. */
static inline double tl_worse(double worst, double d)
{
    return worst != worst || d <= worst ? worst : d;
}

/* max |a - b| / max |b| over n values (the parity tolerance measure of make parity);
 * NaN when a has a NaN where b has none. */
static inline double tl_rel_diff(const float *a, const float *b, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        num = tl_worse(num, fabs((double)a[i] - b[i]));
        den = fmax(den, fabs((double)b[i]));
    }
    return den > 0 ? num / den : num;
}

#ifdef PE_ENGINE_H
/* act(x) in double for ENG_ACT_* (the tests of the engine's and amx_linear's fused
 * activations; only where compute/engine.h was included first) */
static inline double tl_act_ref(int act, double x)
{
    switch (act) {
    case ENG_ACT_GELU: return 0.5 * x * (1.0 + erf(x / sqrt(2.0)));
    case ENG_ACT_GELU_TANH:
        return 0.5 * x * (1.0 + tanh(sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
    case ENG_ACT_QUICK_GELU: return x / (1.0 + exp(-1.702 * x));
    case ENG_ACT_SILU: return x / (1.0 + exp(-x));
    default: return x;
    }
}
#endif

#endif
