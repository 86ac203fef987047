/* Synthetic checkpoints of real architectures (dense llama, mistral, qwen2; MoE
 * mixtral, qwen2_moe, qwen3_moe, deepseek_v3, llama4), for tests and benchmarks
 * where no real model is at hand, and the calibration / evaluation token files
 * that go with them.
 *
 * A synthetic directory holds:
 *   config.json        the architecture's Hugging Face keys and values (as in
 *                      Llama-3.1-8B / Mistral-7B-v0.3 / Qwen2.5-7B) with the
 *                      requested sizes; bos/eos are the real ids when they fit
 *                      in the vocabulary, else 1 and 2
 *   model.safetensors  (1 shard) or model-0000k-of-0000N.safetensors plus
 *                      model.safetensors.index.json; shards split the tensor
 *                      list in order, balanced by bytes
 *   calib.safetensors  int32 input_ids [calib_samples, calib_seq_len]
 *   eval.safetensors   int32 input_ids [eval_samples, calib_seq_len], another stream
 *
 * Values (deterministic in the seed, independent of sharding and order):
 * every tensor has its own stream, splitmix64 seeded with
 * splitmix64(seed ^ fnv1a64(tensor name)), and normals come from Box-Muller
 * (in float) on two 24-bit uniforms per splitmix64 draw. Bytes are identical
 * for a given seed on a given build; another libm may round logf/sinf/cosf
 * differently in rare cases. Linear weights (d_out, d_in) are N(0, 1/d_in) with 1% of the
 * input columns (at least one, chosen from the stream) scaled by 10, so that
 * per-channel round-to-nearest suffers and GPTQ has something to fix; norms are
 * 1 + N(0, 0.05^2); biases N(0, 0.02^2); lm_head N(0, 1/hidden). Embedding rows
 * are 0.6*noise + 0.4*(a mix of 4 shared directions), times 1/sqrt(hidden):
 * correlated hidden channels, as real activations are, so that the Hessians
 * GPTQ sees are not diagonal. Token ids are uniform in [0, vocab) (splitmix64
 * modulo vocab; the bias is below vocab/2^64), with the first token of every
 * sample = bos.
 *
 * MoE architectures use the exact Hugging Face tensor names and config.json
 * keys of the released models (Mixtral-8x7B, Qwen1.5-MoE-A2.7B, Qwen3-30B-A3B,
 * DeepSeek-V3, Llama-4-Scout/Maverick), with the requested sizes:
 *  - mixtral: block_sparse_moe.gate (E, d) + experts.{e}.w1/w3 (I, d), w2 (d, I),
 *    I = --intermediate;
 *  - qwen2_moe: q/k/v biases, mlp.gate (E, d), mlp.experts.{e}.{gate,up,down}_proj
 *    (--moe-intermediate), mlp.shared_expert.* (--shared-intermediate) and
 *    mlp.shared_expert_gate (1, d); qwen3_moe: no biases, self_attn.q_norm/k_norm
 *    (head_dim), no shared expert. MoE every --moe-step-th layer (decoder_sparse_step),
 *    the others a dense mlp of --intermediate;
 *  - deepseek_v3: MLA (q_a_proj, q_a_layernorm, q_b_proj, kv_a_proj_with_mqa,
 *    kv_a_layernorm, kv_b_proj, o_proj), dense mlp in the first --first-k-dense
 *    layers, then mlp.gate (E, d) + mlp.gate.e_score_correction_bias (E, always
 *    F32 as released), mlp.experts.{e}.*, mlp.shared_experts.* (n_shared x
 *    moe_intermediate); YaRN rope_scaling, noaux_tc / sigmoid / group-limited
 *    routing keys. num_nextn_predict_layers is 0 (no MTP layer is written).
 *    With fp8_blocks every Linear weight of the decoder layers is F8_E4M3 with a
 *    "<name>_scale_inv" F32 (ceil(out/128), ceil(in/128)) tensor next to it,
 *    quantized per 128 x 128 block from the generated values (sharding/fp8_block.h),
 *    and config.json has DeepSeek's quantization_config;
 *  - llama4: config.json is Llama4ForConditionalGeneration with the text model
 *    in text_config (no vision tower is written); tensors under "language_model.";
 *    every --moe-step-th layer is MoE: feed_forward.router (E, d), fused
 *    feed_forward.experts.gate_up_proj (E, d, 2 I) and down_proj (E, I, d) with
 *    I = --moe-intermediate, feed_forward.shared_expert.* (I); the other layers a
 *    dense feed_forward.{gate,up,down}_proj of intermediate_size_mlp = --intermediate.
 *    Fused stacks are generated per expert as (d_out, d_in) Linear weights with
 *    outlier input columns, then stored transposed.
 * Router weights (and Qwen's shared_expert_gate) are N(0, 1/d), no outliers.
 *
 * Memory: tensors are generated and written one at a time; the peak is one
 * buffer the size of the largest tensor in the output dtype (plus the whole
 * tensor in fp32 with fp8_blocks). */
