/* One MoE checkpoint as the layer-sequential pipeline sees it (issue 8):
 * config.json, the quantizable modules of every layer with their owner ranks
 * (sharding/plan.h), the forward configuration of each decoder layer
 * (kernels/moe_layer.h) and fp32 buffers for ONE layer's weights, of which a
 * rank holds the replicated part (norms, attention, router, dense MLP, shared
 * expert) and only the routed experts it OWNS.
 *
 * Families: mixtral, qwen2_moe, qwen3_moe (GQA attention: q/k/v biases for
 * qwen2_moe, q_norm/k_norm for qwen3_moe; softmax top-k router; qwen2_moe's
 * shared expert with shared_expert_gate; dense MLP on Qwen's mlp_only_layers /
 * off decoder_sparse_step) and deepseek_v3 (MLA with q_a/q_b or q_proj,
 * kv_a_proj_with_mqa, kv_b, default or YaRN RoPE; sigmoid group-limited router
 * with e_score_correction_bias and routed_scaling_factor; shared experts;
 * dense MLP on the first first_k_dense_replace layers). Llama-4 (fused
 * experts) is refused with SQ_ERR_UNSUPPORTED naming the family.
 *
 * Linear weights are read through sharding/fp8_block.h, so block-scaled fp8
 * checkpoints (quantization_config.weight_block_size) are dequantized on load
 * and every other float dtype is read as it is.
 *
 * Module ownership: the plan's (sharding/plan.h) owners, except that a routed
 * expert's down_proj goes with its gate/up owner (the expert-parallel
 * calibration, worker/moe_calib.h, computes down's input where gate/up run),
 * and the shared expert's down_proj with its gate/up owner (moe_calib reduces
 * both shared Hessians to one rank). */
#ifndef SQ_WORKER_MOE_MODEL_H
#define SQ_WORKER_MOE_MODEL_H

#include <stdint.h>

#include "common/status.h"
#include "kernels/moe_layer.h"
#include "sharding/model_config.h"
#include "sharding/plan.h"

struct sq_ckpt;

/* What a module is inside its layer. */
typedef enum sq_mm_part {
  SQ_MM_Q = 0,
  SQ_MM_K,
  SQ_MM_V,
  SQ_MM_O, /* attention */
  SQ_MM_GATE,
  SQ_MM_UP,
  SQ_MM_DOWN, /* dense MLP */
  SQ_MM_EGATE,
  SQ_MM_EUP,
  SQ_MM_EDOWN, /* routed expert `expert` */
  SQ_MM_SGATE,
  SQ_MM_SUP,
  SQ_MM_SDOWN, /* shared expert */
  SQ_MM_QA,
  SQ_MM_QB,
  SQ_MM_KVA,
  SQ_MM_KVB /* MLA (q_proj and o_proj: SQ_MM_Q, SQ_MM_O) */
} sq_mm_part;

typedef struct sq_mm_module {
  const sq_plan_module *pm; /* name, tensor, shape */
  sq_mm_part part;
  int expert; /* routed expert, -1 otherwise */
  int owner;  /* rank that solves and writes it (see above) */
} sq_mm_module;

typedef struct sq_moe_model {
  sq_model_config cfg;
  struct sq_ckpt *ckpt;
  sq_plan *plan;      /* for `ranks` ranks */
  sq_mm_module *mods; /* (plan->n_modules), parallel to plan->modules */
  int64_t hidden, n_layers, n_heads, n_kv_heads, head_dim, n_experts, top_k;
  int64_t intermediate;      /* dense MLP size (0 when no layer is dense) */
  int64_t moe_ff, shared_ff; /* routed / shared expert sizes (shared 0: none) */
  float eps;
  int qkv_bias, qk_norm, norm_topk_prob;
  int64_t fp8_bo, fp8_bi; /* block-scaled fp8 checkpoint: block size; else 0 */
  const char *ffn;        /* "block_sparse_moe" (mixtral) or "mlp" */
  /* DeepSeek-V3 */
  int mla, score_bias; /* MLA attention; router has e_score_correction_bias */
  sq_moe_router_kind router;
  int n_group, topk_group;
  float routed_scaling;
  sq_mla_cfg mla_cfg; /* rope -> mla_rope */
  sq_mla_rope mla_rope;
  int64_t max_w, max_din; /* largest module (elements) and d_in over the model */
  sq_rope rope;           /* tables for rope_T positions */
  int64_t rope_T;
} sq_moe_model;

