/* MoE checkpoint + one layer's weight buffers (see moe_model.h). */
#include "worker/moe_model.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sharding/checkpoint.h"
#include "sharding/fp8_block.h"
#include "worker/model.h"

static int sq_mm_ends(const char *s, const char *suffix) {
  size_t n = strlen(s), k = strlen(suffix);
  return n >= k && !strcmp(s + n - k, suffix);
}

/* Which part module pm is (by kind and name suffix). */
static int sq_mm_classify(const sq_plan_module *pm, sq_mm_part *part) {
  const char *n = pm->name;
  int g = sq_mm_ends(n, ".gate_proj") || sq_mm_ends(n, ".w1");
  int u = sq_mm_ends(n, ".up_proj") || sq_mm_ends(n, ".w3");
  int d = sq_mm_ends(n, ".down_proj") || sq_mm_ends(n, ".w2");
  switch (pm->kind) {
    case SQ_PLAN_ATTN:
      if (sq_mm_ends(n, ".q_proj"))
        *part = SQ_MM_Q;
      else if (sq_mm_ends(n, ".k_proj"))
        *part = SQ_MM_K;
      else if (sq_mm_ends(n, ".v_proj"))
        *part = SQ_MM_V;
      else if (sq_mm_ends(n, ".o_proj"))
        *part = SQ_MM_O;
      else if (sq_mm_ends(n, ".q_a_proj"))
        *part = SQ_MM_QA;
      else if (sq_mm_ends(n, ".q_b_proj"))
        *part = SQ_MM_QB;
      else if (sq_mm_ends(n, ".kv_a_proj_with_mqa"))
        *part = SQ_MM_KVA;
      else if (sq_mm_ends(n, ".kv_b_proj"))
        *part = SQ_MM_KVB;
      else
        return 0;
      return 1;
    case SQ_PLAN_MLP:
      *part = g ? SQ_MM_GATE : u ? SQ_MM_UP : SQ_MM_DOWN;
      return g || u || d;
    case SQ_PLAN_EXPERT:
      *part = g ? SQ_MM_EGATE : u ? SQ_MM_EUP : SQ_MM_EDOWN;
      return g || u || d;
    case SQ_PLAN_SHARED:
      *part = g ? SQ_MM_SGATE : u ? SQ_MM_SUP : SQ_MM_SDOWN;
      return g || u || d;
  }
  return 0;
}

static sq_status sq_mm_modules(sq_moe_model *m) {
  const sq_plan *p = m->plan;
  m->mods = calloc(p->n_modules ? p->n_modules : 1, sizeof *m->mods);
  if (!m->mods)
    return sq_error_set(SQ_ERR_NOMEM, "%s: out of memory for the module list", m->cfg.label);
  for (size_t i = 0; i < p->n_modules; i++) {
    const sq_plan_module *pm = &p->modules[i];
    sq_mm_module *mm = &m->mods[i];
    mm->pm = pm;
    mm->expert = pm->expert;
    mm->owner = pm->owner;
    if (!sq_mm_classify(pm, &mm->part))
      return sq_error_set(SQ_ERR_UNSUPPORTED,
                          "%s: module %s: unknown projection -- hint: only "
                          "GQA attention with SwiGLU experts is supported",
                          m->cfg.label, pm->name);
    int64_t n = pm->d_out * pm->d_in;
    if (n > m->max_w) m->max_w = n;
    if (pm->d_in > m->max_din) m->max_din = pm->d_in;
    if (mm->part == SQ_MM_EGATE) m->moe_ff = pm->d_out;
    if (mm->part == SQ_MM_SGATE) m->shared_ff = pm->d_out;
    if (mm->part == SQ_MM_GATE) m->intermediate = pm->d_out;
  }
  /* down follows its gate/up within an expert (and the shared expert): the
   * plan lists gate, up, down consecutively for each. */
  for (size_t i = 0; i < p->n_modules; i++) {
    sq_mm_module *mm = &m->mods[i];
    if ((mm->part == SQ_MM_EDOWN || mm->part == SQ_MM_SDOWN) && i >= 2) {
      const sq_mm_module *g = &m->mods[i - 2];
      if (g->part != (mm->part == SQ_MM_EDOWN ? SQ_MM_EGATE : SQ_MM_SGATE) ||
          g->expert != mm->expert)
        return sq_error_set(SQ_ERR_INTERNAL, "%s: plan order of %s unexpected", m->cfg.label,
                            mm->pm->name);
      mm->owner = g->owner;
    }
  }
  return SQ_OK;
}

