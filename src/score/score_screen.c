/* score_screen.c — the zero-shot pair maxima in fp32, exactly, at bf16 speed (on CPUs
 * with AVX-512-BF16 or AMX).
 *
 * The fp32 pair scoring (score_kernel.c) needs, for a pair of images a, b of G patches,
 *   rowmax[r] = max_j fl(dot(a_r, b_j)) * col_inv[j]      colmax[j] = max_r fl(dot) * row_inv[r]
 * where fl(dot) is the sequential k-order fp32 FMA chain. Almost all of the G x G dot
 * products are far below their row's (and column's) maximum; only the few near it can
 * decide it. So:
 *   1. screen: every product in bf16 on normalised copies (x * inv, rounded; fp32
 *      accumulation: the AMX tile unit or vdpbf16ps), keeping the screened maxima;
 *   2. a provable bound W on |screened - exact| (below) selects, per row and per column,
 *      the candidates within W of the screened maximum: any product whose fp32 value can
 *      reach the fp32 maximum is among them;
 *   3. the candidates' dot products are recomputed with the same fp32 FMA chain as the
 *      fp32 kernel, and their maximum is the result: bit-identical to the fp32 kernel's.
 * On MobileNetV2 features of the tire images the candidates average about 4.5 per row and
 * per column (of G = 3136); step 3 then took 16 % of the run against 28 % for the tile
 * products (docs/ENGINE.md, "Zero-shot fp32 at bf16 speed").
 *
 * The bound. Per patch, x' = x * inv exactly and x~ its bf16 copy; n = ||x'||,
 * n~ = ||x~||, e = ||x~ - x'|| (sk_screen_stats, in double). For one product:
 *   |x~.y~ - x'.y'| <= e_x n~_y + n_x e_y                 (rounding of the operands)
 *   fp32 accumulation of x~.y~: <= g n~_x n~_y,           g = 2 (dim + 2) 2^-24
 *   the fp32 chain of x.y and its scaling, in these units: <= (g + 2^-24) n_x n_y
 * Maximised over the other image's patches this is a per-row (per-column) window
 * (sk_screen_windows): a product whose fp32 value could be the maximum has a screened
 * value >= (screened maximum) - W, W = 2 (screening error + fp32 error), widened by 1/16
 * for the rounding of W itself. The scale per row (per column) of the fp32 target does
 * not change which product is the maximum. A zero patch (W = -1) takes the exact +0 of
 * its fp32 chain. Non-finite features (no bound) are not screened: the caller checks
 * sk_screen_stats's return and uses the fp32 kernel instead.
 *
 * Rows and columns. A row's maximum is known once its 32-row block has swept all columns;
 * the block's screened products are kept in a (32, G) buffer (L2) with each row's lane
 * maxima per group of 8 panels, and only the groups that reach the threshold are scanned.
 * A column's maximum is known only after every row: products are recorded against the
 * running maximum so far (seeded by sk_screen_seed; a lower bound of the final one, so a
 * superset) and filtered with the final screened maximum in sk_screen_finish_cols. Ties
 * beyond a budget go back to the fp32 kernel (ws->redo, or finish_cols returning 1). */
#include "score_kernel.h"

#include "compute/amx.h"
#include "compute/engine.h"
#include "compute/vecmath.h"

#include <immintrin.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define NR 32 /* panel width (sk_pack) and block height */
/* The recompute costs about this many screened products per candidate (16 gathered FMA
 * chains at a time); a row block with more candidates than 1/this of its products (ties:
 * flat images, repeated patches) is left to the fp32 kernel (ws->redo). */
#define SK_RECOMPUTE_COST 24
/* column records kept per column before the columns are left to the fp32 kernel */
#define SK_COL_RECORDS_PER_COLUMN 16
/* panels per group of a row's lane maxima: the row scan reads only the groups that can
 * hold a candidate (the (32, G) buffer is L2-resident; reading all of it cost as much as
 * the tile products) */
#define GROUP 8

#define TSCR __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,fma,avx512bf16")))
#define TSCR_AMX                                                                                   \
    __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,fma,avx512bf16,amx-tile,amx-bf16")))

