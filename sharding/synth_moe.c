/* The MoE and MLA architectures of `shardq synth` (mixtral, qwen2_moe,
 * qwen3_moe, deepseek_v3, llama4): their option defaults and checks, the
 * config.json keys of the released models, Llama-4's fused expert stacks and
 * DeepSeek-V3's block-scaled fp8 weights. The tensor lists come from
 * sq_model_config_tensors; the file layout and value recipe are in synth.h. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sharding/fp8_block.h"
#include "sharding/synth.h"
#include "sharding/synth_internal.h"

static const char *const sq_synth_moe_archs[] = {"mixtral", "qwen2_moe", "qwen3_moe", "deepseek_v3",
                                                 "llama4"};

bool sq_synth_arch_is_moe(const char *arch) {
  for (size_t i = 0; arch && i < sizeof sq_synth_moe_archs / sizeof *sq_synth_moe_archs; ++i)
    if (strcmp(arch, sq_synth_moe_archs[i]) == 0) return true;
  return false;
}

void sq_synth_resolve(const sq_synth_options *o, sq_synth_options *out) {
  *out = *o;
  if (!o->arch || o->heads <= 0 || o->hidden <= 0) return;
  const int64_t hd = o->head_dim ? o->head_dim : o->hidden / o->heads;
  const bool l4 = sq_synth_is(o, "llama4");
  if (!out->experts) out->experts = 8;
  if (!out->experts_per_tok) out->experts_per_tok = l4 ? 1 : 2;
  if (!out->moe_intermediate)
    out->moe_intermediate = o->intermediate / 2 > 0 ? o->intermediate / 2 : 1;
  if (!out->shared_intermediate) out->shared_intermediate = o->intermediate;
  if (!out->n_shared_experts) out->n_shared_experts = 1;
  if (!out->first_k_dense) out->first_k_dense = 1;
  if (!out->moe_step) out->moe_step = l4 ? 2 : 1;
  if (!out->n_group) out->n_group = out->experts % 4 == 0 && out->experts / 4 >= 2 ? 4 : 1;
  if (!out->topk_group) out->topk_group = out->n_group / 2 > 1 ? out->n_group / 2 : 1;
  if (!out->q_lora_rank) out->q_lora_rank = o->hidden / 2 > 0 ? o->hidden / 2 : 1;
  if (!out->kv_lora_rank) out->kv_lora_rank = o->hidden / 4 > 0 ? o->hidden / 4 : 1;
  if (!out->qk_nope_dim) out->qk_nope_dim = hd;
  if (!out->v_head_dim) out->v_head_dim = hd;
  if (!out->qk_rope_dim) out->qk_rope_dim = (hd / 2) & ~(int64_t)1 ? (hd / 2) & ~(int64_t)1 : 2;
}

/* The MoE/MLA fields of resolved options r. */
sq_status sq_synth_moe_check(const sq_synth_options *r) {
  const struct {
    const char *flag;
    int64_t v;
  } pos[] = {{"--experts", r->experts},
             {"--experts-per-tok", r->experts_per_tok},
             {"--moe-intermediate", r->moe_intermediate},
             {"--shared-intermediate", r->shared_intermediate},
             {"--n-shared-experts", r->n_shared_experts},
             {"--moe-step", r->moe_step},
             {"--n-group", r->n_group},
             {"--topk-group", r->topk_group},
             {"--q-lora-rank", r->q_lora_rank},
             {"--kv-lora-rank", r->kv_lora_rank},
             {"--qk-nope-dim", r->qk_nope_dim},
             {"--qk-rope-dim", r->qk_rope_dim},
             {"--v-head-dim", r->v_head_dim}};
  for (size_t i = 0; i < sizeof pos / sizeof pos[0]; ++i)
    if (pos[i].v <= 0 || pos[i].v > (1 << 22))
      return sq_error_set(SQ_ERR_ARG, "synth: %s must be in 1..2^22 (got %lld)", pos[i].flag,
                          (long long)pos[i].v);
  if (r->first_k_dense < 0 || r->first_k_dense > r->layers)
    return sq_error_set(SQ_ERR_ARG, "synth: --first-k-dense %lld must be in 0..--layers %lld",
                        (long long)r->first_k_dense, (long long)r->layers);
  if (r->experts > 4096 || r->experts_per_tok > r->experts)
    return sq_error_set(SQ_ERR_ARG,
                        "synth: --experts-per-tok %lld must not exceed --experts %lld (<= 4096)",
                        (long long)r->experts_per_tok, (long long)r->experts);
  if (sq_synth_is(r, "deepseek_v3")) {
    if (r->experts % r->n_group != 0 || r->experts / r->n_group < 2 || r->topk_group > r->n_group ||
        r->experts_per_tok > r->topk_group * (r->experts / r->n_group))
      return sq_error_set(
          SQ_ERR_ARG,
          "synth: deepseek_v3 routing needs --n-group dividing --experts with >= 2 "
          "experts per group, --topk-group <= --n-group and --experts-per-tok <= "
          "topk_group * experts/n_group (got E %lld, n_group %lld, topk_group %lld, "
          "k %lld)",
          (long long)r->experts, (long long)r->n_group, (long long)r->topk_group,
          (long long)r->experts_per_tok);
    if (r->qk_rope_dim % 2 != 0)
      return sq_error_set(SQ_ERR_ARG, "synth: --qk-rope-dim must be even (got %lld)",
                          (long long)r->qk_rope_dim);
  }
  if (r->fp8_blocks && !sq_synth_is(r, "deepseek_v3"))
    return sq_error_set(SQ_ERR_ARG,
                        "synth: --fp8-blocks is DeepSeek-V3's format -- hint: use --arch "
                        "deepseek_v3");
  return SQ_OK;
}
#define SQ_SET(obj, key, val) json_object_set_new(obj, key, val)

