/* config.json parsing against the real published configs in
 * tests/assets/configs (Llama-3.1-8B/405B, Mistral-7B-v0.3, Qwen2.5-7B,
 * DeepSeek-V3, Llama-4-Maverick) and inline Qwen-MoE ones (Qwen1.5-MoE-A2.7B,
 * Qwen3-30B-A3B), one-line errors for bad keys, writing back
 * with unknown keys kept, and the dense tensor list, whose parameter count is
 * checked against the published counts and a formula written independently. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sharding/model_config.h"
#include "test_util.h"

static char *fixture(const char *name) {
  const char *src = getenv("SHARDQ_SOURCE_DIR");
  if (!src) sq_test_skip("SHARDQ_SOURCE_DIR not set");
  size_t n = strlen(src) + strlen(name) + 64;
  char *p = malloc(n);
  snprintf(p, n, "%s/tests/assets/configs/%s", src, name);
  return p;
}

static int load(const char *name, sq_model_config *c) {
  char *p = fixture(name);
  sq_status st = sq_model_config_load(p, c);
  SQ_EXPECT_MSG(st == SQ_OK, "%s: %s", name, sq_error_message());
  free(p);
  sq_error_clear();
  return st == SQ_OK;
}

/* The parameter formula of a dense Llama-family model, written as a sum per
 * layer of attention + MLP + norms, independent of the tensor list code. */
static uint64_t formula(uint64_t layers, uint64_t hidden, uint64_t heads, uint64_t kv, uint64_t hd,
                        uint64_t inter, uint64_t vocab, int tied, int qkv_bias) {
  uint64_t attn = hidden * (heads * hd) + 2 * hidden * (kv * hd) + (heads * hd) * hidden;
  if (qkv_bias) attn += heads * hd + 2 * kv * hd;
  uint64_t per_layer = attn + 3 * hidden * inter + 2 * hidden;
  return layers * per_layer + vocab * hidden * (tied ? 1 : 2) + hidden;
}

/* DeepSeek-V3: MLA attention, first_k_dense dense MLPs, then routed + shared
 * experts with a router and (noaux_tc) a score-correction bias. */
static uint64_t deepseek_formula(uint64_t L, uint64_t h, uint64_t heads, uint64_t q_lora,
                                 uint64_t kv_lora, uint64_t nope, uint64_t rope, uint64_t v,
                                 uint64_t inter, uint64_t moe_inter, uint64_t E, uint64_t shared,
                                 uint64_t kdense, uint64_t vocab) {
  uint64_t attn = q_lora * h + q_lora + heads * (nope + rope) * q_lora + (kv_lora + rope) * h +
                  kv_lora + heads * (nope + v) * kv_lora + h * heads * v;
  uint64_t dense = 3 * h * inter;
  uint64_t moe = (E + shared) * 3 * h * moe_inter + E * h + E;
  return L * (attn + 2 * h) + kdense * dense + (L - kdense) * moe + 2 * vocab * h + h;
}

/* Llama-4 text model: every step-th layer MoE (fused experts, router, one
 * shared expert), the others a dense MLP of intermediate_size_mlp. */
static uint64_t llama4_formula(uint64_t L, uint64_t h, uint64_t heads, uint64_t kv, uint64_t hd,
                               uint64_t inter, uint64_t inter_mlp, uint64_t E, uint64_t step,
                               uint64_t vocab) {
  uint64_t attn = 2 * h * heads * hd + 2 * h * kv * hd;
  uint64_t n_moe = L / step;
  uint64_t moe = E * h * 2 * inter + E * inter * h + 3 * h * inter + E * h;
  return L * (attn + 2 * h) + n_moe * moe + (L - n_moe) * 3 * h * inter_mlp + 2 * vocab * h + h;
}