static int g_use_amx = 1;
void sk_screen_set_amx(int on) { g_use_amx = on; }

int sk_screen_available(int dim)
{
    return sk_available(1, dim) && (size_t)dim * 2 <= (size_t)INT_MAX / NR;
}

/* ------------------------------------------------------------------ bounds */

int sk_screen_stats(const float *X, const float *inv, int G, int dim, uint16_t *X16, float *stats)
{
    int finite = 1;
    for (int i = 0; i < G; i++) {
        const float *x = X + (size_t)i * dim;
        uint16_t *h = X16 + (size_t)i * dim;
        double n2 = 0, t2 = 0, e2 = 0;
        for (int k = 0; k < dim; k++) {
            const double v = (double)x[k] * inv[i]; /* the exact scaled value */
            const float t = eng_round_bf16(x[k] * inv[i]);
            uint32_t bits;
            memcpy(&bits, &t, 4);
            h[k] = (uint16_t)(bits >> 16);
            n2 += v * v;
            t2 += (double)t * t;
            e2 += (t - v) * (t - v);
        }
        stats[3 * (size_t)i] = (float)sqrt(n2);
        stats[3 * (size_t)i + 1] = (float)sqrt(t2);
        stats[3 * (size_t)i + 2] = (float)sqrt(e2);
        finite &= isfinite(n2) && isfinite(t2) && isfinite(e2) && isfinite(inv[i]);
    }
    return finite ? 0 : -1;
}

/* rows [r0, r1) of X16 as sk_screen_stats writes them, bf16(X_i * inv_i) (eng_round_bf16:
 * nearest even, inf / NaN kept), 16 at a time: the same product, the same integer rounding */
TSCR static void convert_rows(const float *X, const float *inv, int r0, int r1, int dim,
                              uint16_t *X16)
{
    const __m512i expo = _mm512_set1_epi32(0x7f800000), half = _mm512_set1_epi32(0x7fff),
                  one = _mm512_set1_epi32(1);
    for (int i = r0; i < r1; i++) {
        const float *x = X + (size_t)i * dim;
        uint16_t *h = X16 + (size_t)i * dim;
        const __m512 s = _mm512_set1_ps(inv[i]);
        int k = 0;
        for (; k + 16 <= dim; k += 16) {
            const __m512i u = _mm512_castps_si512(_mm512_mul_ps(_mm512_loadu_ps(x + k), s));
            const __mmask16 keep = _mm512_cmpeq_epi32_mask(_mm512_and_si512(u, expo), expo);
            __m512i r = _mm512_add_epi32(
                u, _mm512_add_epi32(half, _mm512_and_si512(_mm512_srli_epi32(u, 16), one)));
            r = _mm512_mask_mov_epi32(r, keep, u);
            _mm256_storeu_si256((__m256i *)(void *)(h + k),
                                _mm512_cvtepi32_epi16(_mm512_srli_epi32(r, 16)));
        }
        for (; k < dim; k++) {
            const float t = eng_round_bf16(x[k] * inv[i]);
            uint32_t bits;
            memcpy(&bits, &t, 4);
            h[k] = (uint16_t)(bits >> 16);
        }
    }
}

void sk_screen_convert(const float *X, const float *inv, int G, int dim, uint16_t *X16)
{
    const int chunk = 64, n = (G + chunk - 1) / chunk;
#pragma omp parallel for schedule(static) if ((size_t)G * dim >= ((size_t)1 << 16))
    for (int c = 0; c < n; c++)
        convert_rows(X, inv, c * chunk, c * chunk + chunk < G ? c * chunk + chunk : G, dim, X16);
}

/* W[i] for the patches x_i of one image against the patches y_j of the other (both
 * normalised); a zero patch (n = 0) gets W = -1: its maximum is exactly +0 (below) */
