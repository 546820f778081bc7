/* engine.h — the compute engine: every GEMM-shaped operation of the backbones and of
 * the scoring goes through eng_gemm, which runs oneDNN's matmul (libdnnl, JIT: AVX2,
 * AVX-512, AVX-512-BF16 or AMX kernels picked at run time for the CPU it runs on).
 * See docs/ENGINE.md for the choices and measurements.
 *
 * Precision: fp32, or bf16 (A and B rounded to bfloat16, products accumulated in fp32,
 * C in fp32), or for a model's linears int8 (eng_linear, eng_linear_act_f32,
 * eng_linear_scaled_add of an INT8 context: s8 weights per output channel, s8 rows per
 * token, int32 sums scaled back to fp32; other products of an INT8 context run in fp32). On a CPU where oneDNN has no bf16 matmul (e.g. AVX2-only), bf16 falls back
 * to the fp32 kernel on bf16-rounded inputs: same numbers, no speed-up.
 *
 * Primitives are created once per (precision, shape, strides, alpha, beta, bias) and
 * kept in a process-wide cache; bf16 weights are converted and reordered once per model
 * (an eng_ctx) at first use and reused. Calls are thread-safe; a call made inside an
 * OpenMP parallel region runs single-threaded on the calling thread (oneDNN's rule). */
#ifndef PE_ENGINE_H
#define PE_ENGINE_H

#include "core/internal.h"

#include <stdint.h>

typedef uint16_t bf16_t; /* the upper 16 bits of an IEEE float32 */

/* ---- ISA facts (cheap after the first call) */
/* oneDNN's effective ISA: "avx2", "avx512_core", "avx512_core_bf16", "avx512_core_amx", ... */
const char *eng_isa_name(void);
/* 1 if the CPU has native bf16 dot products (AVX-512-BF16 or AMX) as oneDNN sees it. */
int eng_native_bf16(void);
/* Implementation oneDNN picked for a (M, N, K) matmul of this precision, e.g.
 * "brg:avx512_core_amx" (bench output); "" when it cannot be created. */
const char *eng_impl_name(pe_precision prec, int M, int N, int K);

/* ---- conversions (round to nearest even; NaN stays NaN) */
void eng_to_bf16(bf16_t *dst, const float *src, size_t n);
/* rows x cols from a strided fp32 matrix into a dense (rows, cols) bf16 one */
void eng_to_bf16_2d(bf16_t *dst, const float *src, int rows, int cols, int ld);
static inline float eng_bf16_to_f32(bf16_t h)
{
    union {
        uint32_t u;
        float f;
    } v = {(uint32_t)h << 16};
    return v.f;
}
static inline float eng_round_bf16(float x)
{
    union {
        float f;
        uint32_t u;
    } v = {x};
    if ((v.u & 0x7f800000u) == 0x7f800000u) return x; /* inf / NaN kept */
    v.u = (v.u + 0x7fffu + ((v.u >> 16) & 1u)) & 0xffff0000u;
    return v.f;
}

typedef struct eng_ctx eng_ctx; /* a model's precision and prepared weights (below) */

/* ---- int8 (INT8 contexts: the linears of a ViT; see eng_linear)
 * x (n) quantized symmetric to s8: q = x * 127 / max|x| rounded to nearest even (one
 * rounding); returns the scale max|x| / 127 (x = scale * q); 0 for a zero row, not
 * finite for a row with inf / NaN. The weights' rows and the activations' rows (tokens)
 * are quantized so, bit for bit (the activations by a vector copy of this). */
float eng_quantize_s8(int8_t *q, const float *x, int n);
/* INT8 contexts: the input of the linear with weight W (N, K) is a layer norm's output
 * with gamma / beta (K; NULL: 1 / 0). Its int8 product is then smoothed per input
 * channel (engine.c, prepare_int8). Call before W's first product; no-op otherwise. */
void eng_int8_norm_input(eng_ctx *ctx, const float *W, const float *gamma, const float *beta,
                         int K);
/* 1 if the attention of this context runs in bf16: BF16, or INT8 on a CPU with native
 * bf16 (AMX / AVX-512-BF16); else fp32. */