static int sq_mm_json_bool(const sq_model_config *c, const char *key, int def) {
  json_t *v = c->json ? json_object_get(c->json, key) : NULL;
  return json_is_boolean(v) ? json_is_true(v) : def;
}

static double sq_mm_json_num(const json_t *o, const char *key, double def) {
  json_t *v = o ? json_object_get(o, key) : NULL;
  return json_is_number(v) ? json_number_value(v) : def;
}

/* DeepSeek-V3: MLA configuration and RoPE (default or YaRN), router. */
static sq_status sq_mm_deepseek(sq_moe_model *m, int64_t seq_len) {
  const sq_model_config *c = &m->cfg;
  json_t *rs = json_object_get(c->json, "rope_scaling");
  sq_mla_rope_cfg rc = {.dim = (int)c->qk_rope_head_dim, .theta = c->rope_theta};
  if (c->rope_scaling.kind == SQ_ROPE_OTHER) {
    if (strcmp(c->rope_scaling.type, "yarn"))
      return sq_error_set(SQ_ERR_UNSUPPORTED,
                          "%s: rope_scaling type '%s' is not supported for "
                          "MLA (default or yarn)",
                          c->label, c->rope_scaling.type);
    rc.yarn = 1;
    rc.factor = c->rope_scaling.factor;
    rc.original_max_position = c->rope_scaling.original_max_position_embeddings;
    rc.beta_fast = sq_mm_json_num(rs, "beta_fast", 0);
    rc.beta_slow = sq_mm_json_num(rs, "beta_slow", 0);
    rc.mscale = sq_mm_json_num(rs, "mscale", 0);
    rc.mscale_all_dim = sq_mm_json_num(rs, "mscale_all_dim", 0);
    rc.attention_factor = sq_mm_json_num(rs, "attention_factor", 0);
    json_t *tr = json_object_get(rs, "truncate");
    rc.no_truncate = json_is_false(tr);
  }
  SQ_CHECK(sq_mla_rope_init(&m->mla_rope, &rc, seq_len));
  sq_mla_cfg *mc = &m->mla_cfg;
  mc->hidden = c->hidden_size;
  mc->n_heads = c->num_attention_heads;
  mc->q_lora_rank = c->q_lora_rank;
  mc->kv_lora_rank = c->kv_lora_rank;
  mc->qk_nope = c->qk_nope_head_dim;
  mc->qk_rope = c->qk_rope_head_dim;
  mc->v_head = c->v_head_dim;
  mc->eps = (float)c->rms_norm_eps;
  mc->rope_interleave = sq_mm_json_bool(c, "rope_interleave", 1);
  mc->scale = (float)sq_mla_softmax_scale(&rc, mc->qk_nope + mc->qk_rope);
  mc->rope = &m->mla_rope;
  m->mla = 1;
  m->router = SQ_MOE_ROUTER_DEEPSEEK_V3;
  m->n_group = (int)(c->n_group > 0 ? c->n_group : 1);
  m->topk_group = (int)(c->topk_group > 0 ? c->topk_group : 1);
  m->routed_scaling = (float)sq_mm_json_num(c->json, "routed_scaling_factor", 1.0);
  json_t *tm = json_object_get(c->json, "topk_method");
  m->score_bias = json_is_string(tm) && !strcmp(json_string_value(tm), "noaux_tc");
  m->norm_topk_prob = sq_mm_json_bool(c, "norm_topk_prob", 0);
  json_t *sf = json_object_get(c->json, "scoring_func");
  if (json_is_string(sf) && strcmp(json_string_value(sf), "sigmoid"))
    return sq_error_set(SQ_ERR_UNSUPPORTED,
                        "%s: scoring_func '%s': only sigmoid (DeepSeek-V3) "
                        "is supported",
                        c->label, json_string_value(sf));
  return SQ_OK;
}