static void windows_one(const float *sx, int G, const float *sy, int Gy, int dim, float *W)
{
    double p1 = 0, p2 = 0, p3 = 0; /* max_j n~_j, e_j, n_j */
    for (int j = 0; j < Gy; j++) {
        p1 = fmax(p1, sy[3 * (size_t)j + 1]);
        p2 = fmax(p2, sy[3 * (size_t)j + 2]);
        p3 = fmax(p3, sy[3 * (size_t)j]);
    }
    const double u = ldexp(1.0, -24), g = 2.0 * (dim + 2) * u, gs = g + u * (1 + g);
    for (int i = 0; i < G; i++) {
        const double n = sx[3 * (size_t)i], nt = sx[3 * (size_t)i + 1], e = sx[3 * (size_t)i + 2];
        const double screen = e * p1 + n * p2 + g * nt * p1, exact = gs * n * p3;
        W[i] = n == 0 ? -1.0f : (float)(2.0 * (screen + exact) * 1.0625 + 1e-30);
    }
}

void sk_screen_windows(const float *stats_a, const float *stats_b, int G, int dim, float *row_win,
                       float *col_win)
{
    if (row_win) windows_one(stats_a, G, stats_b, G, dim, row_win);
    if (col_win) windows_one(stats_b, G, stats_a, G, dim, col_win);
}

void sk_screen_row_windows(const float *stats_a, int Ga, const float *stats_b, int Gb, int dim,
                           float *row_win)
{
    windows_one(stats_a, Ga, stats_b, Gb, dim, row_win);
}

/* ------------------------------------------------------------------ exact recompute */

/* out[t] = the fp32 chain acc = fma(A[r][k], B[j][k], acc), k = 0..dim-1 from 0, for the
 * hits (r, j): the very operations of the fp32 kernels, so the same bits. 16 hits at a
 * time in the lanes of one zmm (gathers), the rest one by one. */
TSCR static void exact_dots(const float *A, const float *B, int dim, const sk_hit *h, size_t n,
                            float *out)
{
    size_t t = 0;
    const __m512i one = _mm512_set1_epi32(1);
    for (; t + 16 <= n; t += 16) {
        int ia[16], ib[16];
        for (int l = 0; l < 16; l++) ia[l] = h[t + l].r * dim, ib[l] = h[t + l].j * dim;
        __m512i xa = _mm512_loadu_si512(ia), xb = _mm512_loadu_si512(ib);
        __m512 acc = _mm512_setzero_ps();
        for (int k = 0; k < dim; k++) {
            acc =
                _mm512_fmadd_ps(_mm512_i32gather_ps(xa, A, 4), _mm512_i32gather_ps(xb, B, 4), acc);
            xa = _mm512_add_epi32(xa, one);
            xb = _mm512_add_epi32(xb, one);
        }
        _mm512_storeu_ps(out + t, acc);
    }
    for (; t < n; t++) {
        const float *a = A + (size_t)h[t].r * dim, *b = B + (size_t)h[t].j * dim;
        float acc = 0.0f;
        for (int k = 0; k < dim; k++) acc = fmaf(a[k], b[k], acc);
        out[t] = acc;
    }
}

/* ------------------------------------------------------------------ workspace */

void sk_screen_ws_free(sk_screen_ws *ws)
{
    if (!ws) return;
    free(ws->buf);
    free(ws->pad);
    free(ws->cols);
    free(ws->hits);
    free(ws->dots);
    free(ws->redo);
    free(ws->gmax);
    memset(ws, 0, sizeof *ws);
}

/* *v (an array of *cap elements of elem bytes) grown by doubling to hold need: 0, or -1
 * out of memory (*v unchanged) */
static int grow(void *v, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap) return 0;
    size_t c = *cap ? *cap : 1024;
    while (c < need) c *= 2;
    void *p = realloc(*(void **)v, c * elem);
    if (!p) return -1;
    *(void **)v = p;
    *cap = c;
    return 0;
}

static inline __attribute__((always_inline)) int push(sk_hit **v, size_t *n, size_t *cap, int r,
                                                      int j, float val)
{
    if (__builtin_expect(*n == *cap, 0) && grow(v, cap, *n + 1, sizeof **v)) return -1;
    (*v)[*n] = (sk_hit){r, j, val};
    (*n)++;
    return 0;
}