int eng_attention_bf16(const eng_ctx *ctx);

/* ---- GEMM
 * C (M, N) = alpha * A (M, K) . op(B) + beta * C + bias (N, broadcast over rows; may be NULL)
 *   A row-major with leading dimension lda;
 *   B: trans_b = 1: (N, K) with ldb (nn.Linear weight layout, op = transpose);
 *      trans_b = 0: (K, N) with ldb.
 *   C row-major with ldc, fp32. beta is 0 or 1 (else the product goes through a temp).
 * Returns 0, or -1 if oneDNN failed (callers then use OpenBLAS on fp32). */
int eng_gemm(pe_precision prec, int trans_b, int M, int N, int K, float alpha, const float *A,
             int lda, const float *B, int ldb, float beta, float *C, int ldc, const float *bias);
/* Same with A and B already in bf16 (strided as above): the bf16 kernels without any
 * conversion. Used by attention and scoring, which convert their operands once. */
int eng_gemm_bf16(int trans_b, int M, int N, int K, float alpha, const bf16_t *A, int lda,
                  const bf16_t *B, int ldb, float beta, float *C, int ldc, const float *bias);

/* ---- per-thread scratch: buffer `slot` of the calling thread, at least `bytes` long
 * (contents kept between calls, reallocated when it grows; freed when the thread exits).
 * NULL if out of memory. */
enum {
    ENG_SLOT_CONVERT = 0 /* 0..3: engine.c */,
    ENG_SLOT_ONEDNN = 4,
    ENG_SLOT_ATTN = 5 /* 5..7 */,
    ENG_SLOT_ATTN_HEADS = 8 /* the caller's per-head q, k, v copies */,
    ENG_SLOT_ATTN_PACKED = 9 /* the caller's packed K and V (attention.c) */,
    ENG_SLOT_QUERY_SCREEN = 10 /* a few-shot query's screen buffers (score.c) */,
    ENG_SLOT_AMX_PAD = 11 /* amx_linear's zero-padded last strip of rows */,
    ENG_SLOTS = 12
};
void *eng_thread_buffer(int slot, size_t bytes);

/* ---- B packed once for many products (attention: one head's K and V serve every
 * query block). The layout is the one oneDNN's kernel wants (for AMX: VNNI tiles), so
 * the per-call repacking of a plain B disappears. */
typedef struct eng_packed eng_packed;
/* Bytes a packed B takes: 0 if this shape cannot be packed (callers use eng_gemm*). B
 * is logical (K, N): trans_b = 1 means (N, K) rows. `m`: rows of A per product. */
size_t eng_packed_size(pe_precision prec, int trans_b, int N, int K, int m);
/* Pack B (bf16_t for BF16, float for FP32; dense: ldb = its row width) into `dst`
 * (eng_packed_size bytes, 64-byte aligned). Writes the handle to *out. 0 or -1. */
int eng_pack_b(pe_precision prec, int trans_b, int N, int K, int m, const void *B, void *dst,
               eng_packed *out);
/* C (M, N) = alpha * A (M, K) . B + beta * C (beta 0 or 1), A dense in B's precision. */
int eng_gemm_packed(int M, float alpha, const void *A, const eng_packed *B, float beta, float *C,
                    int ldc);
struct eng_packed {
    const void *layout; /* the packing recipe (engine-internal; shared by equal shapes) */
    const void *data;
    int N, K;
    pe_precision prec;
};

/* ---- per-model context: precision + weights reordered once */
eng_ctx *eng_ctx_create(pe_precision prec); /* AUTO is resolved here */
void eng_ctx_free(eng_ctx *ctx);
pe_precision eng_ctx_precision(const eng_ctx *ctx); /* FP32 for NULL */
/* The model's weights file is the read-only file mapping [base, base + size): a weight
 * inside it that is converted to bf16 has its fp32 pages unmapped after the conversion
 * (they come back from the file if read again), so both copies are not held at once. */