static void test_llama_8b(void) {
  sq_model_config c;
  if (!load("Llama-3.1-8B", &c)) return;
  SQ_EXPECT(strcmp(c.model_type, "llama") == 0);
  SQ_EXPECT(strcmp(c.architecture, "LlamaForCausalLM") == 0);
  SQ_EXPECT(c.family == SQ_FAMILY_LLAMA);
  SQ_EXPECT_EQ_INT(c.hidden_size, 4096);
  SQ_EXPECT_EQ_INT(c.intermediate_size, 14336);
  SQ_EXPECT_EQ_INT(c.num_hidden_layers, 32);
  SQ_EXPECT_EQ_INT(c.num_attention_heads, 32);
  SQ_EXPECT_EQ_INT(c.num_key_value_heads, 8);
  SQ_EXPECT_EQ_INT(c.head_dim, 128);
  SQ_EXPECT_EQ_INT(c.vocab_size, 128256);
  SQ_EXPECT_EQ_INT(c.max_position_embeddings, 131072);
  SQ_EXPECT(c.rms_norm_eps == 1e-5);
  SQ_EXPECT(c.rope_theta == 500000.0);
  SQ_EXPECT(c.rope_scaling.kind == SQ_ROPE_LLAMA3);
  SQ_EXPECT(c.rope_scaling.factor == 8.0 && c.rope_scaling.low_freq_factor == 1.0 &&
            c.rope_scaling.high_freq_factor == 4.0);
  SQ_EXPECT_EQ_INT(c.rope_scaling.original_max_position_embeddings, 8192);
  SQ_EXPECT(!c.tie_word_embeddings && !c.attention_bias && !c.mlp_bias);
  SQ_EXPECT(c.torch_dtype == SQ_DTYPE_BF16);
  SQ_EXPECT_EQ_INT(c.bos_token_id, 128000);
  SQ_EXPECT_EQ_INT(c.n_eos, 1);
  SQ_EXPECT_EQ_INT(c.eos_token_ids[0], 128001);
  SQ_EXPECT_EQ_INT(c.num_experts, 0);
  SQ_EXPECT(sq_model_config_check_forward(&c) == SQ_OK);
  /* Published: 8,030,261,248 parameters. */
  SQ_EXPECT_EQ_INT(sq_model_config_param_count(&c), 8030261248ull);
  SQ_EXPECT_EQ_INT(sq_model_config_param_count(&c),
                   formula(32, 4096, 32, 8, 128, 14336, 128256, 0, 0));

  sq_tensor_spec *s = NULL;
  size_t n = 0;
  SQ_EXPECT(sq_model_config_tensors(&c, &s, &n) == SQ_OK);
  SQ_EXPECT_EQ_INT(n, 2 + 32 * 9 + 1); /* 291 tensors, as the real checkpoint's index */
  if (n == 291) {
    SQ_EXPECT(strcmp(s[0].name, "model.embed_tokens.weight") == 0);
    SQ_EXPECT(s[0].shape[0] == 128256 && s[0].shape[1] == 4096 && s[0].role == SQ_ROLE_EMBED);
    SQ_EXPECT(strcmp(s[1].name, "model.layers.0.input_layernorm.weight") == 0);
    SQ_EXPECT(strcmp(s[3].name, "model.layers.0.self_attn.k_proj.weight") == 0);
    SQ_EXPECT(s[3].shape[0] == 1024 && s[3].shape[1] == 4096 && s[3].role == SQ_ROLE_LINEAR);
    SQ_EXPECT(strcmp(s[9].name, "model.layers.0.mlp.down_proj.weight") == 0);
    SQ_EXPECT(s[9].shape[0] == 4096 && s[9].shape[1] == 14336);
    SQ_EXPECT(strcmp(s[289].name, "model.norm.weight") == 0 && s[289].ndim == 1);
    SQ_EXPECT(strcmp(s[290].name, "lm_head.weight") == 0 && s[290].role == SQ_ROLE_LM_HEAD);
    /* Names are unique and the roles agree with the name-based classifier. */
    for (size_t i = 0; i < n; ++i) {
      SQ_EXPECT_MSG(sq_tensor_role_of(s[i].name, s[i].ndim) == s[i].role, "%s", s[i].name);
      for (size_t j = i + 1; j < n; ++j)
        if (strcmp(s[i].name, s[j].name) == 0) SQ_EXPECT_MSG(0, "duplicate %s", s[i].name);
    }
  }
  free(s);
  sq_model_config_free(&c);
}

static void test_dense_fixtures(void) {
  sq_model_config c;
  if (load("Llama-3.1-405B", &c)) {
    SQ_EXPECT_EQ_INT(c.num_hidden_layers, 126);
    SQ_EXPECT_EQ_INT(c.hidden_size, 16384);
    /* Published: 405,853,388,800 parameters. */
    SQ_EXPECT_EQ_INT(sq_model_config_param_count(&c), 405853388800ull);
    SQ_EXPECT_EQ_INT(sq_model_config_param_count(&c),
                     formula(126, 16384, 128, 8, 128, 53248, 128256, 0, 0));
    sq_model_config_free(&c);
  }
  if (load("Mistral-7B-v0.3", &c)) {
    SQ_EXPECT(c.family == SQ_FAMILY_MISTRAL && c.rope_scaling.kind == SQ_ROPE_NONE);
    SQ_EXPECT_EQ_INT(c.vocab_size, 32768);
    SQ_EXPECT(c.rope_theta == 1e6);
    SQ_EXPECT_EQ_INT(c.bos_token_id, 1);
    SQ_EXPECT_EQ_INT(sq_model_config_param_count(&c),
                     formula(32, 4096, 32, 8, 128, 14336, 32768, 0, 0));
    SQ_EXPECT_EQ_INT(sq_model_config_param_count(&c), 7248023552ull);
    sq_model_config_free(&c);
  }
  if (load("Qwen2.5-7B", &c)) {
    SQ_EXPECT(c.family == SQ_FAMILY_QWEN2);
    SQ_EXPECT(c.attention_bias &&
              !c.o_proj_bias); /* no attention_bias key, but qwen2 has q/k/v bias */
    SQ_EXPECT(c.rms_norm_eps == 1e-6);
    SQ_EXPECT_EQ_INT(c.num_key_value_heads, 4);
    SQ_EXPECT_EQ_INT(c.head_dim, 128);
    SQ_EXPECT_EQ_INT(sq_model_config_param_count(&c),
                     formula(28, 3584, 28, 4, 128, 18944, 152064, 0, 1));
    SQ_EXPECT_EQ_INT(sq_model_config_param_count(&c), 7615616512ull); /* "7.61B" */
    sq_tensor_spec *s = NULL;
    size_t n = 0;
    SQ_EXPECT(sq_model_config_tensors(&c, &s, &n) == SQ_OK);
    SQ_EXPECT_EQ_INT(n, 2 + 28 * 12 + 1);
    if (n > 4) {
      SQ_EXPECT(strcmp(s[3].name, "model.layers.0.self_attn.q_proj.bias") == 0);
      SQ_EXPECT(s[3].ndim == 1 && s[3].shape[0] == 3584 && s[3].role == SQ_ROLE_BIAS);
    }
    free(s);
    sq_model_config_free(&c);
  }
}

