/* coreset.c — full-shot banks: greedy k-center subsampling of all reference patches
 * (PatchCore's coreset rule; docs/BEYOND.md).
 *
 * Scoring uses the cosine distance, and for unit vectors ||a - b||^2 = 2 - 2 cos(a, b),
 * so k-center runs on L2-normalised rows. Optionally the rows are multiplied by a seeded
 * Gaussian matrix (dim, proj) / sqrt(proj) (Johnson-Lindenstrauss), one GEMM, which
 * makes every later step cost O(n * proj) instead of O(n * dim).
 *
 * Greedy step t: the new centre c is the row with the largest distance to its nearest
 * centre so far (ties: the lowest row index); then every row's nearest-centre distance is
 * lowered to its distance to c. Done plainly (greedy_plain) that is one pass over the (n, d)
 * matrix per centre, O(keep n d) and bound by memory bandwidth; greedy_pruned gives the same
 * selection bit for bit while skipping, by the triangle inequality, every cluster of rows
 * that the new centre cannot reach (see there). The result does not depend on the thread
 * count. */
#include "beyond.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
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

/* Squared distance of a row to a centre, sq + csq - 2 dot clamped at 0. One compiled copy
 * (noinline) serves the plain and the pruned selection, so both compute the same bits. */
__attribute__((noinline)) static float row_dist(const float *row, const float *c, int d, float sq,
                                                float csq)
{
    float dot = 0;
#pragma omp simd reduction(+ : dot)
    for (int k = 0; k < d; k++) dot += row[k] * c[k];
    float dist = sq + csq - 2.0f * dot;
    return dist < 0 ? 0 : dist;
}

static void greedy_plain(const float *z, const float *sq, float *mind, int n, int d, int keep,
                         int first, int *selected);
/* Row i at distance m beats the current farthest (r, row a): larger, or equal and lower index. */
static inline int farther(float m, int i, float r, int a) { return m > r || (m == r && i < a); }

static pe_status greedy_pruned(const float *z, const float *sq, float *mind, int n, int d, int keep,
                               int first, int *selected);

/* PE_CORESET_PLAIN=1 (tests, benches): every centre scans every row, as before the pruning. */
static int plain_requested(void)
{
    const char *e = getenv("PE_CORESET_PLAIN");
    return e && *e == '1';
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

    pe_status st = PE_OK;
    if (plain_requested()) greedy_plain(z, sq, mind, n, d, keep, first, selected);
    else st = greedy_pruned(z, sq, mind, n, d, keep, first, selected);
    free(unit);
    if (z != unit) free(z);
    free(proj);
    free(sq);
    free(mind);
    return st;
}

/* Every centre scans every row: O(keep n d), one pass over the (n, d) matrix per centre. */
static void greedy_plain(const float *z, const float *sq, float *mind, int n, int d, int keep,
                         int first, int *selected)
{
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
                float dist = row_dist(z + (size_t)i * d, c, d, sq[i], csq);
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
}

/* The same selection with most rows never touched again. Each row belongs to the cluster of
 * its nearest centre so far (the centre that set mind[i]); each cluster j keeps its members
 * (a linked list), its radius R_j = max mind over them and the row reaching it. When a centre
 * c arrives, a row i of cluster j can get closer to c than to c_j only if
 *     |c - c_j| < |x_i - c| + |x_i - c_j| < 2 |x_i - c_j| <= 2 sqrt(R_j)    (triangle inequality),
 * so a cluster with |c - c_j| >= 2 sqrt(R_j) + margin is skipped whole: its rows' mind and its
 * (R_j, row) stay exact. The margin (1e-2 of the largest row norm) is far above the float
 * error of the distances (~1e-6 of it), so a skipped row is one whose float distance the plain
 * loop would also not have taken: the rows scanned use the same row_dist, so mind, the
 * argmax and the selection are bit for bit those of greedy_plain (tested). Cost per centre:
 * one distance per cluster, then only the members of nearby clusters. */