void eng_ctx_set_file_map(eng_ctx *ctx, const void *base, size_t size);
/* C (M, N) = A (M, K) . W^T + bias (+ C when beta = 1), W (N, K) a constant weight of
 * the model (nn.Linear layout). bf16: W is converted and reordered once, on first use,
 * into the kernel's blocked layout (AMX tiles) and kept until eng_ctx_free; fp32: W is
 * used in place (no copy, so no extra memory). ctx NULL: fp32.
 * Returns 0, or -1 if oneDNN failed. */
int eng_linear(eng_ctx *ctx, int M, int N, int K, const float *A, int lda, const float *W,
               float beta, float *C, int ldc, const float *bias);
/* (INT8 contexts: eng_linear, eng_linear_act_f32 and eng_linear_scaled_add with fp32 A
 * run the int8 linear, W quantized once on first use; where oneDNN has no int8 kernel
 * but its reference one, eng_linear runs fp32 and the other two return -1.) */
/* The bf16 data path of a transformer block, for contexts in bf16 on a CPU with bf16
 * kernels (eng_bf16_direct): the input is already bf16 (a layer norm wrote it so), and
 * the output either fp32 C (M, N) with ldc (beta 0, or 1 to add to C; with ldc != N
 * through a dense buffer, as oneDNN 2.6's AMX kernels want), or bf16 out16
 * (M, N) dense (ldc unused: oneDNN 2.6 has no AMX kernel for a strided bf16 output, its
 * reference one is ~100x slower) with an activation fused (ENG_ACT_*, a oneDNN post-op
 * after the bias):
 * the MLP's hidden layer is written once, as bf16, and fed to the next GEMM as is.
 * A16 (M, K) bf16 dense, W (N, K) fp32 as in eng_linear (reordered once). Returns 0, or
 * -1 (nothing written) when the path is not available or oneDNN failed. */
enum { ENG_ACT_NONE, ENG_ACT_GELU, ENG_ACT_GELU_TANH, ENG_ACT_QUICK_GELU, ENG_ACT_SILU };
int eng_bf16_direct(const eng_ctx *ctx);
/* A weight w (n floats) of a bf16 / int8 context that the caller has copied into its own
 * layout and will not read again: where it lies in the weights file's mapping, its pages
 * are dropped (they come back from the file if read). No-op otherwise. */
void eng_release_source(const eng_ctx *ctx, const float *w, size_t n);
int eng_linear_bf16(eng_ctx *ctx, int M, int N, int K, const bf16_t *A16, const float *W,
                    const float *bias, int act, float beta, float *C, int ldc, bf16_t *out16);
/* fp32 contexts: C (M, N) = act(A (M, K) . W^T + bias) with the activation (ENG_ACT_GELU
 * ...) fused into the GEMM as a oneDNN post-op, W used in place as in eng_linear. Returns
 * 0, or -1 (nothing written) for other contexts or when oneDNN failed. */
int eng_linear_act_f32(eng_ctx *ctx, int M, int N, int K, const float *A, int lda, const float *W,
                       const float *bias, int act, float *C, int ldc);
/* X (M, N) += scale * (A (M, K) . W^T + bias), scale (N) per output column (LayerScale),
 * in one GEMM: the scaling and the sum are oneDNN post-ops, so the product is never
 * written on its own. A is fp32 (a_bf16 = 0) or, for bf16 contexts, bf16 rows (a_bf16 =
 * 1: the bf16 block path); W (N, K) as in eng_linear. Returns 0, or -1 (X unchanged)
 * when the context / CPU cannot, or oneDNN failed. */
int eng_linear_scaled_add(eng_ctx *ctx, int M, int N, int K, const void *A, int a_bf16,
                          const float *W, const float *bias, const float *scale, float *X, int ldx);
/* Large products outside a parallel region run as row chunks that the threads take
 * dynamically (engine.c, run_matmul_chunked). Tests and benchmarks: rows per chunk (> 0),
 * 0 off, -1 automatic (the default); returns the setting before. */
int eng_set_chunk_rows(int rows);
/* The context used by op_linear / op_attention on this thread (NULL: fp32, no cache).
 * Returns the previous one (backbones set theirs around a forward pass). */
eng_ctx *eng_set_current(eng_ctx *ctx);
eng_ctx *eng_current(void);

#endif