sq_status sq_moe_model_open(const char *dir, int ranks, int64_t samples, int64_t seq_len,
                            sq_moe_model *m) {
  memset(m, 0, sizeof *m);
  sq_status st;
  SQ_CHECK_GOTO(sq_model_config_load(dir, &m->cfg), st, fail);
  sq_model_config *c = &m->cfg;
  const int ds = c->family == SQ_FAMILY_DEEPSEEK_V3;
  if (c->family != SQ_FAMILY_MIXTRAL && c->family != SQ_FAMILY_QWEN_MOE && !ds) {
    st = sq_error_set(SQ_ERR_UNSUPPORTED,
                      "%s/config.json: model_type '%s': the MoE pipeline runs mixtral, qwen2_moe, "
                      "qwen3_moe and deepseek_v3 -- hint: Llama-4 (fused experts) is not wired yet",
                      dir, c->model_type);
    goto fail;
  }
  if (!ds && c->rope_scaling.kind != SQ_ROPE_NONE && c->rope_scaling.kind != SQ_ROPE_DEFAULT &&
      c->rope_scaling.kind != SQ_ROPE_LINEAR && c->rope_scaling.kind != SQ_ROPE_LLAMA3) {
    st = sq_error_set(SQ_ERR_UNSUPPORTED, "%s/config.json: rope_scaling type '%s' is not supported",
                      dir, c->rope_scaling.type);
    goto fail;
  }
  m->hidden = c->hidden_size;
  m->n_layers = c->num_hidden_layers;
  m->n_heads = c->num_attention_heads;
  m->n_kv_heads = c->num_key_value_heads;
  m->head_dim = c->head_dim;
  m->n_experts = c->num_experts;
  m->top_k = c->num_experts_per_tok;
  m->eps = (float)c->rms_norm_eps;
  int q3 = !strcmp(c->model_type, "qwen3_moe");
  m->qkv_bias = c->family == SQ_FAMILY_QWEN_MOE && !q3 ? 1 : c->attention_bias;
  m->qk_norm = q3;
  m->norm_topk_prob = c->family == SQ_FAMILY_MIXTRAL ? 1 : sq_mm_json_bool(c, "norm_topk_prob", 0);
  m->router = SQ_MOE_ROUTER_SOFTMAX;
  if (ds) {
    m->qkv_bias = 0;
    SQ_CHECK_GOTO(sq_mm_deepseek(m, seq_len), st, fail);
  }
  m->ffn = c->family == SQ_FAMILY_MIXTRAL ? "block_sparse_moe" : "mlp";
  bool fp8 = false;
  SQ_CHECK_GOTO(sq_fp8_block_config(c->label, c->json, &fp8, &m->fp8_bo, &m->fp8_bi), st, fail);
  SQ_CHECK_GOTO(sq_ckpt_open(dir, &m->ckpt), st, fail);
  sq_plan_opts po;
  sq_plan_opts_default(&po);
  po.samples = samples;
  po.seq_len = seq_len;
  SQ_CHECK_GOTO(sq_plan_build(c, ranks, &po, &m->plan), st, fail);
  SQ_CHECK_GOTO(sq_mm_modules(m), st, fail);
  sq_rope_cfg rc = {.type = SQ_FWD_ROPE_DEFAULT,
                    .head_dim = (int)m->head_dim,
                    .theta = c->rope_theta,
                    .factor = 1.0};
  if (c->rope_scaling.kind == SQ_ROPE_LINEAR) rc.type = SQ_FWD_ROPE_LINEAR;
  if (c->rope_scaling.kind == SQ_ROPE_LLAMA3) rc.type = SQ_FWD_ROPE_LLAMA3;
  if (c->rope_scaling.factor > 0) rc.factor = c->rope_scaling.factor;
  rc.low_freq_factor = c->rope_scaling.low_freq_factor;
  rc.high_freq_factor = c->rope_scaling.high_freq_factor;
  rc.original_max_position = c->rope_scaling.original_max_position_embeddings;
  if (!ds) SQ_CHECK_GOTO(sq_fwd_rope_init(&m->rope, &rc, seq_len), st, fail);
  m->rope_T = seq_len;
  return SQ_OK;
fail:
  sq_moe_model_close(m);
  return st;
}

void sq_moe_model_close(sq_moe_model *m) {
  sq_fwd_rope_free(&m->rope);
  sq_mla_rope_free(&m->mla_rope);
  free(m->mods);
  sq_plan_free(m->plan);
  if (m->ckpt) sq_ckpt_close(m->ckpt);
  sq_model_config_free(&m->cfg);
  memset(m, 0, sizeof *m);
}

int sq_moe_model_layer_is_moe(const sq_moe_model *m, int64_t layer) {
  return m->plan->layers[layer].moe;
}