static void test_moe_fixtures(void) {
  sq_model_config c;
  if (load("DeepSeek-V3", &c)) {
    SQ_EXPECT(c.family == SQ_FAMILY_DEEPSEEK_V3);
    SQ_EXPECT_EQ_INT(c.num_experts, 256);
    SQ_EXPECT_EQ_INT(c.num_experts_per_tok, 8);
    SQ_EXPECT_EQ_INT(c.n_shared_experts, 1);
    SQ_EXPECT_EQ_INT(c.moe_intermediate_size, 2048);
    SQ_EXPECT_EQ_INT(c.first_k_dense_replace, 3);
    SQ_EXPECT_EQ_INT(c.q_lora_rank, 1536);
    SQ_EXPECT_EQ_INT(c.kv_lora_rank, 512);
    SQ_EXPECT_EQ_INT(c.qk_nope_head_dim, 128);
    SQ_EXPECT_EQ_INT(c.qk_rope_head_dim, 64);
    SQ_EXPECT_EQ_INT(c.v_head_dim, 128);
    SQ_EXPECT_EQ_INT(c.n_group, 8);
    SQ_EXPECT_EQ_INT(c.topk_group, 4);
    SQ_EXPECT_EQ_INT(c.num_hidden_layers, 61);
    SQ_EXPECT(c.rope_theta == 10000.0); /* an integer in the file */
    SQ_EXPECT(c.rope_scaling.kind == SQ_ROPE_OTHER && strcmp(c.rope_scaling.type, "yarn") == 0);
    SQ_EXPECT(c.rope_scaling.factor == 40.0);
    SQ_EXPECT_EQ_INT(c.rope_scaling.original_max_position_embeddings, 4096);
    SQ_EXPECT_EQ_INT(c.bos_token_id, 0);
    SQ_EXPECT(sq_model_config_check_forward(&c) == SQ_ERR_UNSUPPORTED);
    SQ_EXPECT(strstr(sq_error_message(), "deepseek_v3") != NULL);
    sq_error_clear();
    /* Main model (no MTP layer): published "671B total parameters". */
    uint64_t want =
        deepseek_formula(61, 7168, 128, 1536, 512, 128, 64, 128, 18432, 2048, 256, 1, 3, 129280);
    SQ_EXPECT_EQ_INT(sq_model_config_param_count(&c), want);
    SQ_EXPECT_NEAR((double)want, 671e9, 0, 0.005);
    sq_tensor_spec *s = NULL;
    size_t n = 0;
    SQ_EXPECT(sq_model_config_tensors(&c, &s, &n) == SQ_OK);
    /* per layer: 2 norms + 7 attention; 3 dense mlp or 2 router + 3 x (256 + 1) */
    SQ_EXPECT_EQ_INT(n, 2 + 61 * 9 + 3 * 3 + 58 * (2 + 3 * 257) + 1);
    for (size_t i = 0; i < n; ++i)
      if (strcmp(s[i].name, "model.layers.3.mlp.experts.255.down_proj.weight") == 0)
        SQ_EXPECT(s[i].shape[0] == 7168 && s[i].shape[1] == 2048 && s[i].role == SQ_ROLE_LINEAR);
      else if (strcmp(s[i].name, "model.layers.60.self_attn.kv_b_proj.weight") == 0)
        SQ_EXPECT(s[i].shape[0] == 128 * 256 && s[i].shape[1] == 512);
      else if (strcmp(s[i].name, "model.layers.3.mlp.gate.weight") == 0)
        SQ_EXPECT(s[i].role == SQ_ROLE_ROUTER && s[i].shape[0] == 256);
    free(s);
    sq_model_config_free(&c);
  }
  if (load("Llama-4-Maverick-17B-128E-Instruct", &c)) {
    SQ_EXPECT(c.family == SQ_FAMILY_LLAMA4);
    SQ_EXPECT(strcmp(c.model_type, "llama4") == 0);
    SQ_EXPECT(strcmp(c.architecture, "Llama4ForConditionalGeneration") == 0);
    SQ_EXPECT_EQ_INT(c.hidden_size, 5120); /* from text_config, not vision_config's 1408 */
    SQ_EXPECT_EQ_INT(c.num_hidden_layers, 48);
    SQ_EXPECT_EQ_INT(c.num_attention_heads, 40);
    SQ_EXPECT_EQ_INT(c.num_key_value_heads, 8);
    SQ_EXPECT_EQ_INT(c.head_dim, 128);
    SQ_EXPECT_EQ_INT(c.num_experts, 128);
    SQ_EXPECT_EQ_INT(c.num_experts_per_tok, 1);
    SQ_EXPECT_EQ_INT(c.interleave_moe_layer_step, 2);
    SQ_EXPECT_EQ_INT(c.intermediate_size, 8192);
    SQ_EXPECT_EQ_INT(c.intermediate_size_mlp, 16384);
    SQ_EXPECT_EQ_INT(c.vocab_size, 202048);
    SQ_EXPECT(c.rope_scaling.kind == SQ_ROPE_NONE);
    SQ_EXPECT_EQ_INT(c.n_eos, 3);
    SQ_EXPECT(c.eos_token_ids[0] == 200001 && c.eos_token_ids[2] == 200008);
    SQ_EXPECT(c.torch_dtype == SQ_DTYPE_BF16);
    SQ_EXPECT_EQ_INT(c.n_shared_experts, 1);
    /* Text model: published "400B total parameters" (402B with the vision tower). */
    uint64_t want = llama4_formula(48, 5120, 40, 8, 128, 8192, 16384, 128, 2, 202048);
    SQ_EXPECT_EQ_INT(sq_model_config_param_count(&c), want);
    SQ_EXPECT_NEAR((double)want, 400e9, 0, 0.005);
    sq_tensor_spec *s = NULL;
    size_t n = 0;
    SQ_EXPECT(sq_model_config_tensors(&c, &s, &n) == SQ_OK);
    SQ_EXPECT_EQ_INT(n, 2 + 48 * 6 + 24 * 3 + 24 * 6 + 1);
    if (n > 20) {
      SQ_EXPECT(strcmp(s[0].name, "language_model.model.embed_tokens.weight") == 0);
      SQ_EXPECT(strcmp(s[n - 1].name, "language_model.lm_head.weight") == 0);
      /* layer 0 dense (intermediate_size_mlp), layer 1 MoE */
      SQ_EXPECT(strcmp(s[7].name, "language_model.model.layers.0.feed_forward.gate_proj.weight") ==
                    0 &&
                s[7].shape[0] == 16384);
      SQ_EXPECT(strcmp(s[16].name, "language_model.model.layers.1.feed_forward.router.weight") ==
                0);
      SQ_EXPECT(strcmp(s[17].name,
                       "language_model.model.layers.1.feed_forward.experts.gate_up_proj") == 0 &&
                s[17].ndim == 3 && s[17].shape[0] == 128 && s[17].shape[1] == 5120 &&
                s[17].shape[2] == 16384);
    }
    free(s);
    sq_model_config_free(&c);
  }
  /* Mixtral-8x7B (config written inline): published 46,702,792,704 parameters. */
  const char *mixtral =
      "{\"architectures\": [\"MixtralForCausalLM\"], \"hidden_size\": 4096, \"intermediate_size\": "
      "14336, \"model_type\": \"mixtral\", \"num_attention_heads\": 32, \"num_experts_per_tok\": "
      "2, "
      "\"num_hidden_layers\": 32, \"num_key_value_heads\": 8, \"num_local_experts\": 8, "
      "\"rms_norm_eps\": 1e-05, \"rope_theta\": 1000000.0, \"vocab_size\": 32000}";
  if (sq_model_config_parse("mixtral.json", mixtral, strlen(mixtral), &c) == SQ_OK) {
    SQ_EXPECT(c.family == SQ_FAMILY_MIXTRAL && c.num_experts == 8 && c.num_experts_per_tok == 2);
    uint64_t per_layer =
        2 * 4096 * 4096ull + 2 * 4096 * 1024ull + 2 * 4096 + 8 * 3 * 4096 * 14336ull + 8 * 4096;
    SQ_EXPECT_EQ_INT(sq_model_config_param_count(&c), 32 * per_layer + 2 * 32000 * 4096ull + 4096);
    SQ_EXPECT_EQ_INT(sq_model_config_param_count(&c), 46702792704ull);
    sq_model_config_free(&c);
  } else {
    SQ_EXPECT_MSG(0, "mixtral: %s", sq_error_message());
  }
  /* A family without a list: a one-line unsupported error naming it. */
  const char *other =
      "{\"model_type\": \"gpt_neox\", \"hidden_size\": 64, \"intermediate_size\": "
      "64, \"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"vocab_size\": 10}";
  if (sq_model_config_parse("other.json", other, strlen(other), &c) == SQ_OK) {
    sq_tensor_spec *s = NULL;
    size_t n = 0;
    SQ_EXPECT(sq_model_config_tensors(&c, &s, &n) == SQ_ERR_UNSUPPORTED && !s && !n);
    SQ_EXPECT(strstr(sq_error_message(), "gpt_neox") != NULL);
    SQ_EXPECT(strchr(sq_error_message(), '\n') == NULL);
    sq_error_clear();
    sq_model_config_free(&c);
  }
}

