/* softmax_tile.h — the online-softmax step of blocked attention (attention.c) for one
 * (rows, keys) tile of scores, with run-time ISA dispatch (softmax_tile.c). */
#ifndef PE_SOFTMAX_TILE_H
#define PE_SOFTMAX_TILE_H

#include <stdint.h>

/* S (nq, nk) raw scores in, row stride lds. Per row r: m' = max(m[r], max_j scale S[r][j]);
 * P[r][j] = exp(scale S[r][j] - m'); l[r] = l[r] exp(m[r] - m') + sum_j P[r][j];
 * acc row r (dh wide) *= exp(m[r] - m'); m[r] = m'. P goes to p16 (bf16, row stride
 * ldp) when p16 != NULL, else over S (fp32). In bf16 the exponential is the cheaper
 * 2^t of v_exp2_bf16 with log2(e) folded into the scaling (2.7e-6 relative, far below
 * bf16's rounding); in fp32 v_exp's. rowmax (nq) != NULL: max_j S[r][j] as the GEMM that wrote S found it
 * (amx_gemm), so no pass over S looks for it; the result is the same. */
void softmax_tile(float *S, int lds, uint16_t *p16, int ldp, int nq, int nk, float scale, float *m,
                  float *l, float *acc, int dh, const float *rowmax);

/* Which copy runs: SOFTMAX_TILE_VEC is vecmath.h's generic body (AVX2 or AVX-512 as
 * vec_avx512() says); SOFTMAX_TILE_AVX512 is the AVX-512 intrinsics copy (vscalefps for
 * 2^n) and SOFTMAX_TILE_AVX512_BF16 the same with vcvtneps2bf16 for P. All give
 * bit-identical results (tests/test_softmax_tile.c). */
enum { SOFTMAX_TILE_VEC, SOFTMAX_TILE_AVX512, SOFTMAX_TILE_AVX512_BF16 };
/* The best copy this CPU runs (capped by DNNL_MAX_CPU_ISA like the rest). */
int softmax_tile_best(void);
/* Tests: force a copy (refused, returning -1, where the CPU lacks it); -1 restores the
 * automatic choice. Returns the copy in use before. */
int softmax_tile_force(int which);
const char *softmax_tile_name(int which);

#endif