void sq_moe_model_layer_modules(const sq_moe_model *m, int64_t layer, size_t *first,
                                size_t *count) {
  *first = m->plan->layers[layer].first;
  *count = m->plan->layers[layer].count;
}

sq_moe_layer_cfg sq_moe_model_layer_cfg(const sq_moe_model *m, int64_t layer) {
  sq_moe_layer_cfg cfg = {0};
  cfg.hidden = m->hidden;
  cfg.eps = m->eps;
  cfg.attn = m->mla ? SQ_MOE_ATTN_MLA : SQ_MOE_ATTN_GQA;
  cfg.mla = m->mla ? &m->mla_cfg : NULL;
  cfg.n_heads = m->n_heads;
  cfg.n_kv_heads = m->n_kv_heads;
  cfg.head_dim = m->head_dim;
  cfg.rope = m->mla ? NULL : &m->rope;
  cfg.moe = sq_moe_model_layer_is_moe(m, layer);
  cfg.intermediate = m->intermediate;
  cfg.router.kind = m->router;
  cfg.router.n_group = m->n_group;
  cfg.router.topk_group = m->topk_group;
  cfg.router.routed_scaling_factor = m->routed_scaling;
  cfg.router.n_experts = (int)m->n_experts;
  cfg.router.top_k = (int)m->top_k;
  cfg.router.norm_topk_prob = m->norm_topk_prob;
  cfg.moe_ff = m->moe_ff;
  cfg.shared_ff = m->shared_ff;
  return cfg;
}

sq_status sq_moe_model_read_linear(const sq_moe_model *m, const char *tensor, float *dst,
                                   int64_t d_out, int64_t d_in) {
  int64_t bo = m->fp8_bo > 0 ? m->fp8_bo : SQ_FP8_BLOCK_DEFAULT;
  int64_t bi = m->fp8_bi > 0 ? m->fp8_bi : SQ_FP8_BLOCK_DEFAULT;
  SQ_CHECK(sq_fp8_block_read_f32_bs(m->ckpt, tensor, dst, d_out, d_in, bo, bi));
  const sq_st_tensor *t = sq_ckpt_find(m->ckpt, tensor, NULL);
  if (t) sq_model_count_read(t->end - t->begin);
  return SQ_OK;
}

/* ---- one layer's buffers ---- */

sq_status sq_moe_lbuf_init(sq_moe_lbuf *b, const sq_moe_model *m) {
  memset(b, 0, sizeof *b);
  b->layer = -1;
  const int64_t d = m->hidden, q = m->n_heads * m->head_dim, kv = m->n_kv_heads * m->head_dim;
  const int64_t I = m->intermediate, S = m->shared_ff, E = m->n_experts, hd = m->head_dim;
  const sq_mla_cfg *mc = &m->mla_cfg;
  const int64_t QL = mc->q_lora_rank, KL = mc->kv_lora_rank, H = mc->n_heads;
  /* MLA: q_proj (no q_lora) lives in q, o_proj in o: size them for both. */
  const int64_t qn = m->mla ? H * (mc->qk_nope + mc->qk_rope) * d : q * d;
  const int64_t on = m->mla ? d * H * mc->v_head : d * q;
  int64_t mla = m->mla ? QL * d + QL + H * (mc->qk_nope + mc->qk_rope) * QL +
                             (KL + mc->qk_rope) * d + KL + H * (mc->qk_nope + mc->v_head) * KL
                       : 0;
  int64_t n = 2 * d + qn + 2 * kv * d + on + q + 2 * kv + 2 * hd + 3 * I * d + E * d + 3 * S * d +
              d + E + mla;
  b->base_ = calloc((size_t)n, sizeof(float));
  b->experts = calloc((size_t)(E > 0 ? E : 1), sizeof *b->experts);
  if (!b->base_ || !b->experts) {
    sq_moe_lbuf_free(b);
    return sq_error_set(SQ_ERR_NOMEM, "%s: out of memory for one layer's weights", m->cfg.label);
  }
  float *p = b->base_;
#define SQ_TAKE(ptr, cnt) (ptr) = p, p += (cnt)
  SQ_TAKE(b->attn_norm, d);
  SQ_TAKE(b->ffn_norm, d);
  SQ_TAKE(b->q, qn);
  SQ_TAKE(b->k, kv * d);
  SQ_TAKE(b->v, kv * d);
  SQ_TAKE(b->o, on);
  SQ_TAKE(b->q_bias, q);
  SQ_TAKE(b->k_bias, kv);
  SQ_TAKE(b->v_bias, kv);
  SQ_TAKE(b->q_norm, hd);
  SQ_TAKE(b->k_norm, hd);
  SQ_TAKE(b->gate, I * d);
  SQ_TAKE(b->up, I * d);
  SQ_TAKE(b->down, d * I);
  SQ_TAKE(b->router, E * d);
  SQ_TAKE(b->sgate, S * d);
  SQ_TAKE(b->sup, S * d);
  SQ_TAKE(b->sdown, d * S);
  SQ_TAKE(b->shared_gate, d);
  SQ_TAKE(b->score_bias, E);
  if (m->mla) {
    SQ_TAKE(b->qa, QL * d);
    SQ_TAKE(b->qa_norm, QL);
    SQ_TAKE(b->qb, H * (mc->qk_nope + mc->qk_rope) * QL);
    SQ_TAKE(b->kva, (KL + mc->qk_rope) * d);
    SQ_TAKE(b->kva_norm, KL);
    SQ_TAKE(b->kvb, H * (mc->qk_nope + mc->v_head) * KL);
  }
#undef SQ_TAKE
  return SQ_OK;
}

