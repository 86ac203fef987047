/* Llama-family forward ops: the dense computation that calibration (one decoder
 * layer at a time over the calibration samples) and `shardq eval` (perplexity)
 * run. CPU reference in kernels/cpu/forward.c and attention.c (fp32, OpenBLAS
 * sgemm for every matmul); CUDA twins of the elementwise ops and the gemm in
 * kernels/cuda/forward.cu (SHARDQ_CUDA=ON). Per-element math: forward_math.h.
 *
 * Conventions
 *  - fp32 everywhere; activations are row-major (T, d) for one sequence or
 *    (B*T, d) for B sequences of equal length T (sequence b is rows b*T..b*T+T-1).
 *  - Weights are row-major as torch stores them: a Linear is W (d_out, d_in),
 *    Y = X · Wᵀ + bias. Bias pointers may be NULL (no bias).
 *  - Semantics are those of transformers' LlamaForCausalLM (eager attention):
 *    see forward_math.h for the exact formulas.
 *  - Ops are pure: pointers and shapes, no file I/O, no hidden allocation except
 *    where a function says so (rope tables). Functions that can meet bad input
 *    return sq_status with one error line; the rest are void. */
#ifndef SQ_KERNELS_FORWARD_H
#define SQ_KERNELS_FORWARD_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Inside the C linkage block: common/ headers have no extern "C" guards. */
#include "common/status.h"

/* ---- RoPE ------------------------------------------------------------------ */

typedef enum sq_rope_type {
  SQ_FWD_ROPE_DEFAULT = 0, /* rope_scaling absent or rope_type "default" */
  SQ_FWD_ROPE_LINEAR,      /* "linear": inv_freq / factor (== positions / factor) */
  SQ_FWD_ROPE_LLAMA3       /* "llama3": HF _compute_llama3_parameters */
} sq_rope_type;

/* From config.json: rope_theta and rope_scaling. */
typedef struct sq_rope_cfg {
  sq_rope_type type;
  int head_dim;                  /* rotary dim, even */
  double theta;                  /* rope_theta */
  double factor;                 /* linear, llama3 */
  double low_freq_factor;        /* llama3 */
  double high_freq_factor;       /* llama3 */
  int64_t original_max_position; /* llama3: original_max_position_embeddings */
} sq_rope_cfg;

/* cos/sin tables for positions 0..max_t-1, each (max_t, head_dim/2):
 * cos[t * half + i] = cos(angle(t, inv_freq[i])). One per sequence length. */
typedef struct sq_rope {
  int64_t max_t;
  int head_dim;
  float *inv_freq; /* (head_dim/2) */
  float *cos, *sin;
} sq_rope;

/* Inverse frequencies (head_dim/2) for cfg, in fp32 as HF computes them. */
sq_status sq_fwd_rope_inv_freq(const sq_rope_cfg *cfg, float *inv_freq);
/* Allocate and fill the tables for max_t positions; *r starts zeroed. */
sq_status sq_fwd_rope_init(sq_rope *r, const sq_rope_cfg *cfg, int64_t max_t);
void sq_fwd_rope_free(sq_rope *r);
/* Rotate x (B*T, n_heads*head_dim) in place, position = row % T. T <= r->max_t. */
void sq_fwd_rope_apply(const sq_rope *r, float *x, int64_t B, int64_t T, int64_t n_heads);

/* ---- elementwise and linear ------------------------------------------------ */

/* out (n, hidden) = table rows of ids; table (vocab, hidden). Fails naming the
 * first id outside [0, vocab). */
sq_status sq_fwd_embed(const float *table, int64_t vocab, int64_t hidden, const int32_t *ids,
                       int64_t n, float *out);
/* y (rows, d) = RMSNorm(x) * w; y may equal x. */
void sq_fwd_rmsnorm(const float *x, const float *w, int64_t rows, int64_t d, float eps, float *y);
/* Y (rows, d_out) = X (rows, d_in) · Wᵀ (+ bias); W (d_out, d_in). Y must not alias X. */
void sq_fwd_linear(const float *X, int64_t rows, int64_t d_in, const float *W, int64_t d_out,
                   const float *bias, float *Y);
/* g[i] = silu(g[i]) * u[i] for n elements. */
void sq_fwd_silu_mul(float *g, const float *u, int64_t n);
/* Softmax of one row in place (max subtracted, sum in double). */
void sq_fwd_softmax_row(float *x, int64_t n);

/* ---- attention --------------------------------------------------------------- */

/* Floats of scratch sq_fwd_attention needs for sequence length T (min(T, 256) * T). */
size_t sq_fwd_attention_workspace_floats(int64_t T);
/* Grouped-query causal attention for B sequences of length T:
 * q (B*T, H*hd), k and v (B*T, KV*hd), out (B*T, H*hd); head h reads kv head
 * h / (H/KV); scores scaled by 1/sqrt(hd), causal, softmax in fp32.
 * RoPE must already be applied to q and k. ws holds the floats above. */
sq_status sq_fwd_attention(const float *q, const float *k, const float *v, int64_t B, int64_t T,
                           int64_t n_heads, int64_t n_kv_heads, int64_t head_dim, float *ws,
                           float *out);