/* Qwen-MoE, written as a sum over a layer's modules (Qwen2MoeDecoderLayer /
 * Qwen3MoeDecoderLayer), independent of the tensor list: attention (q/k/v/o,
 * + q/k/v bias for qwen2_moe, + per-head q_norm/k_norm for qwen3_moe), two
 * norms, and either a dense MLP or router + experts (+ shared expert and its
 * 1-output gate for qwen2_moe). sparse[l] says which layers are MoE. */
static uint64_t qwen_moe_formula(int qwen3, uint64_t L, const int *sparse, uint64_t h,
                                 uint64_t heads, uint64_t kv, uint64_t hd, uint64_t inter,
                                 uint64_t moe_inter, uint64_t shared_inter, uint64_t E,
                                 uint64_t vocab) {
  const uint64_t q = heads * hd, k = kv * hd;
  uint64_t total = vocab * h /* embed */ + h /* final norm */ + vocab * h /* lm_head */;
  for (uint64_t l = 0; l < L; ++l) {
    total += h * q + h * k + h * k + q * h; /* q, k, v, o */
    total += qwen3 ? 2 * hd : q + 2 * k;    /* q_norm + k_norm, or q/k/v biases */
    total += h + h;                         /* input / post-attention layernorm */
    if (!sparse[l]) {
      total += 3 * h * inter;
      continue;
    }
    total += E * h;                 /* router */
    total += E * 3 * h * moe_inter; /* routed experts */
    if (!qwen3) total += 3 * h * shared_inter + h;
  }
  return total;
}

/* Checks shared by the Qwen-MoE configs: roles agree with the classifier, names
 * are unique, the count is what the formula's structure implies. */