void sq_moe_lbuf_free(sq_moe_lbuf *b) {
  free(b->base_);
  free(b->experts_mem_);
  free(b->experts);
  memset(b, 0, sizeof *b);
  b->layer = -1;
}

static sq_status sq_mm_read_small(const sq_moe_model *m, const char *name, float *dst, int64_t n) {
  return sq_ckpt_read_f32(m->ckpt, name, dst, (uint64_t)n);
}

sq_status sq_moe_lbuf_load_small(sq_moe_lbuf *b, const sq_moe_model *m, int64_t layer,
                                 const int *owned) {
  const int64_t d = m->hidden, q = m->n_heads * m->head_dim, kv = m->n_kv_heads * m->head_dim;
  const int64_t E = m->n_experts, F = m->moe_ff;
  const int l = (int)layer;
  char nm[160];
  b->layer = -1;
  b->moe = sq_moe_model_layer_is_moe(m, layer);
#define SQ_RD(dst, cnt, ...)                         \
  do {                                               \
    snprintf(nm, sizeof nm, __VA_ARGS__);            \
    SQ_CHECK(sq_mm_read_small(m, nm, (dst), (cnt))); \
  } while (0)
  SQ_RD(b->attn_norm, d, "model.layers.%d.input_layernorm.weight", l);
  SQ_RD(b->ffn_norm, d, "model.layers.%d.post_attention_layernorm.weight", l);
  if (m->qkv_bias) {
    SQ_RD(b->q_bias, q, "model.layers.%d.self_attn.q_proj.bias", l);
    SQ_RD(b->k_bias, kv, "model.layers.%d.self_attn.k_proj.bias", l);
    SQ_RD(b->v_bias, kv, "model.layers.%d.self_attn.v_proj.bias", l);
  }
  if (m->mla) {
    if (m->mla_cfg.q_lora_rank > 0)
      SQ_RD(b->qa_norm, m->mla_cfg.q_lora_rank, "model.layers.%d.self_attn.q_a_layernorm.weight",
            l);
    SQ_RD(b->kva_norm, m->mla_cfg.kv_lora_rank, "model.layers.%d.self_attn.kv_a_layernorm.weight",
          l);
  }
  if (m->qk_norm) {
    SQ_RD(b->q_norm, m->head_dim, "model.layers.%d.self_attn.q_norm.weight", l);
    SQ_RD(b->k_norm, m->head_dim, "model.layers.%d.self_attn.k_norm.weight", l);
  }
  for (int64_t e = 0; e < E; e++) memset(&b->experts[e], 0, sizeof b->experts[e]);
  if (b->moe) {
    SQ_RD(b->router, E * d, "model.layers.%d.%s.gate.weight", l, m->ffn);
    if (m->score_bias)
      SQ_RD(b->score_bias, E, "model.layers.%d.mlp.gate.e_score_correction_bias", l);
    if (m->shared_ff > 0 && m->cfg.family == SQ_FAMILY_QWEN_MOE)
      SQ_RD(b->shared_gate, d, "model.layers.%d.mlp.shared_expert_gate.weight", l);
    int64_t n_own = 0;
    for (int64_t e = 0; owned && e < E; e++) n_own += owned[e] != 0;
    int64_t need = n_own * 3 * F * d;
    if (need > b->experts_cap_) {
      free(b->experts_mem_);
      b->experts_cap_ = 0;
      b->experts_mem_ = malloc((size_t)need * sizeof(float));
      if (!b->experts_mem_)
        return sq_error_set(SQ_ERR_NOMEM, "model.layers.%d: out of memory for %lld owned experts",
                            l, (long long)n_own);
      b->experts_cap_ = need;
    }
    float *p = b->experts_mem_;
    for (int64_t e = 0; owned && e < E; e++) {
      if (!owned[e]) continue;
      b->experts[e].gate = p;
      b->experts[e].up = p + F * d;
      b->experts[e].down = p + 2 * F * d;
      p += 3 * F * d;
    }
  }
#undef SQ_RD
  b->layer = l;
  return SQ_OK;
}