/* ---- decoder layer --------------------------------------------------------- */

/* One LlamaDecoderLayer's weights (fp32, torch layout). Biases may be NULL. */
typedef struct sq_fwd_layer_weights {
  const float *attn_norm; /* input_layernorm (hidden) */
  const float *q, *k, *v; /* (H*hd, hidden), (KV*hd, hidden) x2 */
  const float *o;         /* (hidden, H*hd) */
  const float *q_bias, *k_bias, *v_bias, *o_bias;
  const float *mlp_norm;  /* post_attention_layernorm (hidden) */
  const float *gate, *up; /* (inter, hidden) */
  const float *down;      /* (hidden, inter) */
  const float *gate_bias, *up_bias, *down_bias;
} sq_fwd_layer_weights;

typedef struct sq_fwd_layer_cfg {
  int64_t hidden, n_heads, n_kv_heads, head_dim, intermediate;
  float eps;           /* rms_norm_eps */
  const sq_rope *rope; /* tables for at least T positions, head_dim as above */
} sq_fwd_layer_cfg;

/* A calibration hook receives the input X (rows, cols) of a group of Linears
 * (or the k/v cache tensors); X is valid only during the call. Returning a
 * status other than SQ_OK stops the layer, which returns that status. */
typedef sq_status (*sq_fwd_hook_fn)(void *user, const float *X, int64_t rows, int64_t cols);

typedef struct sq_fwd_hooks {
  sq_fwd_hook_fn qkv_in;     /* norm1(x) (B*T, hidden): input of q/k/v_proj */
  sq_fwd_hook_fn o_in;       /* attention output (B*T, H*hd): input of o_proj */
  sq_fwd_hook_fn gate_up_in; /* norm2(h) (B*T, hidden): input of gate/up_proj */
  sq_fwd_hook_fn down_in;    /* silu(gate)*up (B*T, inter): input of down_proj */
  sq_fwd_hook_fn k_cache;    /* keys after RoPE (B*T, KV*hd), for kv-cache scales */
  sq_fwd_hook_fn v_cache;    /* values (B*T, KV*hd) */
  void *user;
} sq_fwd_hooks;

/* Bytes of workspace sq_fwd_layer needs for B sequences of length T. */
size_t sq_fwd_layer_workspace_bytes(const sq_fwd_layer_cfg *cfg, int64_t B, int64_t T);
/* y (B*T, hidden) = h + mlp(norm2(h)), h = x + attn(norm1(x)). y may equal x.
 * ws: sq_fwd_layer_workspace_bytes() bytes, 16-byte aligned. hooks may be NULL
 * and any of its functions NULL. */
sq_status sq_fwd_layer(const sq_fwd_layer_cfg *cfg, const sq_fwd_layer_weights *w, const float *x,
                       int64_t B, int64_t T, const sq_fwd_hooks *hooks, void *ws, float *y);

/* ---- head and loss --------------------------------------------------------- */

/* logits (rows, vocab) = lm_head · RMSNorm(x; norm_w); lm_head (vocab, hidden).
 * xn_ws: rows*hidden floats of scratch. For a large vocab, call on row chunks. */
void sq_fwd_logits(const float *x, int64_t rows, int64_t hidden, const float *norm_w, float eps,
                   const float *lm_head, int64_t vocab, float *xn_ws, float *logits);
/* *nll = sum over rows of -log softmax(logits[r])[targets[r]], each row's
 * log-sum-exp max-subtracted, accumulated in double. Fails naming a target
 * outside [0, vocab). Perplexity = exp(nll / rows) over all chunks. */
sq_status sq_fwd_nll(const float *logits, int64_t rows, int64_t vocab, const int32_t *targets,
                     double *nll);

/* ---- CUDA twins (device pointers, asynchronous on stream) -------------------- */
#ifdef SHARDQ_HAVE_CUDA
struct CUstream_st;   /* cudaStream_t */
struct cublasContext; /* cublasHandle_t */
/* Same contracts as the CPU functions above. */
sq_status sq_fwd_cuda_rmsnorm(const float *x, const float *w, int64_t rows, int64_t d, float eps,
                              float *y, struct CUstream_st *stream);
/* cos, sin: device copies of a sq_rope's tables, each (max_t, head_dim/2). */
sq_status sq_fwd_cuda_rope_apply(const float *cos, const float *sin, int head_dim, float *x,
                                 int64_t B, int64_t T, int64_t n_heads, struct CUstream_st *stream);
sq_status sq_fwd_cuda_silu_mul(float *g, const float *u, int64_t n, struct CUstream_st *stream);
/* Row softmax of S (rows, n) in place; causal: row r keeps columns <= r % T
 * (zeros beyond), else T is ignored. */
sq_status sq_fwd_cuda_softmax(float *S, int64_t rows, int64_t n, int causal, int64_t T,
                              struct CUstream_st *stream);
/* cuBLAS on the handle's stream. */
sq_status sq_fwd_cuda_linear(struct cublasContext *handle, const float *X, int64_t rows,
                             int64_t d_in, const float *W, int64_t d_out, const float *bias,
                             float *Y);
#endif

#ifdef __cplusplus
}
#endif

#endif