static void check_qwen_list(const sq_model_config *c, size_t want_n) {
  sq_tensor_spec *s = NULL;
  size_t n = 0;
  SQ_EXPECT_MSG(sq_model_config_tensors(c, &s, &n) == SQ_OK, "%s", sq_error_message());
  SQ_EXPECT_EQ_INT(n, want_n);
  SQ_EXPECT_EQ_INT(sq_model_config_tensor_count(c), want_n);
  for (size_t i = 0; i < n; ++i) {
    SQ_EXPECT_MSG(sq_tensor_role_of(s[i].name, s[i].ndim) == s[i].role, "%s", s[i].name);
    for (size_t j = i + 1; j < n && j < i + 800; ++j) /* duplicates would sit close */
      if (strcmp(s[i].name, s[j].name) == 0) SQ_EXPECT_MSG(0, "duplicate %s", s[i].name);
  }
  free(s);
}

/* Find tensor name in c's list: 1 and *out filled, or 0. */
static int find_spec(const sq_model_config *c, const char *name, sq_tensor_spec *out) {
  sq_tensor_spec *s = NULL;
  size_t n = 0;
  int found = 0;
  if (sq_model_config_tensors(c, &s, &n) != SQ_OK) {
    sq_error_clear();
    return 0;
  }
  for (size_t i = 0; i < n && !found; ++i)
    if (strcmp(s[i].name, name) == 0) {
      *out = s[i];
      found = 1;
    }
  free(s);
  return found;
}