float *sq_moe_lbuf_module(const sq_moe_lbuf *b, const sq_mm_module *mm) {
  const sq_moe_expert *x = mm->expert >= 0 ? &b->experts[mm->expert] : NULL;
  switch (mm->part) {
    case SQ_MM_Q:
      return b->q;
    case SQ_MM_K:
      return b->k;
    case SQ_MM_V:
      return b->v;
    case SQ_MM_O:
      return b->o;
    case SQ_MM_GATE:
      return b->gate;
    case SQ_MM_UP:
      return b->up;
    case SQ_MM_DOWN:
      return b->down;
    case SQ_MM_EGATE:
      return (float *)x->gate;
    case SQ_MM_EUP:
      return (float *)x->up;
    case SQ_MM_EDOWN:
      return (float *)x->down;
    case SQ_MM_SGATE:
      return b->sgate;
    case SQ_MM_SUP:
      return b->sup;
    case SQ_MM_SDOWN:
      return b->sdown;
    case SQ_MM_QA:
      return b->qa;
    case SQ_MM_QB:
      return b->qb;
    case SQ_MM_KVA:
      return b->kva;
    case SQ_MM_KVB:
      return b->kvb;
  }
  return NULL;
}

sq_moe_layer_cfg sq_moe_lbuf_cfg(const sq_moe_lbuf *b, const sq_moe_model *m) {
  sq_moe_layer_cfg cfg = sq_moe_model_layer_cfg(m, b->layer);
  if (m->score_bias) cfg.router.e_score_correction_bias = b->score_bias;
  return cfg;
}

sq_moe_layer_weights sq_moe_lbuf_weights(const sq_moe_lbuf *b, const sq_moe_model *m) {
  sq_moe_layer_weights w;
  memset(&w, 0, sizeof w);
  w.attn_norm = b->attn_norm;
  w.ffn_norm = b->ffn_norm;
  if (m->mla) {
    const int ql = m->mla_cfg.q_lora_rank > 0;
    w.mla.q_proj = ql ? NULL : b->q;
    w.mla.q_a_proj = ql ? b->qa : NULL;
    w.mla.q_a_norm = ql ? b->qa_norm : NULL;
    w.mla.q_b_proj = ql ? b->qb : NULL;
    w.mla.kv_a_proj = b->kva;
    w.mla.kv_a_norm = b->kva_norm;
    w.mla.kv_b_proj = b->kvb;
    w.mla.o_proj = b->o;
  } else {
    w.q = b->q;
    w.k = b->k;
    w.v = b->v;
    w.o = b->o;
  }
  if (m->qkv_bias) {
    w.q_bias = b->q_bias;
    w.k_bias = b->k_bias;
    w.v_bias = b->v_bias;
  }
  if (m->qk_norm) {
    w.q_norm = b->q_norm;
    w.k_norm = b->k_norm;
  }
  if (!b->moe) {
    w.gate = b->gate;
    w.up = b->up;
    w.down = b->down;
    return w;
  }
  w.router = b->router;
  w.experts = b->experts;
  if (m->shared_ff > 0) {
    w.shared.gate = b->sgate;
    w.shared.up = b->sup;
    w.shared.down = b->sdown;
    if (m->cfg.family == SQ_FAMILY_QWEN_MOE) w.shared_gate = b->shared_gate;
  }
  return w;
}
