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

#endif