static void test_qwen_moe(void) {
  sq_model_config c;
  sq_tensor_spec t;
  int sparse[48];
  for (int l = 0; l < 48; ++l) sparse[l] = 1;
  /* Qwen1.5-MoE-A2.7B's config.json (published 14.3B parameters). No
   * attention_bias key: Qwen2MoeAttention has q/k/v biases regardless. */
  const char *q2 =
      "{\"architectures\": [\"Qwen2MoeForCausalLM\"], \"attention_dropout\": 0.0, "
      "\"bos_token_id\": 151643, \"eos_token_id\": 151643, \"hidden_act\": \"silu\", "
      "\"hidden_size\": 2048, \"initializer_range\": 0.02, \"intermediate_size\": 5632, "
      "\"max_position_embeddings\": 8192, \"max_window_layers\": 21, \"model_type\": "
      "\"qwen2_moe\", \"num_attention_heads\": 16, \"num_hidden_layers\": 24, "
      "\"num_key_value_heads\": 16, \"rms_norm_eps\": 1e-06, \"rope_theta\": 1000000.0, "
      "\"sliding_window\": 32768, \"tie_word_embeddings\": false, \"torch_dtype\": "
      "\"bfloat16\", \"transformers_version\": \"4.39.0.dev0\", \"use_cache\": true, "
      "\"use_sliding_window\": false, \"vocab_size\": 151936, \"decoder_sparse_step\": 1, "
      "\"moe_intermediate_size\": 1408, \"shared_expert_intermediate_size\": 5632, "
      "\"num_experts_per_tok\": 4, \"num_experts\": 60, \"norm_topk_prob\": false, "
      "\"output_router_logits\": false, \"router_aux_loss_coef\": 0.001}";
  if (sq_model_config_parse("Qwen1.5-MoE-A2.7B", q2, strlen(q2), &c) == SQ_OK) {
    SQ_EXPECT(c.family == SQ_FAMILY_QWEN_MOE && c.attention_bias && !c.o_proj_bias);
    SQ_EXPECT_EQ_INT(c.decoder_sparse_step, 1);
    SQ_EXPECT_EQ_INT(c.shared_expert_intermediate_size, 5632);
    uint64_t want =
        qwen_moe_formula(0, 24, sparse, 2048, 16, 16, 128, 5632, 1408, 5632, 60, 151936);
    SQ_EXPECT_EQ_INT(sq_model_config_param_count(&c), want);
    SQ_EXPECT_EQ_INT((want + 50000000) / 100000000, 143); /* "14.3B" */
    /* per layer: 2 norms, q/k/v/o + 3 biases, router, 60 x 3 experts, 3 shared + gate */
    check_qwen_list(&c, 2 + 24 * (2 + 7 + 1 + 60 * 3 + 3 + 1) + 1);
    SQ_EXPECT(find_spec(&c, "model.layers.0.self_attn.v_proj.bias", &t) && t.ndim == 1 &&
              t.shape[0] == 2048 && t.role == SQ_ROLE_BIAS);
    SQ_EXPECT(!find_spec(&c, "model.layers.0.self_attn.o_proj.bias", &t));
    SQ_EXPECT(find_spec(&c, "model.layers.23.mlp.experts.59.down_proj.weight", &t) &&
              t.shape[0] == 2048 && t.shape[1] == 1408 && t.role == SQ_ROLE_LINEAR);
    SQ_EXPECT(find_spec(&c, "model.layers.5.mlp.shared_expert.up_proj.weight", &t) &&
              t.shape[0] == 5632 && t.shape[1] == 2048);
    SQ_EXPECT(find_spec(&c, "model.layers.5.mlp.shared_expert_gate.weight", &t) && t.ndim == 2 &&
              t.shape[0] == 1 && t.shape[1] == 2048 && t.role == SQ_ROLE_ROUTER);
    SQ_EXPECT(find_spec(&c, "model.layers.5.mlp.gate.weight", &t) && t.shape[0] == 60 &&
              t.role == SQ_ROLE_ROUTER);
    /* The implied bias is not written back as a key the file never had. */
    char *text = NULL;
    SQ_EXPECT(sq_model_config_to_json(&c, &text) == SQ_OK);
    SQ_EXPECT(text && !strstr(text, "attention_bias"));
    free(text);
    sq_model_config_free(&c);
  }
  /* Qwen3-30B-A3B's config.json (published 30.5B parameters): no biases, q/k norms,
   * no shared expert. */
  const char *q3 =
      "{\"architectures\": [\"Qwen3MoeForCausalLM\"], \"attention_bias\": false, "
      "\"attention_dropout\": 0.0, \"bos_token_id\": 151643, \"decoder_sparse_step\": 1, "
      "\"eos_token_id\": 151645, \"head_dim\": 128, \"hidden_act\": \"silu\", "
      "\"hidden_size\": 2048, \"initializer_range\": 0.02, \"intermediate_size\": 6144, "
      "\"max_position_embeddings\": 40960, \"max_window_layers\": 48, \"mlp_only_layers\": "
      "[], \"model_type\": \"qwen3_moe\", \"moe_intermediate_size\": 768, "
      "\"norm_topk_prob\": true, \"num_attention_heads\": 32, \"num_experts\": 128, "
      "\"num_experts_per_tok\": 8, \"num_hidden_layers\": 48, \"num_key_value_heads\": 4, "
      "\"output_router_logits\": false, \"rms_norm_eps\": 1e-06, \"rope_scaling\": null, "
      "\"rope_theta\": 1000000.0, \"router_aux_loss_coef\": 0.001, \"sliding_window\": "
      "null, \"tie_word_embeddings\": false, \"torch_dtype\": \"bfloat16\", "
      "\"transformers_version\": \"4.51.0\", \"use_cache\": true, \"use_sliding_window\": "
      "false, \"vocab_size\": 151936}";
  if (sq_model_config_parse("Qwen3-30B-A3B", q3, strlen(q3), &c) == SQ_OK) {
    SQ_EXPECT(c.family == SQ_FAMILY_QWEN_MOE && !c.attention_bias);
    uint64_t want = qwen_moe_formula(1, 48, sparse, 2048, 32, 4, 128, 6144, 768, 0, 128, 151936);
    SQ_EXPECT_EQ_INT(sq_model_config_param_count(&c), want);
    SQ_EXPECT_EQ_INT((want + 50000000) / 100000000, 305); /* "30.5B" */
    /* per layer: 2 norms, q/k/v/o, q/k norms, router, 128 x 3 experts */
    check_qwen_list(&c, 2 + 48 * (2 + 4 + 2 + 1 + 128 * 3) + 1);
    SQ_EXPECT(find_spec(&c, "model.layers.47.self_attn.k_norm.weight", &t) && t.ndim == 1 &&
              t.shape[0] == 128 && t.role == SQ_ROLE_NORM);
    SQ_EXPECT(find_spec(&c, "model.layers.0.self_attn.q_proj.weight", &t) && t.shape[0] == 4096 &&
              t.shape[1] == 2048);
    SQ_EXPECT(!find_spec(&c, "model.layers.0.self_attn.q_proj.bias", &t));
    SQ_EXPECT(!find_spec(&c, "model.layers.0.mlp.shared_expert_gate.weight", &t));
    sq_model_config_free(&c);
  }
  /* decoder_sparse_step 2 with mlp_only_layers [3]: MoE iff (l + 1) % 2 == 0 and
   * l != 3, so layers 1 and 5 (as transformers' Qwen2MoeDecoderLayer). */
  const char *step =
      "{\"model_type\": \"qwen2_moe\", \"hidden_size\": 64, \"intermediate_size\": 96, "
      "\"num_hidden_layers\": 6, \"num_attention_heads\": 4, \"num_key_value_heads\": 2, "
      "\"vocab_size\": 100, \"num_experts\": 4, \"moe_intermediate_size\": 32, "
      "\"shared_expert_intermediate_size\": 48, \"decoder_sparse_step\": 2, "
      "\"mlp_only_layers\": [3], \"tie_word_embeddings\": true}";
  if (sq_model_config_parse("step.json", step, strlen(step), &c) == SQ_OK) {
    const int sp[6] = {0, 1, 0, 0, 0, 1};
    uint64_t want = qwen_moe_formula(0, 6, sp, 64, 4, 2, 16, 96, 32, 48, 4, 100) - 100 * 64;
    SQ_EXPECT_EQ_INT(sq_model_config_param_count(&c), want);
    SQ_EXPECT(find_spec(&c, "model.layers.3.mlp.down_proj.weight", &t) && t.shape[1] == 96);
    SQ_EXPECT(!find_spec(&c, "model.layers.3.mlp.gate.weight", &t));
    SQ_EXPECT(find_spec(&c, "model.layers.5.mlp.experts.3.gate_proj.weight", &t) &&
              t.shape[0] == 32 && t.shape[1] == 64);
    SQ_EXPECT(!find_spec(&c, "lm_head.weight", &t));
    check_qwen_list(&c, 1 + 6 * (2 + 7) + 4 * 3 + 2 * (1 + 4 * 3 + 3 + 1) + 1);
    sq_model_config_free(&c);
  }
  /* A bad decoder_sparse_step is one line naming the key. */
  const char *bad =
      "{\"model_type\": \"qwen2_moe\", \"hidden_size\": 64, \"intermediate_size\": 96, "
      "\"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"vocab_size\": 100, "
      "\"decoder_sparse_step\": 0}";
  SQ_EXPECT(sq_model_config_parse("bad.json", bad, strlen(bad), &c) == SQ_ERR_FORMAT);
  SQ_EXPECT(strstr(sq_error_message(), "decoder_sparse_step") != NULL);
  sq_error_clear();
  sq_model_config_free(&c);
}

