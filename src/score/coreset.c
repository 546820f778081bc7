/* coreset.c — full-shot banks: greedy k-center subsampling of all reference patches
 * (PatchCore's coreset rule; docs/BEYOND.md).
 *
 * Scoring uses the cosine distance, and for unit vectors ||a - b||^2 = 2 - 2 cos(a, b),
 * so k-center runs on L2-normalised rows. Optionally the rows are multiplied by a seeded
 * Gaussian matrix (dim, proj) / sqrt(proj) (Johnson-Lindenstrauss), one GEMM, which
 * makes every later step cost O(n * proj) instead of O(n * dim).
 *
 * Greedy step t: the new centre c is the row with the largest distance to its nearest
 * centre so far; then every row's nearest-centre distance is lowered to its distance to
 * c. That is one pass over the (n, d) matrix per centre: a matrix-vector product fused
 * with the min / argmax, split over threads; the argmax is combined across threads with
 * "largest, then lowest index", so the result does not depend on the thread count. */
#include "beyond.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <string.h>

int pe_coreset_size(int n, float fraction, int count)
{
    long k = count > 0 ? count : lround((double)fraction * n);
    if (k < 1) k = 1;
    if (k > n) k = n;
    return (int)k;
}

/* Standard normal from two uniforms of the seeded stream (Box-Muller). */
static double gaussian(uint64_t *state)
{
    double u1 = ((pe_splitmix64(state) >> 11) + 0.5) / 9007199254740992.0;
    double u2 = (pe_splitmix64(state) >> 11) / 9007199254740992.0;
    return sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
}

pe_status pe_coreset_select(const float *x, int n, int dim, int keep, int proj_dim, uint64_t seed,
                            int *selected)
{
    if (!x || !selected || n < 1 || dim < 1 || keep < 1 || keep > n || proj_dim < 0)
        return pe_fail(PE_ERR_ARG, "coreset: bad arguments (n %d, dim %d, keep %d, projection %d)",
                       n, dim, keep, proj_dim);
    const int d = proj_dim > 0 ? proj_dim : dim;
    float *unit = pe_alloc((size_t)n * dim, sizeof(float), "coreset features");
    float *z = proj_dim > 0 ? pe_alloc((size_t)n * d, sizeof(float), "coreset projection") : unit;
    float *proj =
        proj_dim > 0 ? pe_alloc((size_t)dim * d, sizeof(float), "coreset projection") : NULL;
    float *sq = pe_alloc((size_t)n, sizeof(float), "coreset norms");       /* ||z_i||^2 */
    float *mind = pe_alloc((size_t)n, sizeof(float), "coreset distances"); /* to nearest centre */
    if (!unit || !z || (proj_dim > 0 && !proj) || !sq || !mind) {
        free(unit);
        if (z != unit) free(z);
        free(proj);
        free(sq);
        free(mind);
        return PE_ERR_NOMEM;
    }
#pragma omp parallel for schedule(static)
    for (int i = 0; i < n; i++) {
        const float *row = x + (size_t)i * dim;
        double ss = 0;
        for (int k = 0; k < dim; k++) ss += (double)row[k] * row[k];
        float inv = ss > 0 ? (float)(1.0 / sqrt(ss)) : 0.0f;
        for (int k = 0; k < dim; k++) unit[(size_t)i * dim + k] = row[k] * inv;
    }
    uint64_t state = seed;
    const int first = (int)(pe_splitmix64(&state) % (uint64_t)n);
    if (proj_dim > 0) {
        float scale = (float)(1.0 / sqrt((double)d));
        for (size_t i = 0; i < (size_t)dim * d; i++) proj[i] = (float)gaussian(&state) * scale;
        /* (n, dim) x (dim, d) -> (n, d) */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, d, dim, 1.0f, unit, dim, proj, d,
                    0.0f, z, d);
    }
#pragma omp parallel for schedule(static)
    for (int i = 0; i < n; i++) {
        double ss = 0;
        for (int k = 0; k < d; k++) ss += (double)z[(size_t)i * d + k] * z[(size_t)i * d + k];
        sq[i] = (float)ss;
        mind[i] = INFINITY;
    }

    int centre = first;
    for (int t = 0; t < keep; t++) {
        selected[t] = centre;
        mind[centre] = -1.0f; /* chosen: never again, even against rounding or duplicates */
        if (t == keep - 1) break;
        const float *c = z + (size_t)centre * d;
        const float csq = sq[centre];
        float best = -1.0f;
        int best_i = -1;
#pragma omp parallel
        {
            float tbest = -1.0f;
            int ti = -1;
#pragma omp for schedule(static) nowait
            for (int i = 0; i < n; i++) {
                const float *row = z + (size_t)i * d;
                float dot = 0;
#pragma omp simd reduction(+ : dot)
                for (int k = 0; k < d; k++) dot += row[k] * c[k];
                float dist = sq[i] + csq - 2.0f * dot;
                if (dist < 0) dist = 0;
                float m = dist < mind[i] ? dist : mind[i];
                mind[i] = m;
                if (m > tbest) { /* i increases within a thread: first index wins ties */
                    tbest = m;
                    ti = i;
                }
            }
#pragma omp critical
            if (ti >= 0 && (tbest > best || (tbest == best && ti < best_i))) {
                best = tbest;
                best_i = ti;
            }
        }
        centre = best_i;
    }
    free(unit);
    if (z != unit) free(z);
    free(proj);
    free(sq);
    free(mind);
    return PE_OK;
}
