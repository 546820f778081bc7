/* ops.h — neural-net building blocks shared by the ViT (vit.c) and CNN (cnn.c)
 * backbones. All arrays are row-major float32; shapes are given as (rows, cols).
 *
 * GEMMs go through the engine (engine.h: oneDNN, kernels picked at run time, in the
 * precision of the model whose context is current on the thread; in bf16 the weights of
 * op_linear are converted and reordered once per model). OpenBLAS remains only as the fallback.
 * Threading: GEMMs use the OpenMP team (oneDNN's runtime); the element-wise and
 * row-wise ops use OpenMP over rows. Never call these from inside an OpenMP
 * parallel region (BLAS must not be called there, and the row ops would nest).
 * Every op checked against PyTorch via tests/test_vit.c (ops section) and the
 * ViT parity fixtures. */
#ifndef PE_OPS_H
#define PE_OPS_H

#include <stddef.h>
#include <stdint.h>

/* Row / element-wise ops split their rows over the OpenMP team for large inputs. */

/* out (rows, out_dim) = in (rows, in_dim) . weight^T + bias.
 * weight is PyTorch's nn.Linear layout (out_dim, in_dim); bias (out_dim) may be NULL.
 * One engine GEMM over all rows, bias fused. `out` must not alias `in`. */
void op_linear(float *out, const float *in, const float *weight, const float *bias, int rows,
               int in_dim, int out_dim);
/* op_linear into rows `ldo` floats apart (a column block of a wider matrix). */
void op_linear_ld(float *out, int ldo, const float *in, const float *weight, const float *bias,
                  int rows, int in_dim, int out_dim);

/* out (rows, out_dim) += in (rows, in_dim) . weight^T + bias (a residual projection). */
void op_linear_acc(float *out, const float *in, const float *weight, const float *bias, int rows,
                   int in_dim, int out_dim);

/* Row-major C (M, N) = alpha * op(A) . op(B) + beta * C, op = transpose if trans_* != 0.
 * A is (M, K) (or (K, M) transposed) with leading dimension lda, etc. Thin sgemm wrapper. */
void op_gemm(int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A, int lda,
             const float *B, int ldb, float beta, float *C, int ldc);

/* x (rows, dim) += bias (dim) on every row. */
void op_add_bias(float *x, const float *bias, int rows, int dim);

/* out (rows, dim) = LayerNorm over the last dim: (x - mean) / sqrt(var + eps) * gamma + beta
 * (biased variance, as torch.nn.LayerNorm). out may equal in. gamma/beta may be NULL (1 / 0). */
void op_layernorm(float *out, const float *in, const float *gamma, const float *beta, int rows,
                  int dim, float eps);
/* The same layer norm (the same fp32 values), each row rounded to bf16 as it is stored
 * (the input of a bf16 GEMM: eng_linear_bf16), so the fp32 rows are never written. out
 * must not overlap in. */
void op_layernorm_bf16(uint16_t *out, const float *in, const float *gamma, const float *beta,
                       int rows, int dim, float eps);

/* In place, n elements: */
void op_gelu(float *x, size_t n);       /* exact GELU: 0.5 x (1 + erf(x / sqrt 2)) (nn.GELU()) */
void op_gelu_tanh(float *x, size_t n);  /* gelu(approximate="tanh") (SigLIP's gelu_pytorch_tanh) */
void op_quick_gelu(float *x, size_t n); /* x * sigmoid(1.702 x) (CLIP's QuickGELU) */

/* x (rows, dim) += bias (dim) then exact GELU, one pass (fc1 epilogue). bias may be NULL. */
void op_bias_gelu(float *x, const float *bias, int rows, int dim);

/* In place row softmax of x (rows, cols) with leading dimension ld (>= cols). */
void op_softmax_rows(float *x, int rows, int cols, int ld);

/* Multi-head attention (attention.c): ctx (T, D) = concat over the H heads of
 * softmax(scale * q_h k_h^T) v_h, q/k/v_h the head's dh = D/H columns of the q, k, v
 * parts of qkv (T, 3D). Blocked with an online softmax: never more than a tile of the
 * (T, T) scores. cls_attn (T - first_patch) or NULL: mean over heads of the CLS row's
 * probabilities over keys first_patch..T-1, computed exactly in fp32. Precision of the
 * current engine context. work (work_bytes) or NULL: the caller's free memory, used
 * for the per-head copies when they fit (else a buffer kept by the thread). Returns 0,
 * or -1 (out of memory / engine failure). */
int op_attention(float *ctx, const float *qkv, int T, int D, int H, float scale, float *cls_attn,
                 int first_patch, void *work, size_t work_bytes);
/* The same in bf16 end to end (the transformer block's bf16 path): qkv16 as the qkv
 * GEMMs wrote it, (T, 3D) rows [q | k | v] (planar 0) or the (T, D) matrices q, k, v one
 * after another (planar 1); ctx16 (T, D) the rows of the output rounded to bf16 (the next
 * GEMM's operand); no CLS row. Products and softmax as op_attention's bf16 path. */
int op_attention_bf16(uint16_t *ctx16, const uint16_t *qkv16, int planar, int T, int D, int H,
                      float scale);
/* The same from q, k, v already split per head: heads16 [q/k/v][head][T][dh] bf16 (what
 * the AMX qkv product writes, amx_linear's column groups), so no copy splits them. */
int op_attention_bf16_heads(uint16_t *ctx16, const uint16_t *heads16, int T, int D, int H,
                            float scale);

/* In place exp of a float vector (vectorised; ~1-2 ulp). */
void op_exp(float *x, size_t n);
/* In place SiLU x * sigmoid(x) (the gated MLP of EVA-02 / DINOv3 SwiGLU variants). */
void op_silu(float *x, size_t n);

/* Bicubic resize of a channels-last grid: in (in_h, in_w, C) -> out (out_h, out_w, C),
 * align_corners=False, as torch.nn.functional.interpolate(..., size=(out_h, out_w),
 * mode="bicubic") applied to the (1, C, H, W) permutation:
 *   antialias = 0: PyTorch's upsample_bicubic2d (Keys a = -0.75, source index
 *                  (i + 0.5) * in/out - 0.5, border pixels replicated);
 *   antialias = 1: PyTorch's _upsample_bicubic2d_aa (a = -0.5, support widened by the
 *                  downscale factor, weights normalised to sum 1 inside the image).
 * Used for position-embedding interpolation. Returns 0, or -1 if out of memory. */
int op_resize_bicubic(float *out, const float *in, int channels, int in_h, int in_w, int out_h,
                      int out_w, int antialias);

/* One axis of a separable resize: for each output index, `taps` source indices (all valid)
 * and their weights, (out, taps) each. */
typedef struct {
    int taps;
    int *index;
    float *weight;
} op_axis;
/* out (out_h, out_w, C) = in (in_h, in_w, C) resized along x with ax, then along y with ay
 * (two passes). Shared by the bicubic and bilinear (posenc.c) resizes. 0, or -1 (memory). */
int op_resize_taps(float *out, const float *in, int channels, int in_h, int in_w, int out_h, int out_w,
                   const op_axis *ax, const op_axis *ay);

#endif