/* Parse text and expect failure status st with a message containing want. */
static void expect_error(const char *text, sq_status st, const char *want) {
  sq_model_config c;
  sq_status got = sq_model_config_parse("config.json", text, strlen(text), &c);
  SQ_EXPECT_MSG(got == st, "status %d, want %d for %s", (int)got, (int)st, text);
  SQ_EXPECT_MSG(strstr(sq_error_message(), want) != NULL, "message '%s' lacks '%s'",
                sq_error_message(), want);
  SQ_EXPECT_MSG(strchr(sq_error_message(), '\n') == NULL, "message is not one line");
  SQ_EXPECT(c.json == NULL);
  sq_error_clear();
  sq_model_config_free(&c);
}

#define BASE_HEAD "{\"model_type\": \"llama\", "
#define BASE_DIMS                                                                     \
  "\"intermediate_size\": 64, \"num_hidden_layers\": 2, \"num_attention_heads\": 4, " \
  "\"vocab_size\": 100"

static void test_errors(void) {
  expect_error(BASE_HEAD "\"hidden_size\": \"4096\", " BASE_DIMS "}", SQ_ERR_FORMAT,
               "config.json: key 'hidden_size' must be a positive integer (got \"4096\")");
  expect_error(BASE_HEAD BASE_DIMS "}", SQ_ERR_FORMAT, "config.json: missing key 'hidden_size'");
  expect_error(BASE_HEAD
               "\"hidden_size\": 32, \"intermediate_size\": 64, \"num_hidden_layers\": "
               "-2, \"num_attention_heads\": 4, \"vocab_size\": 100}",
               SQ_ERR_FORMAT, "key 'num_hidden_layers' must be a positive integer (got -2)");
  expect_error(BASE_HEAD "\"hidden_size\": 4294967296, " BASE_DIMS "}", SQ_ERR_FORMAT,
               "key 'hidden_size' must be below 2^31 (got 4294967296)");
  expect_error(BASE_HEAD "\"hidden_size\": 32.0, " BASE_DIMS "}", SQ_ERR_FORMAT,
               "key 'hidden_size' must be a positive integer (got 32.0)");
  expect_error(BASE_HEAD "\"hidden_size\": 32, \"num_key_value_heads\": 3, " BASE_DIMS "}",
               SQ_ERR_FORMAT, "key 'num_key_value_heads' (3) must divide num_attention_heads (4)");
  expect_error(BASE_HEAD "\"hidden_size\": 30, " BASE_DIMS "}", SQ_ERR_FORMAT, "add \"head_dim\"");
  expect_error(BASE_HEAD "\"hidden_size\": 32, \"rms_norm_eps\": \"1e-5\", " BASE_DIMS "}",
               SQ_ERR_FORMAT, "key 'rms_norm_eps' must be a positive number");
  expect_error(BASE_HEAD "\"hidden_size\": 32, \"tie_word_embeddings\": 1, " BASE_DIMS "}",
               SQ_ERR_FORMAT, "key 'tie_word_embeddings' must be true or false (got 1)");
  expect_error(BASE_HEAD "\"hidden_size\": 32, \"torch_dtype\": \"int7\", " BASE_DIMS "}",
               SQ_ERR_FORMAT, "key 'torch_dtype' must be \"bfloat16\"");
  expect_error(BASE_HEAD "\"hidden_size\": 32, \"eos_token_id\": [1, \"2\"], " BASE_DIMS "}",
               SQ_ERR_FORMAT, "key 'eos_token_id' must be a token id or a list");
  expect_error(BASE_HEAD
               "\"hidden_size\": 32, \"rope_scaling\": {\"rope_type\": \"llama3\", "
               "\"factor\": 8.0, \"high_freq_factor\": 4.0, "
               "\"original_max_position_embeddings\": 8192}, " BASE_DIMS "}",
               SQ_ERR_FORMAT, "missing key 'rope_scaling.low_freq_factor'");
  expect_error(BASE_HEAD "\"hidden_size\": 32, \"rope_scaling\": 8, " BASE_DIMS "}", SQ_ERR_FORMAT,
               "key 'rope_scaling' must be null or an object (got 8)");
  expect_error(BASE_HEAD "\"hidden_size\": 32, \"architectures\": \"LlamaForCausalLM\", " BASE_DIMS
                         "}",
               SQ_ERR_FORMAT, "key 'architectures' must be a non-empty list");
  expect_error("{\"hidden_size\": 32}", SQ_ERR_FORMAT, "missing key 'model_type'");
  expect_error("{\"model_type\": \"llama\",", SQ_ERR_FORMAT, "config.json:1:");
  expect_error("[1, 2]", SQ_ERR_FORMAT, "top level must be a JSON object");
  expect_error("{\"model_type\": \"llama4\"}", SQ_ERR_FORMAT, "missing key 'text_config'");
  expect_error("{\"model_type\": \"llama4\", \"text_config\": {\"hidden_size\": 0}}", SQ_ERR_FORMAT,
               "key 'text_config.hidden_size' must be a positive integer (got 0)");
  expect_error(BASE_HEAD "\"hidden_size\": 32, \"hidden_size\": 32, " BASE_DIMS "}", SQ_ERR_FORMAT,
               "duplicate");

  /* Loading a directory without config.json names the file. */
  sq_model_config c;
  SQ_EXPECT(sq_model_config_load("/nonexistent-shardq-dir", &c) != SQ_OK);
  SQ_EXPECT(strstr(sq_error_message(), "/nonexistent-shardq-dir/config.json") != NULL);
  sq_error_clear();

  /* Unsupported rope scaling is parsed, and rejected only by the forward check. */
  const char *yarn = BASE_HEAD
      "\"hidden_size\": 32, \"rope_scaling\": {\"type\": \"yarn\", "
      "\"factor\": 4.0}, " BASE_DIMS "}";
  SQ_EXPECT(sq_model_config_parse("config.json", yarn, strlen(yarn), &c) == SQ_OK);
  SQ_EXPECT(c.rope_scaling.kind == SQ_ROPE_OTHER && c.rope_scaling.factor == 4.0);
  SQ_EXPECT(sq_model_config_check_forward(&c) == SQ_ERR_UNSUPPORTED);
  SQ_EXPECT(strstr(sq_error_message(), "'yarn'") != NULL);
  sq_error_clear();
  sq_model_config_free(&c);

  /* Defaults: kv heads = heads, head_dim = hidden/heads, no tying, eps 1e-6, theta 1e4. */
  const char *minimal = BASE_HEAD "\"hidden_size\": 32, " BASE_DIMS ", \"bos_token_id\": null}";
  SQ_EXPECT(sq_model_config_parse("config.json", minimal, strlen(minimal), &c) == SQ_OK);
  SQ_EXPECT_EQ_INT(c.num_key_value_heads, 4);
  SQ_EXPECT_EQ_INT(c.head_dim, 8);
  SQ_EXPECT(!c.tie_word_embeddings && c.rms_norm_eps == 1e-6 && c.rope_theta == 10000.0);
  SQ_EXPECT_EQ_INT(c.bos_token_id, -1);
  SQ_EXPECT(c.torch_dtype == SQ_DTYPE_INVALID);
  sq_model_config_free(&c);

  /* Llama's attention_bias biases q, k, v and o; tying drops lm_head. */
  const char *biased = BASE_HEAD
      "\"hidden_size\": 32, \"attention_bias\": true, \"mlp_bias\": "
      "true, \"tie_word_embeddings\": true, " BASE_DIMS "}";
  SQ_EXPECT(sq_model_config_parse("config.json", biased, strlen(biased), &c) == SQ_OK);
  SQ_EXPECT(c.attention_bias && c.o_proj_bias && c.mlp_bias);
  /* formula + the o and MLP biases it leaves out */
  uint64_t want = formula(2, 32, 4, 4, 8, 64, 100, 1, 1) + 2 * (32 + 64 + 64 + 32);
  SQ_EXPECT_EQ_INT(sq_model_config_param_count(&c), want);
  SQ_EXPECT_EQ_INT(sq_model_config_tensor_count(&c), 2 + 2 * 16);
  sq_model_config_free(&c);
}

