/* score.c — PatchEAD scoring (docs/METHOD.md, Eq. 1-4), few-shot and batch zero-shot.
 *
 *   Eq. 1  d(q_i, n^k_j) = 1 - cos(q_i, n^k_j)
 *   Eq. 2  s_i^k = min_j d(q_i, n^k_j)          (nearest patch of reference image k)
 *   Eq. 3  a_i   = mean of K selected s_i^k     (K lowest or K highest over the M references)
 *   Eq. 4  score = mean of the top max(1, floor(r*G)) a_i
 *
 * Cosines come from GEMMs of raw features: a (T, D) tile of query rows times a
 * reference's (G, D)^T gives a (T, G) tile of dot products; rows and columns are
 * scaled by precomputed inverse norms while reducing. Only one tile of at most
 * `tile` query rows is ever materialised, so scratch is T*G floats (auto: ~16 MB).
 *
 * Eq. 3 needs, per query patch, the K smallest (or largest) of M values. They are
 * kept in a per-patch max-heap of size K while references stream past, so memory
 * is (patches * K) floats per query image, never (patches * M).
 */
#include "score.h"
#include "score_kernel.h"

#include "compute/engine.h"

#include <cblas.h>
#include <limits.h>
#include <math.h>
#include <string.h>
#include <strings.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* Target scratch for one (T, G) tile of dot products: 256K floats = 1 MB, so a tile
 * is still in L2 when its row/column minima are taken right after its GEMM; each
 * thread works on its own tiles (GEMM + reduction), see tiles_parallel below. */
#define AUTO_TILE_FLOATS (256 << 10)
#define AUTO_TILE_MIN_ROWS 16

/* ------------------------------------------------------------------ presets */

pe_score_params pe_score_default_params(const char *preset, int zeroshot)
{
    pe_score_params p;
    if (!preset || pe_score_preset(preset, zeroshot, &p) != PE_OK)
        pe_score_preset("patchead", zeroshot, &p);
    return p;
}

pe_status pe_score_preset(const char *preset, int zeroshot, pe_score_params *out)
{
    pe_score_params p = {0};
    p.order = PE_ORDER_LOWEST;
    p.top_fraction = 0.01f; /* Eq. 4: mean of the top 1% (AnomalyDINO) */
    p.top_count = 0;
    p.tile = 0;
    p.mask_threshold = 0.05f;
    p.mask_low_weight = 0.5f;
    if (!preset) preset = "patchead";
    if (!strcasecmp(preset, "patchead")) {
        /* Paper Sec. 3.2: few-shot K = 1, batch zero-shot K = 30% of M. */
        if (zeroshot) p.k_fraction = 0.3f;
        else p.k_count = 1;
    } else if (!strcasecmp(preset, "anomalydino")) {
        /* 1-NN over the union of all reference patches == lowest, K = 1. */
        p.k_count = 1;
    } else if (!strcasecmp(preset, "musc")) {
        /* MuSc's interval average over the lowest 0..30% of the per-image distances,
         * image score = max of the patch scores. */
        p.k_fraction = 0.3f;
        p.top_count = 1;
    } else {
        return pe_fail(PE_ERR_ARG,
                       "unknown scoring preset '%s' (use patchead, anomalydino or musc)", preset);
    }
    *out = p;
    return PE_OK;
}

int pe_score_k(const pe_score_params *p, int num_refs)
{
    int k;
    if (p->k_count > 0) k = p->k_count;
    else k = (int)floor((double)p->k_fraction * num_refs + 1e-6);
    if (k < 1) k = 1;
    if (k > num_refs) k = num_refs;
    return k;
}

static pe_status check_params(const pe_score_params *p)
{
    if (!(p->k_count > 0) && !(p->k_fraction > 0 && p->k_fraction <= 1))
        return pe_fail(PE_ERR_ARG, "score: K must be a count > 0 or a fraction in (0, 1], got %g",
                       (double)p->k_fraction);
    if (!(p->top_count > 0) && !(p->top_fraction > 0 && p->top_fraction <= 1))
        return pe_fail(PE_ERR_ARG, "score: top fraction must be in (0, 1], got %g",
                       (double)p->top_fraction);
    if (p->order != PE_ORDER_LOWEST && p->order != PE_ORDER_HIGHEST)
        return pe_fail(PE_ERR_ARG, "score: unknown order %d", (int)p->order);
    if (p->tile < 0) return pe_fail(PE_ERR_ARG, "score: tile must be >= 0, got %d", p->tile);
    return PE_OK;
}

/* ------------------------------------------------------------------ helpers */

void pe_inv_norms(const float *x, int n, int dim, float *out)
{
#pragma omp parallel for schedule(static)
    for (int i = 0; i < n; i++) {
        const float *row = x + (size_t)i * dim;
        double ss = 0;
        for (int d = 0; d < dim; d++) ss += (double)row[d] * row[d];
        out[i] = ss > 0 ? (float)(1.0 / sqrt(ss)) : 0.0f;
    }
}

static int auto_tile(const pe_score_params *p, int rows, int max_cols)
{
    int t =
        p->tile > 0 ? p->tile : PE_MAX(AUTO_TILE_MIN_ROWS, AUTO_TILE_FLOATS / PE_MAX(max_cols, 1));
    return PE_MAX(1, PE_MIN(t, rows));
}

/* A feature matrix as the engine takes it: fp32 as given, plus a bf16 copy in bf16 mode
 * (made once per call; the tiles then read it without further conversion). */
typedef struct {
    const float *f;
    bf16_t *h;
} operand;

static int operand_make(operand *o, const float *x, size_t rows, int dim, int bf16)
{
    o->f = x;
    o->h = NULL;
    if (!bf16) return 0;
    o->h = pe_alloc(rows * dim, sizeof(bf16_t), "bf16 features");
    if (!o->h) return -1;
    eng_to_bf16(o->h, x, rows * dim);
    return 0;
}

/* C (rows, cols) = A rows [r0, r0 + rows) . B^T, both (., dim) row-major. Runs on the
 * calling thread when called inside a parallel region (one tile per thread). */
static int tile_gemm(int bf16, const operand *a, int r0, int rows, const operand *b, int cols,
                     int dim, float *C)
{
    if (bf16)
        return eng_gemm_bf16(1, rows, cols, dim, 1.0f, a->h + (size_t)r0 * dim, dim, b->h, dim,
                             0.0f, C, cols, NULL);
    if (!eng_gemm(PE_PRECISION_FP32, 1, rows, cols, dim, 1.0f, a->f + (size_t)r0 * dim, dim, b->f,
                  dim, 0.0f, C, cols, NULL))
        return 0;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, cols, dim, 1.0f,
                a->f + (size_t)r0 * dim, dim, b->f, dim, 0.0f, C, cols);
    return 0;
}