/* The keys of the released MoE configs (Mixtral-8x7B-v0.1, Qwen1.5-MoE-A2.7B,
 * Qwen3-30B-A3B, DeepSeek-V3, Llama-4-Scout/Maverick text_config) with the
 * resolved sizes r; the text model's object for llama4 (wrapped by the caller). */
json_t *sq_synth_moe_config_json(const sq_synth_options *r) {
  const int64_t hd = r->head_dim ? r->head_dim : r->hidden / r->heads;
  const bool mix = sq_synth_is(r, "mixtral"), q2 = sq_synth_is(r, "qwen2_moe");
  const bool q3 = sq_synth_is(r, "qwen3_moe"), ds = sq_synth_is(r, "deepseek_v3");
  const bool l4 = sq_synth_is(r, "llama4");
  json_t *c = json_object();
  if (!l4)
    SQ_SET(c, "architectures",
           json_pack("[s]", mix  ? "MixtralForCausalLM"
                            : q2 ? "Qwen2MoeForCausalLM"
                            : q3 ? "Qwen3MoeForCausalLM"
                                 : "DeepseekV3ForCausalLM"));
  if (q3 || ds || l4) SQ_SET(c, "attention_bias", json_false());
  if (l4) SQ_SET(c, "attention_chunk_size", json_integer(8192));
  SQ_SET(c, "attention_dropout", json_real(0.0));
  if (l4) {
    SQ_SET(c, "attn_scale", json_real(0.1));
    SQ_SET(c, "attn_temperature_tuning", json_true());
  }
  if (ds) SQ_SET(c, "aux_loss_alpha", json_real(0.001));
  int64_t bos = mix  ? 1
                : ds ? 0
                : l4 ? sq_synth_token(200000, r->vocab, 1)
                     : sq_synth_token(151643, r->vocab, 1);
  int64_t eos = mix  ? 2
                : ds ? 1
                : l4 ? sq_synth_token(200001, r->vocab, 2)
                : q3 ? sq_synth_token(151645, r->vocab, 2)
                     : sq_synth_token(151643, r->vocab, 2);
  SQ_SET(c, "bos_token_id", json_integer(bos));
  if (q2 || q3) SQ_SET(c, "decoder_sparse_step", json_integer(r->moe_step));
  SQ_SET(c, "eos_token_id", l4 ? json_pack("[I]", (json_int_t)eos) : json_integer(eos));
  if (ds) {
    SQ_SET(c, "ep_size", json_integer(1));
    SQ_SET(c, "first_k_dense_replace", json_integer(r->first_k_dense));
  }
  if (l4) SQ_SET(c, "floor_scale", json_integer(8192));
  if ((!ds && hd * r->heads != r->hidden) || q3 || l4) SQ_SET(c, "head_dim", json_integer(hd));
  SQ_SET(c, "hidden_act", json_string("silu"));
  SQ_SET(c, "hidden_size", json_integer(r->hidden));
  SQ_SET(c, "initializer_range", json_real(0.02));
  if (l4) SQ_SET(c, "interleave_moe_layer_step", json_integer(r->moe_step));
  /* mixtral's experts use intermediate_size; llama4's experts and shared expert
   * too, its dense layers intermediate_size_mlp. */
  SQ_SET(c, "intermediate_size", json_integer(l4 ? r->moe_intermediate : r->intermediate));
  if (l4) SQ_SET(c, "intermediate_size_mlp", json_integer(r->intermediate));
  if (ds) SQ_SET(c, "kv_lora_rank", json_integer(r->kv_lora_rank));
  SQ_SET(c, "max_position_embeddings",
         json_integer(mix  ? 32768
                      : q2 ? 8192
                      : q3 ? 40960
                      : ds ? 163840
                           : 10485760));
  if (q2 || q3) SQ_SET(c, "max_window_layers", json_integer(r->layers));
  if (q3) SQ_SET(c, "mlp_only_layers", json_array());
  SQ_SET(c, "model_type", json_string(l4 ? "llama4_text" : r->arch));
  if (!mix && !l4) SQ_SET(c, "moe_intermediate_size", json_integer(r->moe_intermediate));
  if (ds) {
    SQ_SET(c, "moe_layer_freq", json_integer(1));
    SQ_SET(c, "n_group", json_integer(r->n_group));
    SQ_SET(c, "n_routed_experts", json_integer(r->experts));
    SQ_SET(c, "n_shared_experts", json_integer(r->n_shared_experts));
  }
  if (l4) SQ_SET(c, "no_rope_layers", json_array());
  if (q2) SQ_SET(c, "norm_topk_prob", json_false());
  if (q3 || ds) SQ_SET(c, "norm_topk_prob", json_true());
  SQ_SET(c, "num_attention_heads", json_integer(r->heads));
  if (q2 || q3) SQ_SET(c, "num_experts", json_integer(r->experts));
  SQ_SET(c, "num_experts_per_tok", json_integer(r->experts_per_tok));
  SQ_SET(c, "num_hidden_layers", json_integer(r->layers));
  /* MLA has no grouped kv heads: DeepSeek-V3 writes num_key_value_heads = heads. */
  SQ_SET(c, "num_key_value_heads", json_integer(ds ? r->heads : r->kv_heads));
  if (mix || l4) SQ_SET(c, "num_local_experts", json_integer(r->experts));
  if (ds) SQ_SET(c, "num_nextn_predict_layers", json_integer(0));
  SQ_SET(c, "output_router_logits", json_false());
  if (ds) {
    SQ_SET(c, "pretraining_tp", json_integer(1));
    SQ_SET(c, "q_lora_rank", json_integer(r->q_lora_rank));
    SQ_SET(c, "qk_nope_head_dim", json_integer(r->qk_nope_dim));
    SQ_SET(c, "qk_rope_head_dim", json_integer(r->qk_rope_dim));
    if (r->fp8_blocks)
      SQ_SET(c, "quantization_config",
             json_pack("{s:s,s:s,s:s,s:[i,i]}", "activation_scheme", "dynamic", "fmt", "e4m3",
                       "quant_method", "fp8", "weight_block_size", SQ_FP8_BLOCK_DEFAULT,
                       SQ_FP8_BLOCK_DEFAULT));
  }
  SQ_SET(c, "rms_norm_eps", json_real(mix || l4 ? 1e-5 : 1e-6));
  if (ds)
    SQ_SET(c, "rope_scaling",
           json_pack("{s:i,s:i,s:f,s:f,s:f,s:i,s:s}", "beta_fast", 32, "beta_slow", 1, "factor",
                     40.0, "mscale", 1.0, "mscale_all_dim", 1.0, "original_max_position_embeddings",
                     4096, "type", "yarn"));
  else if (l4)
    SQ_SET(c, "rope_scaling",
           json_pack("{s:f,s:f,s:f,s:i,s:s}", "factor", 8.0, "high_freq_factor", 4.0,
                     "low_freq_factor", 1.0, "original_max_position_embeddings", 8192, "rope_type",
                     "llama3"));
  else if (q3)
    SQ_SET(c, "rope_scaling", json_null());
  SQ_SET(c, "rope_theta", json_real(ds ? 10000.0 : l4 ? 500000.0 : 1000000.0));
  if (ds) SQ_SET(c, "routed_scaling_factor", json_real(2.5));
  if (!ds) SQ_SET(c, "router_aux_loss_coef", json_real(mix ? 0.02 : 0.001));
  if (l4) SQ_SET(c, "router_jitter_noise", json_real(0.0));
  if (ds) {
    SQ_SET(c, "scoring_func", json_string("sigmoid"));
    SQ_SET(c, "seq_aux", json_true());
  }
  if (q2) SQ_SET(c, "shared_expert_intermediate_size", json_integer(r->shared_intermediate));
  if (mix || q3) SQ_SET(c, "sliding_window", json_null());
  if (q2) SQ_SET(c, "sliding_window", json_integer(32768));
  if (!l4) SQ_SET(c, "tie_word_embeddings", json_boolean(r->tie_word_embeddings));
  if (ds) {
    SQ_SET(c, "topk_group", json_integer(r->topk_group));
    SQ_SET(c, "topk_method", json_string("noaux_tc"));
  }
  SQ_SET(c, "torch_dtype", json_string(sq_dtype_torch_name(r->dtype)));
  if (!l4)
    SQ_SET(c, "transformers_version",
           json_string(mix  ? "4.36.0.dev0"
                       : q2 ? "4.39.0.dev0"
                       : q3 ? "4.51.0"
                            : "4.33.1"));
  SQ_SET(c, "use_cache", json_true());
  if (l4) SQ_SET(c, "use_qk_norm", json_false());
  if (q2 || q3) SQ_SET(c, "use_sliding_window", json_false());
  if (ds) SQ_SET(c, "v_head_dim", json_integer(r->v_head_dim));
  SQ_SET(c, "vocab_size", json_integer(r->vocab));
  if (!l4) return c;
  /* Llama4ForConditionalGeneration: the text model nested in text_config. */
  json_t *top = json_object();
  SQ_SET(top, "architectures", json_pack("[s]", "Llama4ForConditionalGeneration"));
  SQ_SET(top, "model_type", json_string("llama4"));
  SQ_SET(top, "text_config", c);
  SQ_SET(top, "tie_word_embeddings", json_boolean(r->tie_word_embeddings));
  SQ_SET(top, "torch_dtype", json_string(sq_dtype_torch_name(r->dtype)));
  SQ_SET(top, "transformers_version", json_string("4.51.0.dev0"));
  return top;
}

