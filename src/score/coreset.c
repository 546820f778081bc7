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

double pe_coreset_bytes(int n, int dim, int keep, int proj_dim)
{
    const int d = pe_coreset_proj_dims(dim, proj_dim);
    const int threads = omp_get_max_threads() > 0 ? omp_get_max_threads() : 1;
    double b = 4.0 * n * dim;                            /* unit rows */
    if (d > 0) b += 4.0 * n * d + 4.0 * (double)dim * d; /* projected rows, matrix */
    b += 8.0 * n;                                        /* sq, m (plain loop) */
    b += 8.0 * n * (4 + threads); /* cluster members (at most 4x slack), moves per thread */
    b += (double)keep * (4.0 * (d > 0 ? d : dim) + 4 * 5 + sizeof(void *)); /* centres, lists */
    return b;
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

static pe_status greedy_pruned(const float *z, const float *sq, int n, int d, int keep, int first,
                               int *selected, const pe_coreset_hooks *hooks);

/* PE_CORESET_PLAIN=1 (tests, benches): every centre scans every row, as before the pruning. */
static int plain_requested(void)
{
    const char *e = getenv("PE_CORESET_PLAIN");
    return e && *e == '1';
}

int pe_coreset_proj_dims(int dim, int proj_dim)
{
    if (proj_dim < 0) return 0;
    if (proj_dim > 0) return proj_dim;
    return dim > PE_CORESET_PROJ_DEFAULT ? PE_CORESET_PROJ_DEFAULT : 0;
}

pe_status pe_coreset_select(const float *x, int n, int dim, int keep, int proj_dim, uint64_t seed,
                            int *selected)
{
    return pe_coreset_select_hooked(x, n, dim, keep, proj_dim, seed, NULL, selected);
}

pe_status pe_coreset_select_hooked(const float *x, int n, int dim, int keep, int proj_dim,
                                   uint64_t seed, const pe_coreset_hooks *hooks, int *selected)
{
    if (!x || !selected || n < 1 || dim < 1 || keep < 1 || keep > n)
        return pe_fail(PE_ERR_ARG, "coreset: bad arguments (n %d, dim %d, keep %d, projection %d)",
                       n, dim, keep, proj_dim);
    proj_dim = pe_coreset_proj_dims(dim, proj_dim);
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
    else st = greedy_pruned(z, sq, n, d, keep, first, selected, hooks);
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
 * its nearest centre so far (the centre that set its distance m_i); a cluster keeps its
 * members as (m_i, row) sorted by m_i descending, ties by row index ascending, so its first
 * member is its radius R_j and the row reaching it. When a centre c arrives, a row i of
 * cluster j can get closer to c than to c_j only if
 *     |c - c_j| <= |x_i - c| + |x_i - c_j| < 2 |x_i - c_j| = 2 sqrt(m_i)    (triangle inequality),
 * so, with h_j = (|c - c_j| - margin) / 2, every member with m_i <= h_j^2 is skipped: the
 * members are sorted, so only a prefix of each cluster is read, and a cluster whose radius is
 * at most h_j^2 is not touched at all. Rows that stay keep their m_i, so the order survives
 * removing the rows that move (compaction); the new cluster's members are sorted once. The
 * margin (1e-2 of the largest row norm) is far above the float error of the distances
 * (~1e-6 of it), so a skipped row is one whose float distance the plain loop would also not
 * have taken; the rows scanned use the same row_dist, so every m_i, the argmax and the
 * selection are bit for bit those of greedy_plain (tested). Cost per centre: one distance
 * per cluster, then only the rows near c. Chosen centres leave the clusters (the plain
 * loop's m = -1: never chosen again). */
/* Rows of an orthonormal basis of the top `k` principal directions of z (n, d), (k, d) in
 * basis: subspace iteration on z^T z in double, Gram-Schmidt each round. Any orthonormal P
 * gives |P (x - y)| <= |x - y|; the principal directions make that lower bound tight. */
static pe_status principal_basis(const float *z, int n, int d, int k, float *basis)
{
    float *cov = pe_alloc((size_t)d * d, sizeof(float), "coreset basis");
    double *v = pe_alloc((size_t)k * d, sizeof(double), "coreset basis");
    double *w = pe_alloc((size_t)k * d, sizeof(double), "coreset basis");
    if (!cov || !v || !w) {
        free(cov), free(v), free(w);
        return PE_ERR_NOMEM;
    }
    cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, d, n, 1.0f, z, d, 0.0f, cov, d);
    for (int a = 0; a < d; a++)
        for (int b = 0; b < a; b++) cov[(size_t)a * d + b] = cov[(size_t)b * d + a];
    uint64_t st = 12345;
    for (size_t q = 0; q < (size_t)k * d; q++)
        v[q] = (double)(pe_splitmix64(&st) >> 11) / 9e15 - 0.5;
    for (int it = 0; it < 30; it++) {
        for (int r = 0; r < k; r++) /* w_r = cov v_r, then orthonormalise */
            for (int a = 0; a < d; a++) {
                double acc = 0;
                for (int b = 0; b < d; b++)
                    acc += (double)cov[(size_t)a * d + b] * v[(size_t)r * d + b];
                w[(size_t)r * d + a] = acc;
            }
        for (int r = 0; r < k; r++) {
            double *wr = w + (size_t)r * d;
            for (int pass = 0; pass < 2; pass++) /* twice: orthogonal to the last bit */
                for (int q = 0; q < r; q++) {
                    const double *wq = w + (size_t)q * d;
                    double dot = 0;
                    for (int a = 0; a < d; a++) dot += wr[a] * wq[a];
                    for (int a = 0; a < d; a++) wr[a] -= dot * wq[a];
                }
            double nn = 0;
            for (int a = 0; a < d; a++) nn += wr[a] * wr[a];
            nn = nn > 0 ? 1.0 / sqrt(nn) : 0;
            for (int a = 0; a < d; a++) wr[a] *= nn;
        }
        double *tmp = v;
        v = w, w = tmp;
    }
    for (size_t q = 0; q < (size_t)k * d; q++) basis[q] = (float)v[q];
    free(cov), free(v), free(w);
    return PE_OK;
}

/* Squared distance in the bound's k dims (a lower bound of the full squared distance). */
static inline float low_dist(const float *a, const float *b, int k)
{
    float s = 0;
#pragma omp simd reduction(+ : s)
    for (int q = 0; q < k; q++) s += (a[q] - b[q]) * (a[q] - b[q]);
    return s;
}

/* Dims of the principal-subspace lower bound (used when the rows have more than twice as
 * many). */
#define BOUND_DIMS 16
/* A step forks threads only with this much work (clusters bounded / clusters scanned): each
 * fork and barrier costs microseconds on a quiet machine and a scheduler slice when another
 * process holds a core, and there are two per centre. */
#define PAR_CLUSTERS 8192
#define PAR_SCANS 64

typedef struct {
    float m; /* squared distance to the nearest centre so far */
    int i;   /* row */
} member;

static int by_farthest(const void *a, const void *b)
{
    const member *x = a, *y = b;
    if (x->m != y->m) return x->m > y->m ? -1 : 1;
    return (x->i > y->i) - (x->i < y->i);
}

static pe_status greedy_pruned(const float *z, const float *sq, int n, int d, int keep, int first,
                               int *selected, const pe_coreset_hooks *hooks)
{
    const int nthreads = omp_get_max_threads() > 0 ? omp_get_max_threads() : 1;
    float *cz = pe_alloc((size_t)keep * d, sizeof(float), "coreset centres");
    float *csq = pe_alloc((size_t)keep, sizeof(float), "coreset centres");
    float *skip = pe_alloc((size_t)keep, sizeof(float), "coreset clusters");
    member **mem = calloc((size_t)keep, sizeof *mem);
    int *cnt = pe_alloc((size_t)keep, sizeof(int), "coreset clusters");
    int *cap = pe_alloc((size_t)keep, sizeof(int), "coreset clusters");
    int *todo = pe_alloc((size_t)keep, sizeof(int), "coreset clusters");
    member *moved = pe_alloc((size_t)nthreads * n, sizeof(member), "coreset moves");
    int *nmoved = pe_alloc((size_t)nthreads, sizeof(int), "coreset moves");
    float *rad = pe_alloc((size_t)keep, sizeof(float), "coreset radii");
    int *rrow = pe_alloc((size_t)keep, sizeof(int), "coreset radii");
    /* the lower bound's coordinates: rows (n, k) and centres (keep, k) */
    const int k = d > 2 * BOUND_DIMS ? BOUND_DIMS : 0;
    float *basis = k ? pe_alloc((size_t)k * d, sizeof(float), "coreset basis") : NULL;
    float *pz = k ? pe_alloc((size_t)n * k, sizeof(float), "coreset bound") : NULL;
    float *pcz = k ? pe_alloc((size_t)keep * k, sizeof(float), "coreset bound") : NULL;
    pe_status st = PE_OK;
    if (!cz || !csq || !skip || !mem || !cnt || !cap || !todo || !moved || !nmoved || !rad ||
        !rrow || (k && (!basis || !pz || !pcz))) {
        st = PE_ERR_NOMEM;
        goto done;
    }
    if (k) {
        st = principal_basis(z, n, d, k, basis);
        if (st) goto done;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, k, d, 1.0f, z, d, basis, d, 0.0f,
                    pz, k);
    }
    float maxsq = 0;
    for (int i = 0; i < n; i++) maxsq = sq[i] > maxsq ? sq[i] : maxsq;
    const double margin = 1e-2 * sqrt((double)maxsq);
    /* a row whose bound is at least m_i + slack is farther from c than m_i, with room for
     * the float error of both (~1e-6 of maxsq) */
    const float slack = 1e-3f * maxsq;
    const int every = keep / 200 + 1;
    int centre = first, jc = -1; /* the centre and the cluster it is first in */
    for (int t = 0; t < keep; t++) {
        selected[t] = centre;
        if (hooks && hooks->progress && (t % every == 0 || t == keep - 1) &&
            hooks->progress(t + 1, keep, hooks->user)) {
            st = pe_fail(PE_ERR_LIMIT, "coreset: stopped after %d of %d centres", t + 1, keep);
            break;
        }
        if (t == keep - 1) break;
        const float *c = z + (size_t)centre * d;
        memcpy(cz + (size_t)t * d, c, (size_t)d * sizeof(float));
        csq[t] = sq[centre];
        const float *pc = k ? pz + (size_t)centre * k : NULL;
        if (k) memcpy(pcz + (size_t)t * k, pc, (size_t)k * sizeof(float));
        int total = 0;
        if (t == 0) { /* every other row joins cluster 0 */
            total = n - 1;
#pragma omp parallel for schedule(static)
            for (int i = 0; i < n; i++)
                if (i != centre)
                    moved[i - (i > centre)] =
                        (member){row_dist(z + (size_t)i * d, c, d, sq[i], csq[0]), i};
        } else {
            /* the centre leaves its cluster (it is the cluster's first member) */
            memmove(mem[jc], mem[jc] + 1, (size_t)(cnt[jc] - 1) * sizeof(member));
            if (--cnt[jc]) rad[jc] = mem[jc][0].m, rrow[jc] = mem[jc][0].i;
            else rad[jc] = -1.0f, rrow[jc] = -1;
#pragma omp parallel for schedule(static) if (t >= PAR_CLUSTERS)
            for (int j = 0; j < t; j++) {
                skip[j] = INFINITY;
                if (!cnt[j]) continue;
                double h;
                if (k) { /* the bound first: most clusters stop here */
                    h = (sqrt((double)low_dist(pcz + (size_t)j * k, pc, k)) - margin) / 2;
                    if (h > 0 && rad[j] <= (float)(h * h)) continue;
                }
                double dcc = sqrt((double)row_dist(cz + (size_t)j * d, c, d, csq[j], csq[t]));
                h = (dcc - margin) / 2;
                skip[j] = h > 0 ? (float)(h * h) : -1.0f;
            }
            int nn = 0;
            for (int j = 0; j < t; j++)
                if (cnt[j] && rad[j] > skip[j]) todo[nn++] = j;
            memset(nmoved, 0, (size_t)nthreads * sizeof(int)); /* a serial step: thread 0 */
            /* the nearby clusters, scanned in parallel: a cluster is touched only by the
             * thread scanning it; the rows that move go to per-thread buffers */
#pragma omp parallel num_threads(nthreads) if (nn >= PAR_SCANS)
            {
                const int tid = omp_get_thread_num();
                member *mine = moved + (size_t)tid * n;
                int nm = 0;
#pragma omp for schedule(dynamic, 1)
                for (int q = 0; q < nn; q++) {
                    const int j = todo[q];
                    member *a = mem[j];
                    const float sk = skip[j];
                    int w = 0, p = 0;
                    for (; p < cnt[j] && a[p].m > sk; p++) {
                        const int i = a[p].i;
                        if (k && low_dist(pz + (size_t)i * k, pc, k) >= a[p].m + slack) {
                            a[w++] = a[p]; /* cannot come closer to c (the bound) */
                            continue;
                        }
                        float dist = row_dist(z + (size_t)i * d, c, d, sq[i], csq[t]);
                        if (dist < a[p].m) mine[nm++] = (member){dist, i};
                        else a[w++] = a[p];
                    }
                    if (w < p) {
                        memmove(a + w, a + p, (size_t)(cnt[j] - p) * sizeof(member));
                        cnt[j] -= p - w;
                        if (cnt[j] < cap[j] / 4 && cap[j] > 256) { /* give back the slack */
                            member *r = realloc(a, (size_t)(cnt[j] + 1) * sizeof(member));
                            if (r) mem[j] = r, cap[j] = cnt[j] + 1;
                        }
                    }
                    if (cnt[j]) rad[j] = mem[j][0].m, rrow[j] = mem[j][0].i;
                    else rad[j] = -1.0f, rrow[j] = -1;
                }
                nmoved[tid] = nm;
            }
            /* gathered in thread order; the sort below makes the order irrelevant */
            for (int th = 0; th < nthreads; th++) {
                if (th)
                    memmove(moved + total, moved + (size_t)th * n,
                            (size_t)nmoved[th] * sizeof(member));
                total += nmoved[th];
            }
        }
        cap[t] = total > 0 ? total : 1;
        mem[t] = malloc((size_t)cap[t] * sizeof(member));
        if (!mem[t]) {
            st = pe_fail(PE_ERR_NOMEM, "coreset: out of memory");
            break;
        }
        memcpy(mem[t], moved, (size_t)total * sizeof(member));
        qsort(mem[t], (size_t)total, sizeof(member), by_farthest);
        cnt[t] = total;
        if (total) rad[t] = mem[t][0].m, rrow[t] = mem[t][0].i;
        else rad[t] = -1.0f, rrow[t] = -1;
        /* the farthest row: the largest radius, ties to the lowest row index */
        float best = -1.0f;
        int best_i = -1;
        for (int j = 0; j <= t; j++)
            if (rrow[j] >= 0 && farther(rad[j], rrow[j], best, best_i))
                best = rad[j], best_i = rrow[j], jc = j;
        centre = best_i;
    }
done:
    if (mem)
        for (int j = 0; j < keep; j++) free(mem[j]);
    free(cz), free(csq), free(skip), free(mem), free(cnt), free(cap), free(todo);
    free(moved), free(nmoved), free(rad), free(rrow), free(basis), free(pz), free(pcz);
    return st;
}
