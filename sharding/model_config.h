/* config.json of a Hugging Face causal LM: parsed into sq_model_config, the
 * list of tensors a dense Llama-family model has, and writing config.json back.
 *
 * Families with a forward pass in shardq: llama, mistral, qwen2 (dense,
 * SwiGLU, RMSNorm, RoPE, GQA). The MoE / MLA fields of Mixtral, Qwen-MoE,
 * DeepSeek-V3 and Llama-4 are parsed (so that `inspect` and `plan` can read
 * them) but nothing runs them yet. For llama4 the text model lives in the
 * nested "text_config" object, which is what we parse.
 *
 * Defaults follow transformers: num_key_value_heads = num_attention_heads,
 * head_dim = hidden_size / num_attention_heads, tie_word_embeddings = false,
 * rope_theta = 10000, rms_norm_eps = 1e-6. qwen2 and qwen2_moe always have
 * q/k/v biases (Qwen2Attention and Qwen2MoeAttention hard-code bias=True),
 * whatever "attention_bias" says; qwen3_moe follows "attention_bias".
 *
 * Every error is one line naming the file and the key, e.g.
 *   config.json: key 'hidden_size' must be a positive integer (got "4096") */
#ifndef SQ_SHARDING_MODEL_CONFIG_H
#define SQ_SHARDING_MODEL_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/dtype.h"
#include "common/status.h"

struct json_t; /* jansson */

typedef enum sq_model_family {
  SQ_FAMILY_OTHER = 0, /* parsed, no tensor list, no forward */
  /* values below: tensor list for all, forward for the first three */
  SQ_FAMILY_LLAMA,
  SQ_FAMILY_MISTRAL,
  SQ_FAMILY_QWEN2,
  SQ_FAMILY_MIXTRAL,
  SQ_FAMILY_QWEN_MOE,    /* qwen2_moe and qwen3_moe (model_type tells them apart) */
  SQ_FAMILY_DEEPSEEK_V3, /* deepseek_v2 / deepseek_v3 (MLA + MoE) */
  SQ_FAMILY_LLAMA4
} sq_model_family;

typedef enum sq_rope_kind {
  SQ_ROPE_NONE = 0, /* "rope_scaling": null or absent */
  SQ_ROPE_DEFAULT,  /* rope_type "default" */
  SQ_ROPE_LINEAR,   /* positions divided by factor */
  SQ_ROPE_LLAMA3,   /* Llama-3.1 frequency-dependent scaling */
  SQ_ROPE_OTHER     /* yarn, dynamic, longrope, ...: name kept, unsupported by the forward */
} sq_rope_kind;

typedef struct sq_rope_scaling {
  sq_rope_kind kind;
  char type[32];                            /* as written ("llama3", "yarn", ...); "" when none */
  double factor;                            /* 1 when absent */
  double low_freq_factor, high_freq_factor; /* llama3 */
  int64_t original_max_position_embeddings; /* llama3, yarn; 0 when absent */
} sq_rope_scaling;

#define SQ_MODEL_MAX_EOS 8

typedef struct sq_model_config {
  char label[256];        /* file name used in error messages */
  char model_type[64];    /* top-level "model_type" ("llama4" for Llama-4) */
  char architecture[128]; /* architectures[0], "" if absent */
  sq_model_family family;

  int64_t hidden_size, intermediate_size, num_hidden_layers;
  int64_t num_attention_heads, num_key_value_heads, head_dim;
  int64_t max_position_embeddings, vocab_size; /* max_position_embeddings 0 if absent */
  double rms_norm_eps, rope_theta;
  sq_rope_scaling rope_scaling;
  bool tie_word_embeddings;
  sq_dtype torch_dtype; /* SQ_DTYPE_INVALID when absent */
  bool attention_bias;  /* q/k/v (and o for llama's attention_bias) biases */
  bool o_proj_bias;     /* llama's attention_bias also biases o_proj; qwen2's does not */
  bool mlp_bias;
  int64_t bos_token_id; /* -1 when absent or null */
  int n_eos;
  int64_t eos_token_ids[SQ_MODEL_MAX_EOS];

  /* MoE (0 = dense). num_experts comes from num_local_experts / num_experts /
   * n_routed_experts, whichever is present. */
  int64_t num_experts, num_experts_per_tok, n_shared_experts;
  int64_t moe_intermediate_size, first_k_dense_replace;
  int64_t interleave_moe_layer_step, intermediate_size_mlp; /* llama4 */
  /* Qwen-MoE: every decoder_sparse_step-th layer is MoE (1 when absent), unless
   * listed in "mlp_only_layers"; qwen2_moe's shared expert size (0: none). */
  int64_t decoder_sparse_step, shared_expert_intermediate_size;
  /* MLA (DeepSeek); 0 when absent. q_lora_rank 0 also means "no q compression". */
  int64_t q_lora_rank, kv_lora_rank, qk_nope_head_dim, qk_rope_head_dim, v_head_dim;
  int64_t n_group, topk_group;

  struct json_t *json; /* the parsed document, kept to write it back with unknown keys */
} sq_model_config;