static int ensure_dots(sk_screen_ws *ws, size_t n)
{
    return grow(&ws->dots, &ws->dots_cap, n, sizeof *ws->dots);
}

/* ------------------------------------------------------------------ screening */

/* C (32, 32) block of bf16 products of the 32 rows at a (bf16, dim) with one packed
 * panel, stored at out with row stride ldo floats: on AMX tiles, or with vdpbf16ps. */
TSCR_AMX static void block_amx(const uint16_t *a, int dim, const uint16_t *pp, float *out, int ldo)
{
    amx_block32(a, dim, pp, dim / 32, out, ldo, 0);
}

TSCR static void block_dp(const uint16_t *a, int dim, const uint16_t *pp, float *out, int ldo)
{
    for (int i0 = 0; i0 < 32; i0 += 8) {
        __m512 acc[8][2];
        for (int i = 0; i < 8; i++) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
        for (int kk = 0; kk < dim / 2; kk++) {
            const __m512bh b0 = (__m512bh)_mm512_loadu_si512(pp + (size_t)kk * NR * 2),
                           b1 = (__m512bh)_mm512_loadu_si512(pp + (size_t)kk * NR * 2 + 32);
#pragma GCC unroll 8
            for (int i = 0; i < 8; i++) {
                uint32_t pair;
                memcpy(&pair, a + (size_t)(i0 + i) * dim + 2 * kk, 4);
                const __m512bh x = (__m512bh)_mm512_set1_epi32((int)pair);
                acc[i][0] = _mm512_dpbf16_ps(acc[i][0], x, b0);
                acc[i][1] = _mm512_dpbf16_ps(acc[i][1], x, b1);
            }
        }
        for (int i = 0; i < 8; i++) {
            _mm512_storeu_ps(out + (size_t)(i0 + i) * ldo, acc[i][0]);
            _mm512_storeu_ps(out + (size_t)(i0 + i) * ldo + 16, acc[i][1]);
        }
    }
}

static inline __mmask16 mask_of(int n)
{
    return n >= 16 ? (__mmask16)0xffff : n <= 0 ? (__mmask16)0 : (__mmask16)((1u << n) - 1);
}