static void test_roundtrip(void) {
  sq_model_config c, d;
  if (!load("Llama-3.1-8B", &c)) return;
  c.num_hidden_layers = 2;
  c.torch_dtype = SQ_DTYPE_F16;
  char *text = NULL;
  SQ_EXPECT(sq_model_config_to_json(&c, &text) == SQ_OK);
  if (text) {
    SQ_EXPECT(strstr(text, "\"rms_norm_eps\": 1e-05") || strstr(text, "\"rms_norm_eps\": 1e-5"));
    SQ_EXPECT(strstr(text, "\"pretraining_tp\": 1") != NULL); /* unknown keys kept */
    SQ_EXPECT(strstr(text, "\"transformers_version\": \"4.43.0.dev0\"") != NULL);
    SQ_EXPECT(sq_model_config_parse("again", text, strlen(text), &d) == SQ_OK);
    SQ_EXPECT_EQ_INT(d.num_hidden_layers, 2);
    SQ_EXPECT(d.torch_dtype == SQ_DTYPE_F16);
    SQ_EXPECT(d.hidden_size == c.hidden_size && d.num_key_value_heads == c.num_key_value_heads &&
              d.vocab_size == c.vocab_size && d.rms_norm_eps == c.rms_norm_eps &&
              d.rope_theta == c.rope_theta && d.rope_scaling.kind == SQ_ROPE_LLAMA3 &&
              d.rope_scaling.factor == 8.0 && d.bos_token_id == 128000);
    SQ_EXPECT(json_object_get(d.json, "head_dim") == NULL); /* not invented */
    sq_model_config_free(&d);
  }
  free(text);
  sq_model_config_free(&c);

  /* Nested and unknown objects survive: DeepSeek's quantization_config, Llama-4's vision_config. */
  if (load("DeepSeek-V3", &c)) {
    SQ_EXPECT(sq_model_config_to_json(&c, &text) == SQ_OK);
    SQ_EXPECT(text && strstr(text, "\"weight_block_size\"") && strstr(text, "\"noaux_tc\""));
    SQ_EXPECT(text && sq_model_config_parse("again", text, strlen(text), &d) == SQ_OK &&
              d.num_experts == 256 && d.kv_lora_rank == 512);
    sq_model_config_free(&d);
    free(text);
    sq_model_config_free(&c);
  }
  if (load("Llama-4-Maverick-17B-128E-Instruct", &c)) {
    c.num_hidden_layers = 4;
    SQ_EXPECT(sq_model_config_to_json(&c, &text) == SQ_OK);
    SQ_EXPECT(text && sq_model_config_parse("again", text, strlen(text), &d) == SQ_OK);
    SQ_EXPECT_EQ_INT(d.num_hidden_layers, 4);
    json_t *v = json_object_get(json_object_get(d.json, "vision_config"), "num_hidden_layers");
    SQ_EXPECT(v && json_integer_value(v) == 34);                     /* vision model untouched */
    SQ_EXPECT(json_object_get(d.json, "num_hidden_layers") == NULL); /* written in text_config */
    sq_model_config_free(&d);
    free(text);
    sq_model_config_free(&c);
  }
}

int main(void) {
  test_llama_8b();
  test_dense_fixtures();
  test_moe_fixtures();
  test_qwen_moe();
  test_errors();
  test_roundtrip();
  return sq_test_result("test_model_config");
}