#ifndef SQ_SHARDING_SYNTH_H
#define SQ_SHARDING_SYNTH_H

#include <stdbool.h>
#include <stdint.h>

#include "common/dtype.h"
#include "common/status.h"
#include "sharding/model_config.h"

typedef struct sq_synth_options {
  const char *arch; /* llama, mistral, qwen2, mixtral, qwen2_moe, qwen3_moe, deepseek_v3, llama4 */
  int64_t layers, hidden, heads, kv_heads, intermediate, vocab;
  int64_t head_dim; /* 0: hidden / heads */
  bool tie_word_embeddings;
  sq_dtype dtype; /* BF16, F16 or F32 */
  int shards;
  uint64_t seed;
  int64_t calib_samples, calib_seq_len; /* calib_samples 0: no calib.safetensors */
  int64_t eval_samples;                 /* 0: no eval.safetensors */
  bool progress;                        /* progress lines on stderr */
  /* MoE and MLA sizes; 0 means the default of sq_synth_resolve. */
  int64_t experts, experts_per_tok;
  int64_t moe_intermediate;    /* routed experts (not mixtral: --intermediate) */
  int64_t shared_intermediate; /* qwen2_moe shared_expert_intermediate_size */
  int64_t n_shared_experts;    /* deepseek_v3 */
  int64_t first_k_dense;       /* deepseek_v3 first_k_dense_replace */
  int64_t moe_step;            /* llama4 interleave_moe_layer_step, qwen decoder_sparse_step */
  int64_t n_group, topk_group; /* deepseek_v3 */
  int64_t q_lora_rank, kv_lora_rank, qk_nope_dim, qk_rope_dim, v_head_dim; /* deepseek_v3 */
  bool fp8_blocks; /* deepseek_v3: F8_E4M3 weights + 128x128 weight_scale_inv */
} sq_synth_options;

/* Defaults of the MoE/MLA fields left 0 (o copied to *out): experts 8,
 * experts_per_tok 2 (llama4 1), moe_intermediate intermediate/2,
 * shared_intermediate intermediate, n_shared_experts 1, first_k_dense 1,
 * moe_step 2 for llama4 else 1, n_group 4 when experts/4 >= 2 else 1, topk_group
 * max(1, n_group/2), q_lora_rank hidden/2, kv_lora_rank hidden/4, qk_nope_dim and
 * v_head_dim head_dim, qk_rope_dim head_dim/2 rounded down to even (>= 2). */
void sq_synth_resolve(const sq_synth_options *o, sq_synth_options *out);
/* True for the MoE architectures. */
bool sq_synth_arch_is_moe(const char *arch);

/* The defaults: llama, 4 layers, hidden 256, 8 heads, 4 kv heads,
 * intermediate 688, vocab 1024, bf16, 2 shards, seed 0, 128 x 128 calibration
 * tokens, 32 x 128 evaluation tokens, progress on. */
void sq_synth_options_default(sq_synth_options *o);

/* Validate the options (one line naming the bad option on failure). */
sq_status sq_synth_check(const sq_synth_options *o);

/* The config.json the options describe, parsed (so it went through the same
 * validation as a real one). Free with sq_model_config_free. */
sq_status sq_synth_config(const sq_synth_options *o, sq_model_config *out);

/* Write the whole synthetic directory (created if missing). */
sq_status sq_synth_write(const char *dir, const sq_synth_options *o);

/* Write an int32 input_ids [samples, seq_len] file from stream `stream`
 * ("calib", "eval"): uniform ids in [0, vocab), first id = bos when 0 <= bos < vocab. */
sq_status sq_synth_write_ids(const char *path, int64_t samples, int64_t seq_len, int64_t vocab,
                             int64_t bos, uint64_t seed, const char *stream);

#endif
