/* DeepSeek-V3 multi-head latent attention (MLA), forward only, no KV cache,
 * with YaRN RoPE. CPU reference in kernels/cpu/mla.c (fp32, OpenBLAS).
 *
 * Semantics: transformers' DeepseekV3Attention (eager), per token row x (d):
 *   q    = q_b_proj(RMSNorm_qa(q_a_proj(x)))   or q_proj(x) when q_lora_rank is 0
 *          (H, nope + rope): per head [q_nope | q_pe]
 *   kv_a = kv_a_proj_with_mqa(x) = [compressed (kv_lora) | k_pe (rope)], k_pe shared by all heads
 *   kv   = kv_b_proj(RMSNorm_kva(compressed))  (H, nope + v): per head [k_nope | v]
 *   RoPE on q_pe and k_pe. rope_interleave (HF default true) first permutes each
 *        rope vector r: view (r/2, 2) -> transpose -> (r): p[j] = r[2j], p[r/2+j] = r[2j+1],
 *        then rotate_half pairs (j, j + r/2) with cos/sin of inv_freq[j], and the
 *        result STAYS in the permuted layout (both q and k, so scores are unchanged).
 *        cos/sin carry YaRN's attention_factor.
 *   scores = [q_nope | q_pe] · [k_nope | k_pe]ᵀ * scaling, causal, softmax in fp32;
 *        scaling = (nope + rope)^-0.5, times mscale² with mscale =
 *        0.1 * mscale_all_dim * ln(factor) + 1 when YaRN has factor > 1 and
 *        mscale_all_dim != 0.
 *   out  = o_proj(softmax · v) (H * v) -> (d). No residual, no input norm.
 * YaRN (HF _compute_yarn_parameters, dim = qk_rope_head_dim, base = rope_theta):
 *   pos_freqs[i] = base^(2i/dim) (fp32); extra = 1/pos_freqs; inter = 1/(factor*pos_freqs)
 *   corr_dim(n) = dim * ln(orig_max / (n * 2π)) / (2 ln base)
 *   (orig_max = original_max_position_embeddings, as current HF; older HF versions used
 *   max_position_embeddings here)
 *   low = max(floor(corr_dim(beta_fast)), 0), high = min(ceil(corr_dim(beta_slow)), dim-1)
 *   (no floor/ceil when truncate is 0); ramp[i] = clamp((i - low) / (high - low), 0, 1)
 *   (high += 0.001 if equal); ef = 1 - ramp;  inv_freq = inter*(1-ef) + extra*ef
 *   attention_factor = given, else get_mscale(factor, mscale)/get_mscale(factor, mscale_all_dim)
 *   when both are non-zero, else get_mscale(factor, 1); get_mscale(s, m) = 1 if s <= 1. */
#ifndef SQ_KERNELS_MLA_H
#define SQ_KERNELS_MLA_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#include "common/status.h"
#include "kernels/forward.h" /* sq_fwd_hook_fn */

/* RoPE of MLA: default or YaRN (config.json rope_theta and rope_scaling). */
typedef struct sq_mla_rope_cfg {
  int dim;                       /* qk_rope_head_dim, even */
  double theta;                  /* rope_theta */
  int yarn;                      /* rope_scaling.type == "yarn"; 0: default RoPE */
  double factor;                 /* YaRN: factor (> 0) */
  int64_t original_max_position; /* YaRN: original_max_position_embeddings */
  double beta_fast, beta_slow;   /* YaRN: 0 means HF's defaults 32 and 1 */
  double mscale, mscale_all_dim; /* YaRN: 0 when absent */
  double attention_factor;       /* YaRN: <= 0 when absent (derived as above) */
  int no_truncate;               /* YaRN: rope_scaling.truncate == false */
} sq_mla_rope_cfg;

/* inv_freq (dim/2) in fp32 as HF computes it, and the cos/sin factor. */
sq_status sq_mla_rope_inv_freq(const sq_mla_rope_cfg *cfg, float *inv_freq,
                               float *attention_factor);
/* The softmax scale DeepseekV3Attention uses for qk_head_dim = nope + rope. */
double sq_mla_softmax_scale(const sq_mla_rope_cfg *cfg, int64_t qk_head_dim);

/* cos/sin tables (max_t, dim/2) already multiplied by attention_factor. */
typedef struct sq_mla_rope {
  int64_t max_t;
  int dim;
  float attention_factor;
  float *inv_freq, *cos, *sin;
} sq_mla_rope;

sq_status sq_mla_rope_init(sq_mla_rope *r, const sq_mla_rope_cfg *cfg, int64_t max_t);
void sq_mla_rope_free(sq_mla_rope *r);

typedef struct sq_mla_cfg {
  int64_t hidden, n_heads;
  int64_t q_lora_rank; /* 0: q_proj (config q_lora_rank null) */
  int64_t kv_lora_rank;
  int64_t qk_nope, qk_rope, v_head; /* qk_nope_head_dim, qk_rope_head_dim, v_head_dim */
  float eps;                        /* rms_norm_eps of q_a_layernorm / kv_a_layernorm */
  int rope_interleave;              /* config.rope_interleave (HF default 1) */
  float scale;                      /* sq_mla_softmax_scale() */
  const sq_mla_rope *rope;          /* dim == qk_rope, max_t >= T */
} sq_mla_cfg;

/* Weights in torch layout (d_out, d_in); biases (attention_bias) may be NULL. */
typedef struct sq_mla_weights {
  const float *q_proj;                /* (H*(nope+rope), d), when q_lora_rank == 0 */
  const float *q_a_proj, *q_a_bias;   /* (q_lora, d) */
  const float *q_a_norm;              /* (q_lora) */
  const float *q_b_proj;              /* (H*(nope+rope), q_lora) */
  const float *kv_a_proj, *kv_a_bias; /* (kv_lora + rope, d) kv_a_proj_with_mqa */
  const float *kv_a_norm;             /* (kv_lora) */
  const float *kv_b_proj;             /* (H*(nope+v), kv_lora) */
  const float *o_proj, *o_bias;       /* (d, H*v) */
} sq_mla_weights;

/* Calibration hooks (any may be NULL): input of each Linear group. */
typedef struct sq_mla_hooks {
  sq_fwd_hook_fn qa_kva_in; /* x (B*T, d): q_a_proj (or q_proj) and kv_a_proj_with_mqa */
  sq_fwd_hook_fn q_b_in;    /* RMSNorm_qa(q_a) (B*T, q_lora); not called without q_lora */
  sq_fwd_hook_fn kv_b_in;   /* RMSNorm_kva(compressed) (B*T, kv_lora) */
  sq_fwd_hook_fn o_in;      /* attention output (B*T, H*v) */
  void *user;
} sq_mla_hooks;

/* Bytes of workspace sq_mla_forward needs for B sequences of length T. */
size_t sq_mla_workspace_bytes(const sq_mla_cfg *cfg, int64_t B, int64_t T);
/* y (B*T, d) = MLA(x) for B sequences of length T (positions 0..T-1 each).
 * y must not alias x; ws 16-byte aligned; hooks may be NULL. */
sq_status sq_mla_forward(const sq_mla_cfg *cfg, const sq_mla_weights *w, const float *x, int64_t B,
                         int64_t T, const sq_mla_hooks *hooks, void *ws, float *y);

#ifdef __cplusplus
}
#endif

#endif
