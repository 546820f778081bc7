/* vecmath.c — which copy of the element-wise kernels runs here (see vecmath.h). */
#include "vecmath.h"

#include <stdlib.h>
#include <strings.h>

static int g_avx512 = -1; /* -1: not decided yet (benign race: every thread decides alike) */

int vec_avx512(void)
{
    int v = __atomic_load_n(&g_avx512, __ATOMIC_RELAXED);
    if (v >= 0) return v;
    __builtin_cpu_init();
    v = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
    /* oneDNN's cap applies to ours too: any named ISA below AVX-512 turns it off */
    const char *cap = getenv("DNNL_MAX_CPU_ISA");
    if (cap && *cap && strncasecmp(cap, "AVX512", 6) != 0 && strncasecmp(cap, "AVX10", 5) != 0 &&
        strncasecmp(cap, "ALL", 3) != 0 && strncasecmp(cap, "AMX", 3) != 0)
        v = 0;
    __atomic_store_n(&g_avx512, v, __ATOMIC_RELAXED);
    return v;
}

int vec_set_avx512(int enabled)
{
    static int cpu = -1; /* what the CPU (and the cap) allow, decided once */
    int previous = vec_avx512();
    if (cpu < 0) cpu = previous;
    __atomic_store_n(&g_avx512, enabled && cpu, __ATOMIC_RELAXED);
    return previous;
}

const char *vec_isa_name(void) { return vec_avx512() ? "avx512" : "avx2"; }
