/* score_kernel.h — fused dot products + maxima for the zero-shot pair scoring
 * (score_kernel.c): for query rows A (rows, dim) and reference rows B (G, dim),
 *   rowmax[r] = max_j  (A_r . B_j) * col_inv[j]                 (r < rows)
 *   colmax[j] = max(colmax[j], max_r (A_r . B_j) * row_inv[r])   (j < G, running)
 * without writing the (rows, G) products anywhere. B is packed first (sk_pack).
 * fp32: A, B float. bf16: A, B bf16 (uint16_t bit patterns), fp32 accumulation. */
#ifndef PE_SCORE_KERNEL_H
#define PE_SCORE_KERNEL_H

#include <stddef.h>
#include <stdint.h>

/* 1 if the fused kernel runs here for this precision and width (fp32: always; bf16:
 * AVX-512-BF16 and an even dim). Otherwise callers use the engine GEMM + reductions. */
int sk_available(int bf16, int dim);
/* bytes of B packed (G rows of dim), and the packing (B: float or uint16_t rows) */
size_t sk_panel_bytes(int G, int dim, int bf16);
void sk_pack(const void *B, int G, int dim, int bf16, void *packed);
/* the reductions above; rowmax or colmax may be NULL (that side is not needed) */
void sk_rows(int bf16, const void *A, int rows, int dim, const void *packed, int G,
             const float *row_inv, const float *col_inv, float *rowmax, float *colmax);

/* ------------------------------------------------------------------ fp32 via screening
 * score_screen.c: the fp32 rowmax / colmax above, bit for bit, from a bf16 screen of all
 * products and an exact fp32 recompute of the few within a proven window of the maximum
 * (the file's header gives the bound). B is packed as bf16 (sk_pack(..., bf16 = 1)). */
typedef struct {
    int r, j; /* query row, reference row */
    float v;  /* screened value (column records) */
} sk_hit;
typedef struct { /* one per thread; grown as needed, freed by sk_screen_ws_free */
    float *buf;  /* (32, G rounded up to 32) screened products of one row block */
    size_t buf_floats;
    uint16_t *pad; /* a short last block, zero-padded to 32 rows */
    int pad_dim;
    sk_hit *cols; /* column candidates recorded so far (this pair) */
    size_t ncols, cols_cap;
    sk_hit *hits; /* one block's row candidates */
    size_t hits_cap;
    float *dots;
    size_t dots_cap;
    int cols_overflow; /* too many column records: the columns need the fp32 kernel */
    int *redo;         /* (r0, rows) row blocks left to the fp32 kernel (too many ties) */
    void *gmax;        /* (32, groups) lane maxima of a row over a group of panels */
    size_t gmax_n;
    size_t nredo, redo_cap;
} sk_screen_ws;

/* 1 where the bf16 screen runs (AVX-512-BF16, even dim) */
int sk_screen_available(int dim);
/* tests: 0 screens with vdpbf16ps even where AMX runs */
void sk_screen_set_amx(int on);
/* The screen works on normalised patches: X16 (G, dim) = bf16(X_i * inv_i), and stats
 * (G, 3) per patch: ||x'||, ||x'~||, ||x'~ - x'|| with x' = X_i * inv_i exactly and x'~
 * the bf16 copy. -1 if any is not finite (then the bound does not hold: do not screen). */
int sk_screen_stats(const float *X, const float *inv, int G, int dim, uint16_t *X16, float *stats);
/* X16 alone, the same bits as sk_screen_stats writes (where the screen runs: AVX-512; row
 * chunks over the team): a zero-shot batch keeps only the bounds, and makes the copies of
 * a pair's two images when it scores the pair */
void sk_screen_convert(const float *X, const float *inv, int G, int dim, uint16_t *X16);
/* windows of a pair: row_win (G) for a's rows, col_win (G) for b's rows, in the units of
 * the normalised screen; -1 marks a zero patch. Either may be NULL. */
void sk_screen_windows(const float *stats_a, const float *stats_b, int G, int dim, float *row_win,
                       float *col_win);
/* row_win (Ga) alone, for Ga rows of a against Gb rows of b (few-shot: a query against
 * one reference of another size) */
void sk_screen_row_windows(const float *stats_a, int Ga, const float *stats_b, int Gb, int dim,
                           float *row_win);
/* rows [r0, r0 + rows) of A (normalised bf16 copy A16, fp32 A32, both the whole image's
 * (., dim)) against B (G rows: its normalised bf16 copy packed, Bp; fp32 B32): writes the
 * exact rowmax[r0..] (unless rowmax is NULL; scaled by col_inv as in sk_rows); updates
 * colmax (G, running screened maxima) and records column candidates in ws (unless colmax
 * is NULL). 0, or -1 out of memory. */
int sk_screen_rows(const uint16_t *A16, const float *A32, int r0, int rows, int dim, const void *Bp,
                   const float *B32, int G, const float *col_inv, const float *row_win,
                   const float *col_win, float *rowmax, float *colmax, sk_screen_ws *ws);
/* after every row of A (rows of them): the exact colmax (G) from the column candidates of
 * the nws workspaces, given the final screened maxima (merged over the workspaces).
 * 0; 1 when a workspace gave up recording (ties): the caller computes colmax with the
 * fp32 kernel; -1 out of memory. Row blocks left in ws->redo likewise need sk_rows. */
int sk_screen_finish_cols(sk_screen_ws *ws, int nws, const float *A32, const float *B32, int dim,
                          int rows, int G, const float *row_inv, const float *colmax_screened,
                          const float *col_win, float *colmax);
void sk_screen_ws_free(sk_screen_ws *ws);
/* grow ws's fixed-size buffers for G columns of dim (sk_screen_rows does it too); called
 * by the thread that will free ws, so glibc serves them from that thread's arena (grown
 * inside the worker threads and freed by the caller after every few-shot query, they
 * fragmented the workers' arenas: predict over 112 images, peak RSS 83 -> 113 MB).
 * 0, or -1 out of memory. */
int sk_screen_ws_reserve(sk_screen_ws *ws, int G, int dim);
/* raise colmax (G) to a lower bound of each column's screened maximum (A16, B16: the
 * normalised bf16 copies), before the rows are screened */
void sk_screen_seed(const uint16_t *A16, const uint16_t *B16, int G, int dim, float *colmax);

#endif