/* Weights synth stores as DeepSeek's block-scaled fp8: the decoder layers' Linears. */
bool sq_synth_is_fp8(const sq_tensor_spec *s, const sq_synth_options *r) {
  return r->fp8_blocks && s->role == SQ_ROLE_LINEAR && s->ndim == 2 && s->layer >= 0;
}

/* The dtype tensor s is stored in (DeepSeek-V3 keeps its score bias in F32). */
sq_dtype sq_synth_dtype(const sq_tensor_spec *s, const sq_synth_options *r) {
  if (strstr(s->name, "e_score_correction_bias")) return SQ_DTYPE_F32;
  return sq_synth_is_fp8(s, r) ? SQ_DTYPE_F8_E4M3 : r->dtype;
}

sq_status sq_synth_moe_gen_fused(const sq_tensor_spec *s, sq_dtype dt, sq_rng *r,
                                 sq_synth_work *w) {
  /* Each expert a (d_out, d_in) Linear with its own outlier columns, stored
   * transposed as (d_in, d_out). */
  const size_t es = sq_dtype_size(dt);
  const int64_t E = s->shape[0], din = s->shape[1], dout = s->shape[2];
  const size_t per = (size_t)din * (size_t)dout;
  for (int64_t e = 0; e < E; ++e) {
    sq_synth_outliers(r, din, w->outlier);
    sq_synth_rows(s, r, w->outlier, w->dirs, din, dout, w->chunk);
    for (int64_t o = 0; o < dout; ++o)
      for (int64_t i = 0; i < din; ++i) w->tr[i * dout + o] = w->chunk[o * din + i];
    if (sq_dtype_convert_from_f32(dt, w->tr, w->buf + (size_t)e * per * es, per) != 0)
      return sq_error_set(SQ_ERR_INTERNAL, "synth: cannot convert to %s", sq_dtype_name(dt));
  }
  return SQ_OK;
}

void sq_synth_moe_gen_fp8(const sq_tensor_spec *s, sq_rng *r, int64_t rows, int64_t cols,
                          sq_synth_work *w) {
  /* The whole tensor in fp32, then DeepSeek's per-block scales and codes. */
  sq_synth_rows(s, r, w->outlier, w->dirs, cols, rows, w->chunk);
  sq_fp8_block_quantize(w->chunk, rows, cols, SQ_FP8_BLOCK_DEFAULT, SQ_FP8_BLOCK_DEFAULT,
                        (uint8_t *)w->buf, w->scales);
}