static pe_status greedy_pruned(const float *z, const float *sq, float *mind, int n, int d, int keep,
                               int first, int *selected)
{
    float *cz = pe_alloc((size_t)keep * d, sizeof(float), "coreset centres");
    float *csq = pe_alloc((size_t)keep, sizeof(float), "coreset centres");
    float *rad = pe_alloc((size_t)keep, sizeof(float), "coreset radii");
    int *arg = pe_alloc((size_t)keep, sizeof(int), "coreset radii");
    int *head = pe_alloc((size_t)keep, sizeof(int), "coreset clusters");
    unsigned char *near = pe_alloc((size_t)keep, 1, "coreset clusters");
    int *next = pe_alloc((size_t)n, sizeof(int), "coreset clusters");
    int *todo = pe_alloc((size_t)keep, sizeof(int), "coreset clusters");
    const int nthreads = omp_get_max_threads() > 0 ? omp_get_max_threads() : 1;
    int *moved = pe_alloc((size_t)nthreads * n, sizeof(int), "coreset moves");
    int *nmoved = pe_alloc((size_t)nthreads, sizeof(int), "coreset moves");
    if (!cz || !csq || !rad || !arg || !head || !near || !next || !todo || !moved || !nmoved) {
        free(cz), free(csq), free(rad), free(arg), free(head), free(near), free(next);
        free(todo), free(moved), free(nmoved);
        return PE_ERR_NOMEM;
    }
    float maxsq = 0;
    for (int i = 0; i < n; i++) maxsq = sq[i] > maxsq ? sq[i] : maxsq;
    const double margin = 1e-2 * sqrt((double)maxsq);
    int centre = first;
    for (int t = 0; t < keep; t++) {
        selected[t] = centre;
        mind[centre] = -1.0f;
        if (t == keep - 1) break;
        const float *c = z + (size_t)centre * d;
        memcpy(cz + (size_t)t * d, c, (size_t)d * sizeof(float));
        csq[t] = sq[centre];
        head[t] = -1;
        rad[t] = -1.0f, arg[t] = -1;
        if (t == 0) { /* every row joins cluster 0 */
            for (int i = n - 1; i >= 0; i--) {
                float dist = row_dist(z + (size_t)i * d, c, d, sq[i], csq[0]);
                if (dist < mind[i]) mind[i] = dist;
                next[i] = head[0], head[0] = i;
            }
        } else {
#pragma omp parallel for schedule(static)
            for (int j = 0; j < t; j++) {
                double dcc = sqrt((double)row_dist(cz + (size_t)j * d, c, d, csq[j], csq[t]));
                near[j] = rad[j] >= 0 && dcc < 2.0 * sqrt((double)rad[j]) + margin;
            }
            /* the nearby clusters, scanned in parallel: a cluster's list is touched only by
             * the thread scanning it; the rows that move go to per-thread buffers and are
             * linked into the new cluster afterwards (list order never affects the result:
             * radii break ties by row index) */
            int nn = 0;
            for (int j = 0; j < t; j++)
                if (near[j]) todo[nn++] = j;
#pragma omp parallel num_threads(nthreads)
            {
                const int tid = omp_get_thread_num();
                int *mine = moved + (size_t)tid * n, nm = 0;
#pragma omp for schedule(dynamic, 1)
                for (int q = 0; q < nn; q++) {
                    const int j = todo[q];
                    int prev = -1;
                    rad[j] = -1.0f, arg[j] = -1;
                    for (int i = head[j]; i >= 0;) {
                        const int nx = next[i];
                        float dist = row_dist(z + (size_t)i * d, c, d, sq[i], csq[t]);
                        if (dist < mind[i]) { /* to the new cluster */
                            mind[i] = dist;
                            if (prev >= 0) next[prev] = nx;
                            else head[j] = nx;
                            mine[nm++] = i;
                        } else {
                            if (farther(mind[i], i, rad[j], arg[j])) rad[j] = mind[i], arg[j] = i;
                            prev = i;
                        }
                        i = nx;
                    }
                }
                nmoved[tid] = nm;
            }
            for (int th = 0; th < nthreads; th++)
                for (int q = 0; q < nmoved[th]; q++) {
                    const int i = moved[(size_t)th * n + q];
                    next[i] = head[t], head[t] = i;
                }
        }
        for (int i = head[t]; i >= 0; i = next[i])
            if (farther(mind[i], i, rad[t], arg[t])) rad[t] = mind[i], arg[t] = i;
        /* the farthest row: the largest radius, ties to the lowest row index */
        float best = -1.0f;
        int best_i = -1;
        for (int j = 0; j <= t; j++)
            if (arg[j] >= 0 && (rad[j] > best || (rad[j] == best && arg[j] < best_i)))
                best = rad[j], best_i = arg[j];
        centre = best_i;
    }
    free(cz), free(csq), free(rad), free(arg), free(head), free(near), free(next);
    free(todo), free(moved), free(nmoved);
    return PE_OK;
}
