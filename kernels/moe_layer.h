/* One decoder layer of the MoE architectures (Mixtral, Qwen2-MoE, Qwen3-MoE,
 * DeepSeek-V3, Llama-4 text), forward on the CPU for calibration:
 *   h = x + attn(RMSNorm_1(x))          attention: dense GQA (kernels/forward.h
 *                                       building blocks) or MLA (kernels/mla.h)
 *   y = h + ffn(RMSNorm_2(h))           ffn: dense SwiGLU MLP or MoE block (kernels/moe.h)
 * with calibration hooks on the input of every Linear (attention modules, the
 * dense MLP, each routed expert's gate/up and down, the shared expert) and the
 * tokens-per-expert counts of the layer. Pure: pointers and shapes, no file I/O;
 * the only allocation is the MoE dispatch lists (sq_moe_dispatch_build).
 *
 * GQA attention (LlamaAttention, Qwen3MoeAttention, Llama4TextAttention without
 * its chunked / temperature-tuned extras):
 *   q = xn·Wqᵀ (+bq), k, v likewise, per head RMSNorm of q and k with q_norm /
 *   k_norm (head_dim) when given (Qwen3: before RoPE), RoPE (rotate_half) unless
 *   rope is NULL (Llama-4 NoPE layers), causal softmax(q·kᵀ/sqrt(hd))·v, o_proj.
 * Which FFN a layer has: sq_moe_layer_is_moe().
 * Hooks see inputs in the order of the computation; X is valid only during the call. */
#ifndef SQ_KERNELS_MOE_LAYER_H
#define SQ_KERNELS_MOE_LAYER_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#include "common/status.h"
#include "kernels/forward.h"
#include "kernels/mla.h"
#include "kernels/moe.h"

typedef enum sq_moe_layer_attn {
  SQ_MOE_ATTN_GQA = 0, /* q/k/v/o (Mixtral, Qwen-MoE, Llama-4) */
  SQ_MOE_ATTN_MLA      /* DeepSeek-V3 multi-head latent attention */
} sq_moe_layer_attn;

/* 1 when decoder layer `layer` has a MoE FFN, as transformers decides it:
 * n_experts > 0, layer >= first_k_dense (DeepSeek first_k_dense_replace), and
 * (layer + 1) % step == 0 (Llama-4 interleave_moe_layer_step, Qwen
 * decoder_sparse_step; step <= 1: every layer). Mixtral: (0, 1). DeepSeek-V3's
 * moe_layer_freq is 1 in every release and is passed as step 1. */
int sq_moe_layer_is_moe(int64_t layer, int64_t n_experts, int64_t first_k_dense, int64_t step);

typedef struct sq_moe_layer_cfg {
  int64_t hidden;
  float eps; /* rms_norm_eps of both layer norms (and q/k norms) */
  sq_moe_layer_attn attn;
  /* GQA */
  int64_t n_heads, n_kv_heads, head_dim;
  const sq_rope *rope; /* NULL: no rotary embedding in this layer */
  /* MLA: its own configuration (rope tables, scale) */
  const sq_mla_cfg *mla;
  /* FFN */
  int moe;              /* 0: dense SwiGLU of `intermediate`; 1: MoE block */
  int64_t intermediate; /* dense MLP size */
  sq_moe_router_cfg router;
  int64_t moe_ff;    /* routed experts' intermediate size */
  int64_t shared_ff; /* shared expert's (0: none) */
} sq_moe_layer_cfg;

/* Weights in torch layout (d_out, d_in), fp32; optional ones may be NULL. */
typedef struct sq_moe_layer_weights {
  const float *attn_norm, *ffn_norm; /* input_layernorm, post_attention_layernorm (d) */
  /* GQA */
  const float *q, *k, *v, *o;
  const float *q_bias, *k_bias, *v_bias, *o_bias;
  const float *q_norm, *k_norm; /* (head_dim) Qwen3 */
  /* MLA */
  sq_mla_weights mla;
  /* dense FFN */
  const float *gate, *up, *down; /* (I, d), (I, d), (d, I) */
  /* MoE FFN */
  const float *router;          /* (E, d); the score bias sits in cfg.router */
  const sq_moe_expert *experts; /* (E); from fused stacks: transpose per expert first */
  sq_moe_expert shared;         /* shared.gate NULL: none */
  const float *shared_gate;     /* (1, d) Qwen2-MoE shared_expert_gate, or NULL */
} sq_moe_layer_weights;

typedef struct sq_moe_layer_hooks {
  /* GQA: RMSNorm_1(x) (rows, d), the input of q/k/v_proj; o_in: attention
   * output (rows, H*hd) [GQA] or (rows, H*v_head) [MLA], the input of o_proj. */
  sq_fwd_hook_fn qkv_in, o_in;
  /* MLA: input of q_a_proj/kv_a_proj_with_mqa (= RMSNorm_1(x)), of q_b_proj, of kv_b_proj. */
  sq_fwd_hook_fn qa_kva_in, q_b_in, kv_b_in;
  /* RMSNorm_2(h) (rows, d): the dense MLP's gate/up input, or the MoE router's
   * (and the shared expert's and Qwen's shared_expert_gate's) input. */
  sq_fwd_hook_fn ffn_in;
  sq_fwd_hook_fn down_in; /* dense MLP: silu(gate)*up (rows, I) */
  /* MoE: per expert (SQ_MOE_SHARED for the shared expert), see sq_moe_hooks. */
  sq_moe_hook_fn expert_gate_up_in, expert_down_in;
  /* Every routed expert's hooks see all rows (sq_moe_hooks.all_tokens). y is
   * the same up to float rounding (the experts' gemms run on more rows). */
  int all_tokens;
  void *user;
} sq_moe_layer_hooks;

/* Bytes of workspace sq_moe_layer_forward needs for B sequences of length T. */
size_t sq_moe_layer_workspace_bytes(const sq_moe_layer_cfg *cfg, int64_t B, int64_t T);

/* y (B*T, d) = the layer on x (B*T, d); y may equal x. ws: the bytes above,
 * 16-byte aligned. hooks may be NULL (and any function in it). counts: NULL or
 * (E) int64 filled with the routed tokens per expert (zeros for a dense FFN). */
sq_status sq_moe_layer_forward(const sq_moe_layer_cfg *cfg, const sq_moe_layer_weights *w,
                               const float *x, int64_t B, int64_t T,
                               const sq_moe_layer_hooks *hooks, void *ws, float *y,
                               int64_t *counts);

#ifdef __cplusplus
}
#endif

#endif