static int team_size(void)
{
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

static int thread_id(void)
{
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

/* Cosine distance from a scaled dot product, clamped to its range [0, 2]. */
static inline float cos_dist(float cosine)
{
    float d = 1.0f - cosine;
    return d < 0 ? 0 : (d > 2 ? 2 : d);
}

/* Max-heap of the K smallest keys seen so far; `count` values offered before. */
static inline void heap_offer(float *heap, int count, int k, float v)
{
    if (count < k) {
        int i = count;
        while (i > 0) {
            int parent = (i - 1) / 2;
            if (heap[parent] >= v) break;
            heap[i] = heap[parent];
            i = parent;
        }
        heap[i] = v;
    } else if (v < heap[0]) {
        int i = 0;
        for (;;) {
            int c = 2 * i + 1;
            if (c >= k) break;
            if (c + 1 < k && heap[c + 1] > heap[c]) c++;
            if (heap[c] <= v) break;
            heap[i] = heap[c];
            i = c;
        }
        heap[i] = v;
    }
}

/* Heap key of a distance: selecting the K smallest keys selects the K lowest
 * distances (order lowest) or the K highest (order highest, key = -s). */
static inline float key_of(float s, pe_order order) { return order == PE_ORDER_LOWEST ? s : -s; }

/* a_i = mean of the K kept values of each of n patches. heaps: (n, K). */
static void finish_patch_scores(const float *heaps, int n, int k, pe_order order, float *out)
{
    float sign = order == PE_ORDER_LOWEST ? 1.0f : -1.0f;
#pragma omp parallel for schedule(static)
    for (int i = 0; i < n; i++) {
        const float *h = heaps + (size_t)i * k;
        double sum = 0;
        for (int j = 0; j < k; j++) sum += h[j];
        out[i] = sign * (float)(sum / k);
    }
}

/* Reductions run on the thread that made the tile (the tile is in its L2): every
 * thread does GEMM + reduction of its own tiles, so one thread's reduction overlaps
 * another's GEMM, and there is one thread pool (OpenMP, shared with oneDNN).
 *
 * Row side of a (rows, cols) tile of dot products C: for each row r,
 * s = 1 - max_j(C[r][j] * col_inv[j]) * row_inv[r], offered to heaps[r]. */
static void reduce_rows(const float *C, int rows, int cols, const float *row_inv,
                        const float *col_inv, float *heaps, int count, int k, pe_order order)
{
    for (int r = 0; r < rows; r++) {
        const float *c = C + (size_t)r * cols;
        float m = -INFINITY;
        /* a ternary, not fmaxf: GCC calls libm's fmaxf (NaN rules) unless -ffinite-math-only */
#pragma omp simd reduction(max : m)
        for (int j = 0; j < cols; j++) {
            float v = c[j] * col_inv[j];
            m = v > m ? v : m;
        }
        float s = cos_dist(m * row_inv[r]);
        heap_offer(heaps + (size_t)r * k, count, k, key_of(s, order));
    }
}

/* Column side: colmax[j] = max(colmax[j], max_r C[r][j] * row_inv[r]). */
static void reduce_cols(const float *C, int rows, int cols, const float *row_inv, float *colmax)
{
    int chunk = 256;
    int nchunks = (cols + chunk - 1) / chunk;
    for (int ch = 0; ch < nchunks; ch++) {
        int j0 = ch * chunk, j1 = PE_MIN(cols, j0 + chunk);
        for (int r = 0; r < rows; r++) {
            const float *c = C + (size_t)r * cols;
            float ri = row_inv[r];
#pragma omp simd
            for (int j = j0; j < j1; j++) {
                float v = c[j] * ri;
                colmax[j] = v > colmax[j] ? v : colmax[j];
            }
        }
    }
}

/* Fused path (score_kernel.c): rows [0, rows) of A (fp32, or bf16 when bf16) against a
 * reference of `cols` rows already packed (sk_pack), in row tiles over the team (about
 * four per thread, at most T rows, a multiple of 8). Writes rowmax (rows) unless NULL, and
 * folds each thread's column maxima into its row of colmax_threads (nthr, cols) unless NULL. */
static void fused_rows(int bf16, const void *A, int rows, int dim, const void *packed, int cols,
                       const float *row_inv, const float *col_inv, int T, int nthr, float *rowmax,
                       float *colmax_threads)
{
    const size_t esz = bf16 ? sizeof(bf16_t) : sizeof(float);
    const int rt = PE_MAX(8, PE_MIN(T, (rows + 4 * nthr - 1) / (4 * nthr))) / 8 * 8;
    const int nrt = (rows + rt - 1) / rt;
#pragma omp parallel for schedule(dynamic, 1) num_threads(nthr)
    for (int t = 0; t < nrt; t++) {
        const int r0 = t * rt, n = PE_MIN(rt, rows - r0);
        sk_rows(bf16, (const char *)A + (size_t)r0 * dim * esz, n, dim, packed, cols, row_inv + r0,
                col_inv, rowmax ? rowmax + r0 : NULL,
                colmax_threads ? colmax_threads + (size_t)thread_id() * cols : NULL);
    }
}

/* The row blocks the screen left to the fp32 kernel (ws[].redo: ties) against B, whose
 * fp32 panels are in packed: rowmax rows as fused_rows writes them; the lists are
 * cleared. Shared by the zero-shot pairs and the few-shot queries. */
static size_t screen_redo_count(const sk_screen_ws *ws, int nthr)
{
    size_t n = 0;
    for (int th = 0; th < nthr; th++) n += ws[th].nredo;
    return n;
}
static void screen_redo_rows(sk_screen_ws *ws, int nthr, const float *A, int dim,
                             const void *packed, int cols, const float *row_inv,
                             const float *col_inv, int T, float *rowmax)
{
    for (int th = 0; th < nthr; th++) {
        for (size_t b = 0; b < ws[th].nredo; b++) {
            const int r0 = ws[th].redo[2 * b], n = ws[th].redo[2 * b + 1];
            fused_rows(0, A + (size_t)r0 * dim, n, dim, packed, cols, row_inv + r0, col_inv, T,
                       nthr, rowmax + r0, NULL);
        }
        ws[th].nredo = 0;
    }
}

/* ------------------------------------------------------------------ Eq. 4 */

static int cmp_desc(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x < y) - (x > y);
}

float pe_image_score(const float *patch_scores, int n, const pe_score_params *params)
{
    if (n <= 0 || !patch_scores) return NAN;
    pe_score_params defaults = pe_score_default_params(NULL, 0);
    if (!params) params = &defaults;
    int k = params->top_count > 0 ? params->top_count
                                  : (int)floor((double)params->top_fraction * n + 1e-6);
    k = PE_MAX(1, PE_MIN(k, n));
    double sum = 0;
    if (k == 1) {
        float m = patch_scores[0];
        for (int i = 1; i < n; i++) m = fmaxf(m, patch_scores[i]);
        return m;
    }
    float *sorted = malloc((size_t)n * sizeof *sorted);
    if (!sorted) return NAN;
    memcpy(sorted, patch_scores, (size_t)n * sizeof *sorted);
    qsort(sorted, (size_t)n, sizeof *sorted, cmp_desc);
    for (int i = 0; i < k; i++) sum += sorted[i];
    free(sorted);
    return (float)(sum / k);
}

/* ------------------------------------------------------------------ masking */

void pe_apply_attention_mask(float *patch_scores, const float *attn, int n, float threshold,
                             float low_weight)
{
    if (n <= 0 || !attn || !patch_scores) return;
    float lo = attn[0], hi = attn[0];
    for (int i = 1; i < n; i++) {
        lo = fminf(lo, attn[i]);
        hi = fmaxf(hi, attn[i]);
    }
    /* A flat attention map carries no foreground information: leave scores as they are. */
    if (!(hi > lo)) return;
    float inv = 1.0f / (hi - lo);
    for (int i = 0; i < n; i++) {
        float m = (attn[i] - lo) * inv;
        if (!(m > threshold)) patch_scores[i] *= low_weight;
    }
}

/* ------------------------------------------------------------------ few-shot */

static int g_screen = 1;
void pe_score_set_screen(int on) { g_screen = on; }
int pe_score_screen_runs(int dim)
{
    return g_screen && sk_available(0, dim) && sk_screen_available(dim);
}

/* ------------------------------------------------------------------ reference cache */

static long long g_ref_preps; /* reference preparations made (pe_score_ref_preps) */
long long pe_score_ref_preps(void) { return __atomic_load_n(&g_ref_preps, __ATOMIC_RELAXED); }

/* The screen's part of one reference (pe_ref_cache.screen): the bounds of sk_screen_stats
 * and its normalised bf16 copy packed into panels (sk_pack, bf16). One allocation. */
typedef struct {
    const float *src, *inv; /* what it was built from */
    int G, dim;
    int finite;   /* sk_screen_stats held; else no bound: this reference takes the fp32 kernel */
    size_t bytes; /* of the allocation */
    float *stats; /* (G, 3) */
    void *packed; /* sk_panel_bytes(G, dim, 1) */
} screen_part;

/* The bf16 part (pe_ref_cache.bf16): the reference rounded to bf16 (eng_to_bf16), packed
 * for the fused kernel (sk_pack) or row-major for the engine's GEMM. One allocation. */
typedef struct {
    const float *src;
    int G, dim, packed;
    size_t bytes;
    void *data;
} bf16_part;

#define PART_HEADER 64 /* a part's struct, padded: its arrays stay 64-byte aligned */
#define ALIGN64(n) (((size_t)(n) + 63) / 64 * 64)

void pe_ref_cache_clear(pe_ref_cache *c)
{
    if (!c) return;
    free(c->screen);
    free(c->bf16);
    c->screen = c->bf16 = NULL;
}

size_t pe_ref_cache_bytes(const pe_ref_cache *c)
{
    size_t n = 0;
    const screen_part *sp = c ? __atomic_load_n(&c->screen, __ATOMIC_ACQUIRE) : NULL;
    const bf16_part *bp = c ? __atomic_load_n(&c->bf16, __ATOMIC_ACQUIRE) : NULL;
    if (sp) n += sp->bytes;
    if (bp) n += bp->bytes;
    return n;
}

/* The screen's operands of reference X (G, dim) normalised with inv (the query's side is
 * made per query): stats (G, 3) and, when they are finite, the packed normalised bf16
 * copy (x16: (G, dim) scratch for the unpacked copy). Returns 1 when finite. */
static int screen_prepare(const float *X, const float *inv, int G, int dim, uint16_t *x16,
                          float *stats, void *packed)
{
    __atomic_fetch_add(&g_ref_preps, 1, __ATOMIC_RELAXED);
    if (sk_screen_stats(X, inv, G, dim, x16, stats)) return 0;
    sk_pack(x16, G, dim, 1, packed);
    return 1;
}

/* reference X (G, dim) in bf16 into out: packed (x16: (G, dim) scratch) or row-major */
static void bf16_prepare(const float *X, int G, int dim, int packed, bf16_t *x16, void *out)
{
    __atomic_fetch_add(&g_ref_preps, 1, __ATOMIC_RELAXED);
    if (!packed) {
        eng_to_bf16(out, X, (size_t)G * dim);
        return;
    }
    eng_to_bf16(x16, X, (size_t)G * dim);
    sk_pack(x16, G, dim, 1, out);
}

/* A cache part is kept only where it takes at most a quarter of the available memory. */
static int part_fits(size_t bytes)
{
    const double avail = pe_mem_available();
    return avail <= 0 || (double)bytes <= 0.25 * avail;
}

/* mine into *slot unless another thread was first: the part in the slot (mine freed) */
static void *publish_part(void **slot, void *mine)
{
    void *expected = NULL;
    if (__atomic_compare_exchange_n(slot, &expected, mine, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
        return mine;
    free(mine);
    return expected;
}

/* Reference X's screen part from cache c, built now if c has none (x16: (G, dim) scratch).
 * NULL: no cache, a part of other features, too large, or out of memory (the caller then
 * prepares the operands itself). */
static const screen_part *screen_cached(pe_ref_cache *c, const float *X, const float *inv, int G,
                                        int dim, uint16_t *x16)
{
    if (!c) return NULL;
    const screen_part *p = __atomic_load_n(&c->screen, __ATOMIC_ACQUIRE);
    if (!p) {
        const size_t ns = ALIGN64((size_t)G * 3 * sizeof(float)), np = sk_panel_bytes(G, dim, 1);
        if (!part_fits(PART_HEADER + ns + np)) return NULL;
        char *m = pe_alloc(PART_HEADER + ns + np, 1, "reference cache");
        if (!m) return NULL;
        screen_part *n = (screen_part *)(void *)m;
        n->src = X, n->inv = inv, n->G = G, n->dim = dim, n->bytes = PART_HEADER + ns + np;
        n->stats = (float *)(void *)(m + PART_HEADER);
        n->packed = m + PART_HEADER + ns;
        n->finite = screen_prepare(X, inv, G, dim, x16, n->stats, n->packed);
        p = publish_part(&c->screen, n);
    }
    return p->src == X && p->inv == inv && p->G == G && p->dim == dim ? p : NULL;
}

/* Reference X in bf16 (packed or row-major) from cache c, built now if c has none. x16:
 * scratch for packing, (x16_rows >= G, dim), allocated here when needed and NULL. NULL as
 * above. */
static const void *bf16_cached(pe_ref_cache *c, const float *X, int G, int dim, int packed,
                               bf16_t **x16, int x16_rows)
{
    if (!c) return NULL;
    const bf16_part *p = __atomic_load_n(&c->bf16, __ATOMIC_ACQUIRE);
    if (!p) {
        const size_t nd = packed ? sk_panel_bytes(G, dim, 1) : (size_t)G * dim * sizeof(bf16_t);
        if (!part_fits(PART_HEADER + nd)) return NULL;
        if (packed && !*x16 &&
            !(*x16 = pe_alloc((size_t)x16_rows * dim, sizeof(bf16_t), "bf16 features")))
            return NULL;
        char *m = pe_alloc(PART_HEADER + nd, 1, "reference cache");
        if (!m) return NULL;
        bf16_part *n = (bf16_part *)(void *)m;
        n->src = X, n->G = G, n->dim = dim, n->packed = packed, n->bytes = PART_HEADER + nd;
        n->data = m + PART_HEADER;
        bf16_prepare(X, G, dim, packed, *x16, n->data);
        p = publish_part(&c->bf16, n);
    }
    return p->src == X && p->G == G && p->dim == dim && p->packed == packed ? p->data : NULL;
}

/* Few-shot rows in fp32 through the bf16 screen (score_screen.c): for each reference, the
 * exact fp32 row maxima of the query against it, the same bits as fused_rows(0, ...),
 * offered to the heaps as the fused path does. The screen's bf16 copies are normalised
 * with the caller's inverse norms; a reference's (packed, with its bounds) comes from its
 * cache when it has one. Returns 0, 1 when it cannot run (a non-finite query feature: no
 * bound; the caller takes the fp32 kernel), -1 out of memory. A reference with non-finite
 * features, and row blocks the screen leaves (ties), go through the fp32 kernel. */
static int query_screened(const float *query, const float *query_inv, int Gq,
                          const float *const *refs, const float *const *ref_inv,
                          const int *ref_patches, int num_refs, pe_ref_cache *const *ref_cache,
                          int max_cols, int dim, int T, int nthr, const pe_score_params *params,
                          int K, float *heaps)
{
    /* one buffer kept by the calling thread from query to query (allocating and freeing
     * these per query grew glibc's heap: predict over 112 images, 83 -> 111 MB peak):
     * q16 (Gq, dim), r16 (max_cols, dim) bf16; qstats (Gq, 3), rstats (max_cols, 3), win
     * (Gq), rowmax (Gq) fp32; the packed reference (fp32 size). A cached reference uses
     * r16 only to be built, and packed only for its fp32 fallbacks. */
    const size_t a64 = 64, nq16 = ((size_t)Gq * dim * 2 + a64 - 1) / a64 * a64,
                 nr16 = ((size_t)max_cols * dim * 2 + a64 - 1) / a64 * a64,
                 nqf = (((size_t)Gq * 5) * 4 + a64 - 1) / a64 * a64,
                 nrf = ((size_t)max_cols * 3 * 4 + a64 - 1) / a64 * a64,
                 npk = sk_panel_bytes(max_cols, dim, 0);
    char *mem = eng_thread_buffer(ENG_SLOT_QUERY_SCREEN, nq16 + nr16 + nqf + nrf + npk);
    uint16_t *q16 = mem ? (uint16_t *)(void *)mem : NULL;
    uint16_t *r16 = mem ? (uint16_t *)(void *)(mem + nq16) : NULL;
    float *qstats = mem ? (float *)(void *)(mem + nq16 + nr16) : NULL;
    float *win = qstats ? qstats + (size_t)Gq * 3 : NULL, *rowmax = win ? win + Gq : NULL;
    float *rstats = mem ? (float *)(void *)(mem + nq16 + nr16 + nqf) : NULL;
    void *packed = mem ? mem + nq16 + nr16 + nqf + nrf : NULL;
    sk_screen_ws *ws = calloc((size_t)nthr, sizeof *ws);
    int rc = !mem || !ws ? -1 : 0;
    for (int th = 0; th < nthr && !rc; th++) rc = sk_screen_ws_reserve(&ws[th], max_cols, dim);
    if (!rc && sk_screen_stats(query, query_inv, Gq, dim, q16, qstats)) rc = 1;
    const int rt = PE_MAX(32, PE_MIN(T, (Gq + 4 * nthr - 1) / (4 * nthr))) / 32 * 32;
    const int nrt = (Gq + rt - 1) / rt;
    for (int k = 0; k < num_refs && !rc; k++) {
        const int Gk = ref_patches[k];
        int failed = 0;
        /* the reference's bounds and packed bf16 copy: cached, or made here */
        const screen_part *cp =
            screen_cached(ref_cache ? ref_cache[k] : NULL, refs[k], ref_inv[k], Gk, dim, r16);
        const float *rst = cp ? cp->stats : rstats;
        const void *rp = cp ? cp->packed : packed;
        if (cp ? cp->finite : screen_prepare(refs[k], ref_inv[k], Gk, dim, r16, rstats, packed)) {
            sk_screen_row_windows(qstats, Gq, rst, Gk, dim, win);
#pragma omp parallel for schedule(dynamic, 1) num_threads(nthr) reduction(| : failed)
            for (int t = 0; t < nrt; t++) {
                const int r0 = t * rt;
                failed |=
                    sk_screen_rows(q16, query, r0, PE_MIN(rt, Gq - r0), dim, rp, refs[k], Gk,
                                   ref_inv[k], win, NULL, rowmax, NULL, &ws[thread_id()]) != 0;
            }
            /* ties (flat images, repeated patches): those row blocks by the fp32 kernel */
            if (!failed && screen_redo_count(ws, nthr)) {
                sk_pack(refs[k], Gk, dim, 0, packed);
                screen_redo_rows(ws, nthr, query, dim, packed, Gk, query_inv, ref_inv[k], T,
                                 rowmax);
            }
        } else { /* no bound for this reference: the fp32 kernel */
            sk_pack(refs[k], Gk, dim, 0, packed);
            fused_rows(0, query, Gq, dim, packed, Gk, query_inv, ref_inv[k], T, nthr, rowmax, NULL);
        }
        if (failed) rc = -1;
        for (int i = 0; i < Gq && !rc; i++)
            heap_offer(heaps + (size_t)i * K, k, K,
                       key_of(cos_dist(rowmax[i] * query_inv[i]), params->order));
    }
    for (int th = 0; ws && th < nthr; th++) sk_screen_ws_free(&ws[th]);
    free(ws);
    return rc;
}

pe_status pe_score_query_inv(const float *query, const float *query_inv, int query_patches,
                             const float *const *refs, const float *const *ref_inv,
                             const int *ref_patches, int num_refs, int dim,
                             pe_ref_cache *const *ref_cache, const pe_score_params *params,
                             float *patch_scores, float *image_score)
{
    pe_status s = check_params(params);
    if (s) return s;
    int max_cols = 0;
    for (int k = 0; k < num_refs; k++) {
        if (ref_patches[k] <= 0 || !refs[k])
            return pe_fail(PE_ERR_SHAPE, "score: reference %d has no patches", k);
        max_cols = PE_MAX(max_cols, ref_patches[k]);
    }
    int K = pe_score_k(params, num_refs);
    int T = auto_tile(params, query_patches, max_cols);
    const int bf16 = pe_precision_resolve(params->precision) == PE_PRECISION_BF16;
    const int nthr = team_size();
    float *heaps = pe_alloc((size_t)query_patches * K, sizeof(float), "score selection");
    operand q = {0};
    int failed = !heaps || operand_make(&q, query, (size_t)query_patches, dim, bf16);
    int engine_path = 1; /* 0 once the fused kernel has scored every reference */
    if (!failed && !bf16 && pe_score_screen_runs(dim) && (size_t)query_patches * dim < INT_MAX &&
        (size_t)max_cols * dim < INT_MAX) {
        /* fp32 on a CPU with bf16 dot products: screened, the same bits (query_screened) */
        const int rc =
            query_screened(query, query_inv, query_patches, refs, ref_inv, ref_patches, num_refs,
                           ref_cache, max_cols, dim, T, nthr, params, K, heaps);
        failed = rc < 0;
        if (rc == 0) engine_path = 0;
    }
    if (!failed && engine_path && sk_available(bf16, dim)) {
        /* fused kernel (score_kernel.c): each reference packed (bf16: once, in its cache
         * when it has one), then row tiles of the query over threads, reduced in registers
         * to the row maxima */
        void *packed = pe_alloc(sk_panel_bytes(max_cols, dim, bf16), 1, "packed reference");
        float *rowmax = pe_alloc((size_t)query_patches, sizeof(float), "row maxima");
        bf16_t *x16 = NULL; /* scratch of an uncached bf16 reference (allocated when needed) */
        failed = !packed || !rowmax;
        const void *qa = bf16 ? (const void *)q.h : q.f;
        for (int k = 0; k < num_refs && !failed; k++) {
            const void *rp = packed;
            if (!bf16) sk_pack(refs[k], ref_patches[k], dim, 0, packed);
            else if (!(rp = bf16_cached(ref_cache ? ref_cache[k] : NULL, refs[k], ref_patches[k],
                                        dim, 1, &x16, max_cols))) {
                if (!x16 &&
                    !(x16 = pe_alloc((size_t)max_cols * dim, sizeof(bf16_t), "bf16 features"))) {
                    failed = 1;
                    break;
                }
                bf16_prepare(refs[k], ref_patches[k], dim, 1, x16, packed);
                rp = packed;
            }
            fused_rows(bf16, qa, query_patches, dim, rp, ref_patches[k], query_inv, ref_inv[k], T,
                       nthr, rowmax, NULL);
            for (int i = 0; i < query_patches; i++)
                heap_offer(heaps + (size_t)i * K, k, K,
                           key_of(cos_dist(rowmax[i] * query_inv[i]), params->order));
        }
        free(packed);
        free(rowmax);
        free(x16);
        engine_path = 0;
    }
    if (!failed && engine_path) {
        /* each thread: (rows, D) x (Gk, D)^T -> (rows, Gk) dot products, then its row
         * minima; bf16 references row-major (cached when they have a cache) */
        float *tiles = pe_alloc((size_t)nthr * T * max_cols, sizeof(float), "score tiles");
        operand *r = calloc((size_t)num_refs, sizeof *r);
        bf16_t **own = calloc((size_t)num_refs, sizeof *own); /* uncached copies, freed here */
        failed = !tiles || !r || !own;
        for (int k = 0; k < num_refs && !failed; k++) {
            r[k].f = refs[k];
            if (!bf16) continue;
            r[k].h = (bf16_t *)bf16_cached(ref_cache ? ref_cache[k] : NULL, refs[k], ref_patches[k],
                                           dim, 0, NULL, 0);
            if (r[k].h) continue;
            own[k] = pe_alloc((size_t)ref_patches[k] * dim, sizeof(bf16_t), "bf16 features");
            if (!own[k]) failed = 1;
            else bf16_prepare(refs[k], ref_patches[k], dim, 0, NULL, own[k]);
            r[k].h = own[k];
        }
        const int ntiles = (query_patches + T - 1) / T;
        for (int k = 0; k < num_refs && !failed; k++) {
#pragma omp parallel for schedule(dynamic, 1) num_threads(nthr) reduction(| : failed)
            for (int t = 0; t < ntiles; t++) {
                const int r0 = t * T, rows = PE_MIN(T, query_patches - r0);
                float *tile = tiles + (size_t)thread_id() * T * max_cols;
                if (tile_gemm(bf16, &q, r0, rows, &r[k], ref_patches[k], dim, tile)) {
                    failed = 1;
                    continue;
                }
                reduce_rows(tile, rows, ref_patches[k], query_inv + r0, ref_inv[k],
                            heaps + (size_t)r0 * K, k, K, params->order);
            }
        }
        for (int k = 0; own && k < num_refs; k++) free(own[k]);
        free(own);
        free(r);
        free(tiles);
    }
    if (!failed) finish_patch_scores(heaps, query_patches, K, params->order, patch_scores);
    free(heaps);
    free(q.h);
    if (failed)
        return pe_fail(PE_ERR_NOMEM, "score: out of memory (%d query patches, %d references)",
                       query_patches, num_refs);
    if (image_score) *image_score = pe_image_score(patch_scores, query_patches, params);
    return PE_OK;
}

pe_status pe_score_query(const float *query, int query_patches, const float *const *refs,
                         const int *ref_patches, int num_refs, int dim,
                         const pe_score_params *params, float *patch_scores, float *image_score)
{
    pe_score_params defaults = pe_score_default_params(NULL, 0);
    if (!params) params = &defaults;
    if (!query || !refs || !ref_patches || !patch_scores)
        return pe_fail(PE_ERR_ARG, "pe_score_query: NULL argument");
    if (query_patches <= 0 || dim <= 0)
        return pe_fail(PE_ERR_SHAPE, "pe_score_query: %d query patches of dim %d", query_patches,
                       dim);
    if (num_refs <= 0) return pe_fail(PE_ERR_ARG, "pe_score_query: no reference images");
    size_t total = 0;
    for (int k = 0; k < num_refs; k++) {
        if (ref_patches[k] <= 0 || !refs[k])
            return pe_fail(PE_ERR_SHAPE, "pe_score_query: reference %d has no patches", k);
        total += (size_t)ref_patches[k];
    }
    /* Inverse norms, computed once: (Gq) + sum_k (Gk) floats. */
    float *qinv = pe_alloc((size_t)query_patches + total, sizeof(float), "inverse norms");
    const float **rinv = malloc((size_t)num_refs * sizeof *rinv);
    if (!qinv || !rinv) {
        free(qinv);
        free(rinv);
        return pe_fail(PE_ERR_NOMEM, "pe_score_query: out of memory");
    }
    pe_inv_norms(query, query_patches, dim, qinv);
    float *next = qinv + query_patches;
    for (int k = 0; k < num_refs; k++) {
        pe_inv_norms(refs[k], ref_patches[k], dim, next);
        rinv[k] = next;
        next += ref_patches[k];
    }
    pe_status s = pe_score_query_inv(query, qinv, query_patches, refs, rinv, ref_patches, num_refs,
                                     dim, NULL, params, patch_scores, image_score);
    free(qinv);
    free(rinv);
    return s;
}

/* ------------------------------------------------------------------ batch zero-shot */

/* Pairs of one zero-shot batch through the engine (see score.h): the batch's fp32
 * features, per-thread tiles / column maxima, and the bf16 copies of the current pair's
 * two images (bf16 mode, and the fp32 screen's normalised ones), made from the fp32
 * features when a pair needs them: no bf16 copy of the whole batch is kept. */
struct pe_pair_scorer {
    int n, G, dim, T, K, bf16, nthr;
    int fused;  /* score_kernel.c runs the pairs (no tiles); else engine GEMM tiles */
    int screen; /* fp32 through the bf16 screen + exact recompute (score_screen.c) */
    pe_order order;
    operand *ops;        /* (n) the fp32 features (h unused: see copy16) */
    bf16_t *copy16[2];   /* bf16 / screen: two (G, dim) bf16 copies, of images copy_img[] */
    int copy_img[2];     /* (-1: none yet) */
    float *tiles;        /* (nthr, T, G), engine path only */
    float *colmax;       /* (nthr, G) */
    void *packed;        /* fused: the current pair's b, packed (sk_panel_bytes) */
    float *rowmax;       /* fused: (G) row maxima of the current pair */
    float *stats;        /* screen: (n, G, 3) sk_screen_stats of every image */
    float *inv;          /* screen: (n, G) the inverse norms the bf16 copies are normalised with */
    float *win;          /* screen: (2, G) row and column windows of the current pair */
    float *colmax_exact; /* screen: (G) */
    sk_screen_ws *ws;    /* screen: (nthr) */
};

/* The screen holds 4 floats per patch of the batch (bounds, inverse norms) and two bf16
 * images. It is an optimisation: where that would take more than a quarter of the memory
 * available, the pairs run the fp32 kernel instead. (Until the copies were made per pair
 * it held a bf16 copy of the whole batch: 2 D bytes more per patch.) */
double pe_score_screen_bytes(int n, int G, int dim)
{
    return 16.0 * n * G + pe_score_pair_copy_bytes(G, dim);
}
double pe_score_pair_copy_bytes(int G, int dim) { return 2.0 * 2.0 * G * dim; }
int pe_score_screen_fits(int n, int G, int dim)
{
    const double avail = pe_mem_available();
    return avail <= 0 || pe_score_screen_bytes(n, G, dim) <= 0.25 * avail;
}

void pe_pair_scorer_free(pe_pair_scorer *ps)
{
    if (!ps) return;
    free(ps->ops);
    free(ps->copy16[0]);
    free(ps->copy16[1]);
    free(ps->tiles);
    free(ps->colmax);
    free(ps->packed);
    free(ps->rowmax);
    free(ps->stats);
    free(ps->inv);
    free(ps->win);
    free(ps->colmax_exact);
    for (int t = 0; ps->ws && t < ps->nthr; t++) sk_screen_ws_free(&ps->ws[t]);
    free(ps->ws);
    free(ps);
}

/* Image img's bf16 copy: the screen's normalised one (sk_screen_convert: the bits
 * sk_screen_stats measured), or bf16 mode's (eng_to_bf16, as operand_make), made in one of
 * the two slots unless one holds it already; the slot of image `keep` (the pair's other
 * image) is not taken. A full batch scores (a, b) for every b > a in turn: a stays, and
 * each pair converts one image. */
static const bf16_t *pair_copy(pe_pair_scorer *ps, int img, int keep)
{
    for (int s = 0; s < 2; s++)
        if (ps->copy_img[s] == img) return ps->copy16[s];
    const int s = ps->copy_img[0] == keep ? 1 : 0;
    const size_t G = (size_t)ps->G;
    if (ps->screen)
        sk_screen_convert(ps->ops[img].f, ps->inv + G * img, ps->G, ps->dim, ps->copy16[s]);
    else eng_to_bf16_2d(ps->copy16[s], ps->ops[img].f, ps->G, ps->dim, ps->dim);
    ps->copy_img[s] = img;
    return ps->copy16[s];
}

pe_status pe_pair_scorer_new(const float *const *feats, int n, int G, int dim, int T, int K,
                             pe_order order, pe_precision precision, pe_pair_scorer **out)
{
    *out = NULL;
    pe_pair_scorer *ps = calloc(1, sizeof *ps);
    if (!ps) return pe_fail(PE_ERR_NOMEM, "zero-shot: out of memory");
    ps->n = n;
    ps->G = G;
    ps->dim = dim;
    ps->T = T;
    ps->K = K;
    ps->order = order;
    ps->bf16 = pe_precision_resolve(precision) == PE_PRECISION_BF16;
    ps->nthr = team_size();
    ps->fused = sk_available(ps->bf16, dim);
    ps->copy_img[0] = ps->copy_img[1] = -1;
    /* fp32 where the CPU has bf16 dot products: screened (bit-identical to the fp32
     * kernel), unless a feature is not finite (no error bound) or memory is short */
    ps->screen = !ps->bf16 && pe_score_screen_runs(dim) && (size_t)G * dim < INT_MAX &&
                 pe_score_screen_fits(n, G, dim);
    bf16_t *x16 = NULL; /* the screen's bounds are measured on a copy made here, image by image */
    if (ps->screen) {
        ps->stats = pe_alloc((size_t)n * G * 3, sizeof(float), "feature norms");
        ps->inv = pe_alloc((size_t)n * G, sizeof(float), "inverse norms");
        ps->win = pe_alloc((size_t)2 * G, sizeof(float), "screen windows");
        ps->colmax_exact = pe_alloc((size_t)G, sizeof(float), "column maxima");
        ps->ws = calloc((size_t)ps->nthr, sizeof *ps->ws);
        x16 = pe_alloc((size_t)G * dim, sizeof(bf16_t), "bf16 features");
        if (!ps->stats || !ps->inv || !ps->win || !ps->colmax_exact || !ps->ws || !x16) {
            free(x16);
            pe_pair_scorer_free(ps);
            return pe_fail(PE_ERR_NOMEM, "zero-shot: out of memory (%d images x %d patches)", n, G);
        }
    }
    ps->ops = calloc((size_t)n, sizeof *ps->ops);
    if (ps->fused) {
        /* the screen packs bf16; its fallback for a pair (below) packs fp32 */
        ps->packed = pe_alloc(sk_panel_bytes(G, dim, ps->bf16), 1, "packed features");
        ps->rowmax = pe_alloc((size_t)G, sizeof(float), "row maxima");
    } else {
        ps->tiles = pe_alloc((size_t)ps->nthr * T * G, sizeof(float), "score tiles");
    }
    ps->colmax = pe_alloc((size_t)ps->nthr * G, sizeof(float), "column maxima");
    int failed = !ps->ops || !ps->colmax || (ps->fused ? !ps->packed || !ps->rowmax : !ps->tiles);
    for (int b = 0; b < n && !failed; b++) ps->ops[b].f = feats[b];
    for (int b = 0; b < n && !failed && ps->screen; b++) {
        /* the bounds of the screen's normalised bf16 copies (score_screen.c); a non-finite
         * value (no error bound) turns the screen off */
        float *inv = ps->inv + (size_t)b * G;
        pe_inv_norms(feats[b], G, dim, inv);
        if (sk_screen_stats(feats[b], inv, G, dim, x16, ps->stats + (size_t)b * G * 3))
            ps->screen = 0;
    }
    free(x16);
    for (int s = 0; s < 2 && !failed && (ps->screen || ps->bf16); s++)
        failed = !(ps->copy16[s] = pe_alloc((size_t)G * dim, sizeof(bf16_t), "bf16 features"));
    if (failed) {
        pe_pair_scorer_free(ps);
        return pe_fail(PE_ERR_NOMEM, "zero-shot: out of memory (%d images x %d patches)", n, G);
    }
    *out = ps;
    return PE_OK;
}

int pe_pair_scorer_run(pe_pair_scorer *ps, int a, const float *inv_a, int b, const float *inv_b,
                       float *heap_a, int count_a, float *heap_b, int count_b)
{
    const int G = ps->G, T = ps->T, K = ps->K, nthr = ps->nthr, dim = ps->dim;
    const int ntiles = (G + T - 1) / T;
    const pe_order order = ps->order;
    int failed = 0;
    float *colmax = ps->colmax;
    if (heap_b)
        for (size_t j = 0; j < (size_t)nthr * G; j++) colmax[j] = -INFINITY;
    /* the screen's copies were normalised with its own inverse norms: the caller's must be
     * the same values (they are: pe_inv_norms) */
    if (ps->screen && !memcmp(inv_a, ps->inv + (size_t)a * G, (size_t)G * sizeof *inv_a) &&
        !memcmp(inv_b, ps->inv + (size_t)b * G, (size_t)G * sizeof *inv_b)) {
        /* fp32 by screening: b packed in bf16; 32-row blocks of a over threads */
        float *row_win = ps->win, *col_win = ps->win + G;
        const bf16_t *a16 = pair_copy(ps, a, b), *b16 = pair_copy(ps, b, a);
        sk_screen_windows(ps->stats + (size_t)a * G * 3, ps->stats + (size_t)b * G * 3, G, dim,
                          row_win, col_win);
        sk_pack(b16, G, dim, 1, ps->packed);
        if (heap_b) {
            sk_screen_seed(a16, b16, G, dim, colmax);
            for (int th = 1; th < nthr; th++)
                memcpy(colmax + (size_t)th * G, colmax, (size_t)G * sizeof *colmax);
        }
        const int rt = PE_MAX(32, PE_MIN(T, (G + 4 * nthr - 1) / (4 * nthr))) / 32 * 32;
        const int nrt = (G + rt - 1) / rt;
#pragma omp parallel for schedule(dynamic, 1) num_threads(nthr) reduction(| : failed)
        for (int t = 0; t < nrt; t++) {
            const int r0 = t * rt, me = thread_id();
            failed |=
                sk_screen_rows(a16, ps->ops[a].f, r0, PE_MIN(rt, G - r0), dim, ps->packed,
                               ps->ops[b].f, G, inv_b, row_win, col_win, heap_a ? ps->rowmax : NULL,
                               heap_b ? colmax + (size_t)me * G : NULL, &ps->ws[me]) != 0;
        }
        int cols_fp32 = 0;
        if (!failed && heap_b) {
            for (int th = 1; th < nthr; th++)
                for (int j = 0; j < G; j++)
                    colmax[j] = PE_MAX(colmax[j], colmax[(size_t)th * G + j]);
            const int rc = sk_screen_finish_cols(ps->ws, nthr, ps->ops[a].f, ps->ops[b].f, dim, G,
                                                 G, inv_a, colmax, col_win, ps->colmax_exact);
            failed = rc < 0;
            cols_fp32 = rc == 1;
        }
        /* ties (flat images, repeated patches): what the screen left, by the fp32 kernel
         * (b packed again, in fp32: the screen is done with the bf16 panels) */
        if (!failed && (screen_redo_count(ps->ws, nthr) || cols_fp32)) {
            sk_pack(ps->ops[b].f, G, dim, 0, ps->packed);
            screen_redo_rows(ps->ws, nthr, ps->ops[a].f, dim, ps->packed, G, inv_a, inv_b, T,
                             ps->rowmax);
            if (cols_fp32) {
                for (size_t j = 0; j < (size_t)nthr * G; j++) colmax[j] = -INFINITY;
                fused_rows(0, ps->ops[a].f, G, dim, ps->packed, G, inv_a, inv_b, T, nthr, NULL,
                           colmax);
                for (int th = 1; th < nthr; th++)
                    for (int j = 0; j < G; j++)
                        colmax[j] = PE_MAX(colmax[j], colmax[(size_t)th * G + j]);
                memcpy(ps->colmax_exact, colmax, (size_t)G * sizeof *colmax);
            }
        }
        if (!failed && heap_a)
            for (int r = 0; r < G; r++)
                heap_offer(heap_a + (size_t)r * K, count_a, K,
                           key_of(cos_dist(ps->rowmax[r] * inv_a[r]), order));
        if (!failed && heap_b)
            for (int j = 0; j < G; j++)
                heap_offer(heap_b + (size_t)j * K, count_b, K,
                           key_of(cos_dist(ps->colmax_exact[j] * inv_b[j]), order));
        for (int th = 0; th < nthr; th++) ps->ws[th].ncols = ps->ws[th].nredo = 0;
        return failed ? -1 : 0;
    }
    if (ps->fused) {
        /* b packed once; row tiles of a over threads, each reducing in registers */
        const void *fa = ps->bf16 ? (const void *)pair_copy(ps, a, b) : ps->ops[a].f;
        const void *fb = ps->bf16 ? (const void *)pair_copy(ps, b, a) : ps->ops[b].f;
        sk_pack(fb, G, dim, ps->bf16, ps->packed);
        fused_rows(ps->bf16, fa, G, dim, ps->packed, G, inv_a, inv_b, T, nthr,
                   heap_a ? ps->rowmax : NULL, heap_b ? colmax : NULL);
        if (heap_a)
            for (int r = 0; r < G; r++)
                heap_offer(heap_a + (size_t)r * K, count_a, K,
                           key_of(cos_dist(ps->rowmax[r] * inv_a[r]), order));
    } else {
        /* each thread: (rows, D) of a x (G, D)^T of b -> (rows, G) dot products, its rows'
         * minima into a's heaps (disjoint rows) and column maxima into its own colmax row
         * (merged below) */
        operand oa = ps->ops[a], ob = ps->ops[b];
        if (ps->bf16) {
            oa.h = (bf16_t *)pair_copy(ps, a, b);
            ob.h = (bf16_t *)pair_copy(ps, b, a);
        }
#pragma omp parallel for schedule(dynamic, 1) num_threads(nthr) reduction(| : failed)
        for (int t = 0; t < ntiles; t++) {
            const int r0 = t * T, rows = PE_MIN(T, G - r0), me = thread_id();
            float *tile = ps->tiles + (size_t)me * T * G;
            if (tile_gemm(ps->bf16, &oa, r0, rows, &ob, G, dim, tile)) {
                failed = 1;
                continue;
            }
            if (heap_a)
                reduce_rows(tile, rows, G, inv_a + r0, inv_b, heap_a + (size_t)r0 * K, count_a, K,
                            order);
            if (heap_b) reduce_cols(tile, rows, G, inv_a + r0, colmax + (size_t)me * G);
        }
    }
    if (failed || !heap_b) return failed ? -1 : 0;
    for (int th = 1; th < nthr; th++) {
        const float *other = colmax + (size_t)th * G;
#pragma omp simd
        for (int j = 0; j < G; j++) colmax[j] = other[j] > colmax[j] ? other[j] : colmax[j];
    }
    for (int j = 0; j < G; j++)
        heap_offer(heap_b + (size_t)j * K, count_b, K,
                   key_of(cos_dist(colmax[j] * inv_b[j]), order));
    return 0;
}

/* Exported views of the helpers above for the comparator schedule (zeroshot_sampled.c). */
void pe_score_heap_offer(float *heap, int count, int k, float key)
{
    heap_offer(heap, count, k, key);
}
int pe_score_auto_tile(const pe_score_params *p, int rows, int cols)
{
    return auto_tile(p, rows, cols);
}
pe_status pe_score_check(const pe_score_params *p) { return check_params(p); }
void pe_score_finish(const float *heaps, int n, int k, pe_order order, float *out)
{
    finish_patch_scores(heaps, n, k, order, out);
}

/* Every unordered pair (a, b), a < b, is computed once: the (rows of a) x (G of b)
 * tile of dot products gives a's Eq. 2 distances to b from its row maxima and b's
 * distances to a from its column maxima (accumulated over a's row tiles).
 * Memory: B*G*K floats of selection heaps (K = the Eq. 3 count, at most B-1), B*G
 * inverse norms, a (T, G) tile and one (G) column-max buffer. */
pe_status pe_score_batch(const float *const *feats, int num_images, int patches, int dim,
                         const pe_score_params *params, float *patch_scores, float *image_scores)
{
    pe_score_params defaults = pe_score_default_params(NULL, 1);
    if (!params) params = &defaults;
    if (!feats || !patch_scores) return pe_fail(PE_ERR_ARG, "pe_score_batch: NULL argument");
    if (num_images < 2)
        return pe_fail(PE_ERR_ARG,
                       "zero-shot needs at least 2 images (each is scored against the "
                       "others), got %d",
                       num_images);
    if (patches <= 0 || dim <= 0)
        return pe_fail(PE_ERR_SHAPE, "pe_score_batch: %d patches of dim %d", patches, dim);
    for (int b = 0; b < num_images; b++)
        if (!feats[b]) return pe_fail(PE_ERR_ARG, "pe_score_batch: image %d has no features", b);
    pe_status s = check_params(params);
    if (s) return s;

    const int B = num_images, G = patches, M = B - 1;
    const int K = pe_score_k(params, M);
    const int T = auto_tile(params, G, G);
    const size_t heap_floats = (size_t)B * G * K;
    float *inv = pe_alloc((size_t)B * G, sizeof(float), "inverse norms");
    float *heaps = pe_alloc(heap_floats, sizeof(float), "zero-shot selection");
    int *count = calloc((size_t)B, sizeof *count); /* values offered so far, per image */
    pe_pair_scorer *ps = NULL;
    if (!inv || !heaps || !count ||
        pe_pair_scorer_new(feats, B, G, dim, T, K, params->order, params->precision, &ps)) {
        free(inv);
        free(heaps);
        free(count);
        return pe_fail(PE_ERR_NOMEM, "zero-shot: out of memory (%d images x %d patches, K = %d)", B,
                       G, K);
    }
    for (int b = 0; b < B; b++) pe_inv_norms(feats[b], G, dim, inv + (size_t)b * G);

    /* every unordered pair once: a's rows serve a, b's columns serve b */
    int failed = 0;
    for (int a = 0; a < B && !failed; a++) {
        for (int b = a + 1; b < B && !failed; b++) {
            failed = pe_pair_scorer_run(ps, a, inv + (size_t)a * G, b, inv + (size_t)b * G,
                                        heaps + (size_t)a * G * K, count[a],
                                        heaps + (size_t)b * G * K, count[b]) != 0;
            count[a]++;
            count[b]++;
        }
    }
    for (int b = 0; b < B && !failed; b++) {
        float *out = patch_scores + (size_t)b * G;
        finish_patch_scores(heaps + (size_t)b * G * K, G, K, params->order, out);
        if (image_scores) image_scores[b] = pe_image_score(out, G, params);
    }
    free(inv);
    free(heaps);
    free(count);
    pe_pair_scorer_free(ps);
    if (failed) return pe_fail(PE_ERR_NOMEM, "zero-shot: scoring tile GEMM failed (out of memory)");
    return PE_OK;
}