/* one 32-row block [r0, r0 + mr) against every panel */
TSCR static int screen_block(int amx, const uint16_t *a16, const float *A32, int r0, int mr,
                             int dim, const uint16_t *Bp, const float *B32, int G,
                             const float *col_inv, const float *row_win, const float *col_win,
                             float *rowmax, float *colmax, sk_screen_ws *ws)
{
    const int np = (G + NR - 1) / NR, ld = np * NR, ngr = (np + GROUP - 1) / GROUP;
    float *buf = ws->buf;
    __m512 *gmax = ws->gmax; /* (32, ngr): each row's lane maxima over a group of panels */
    __m512 rmv[32];
    for (int i = 0; i < 32; i++) rmv[i] = _mm512_set1_ps(-INFINITY);
    for (int p = 0; p < np; p++) {
        const uint16_t *pp = Bp + (size_t)p * NR * dim;
        float *blk = buf + (size_t)p * NR;
        if (amx) block_amx(a16, dim, pp, blk, ld);
        else block_dp(a16, dim, pp, blk, ld);
        const int nc = G - p * NR < NR ? G - p * NR : NR;
        const __mmask16 k0 = mask_of(nc), k1 = mask_of(nc - 16);
        __m512 cm0 = _mm512_set1_ps(-INFINITY), cm1 = cm0;
        for (int i = 0; i < mr; i++) {
            const __m512 c0 = _mm512_loadu_ps(blk + (size_t)i * ld),
                         c1 = _mm512_loadu_ps(blk + (size_t)i * ld + 16);
            if (rowmax) {
                rmv[i] = _mm512_mask_max_ps(rmv[i], k0, rmv[i], c0);
                rmv[i] = _mm512_mask_max_ps(rmv[i], k1, rmv[i], c1);
            }
            cm0 = _mm512_max_ps(cm0, c0);
            cm1 = _mm512_max_ps(cm1, c1);
        }
        if (rowmax && (p % GROUP == GROUP - 1 || p == np - 1))
            for (int i = 0; i < mr; i++) {
                gmax[(size_t)i * ngr + p / GROUP] = rmv[i];
                rmv[i] = _mm512_set1_ps(-INFINITY);
            }
        if (!colmax) continue;
        /* running column maxima (screened), and the columns whose block holds a product
         * within the window of it: those products are recorded */
        float *cmx = colmax + p * NR;
        const __m512 m0 = _mm512_max_ps(_mm512_mask_loadu_ps(_mm512_set1_ps(-INFINITY), k0, cmx),
                                        cm0),
                     m1 = _mm512_max_ps(
                         _mm512_mask_loadu_ps(_mm512_set1_ps(-INFINITY), k1, cmx + 16), cm1);
        _mm512_mask_storeu_ps(cmx, k0, m0);
        _mm512_mask_storeu_ps(cmx + 16, k1, m1);
        const __m512 t0 = _mm512_sub_ps(m0, _mm512_maskz_loadu_ps(k0, col_win + p * NR)),
                     t1 = _mm512_sub_ps(m1, _mm512_maskz_loadu_ps(k1, col_win + p * NR + 16));
        uint32_t hit = (uint32_t)_mm512_mask_cmp_ps_mask(k0, cm0, t0, _CMP_GE_OQ) |
                       (uint32_t)_mm512_mask_cmp_ps_mask(k1, cm1, t1, _CMP_GE_OQ) << 16;
        if (!hit || ws->cols_overflow) continue;
        float thr[32];
        _mm512_storeu_ps(thr, t0);
        _mm512_storeu_ps(thr + 16, t1);
        while (hit) {
            const int c = __builtin_ctz(hit);
            hit &= hit - 1;
            for (int i = 0; i < mr && !ws->cols_overflow; i++) {
                const float v = blk[(size_t)i * ld + c];
                if (v < thr[c]) continue;
                if (ws->ncols >= (size_t)SK_COL_RECORDS_PER_COLUMN * G) ws->cols_overflow = 1;
                else if (push(&ws->cols, &ws->ncols, &ws->cols_cap, r0 + i, p * NR + c, v))
                    return -1;
            }
        }
    }
    if (!rowmax) return 0;
    /* rows: the candidates within the window of the screened maximum, recomputed */
    size_t nh = 0;
    for (int i = 0; i < mr; i++) {
        const int r = r0 + i;
        if (row_win[r] < 0) continue; /* a zero patch: +0 (set below) */
        const __m512 *gm = gmax + (size_t)i * ngr;
        __m512 mx = gm[0];
        for (int g = 1; g < ngr; g++) mx = _mm512_max_ps(mx, gm[g]);
        const float thr = _mm512_reduce_max_ps(mx) - row_win[r];
        const __m512 t = _mm512_set1_ps(thr);
        const size_t first = nh;
        const float *row = buf + (size_t)i * ld;
        for (int g = 0; g < ngr; g++) {
            /* only the groups of panels whose maximum reaches the threshold */
            if (!_mm512_cmp_ps_mask(gm[g], t, _CMP_GE_OQ)) continue;
            const int j1 = (g + 1) * GROUP * NR < G ? (g + 1) * GROUP * NR : G;
            for (int j0 = g * GROUP * NR; j0 < j1; j0 += 16) {
                const __mmask16 k = mask_of(j1 - j0);
                const __m512 v = _mm512_maskz_loadu_ps(k, row + j0);
                uint32_t m = _mm512_mask_cmp_ps_mask(k, v, t, _CMP_GE_OQ);
                while (m) {
                    const int c = __builtin_ctz(m);
                    m &= m - 1;
                    if (push(&ws->hits, &nh, &ws->hits_cap, r, j0 + c, 0.0f)) return -1;
                }
            }
        }
        if (nh == first) /* no bound held (cannot happen with finite inputs): every column */
            for (int j = 0; j < G; j++)
                if (push(&ws->hits, &nh, &ws->hits_cap, r, j, 0.0f)) return -1;
    }
    if (nh * SK_RECOMPUTE_COST > (size_t)mr * G) { /* ties: the fp32 kernel is cheaper */
        if (grow(&ws->redo, &ws->redo_cap, ws->nredo + 1, 2 * sizeof *ws->redo)) return -1;
        ws->redo[2 * ws->nredo] = r0;
        ws->redo[2 * ws->nredo + 1] = mr;
        ws->nredo++;
        return 0;
    }
    if (ensure_dots(ws, nh)) return -1;
    exact_dots(A32, B32, dim, ws->hits, nh, ws->dots);
    /* a zero patch's fp32 chain is +0 from the start, and +0 * inv = +0 */
    for (int i = 0; i < mr; i++) rowmax[r0 + i] = row_win[r0 + i] < 0 ? 0.0f : -INFINITY;
    for (size_t t = 0; t < nh; t++) {
        const sk_hit *h = &ws->hits[t];
        const float v = ws->dots[t] * col_inv[h->j];
        rowmax[h->r] = v > rowmax[h->r] ? v : rowmax[h->r];
    }
    return 0;
}