/* Parse config.json text; label names the file in errors. On failure *out is
 * left freed (safe to call sq_model_config_free on it). */
sq_status sq_model_config_parse(const char *label, const char *text, size_t len,
                                sq_model_config *out);
/* Load path, which is config.json itself or a directory holding one. */
sq_status sq_model_config_load(const char *path, sq_model_config *out);
void sq_model_config_free(sq_model_config *c);

/* Family name ("llama", "deepseek_v3", ...). */
const char *sq_model_family_name(sq_model_family f);
/* True for llama, mistral, qwen2: the families with a tensor list and a forward. */
bool sq_model_config_is_dense(const sq_model_config *c);
/* SQ_OK when the forward pass can run this config: dense family, no MoE, rope
 * scaling none/default/linear/llama3; else SQ_ERR_UNSUPPORTED naming the key. */
sq_status sq_model_config_check_forward(const sq_model_config *c);

/* Serialize: the parsed document with the known fields overwritten from the
 * struct (unknown keys kept, in their order), 2-space indented. Caller frees. */
sq_status sq_model_config_to_json(const sq_model_config *c, char **out);
/* Write <dir>/config.json atomically. */
sq_status sq_model_config_save(const sq_model_config *c, const char *dir);

/* What a tensor is, for sizes under each scheme and for the pipeline. The
 * values are mirrored by worker/model_meta.h: append, never reorder. */
typedef enum sq_tensor_role {
  SQ_ROLE_EMBED = 0, /* model.embed_tokens.weight [vocab, hidden] */
  SQ_ROLE_NORM,      /* RMSNorm weights [hidden] */
  SQ_ROLE_LINEAR,    /* quantizable Linear weights [d_out, d_in]; Llama-4's fused
                        expert stacks are 3-D [E, d_in, d_out] */
  SQ_ROLE_BIAS,      /* Linear biases [d_out] */
  SQ_ROLE_LM_HEAD,   /* lm_head.weight [vocab, hidden] */
  SQ_ROLE_ROUTER     /* MoE router weights [E, hidden] (and DeepSeek's score bias, Qwen2-MoE's
                        shared_expert_gate [1, hidden]); kept bf16 */
} sq_tensor_role;

typedef struct sq_tensor_spec {
  char name[96];
  sq_tensor_role role;
  int layer; /* decoder layer, -1 for embed / final norm / lm_head */
  int ndim;
  int64_t shape[3]; /* (d_out, d_in) for Linear; unused dimensions 0 */
} sq_tensor_spec;

/* The Hugging Face tensors of a model, in checkpoint order: embed_tokens, then
 * per layer input_layernorm, attention, post-attention norm, MLP, then
 * model.norm and lm_head (unless tied).
 *  - llama/mistral/qwen2: q/k/v/o (+ q/k/v bias for qwen2 and attention_bias,
 *    + o bias for llama's attention_bias), gate/up/down (+ mlp_bias biases);
 *  - mixtral: block_sparse_moe.gate + experts.{e}.w1/w2/w3;
 *  - qwen2_moe / qwen3_moe: q/k/v/o (+ q/k/v bias for qwen2_moe, as for qwen2;
 *    + self_attn.q_norm/k_norm (head_dim) for qwen3_moe); MoE layers (see
 *    decoder_sparse_step) have mlp.gate (E, h) + mlp.experts.{e}.{gate,up,down}_proj
 *    of moe_intermediate_size, and for qwen2_moe mlp.shared_expert.* of
 *    shared_expert_intermediate_size + mlp.shared_expert_gate (1, h), a router;
 *    the other layers a dense mlp of intermediate_size;
 *  - deepseek_v3 (and v2): MLA (q_a/q_a_layernorm/q_b or q, kv_a_proj_with_mqa,
 *    kv_a_layernorm, kv_b, o); dense mlp for the first first_k_dense_replace
 *    layers, then mlp.gate (+ e_score_correction_bias for noaux_tc),
 *    mlp.experts.{e}.*, mlp.shared_experts.*. The MTP layers
 *    (num_nextn_predict_layers) and fp8 weight_scale_inv tensors are not listed;
 *  - llama4: text model only, under "language_model."; MoE layers have the
 *    router, fused experts.gate_up_proj [E, h, 2 inter] / down_proj [E, inter, h]
 *    and shared_expert.*; the others a dense feed_forward of intermediate_size_mlp.
 * *out is malloc'd (caller frees); SQ_ERR_UNSUPPORTED for other families. */
sq_status sq_model_config_tensors(const sq_model_config *c, sq_tensor_spec **out, size_t *n);

/* Number of tensors sq_model_config_tensors lists (0 if unsupported). */
size_t sq_model_config_tensor_count(const sq_model_config *c);

/* Parameter count from the tensor list (0 if unsupported). */
uint64_t sq_model_config_param_count(const sq_model_config *c);

/* Classify a checkpoint tensor by its Hugging Face name and rank (routers:
 * mlp.gate, block_sparse_moe.gate, feed_forward.router, shared_expert_gate,
 * e_score_correction_bias). */
sq_tensor_role sq_tensor_role_of(const char *name, int ndim);

#endif
