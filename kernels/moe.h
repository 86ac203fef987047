/* Mixture-of-experts forward ops: the routers of Mixtral / Qwen2-MoE (softmax
 * top-k), DeepSeek-V3 (sigmoid, bias-corrected, group-limited) and Llama-4
 * (top-k on logits, sigmoid weight on the expert input), the dispatch that
 * groups tokens per expert, and the SwiGLU expert combine with calibration
 * hooks per expert. CPU reference in kernels/cpu/moe.c (fp32, OpenBLAS sgemm
 * through sq_fwd_linear).
 *
 * Pipeline for one MoE block over T token rows x (T, d):
 *   1. logits (T, E) = x · W_routerᵀ            sq_fwd_linear (router weight (E, d))
 *   2. sq_moe_route(cfg, logits)  -> ids (T, k), weights (T, k)
 *   3. sq_moe_dispatch_build(ids, weights) -> per-expert sorted token lists
 *   4. sq_moe_forward(block, x, dispatch)  -> y (T, d)
 * Step 3 is separate from the compute so that the distributed path can send
 * each expert's list (and rows) to the rank owning the expert (all-to-all),
 * run step 4's per-expert part there, and send the rows back.
 *
 * Semantics (transformers, eager, fp32):
 *  - SQ_MOE_ROUTER_SOFTMAX (MixtralSparseMoeBlock, Qwen2MoeSparseMoeBlock):
 *    p = softmax(logits) in fp32 over all E experts; ids = top-k of p;
 *    weights = p[ids], divided by their sum when norm_topk_prob (Mixtral: always).
 *  - SQ_MOE_ROUTER_DEEPSEEK_V3 (DeepseekV3TopkRouter): s = sigmoid(logits);
 *    c = s + e_score_correction_bias; experts split in n_group consecutive
 *    groups of E/n_group; group score = sum of the 2 largest c in the group;
 *    keep the topk_group best groups; ids = top-k of c among the kept groups'
 *    experts; weights = s[ids] (UNBIASED), divided by (sum + 1e-20) when
 *    norm_topk_prob, then times routed_scaling_factor.
 *    Experts of dropped groups are never chosen (DeepSeek's reference code and
 *    vLLM mask them with -inf). HF's masked_fill(..., 0.0) differs only when the
 *    kept groups hold fewer than k experts with c > 0 (possible only with
 *    negative biases, c = s + b < 0); we follow the -inf rule.
 *  - SQ_MOE_ROUTER_LLAMA4 (Llama4Router / Llama4TextMoe): ids = top-k of the
 *    logits; weights = sigmoid(logits[ids]), applied to the expert INPUT:
 *    out += expert(x * w) (sq_moe_routing_scales_input() is 1).
 *  - Ties: every top-k here takes the largest value and, among equal values,
 *    the LOWEST index first (expert or group). torch.topk leaves the order of
 *    ties unspecified, so HF may pick another of the tied experts; real router
 *    logits almost never tie. ids[t*k .. t*k+k-1] are in selection order
 *    (descending score, then ascending index).
 *  - NaN in a token's logits is an error (SQ_ERR_NUMERIC naming the token). */
#ifndef SQ_KERNELS_MOE_H
#define SQ_KERNELS_MOE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#include "common/status.h"
#include "kernels/forward.h"

/* ---- routers ----------------------------------------------------------------- */

typedef enum sq_moe_router_kind {
  SQ_MOE_ROUTER_SOFTMAX = 0, /* Mixtral, Qwen2-MoE, Qwen3-MoE */
  SQ_MOE_ROUTER_DEEPSEEK_V3, /* sigmoid + e_score_correction_bias, group-limited */
  SQ_MOE_ROUTER_LLAMA4       /* top-k logits, sigmoid weight on the expert input */
} sq_moe_router_kind;

typedef struct sq_moe_router_cfg {
  sq_moe_router_kind kind;
  int n_experts;      /* E: num_local_experts / num_experts / n_routed_experts */
  int top_k;          /* num_experts_per_tok, 1 <= k <= E */
  int norm_topk_prob; /* softmax, deepseek: renormalise the k weights (Mixtral: 1) */
  /* DeepSeek-V3 only: */
  int n_group, topk_group;              /* E % n_group == 0, E/n_group >= 2 */
  float routed_scaling_factor;          /* 2.5 in DeepSeek-V3 */
  const float *e_score_correction_bias; /* (E); NULL means zeros */
} sq_moe_router_cfg;

/* Validate cfg (one error line naming the bad field). */
sq_status sq_moe_router_check(const sq_moe_router_cfg *cfg);
/* Route T tokens: logits (T, E) -> ids (T, k) and weights (T, k). Allocates
 * one scratch row of E floats for the call. */