TSCR static int screen_rows(int amx, const uint16_t *A16, const float *A32, int r0, int rows,
                            int dim, const void *Bp, const float *B32, int G, const float *col_inv,
                            const float *row_win, const float *col_win, float *rowmax,
                            float *colmax, sk_screen_ws *ws)
{
    for (int b0 = r0; b0 < r0 + rows; b0 += 32) {
        const int mr = r0 + rows - b0 < 32 ? r0 + rows - b0 : 32;
        const uint16_t *a = A16 + (size_t)b0 * dim;
        if (mr < 32) { /* the block reads 32 rows: the tail zero-padded */
            memset(ws->pad, 0, (size_t)32 * dim * sizeof *ws->pad);
            memcpy(ws->pad, a, (size_t)mr * dim * sizeof *ws->pad);
            a = ws->pad;
        }
        if (screen_block(amx, a, A32, b0, mr, dim, Bp, B32, G, col_inv, row_win, col_win, rowmax,
                         colmax, ws))
            return -1;
    }
    return 0;
}

TSCR_AMX static int screen_rows_amx(const uint16_t *A16, const float *A32, int r0, int rows,
                                    int dim, const void *Bp, const float *B32, int G,
                                    const float *col_inv, const float *row_win,
                                    const float *col_win, float *rowmax, float *colmax,
                                    sk_screen_ws *ws)
{
    amx_tiles_begin();
    int rc = screen_rows(1, A16, A32, r0, rows, dim, Bp, B32, G, col_inv, row_win, col_win, rowmax,
                         colmax, ws);
    _tile_release();
    return rc;
}

int sk_screen_ws_reserve(sk_screen_ws *ws, int G, int dim)
{
    const size_t ld = (size_t)(G + NR - 1) / NR * NR;
    if (ws->buf_floats < 32 * ld) {
        free(ws->buf);
        ws->buf = aligned_alloc(64, 32 * ld * sizeof(float));
        ws->buf_floats = ws->buf ? 32 * ld : 0;
        if (!ws->buf) return -1;
    }
    const size_t ngr = ((size_t)(G + NR - 1) / NR + GROUP - 1) / GROUP;
    if (ws->gmax_n < 32 * ngr) {
        free(ws->gmax);
        ws->gmax = aligned_alloc(64, 32 * ngr * sizeof(__m512));
        ws->gmax_n = ws->gmax ? 32 * ngr : 0;
        if (!ws->gmax) return -1;
    }
    if (ws->pad_dim < dim) {
        free(ws->pad);
        ws->pad = malloc((size_t)32 * dim * sizeof *ws->pad);
        ws->pad_dim = ws->pad ? dim : 0;
        if (!ws->pad) return -1;
    }
    return 0;
}