/* Open dir (config.json + safetensors) for a job of `ranks` ranks with
 * `samples` x `seq_len` calibration tokens (rope tables for seq_len). */
sq_status sq_moe_model_open(const char *dir, int ranks, int64_t samples, int64_t seq_len,
                            sq_moe_model *m);
void sq_moe_model_close(sq_moe_model *m);

/* Does layer l have a MoE FFN (the plan's decision)? */
int sq_moe_model_layer_is_moe(const sq_moe_model *m, int64_t layer);
/* The modules of layer l: mods[*first .. *first + *count). */
void sq_moe_model_layer_modules(const sq_moe_model *m, int64_t layer, size_t *first, size_t *count);
/* Forward configuration of layer l (points into m->rope / m->mla_cfg); the
 * router's score bias is not set (see sq_moe_lbuf_cfg). */
sq_moe_layer_cfg sq_moe_model_layer_cfg(const sq_moe_model *m, int64_t layer);
/* Read Linear weight `tensor` (d_out, d_in) as fp32 (fp8 blocks dequantized). */
sq_status sq_moe_model_read_linear(const sq_moe_model *m, const char *tensor, float *dst,
                                   int64_t d_out, int64_t d_in);

/* fp32 weights of one layer: the replicated part in one allocation (sized
 * for the largest layer), plus one allocation holding the owned experts. */
typedef struct sq_moe_lbuf {
  int layer, moe;
  float *attn_norm, *ffn_norm, *q, *k, *v, *o, *q_bias, *k_bias, *v_bias, *q_norm, *k_norm;
  float *gate, *up, *down;                         /* dense MLP (intermediate) */
  float *router;                                   /* (E, d) */
  float *sgate, *sup, *sdown, *shared_gate;        /* shared expert; shared_gate (1, d) */
  float *score_bias;                               /* (E) DeepSeek e_score_correction_bias */
  float *qa, *qa_norm, *qb, *kva, *kva_norm, *kvb; /* MLA (q_proj: q, o_proj: o) */
  sq_moe_expert *experts;                          /* (E): owned entries set, others NULL */
  float *base_, *experts_mem_;
  int64_t experts_cap_; /* floats in experts_mem_ */
} sq_moe_lbuf;

sq_status sq_moe_lbuf_init(sq_moe_lbuf *b, const sq_moe_model *m);
void sq_moe_lbuf_free(sq_moe_lbuf *b);
/* Read layer l's small tensors (norms, biases, q/k norms, router,
 * shared_expert_gate) and point experts[e] at fresh storage for every e with
 * owned[e] (NULL: none); Linear weights are read by the caller
 * (sq_moe_lbuf_module + sq_moe_model_read_linear) or arrive by broadcast. */
sq_status sq_moe_lbuf_load_small(sq_moe_lbuf *b, const sq_moe_model *m, int64_t layer,
                                 const int *owned);
/* The buffer holding module mm's weight in b (NULL if this rank holds none). */
float *sq_moe_lbuf_module(const sq_moe_lbuf *b, const sq_mm_module *mm);
/* Layer b->layer's forward configuration with the loaded router score bias. */
sq_moe_layer_cfg sq_moe_lbuf_cfg(const sq_moe_lbuf *b, const sq_moe_model *m);
/* View b as the kernel's weight struct. */
sq_moe_layer_weights sq_moe_lbuf_weights(const sq_moe_lbuf *b, const sq_moe_model *m);

#endif