sq_status sq_moe_route(const sq_moe_router_cfg *cfg, const float *logits, int64_t T, int32_t *ids,
                       float *weights);
/* 1 when the weight multiplies the expert input (Llama-4), 0 its output. */
int sq_moe_routing_scales_input(sq_moe_router_kind kind);

/* ---- dispatch ------------------------------------------------------------------ */

/* Routed (token, weight) entries grouped by expert. Entries of expert e are
 * [offsets[e], offsets[e+1]) in ascending token order, so the grouping is
 * deterministic and independent of how ids were ordered within a token. This
 * is the send layout of the expert-parallel all-to-all. */
typedef struct sq_moe_dispatch {
  int n_experts;
  int64_t n_tokens, top_k;
  int64_t *counts;  /* (E) tokens routed to each expert; sum = T*k */
  int64_t *offsets; /* (E+1) prefix sums of counts */
  int64_t *tokens;  /* (T*k) token row of each entry */
  float *weights;   /* (T*k) combine weight of each entry */
} sq_moe_dispatch;

/* Allocate and fill d (starts zeroed) from ids/weights (T, k). Fails naming the
 * token with an id outside [0, E) or the same expert twice. */
sq_status sq_moe_dispatch_build(const int32_t *ids, const float *weights, int64_t T, int k,
                                int n_experts, sq_moe_dispatch *d);
void sq_moe_dispatch_free(sq_moe_dispatch *d);

/* ---- expert combine -------------------------------------------------------------- */

/* One SwiGLU expert: down(silu(gate(x)) * up(x)), no biases (as HF). */
typedef struct sq_moe_expert {
  const float *gate, *up; /* (ff, d) */
  const float *down;      /* (d, ff) */
} sq_moe_expert;

typedef struct sq_moe_block {
  int64_t hidden;               /* d */
  int64_t ff;                   /* routed experts' intermediate size (moe_intermediate_size) */
  int n_experts;                /* E, = the dispatch's */
  const sq_moe_expert *experts; /* (E) */
  int scale_input;              /* sq_moe_routing_scales_input(kind) */
  /* Shared expert, always applied to every token; shared.gate NULL: none.
   * DeepSeek-V3's n_shared_experts are one MLP of ff = moe_inter * n_shared. */
  sq_moe_expert shared;
  int64_t shared_ff;
  /* Qwen2-MoE shared_expert_gate (1, d): shared output * sigmoid(x · gᵀ); NULL: ungated. */
  const float *shared_gate;
} sq_moe_block;

/* Expert id the hooks receive for the shared expert. */
#define SQ_MOE_SHARED (-1)

/* Calibration hook: X (rows, cols) is the input of expert `expert`'s gate/up
 * (cols = d) or of its down_proj (cols = ff); rows are the expert's tokens in
 * ascending token order (routed mode) or all T tokens in order (all_tokens).
 * Valid only during the call; a status other than SQ_OK stops the block. */
typedef sq_status (*sq_moe_hook_fn)(void *user, int expert, const float *X, int64_t rows,
                                    int64_t cols);

typedef struct sq_moe_hooks {
  sq_moe_hook_fn gate_up_in; /* X_e (n_e, d): x rows (times w when scale_input) */
  sq_moe_hook_fn down_in;    /* H_e (n_e, ff): silu(gate) * up */
  void *user;
  /* 1: every expert also runs on the tokens not routed to it, so the hooks see
   * all T tokens for every expert (Hessian coverage of rarely chosen experts);
   * y still combines only the routed (token, expert) pairs. With scale_input,
   * unrouted tokens enter unscaled (weight 1). */
  int all_tokens;
} sq_moe_hooks;

/* Bytes of workspace sq_moe_forward needs for T tokens. */
size_t sq_moe_workspace_bytes(const sq_moe_block *blk, int64_t T);
/* y (T, d) = Σ_entries w · expert_e(x_t)  [or expert_e(w · x_t)]  + shared(x)
 * [· sigmoid(x · shared_gateᵀ)]. Experts are combined in ascending expert id,
 * then the shared expert is added: a fixed order, so results are reproducible.
 * x (T, d) with T = d->n_tokens; y must not alias x; ws: the bytes above,
 * 16-byte aligned; hooks may be NULL and either function NULL. */
sq_status sq_moe_forward(const sq_moe_block *blk, const float *x, const sq_moe_dispatch *d,
                         const sq_moe_hooks *hooks, void *ws, float *y);

#ifdef __cplusplus
}
#endif

#endif