int sk_screen_rows(const uint16_t *A16, const float *A32, int r0, int rows, int dim, const void *Bp,
                   const float *B32, int G, const float *col_inv, const float *row_win,
                   const float *col_win, float *rowmax, float *colmax, sk_screen_ws *ws)
{
    if (sk_screen_ws_reserve(ws, G, dim)) return -1;
    if (g_use_amx && dim % 32 == 0 && amx_ready())
        return screen_rows_amx(A16, A32, r0, rows, dim, Bp, B32, G, col_inv, row_win, col_win,
                               rowmax, colmax, ws);
    return screen_rows(0, A16, A32, r0, rows, dim, Bp, B32, G, col_inv, row_win, col_win, rowmax,
                       colmax, ws);
}

int sk_screen_finish_cols(sk_screen_ws *ws, int nws, const float *A32, const float *B32, int dim,
                          int rows, int G, const float *row_inv, const float *colmax_screened,
                          const float *col_win, float *colmax)
{
    int overflow = 0;
    for (int w = 0; w < nws; w++) overflow |= ws[w].cols_overflow;
    if (overflow) {
        for (int w = 0; w < nws; w++) ws[w].ncols = 0, ws[w].cols_overflow = 0;
        return 1;
    }
    for (int j = 0; j < G; j++) colmax[j] = col_win[j] < 0 ? 0.0f : -INFINITY;
    for (int w = 0; w < nws; w++) {
        /* keep the records within the window of the final screened maximum */
        size_t n = 0;
        for (size_t t = 0; t < ws[w].ncols; t++) {
            const sk_hit h = ws[w].cols[t];
            if (col_win[h.j] >= 0 && h.v >= colmax_screened[h.j] - col_win[h.j])
                ws[w].cols[n++] = h;
        }
        ws[w].ncols = n;
        if (ensure_dots(&ws[w], n)) return -1;
        exact_dots(A32, B32, dim, ws[w].cols, n, ws[w].dots);
        for (size_t t = 0; t < n; t++) {
            const sk_hit *h = &ws[w].cols[t];
            const float v = ws[w].dots[t] * row_inv[h->r];
            colmax[h->j] = v > colmax[h->j] ? v : colmax[h->j];
        }
        ws[w].ncols = 0;
    }
    for (int j = 0; j < G; j++) /* no bound held (cannot happen with finite inputs) */
        if (colmax[j] == -INFINITY)
            for (int r = 0; r < rows; r++) {
                const float *a = A32 + (size_t)r * dim, *b = B32 + (size_t)j * dim;
                float acc = 0.0f;
                for (int k = 0; k < dim; k++) acc = fmaf(a[k], b[k], acc);
                const float v = acc * row_inv[r];
                colmax[j] = v > colmax[j] ? v : colmax[j];
            }
    return 0;
}

/* A lower bound of each column's screened maximum before the sweep: the product of the
 * patches at the same index (the images of a batch show the same part, so it is often
 * near the maximum), which keeps the running-maximum records few from the first block.
 * Computed here in another order than the tile unit, so lowered by twice the
 * accumulation bound (and a margin): it never exceeds the screened value of that product. */
TSCR void sk_screen_seed(const uint16_t *A16, const uint16_t *B16, int G, int dim, float *colmax)
{
    const float slack = (float)(4.0 * 2.0 * (dim + 2) * ldexp(1.0, -24) + 1e-6);
    for (int j = 0; j < G; j++) {
        const uint16_t *a = A16 + (size_t)j * dim, *b = B16 + (size_t)j * dim;
        __m512 acc = _mm512_setzero_ps();
        int k = 0;
        for (; k + 16 <= dim; k += 16) {
            const __m512 x = _mm512_castsi512_ps(_mm512_slli_epi32(
                             _mm512_cvtepu16_epi32(_mm256_loadu_si256((const void *)(a + k))), 16)),
                         y = _mm512_castsi512_ps(_mm512_slli_epi32(
                             _mm512_cvtepu16_epi32(_mm256_loadu_si256((const void *)(b + k))), 16));
            acc = _mm512_fmadd_ps(x, y, acc);
        }
        float d = _mm512_reduce_add_ps(acc);
        for (; k < dim; k++) d += eng_bf16_to_f32(a[k]) * eng_bf16_to_f32(b[k]);
        const float v = d - slack;
        colmax[j] = v > colmax[j] ? v : colmax[j];
    }
}
