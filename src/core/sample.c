/* sample.c — the one seeded sampler of few-shot references and its PRNG (see
 * pe_sample_refs in patchead.h and docs/METHOD.md, "Reference sampling"). */
#include "internal.h"

uint64_t pe_splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

pe_status pe_sample_refs(uint64_t seed, int n, int *perm)
{
    if (n < 0 || (n > 0 && !perm))
        return pe_fail(PE_ERR_ARG, "pe_sample_refs: n = %d with perm %s", n, perm ? "set" : "NULL");
    for (int i = 0; i < n; i++) perm[i] = i;
    /* Forward Fisher-Yates: perm[i] is final after step i, so the first N entries depend
     * only on the first N draws — the N-shot set is a prefix of the (N+1)-shot set. The
     * modulo bias is below n / 2^64: negligible for any n an int can hold. */
    uint64_t state = seed;
    for (int i = 0; i < n - 1; i++) {
        int j = i + (int)(pe_splitmix64(&state) % (uint64_t)(n - i));
        int t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    return PE_OK;
}
