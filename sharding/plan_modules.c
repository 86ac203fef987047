/* The quantizable modules of each decoder layer, from config.json alone, for
 * every family the plan knows (see sharding/plan.h for the names and shapes).
 * Modules are emitted twice: once to count, once to fill. */
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sharding/plan.h"

typedef struct {
  sq_plan_module *m; /* NULL while counting */
  size_t n;
  int group;            /* next Hessian group id */
  double routed_tokens; /* expected tokens per expert (whole job) */
  double byte_load;     /* byte_cost × bytes per weight element */
} sq_memit;

static void sq_mod(sq_memit *e, int layer, int expert, sq_plan_kind kind, sq_plan_slice slice,
                   int64_t d_out, int64_t d_in, const char *tensor, const char *fmt, ...)
    __attribute__((format(printf, 9, 10)));
static void sq_mod(sq_memit *e, int layer, int expert, sq_plan_kind kind, sq_plan_slice slice,
                   int64_t d_out, int64_t d_in, const char *tensor, const char *fmt, ...) {
  if (e->m) {
    sq_plan_module *m = &e->m[e->n];
    memset(m, 0, sizeof *m);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m->name, sizeof m->name, fmt, ap);
    va_end(ap);
    if (tensor)
      snprintf(m->tensor, sizeof m->tensor, "%s", tensor);
    else
      snprintf(m->tensor, sizeof m->tensor, "%s.weight", m->name);
    m->layer = layer;
    m->expert = expert;
    m->kind = kind;
    m->slice = slice;
    m->d_out = d_out;
    m->d_in = d_in;
    m->group = e->group;
    m->owner = 0;
    const double o = (double)d_out, i = (double)d_in;
    m->cost = o * i * i + i * i * i;
    m->load = m->cost + e->byte_load * o * i;
  }
  e->n++;
}

/* Close the current Hessian group; for experts, charge the routed-token
 * Hessian (tokens·d_in²) to the group's first module. */
static void sq_group_end(sq_memit *e, size_t first, int expert_group) {
  if (e->m && expert_group && first < e->n) {
    const double i = (double)e->m[first].d_in;
    e->m[first].cost += e->routed_tokens * i * i;
    e->m[first].load += e->routed_tokens * i * i;
  }
  e->group++;
}

/* A SwiGLU MLP: {gate, up} share the input (one group), down is its own. */
static void sq_emit_mlp(sq_memit *e, int l, int expert, sq_plan_kind kind, const char *p,
                        const char *gate, const char *up, const char *down, int64_t h,
                        int64_t inter) {
  const int ex = kind == SQ_PLAN_EXPERT;
  size_t first = e->n;
  sq_mod(e, l, expert, kind, SQ_SLICE_NONE, inter, h, NULL, "%s.%s", p, gate);
  sq_mod(e, l, expert, kind, SQ_SLICE_NONE, inter, h, NULL, "%s.%s", p, up);
  sq_group_end(e, first, ex);
  first = e->n;
  sq_mod(e, l, expert, kind, SQ_SLICE_NONE, h, inter, NULL, "%s.%s", p, down);
  sq_group_end(e, first, ex);
}

static void sq_emit_gqa(const sq_model_config *c, sq_memit *e, const char *p, int l) {
  const int64_t h = c->hidden_size, q = c->num_attention_heads * c->head_dim;
  const int64_t kv = c->num_key_value_heads * c->head_dim;
  size_t first = e->n;
  sq_mod(e, l, -1, SQ_PLAN_ATTN, SQ_SLICE_NONE, q, h, NULL, "%smodel.layers.%d.self_attn.q_proj", p,
         l);
  sq_mod(e, l, -1, SQ_PLAN_ATTN, SQ_SLICE_NONE, kv, h, NULL, "%smodel.layers.%d.self_attn.k_proj",
         p, l);
  sq_mod(e, l, -1, SQ_PLAN_ATTN, SQ_SLICE_NONE, kv, h, NULL, "%smodel.layers.%d.self_attn.v_proj",
         p, l);
  sq_group_end(e, first, 0);
  first = e->n;
  sq_mod(e, l, -1, SQ_PLAN_ATTN, SQ_SLICE_NONE, h, q, NULL, "%smodel.layers.%d.self_attn.o_proj", p,
         l);
  sq_group_end(e, first, 0);
}

/* MLA: q_a_proj and kv_a_proj_with_mqa both read the normed hidden state (one
 * group); q_b_proj reads q_a_layernorm's output, kv_b_proj kv_a_layernorm's. */
static void sq_emit_mla(const sq_model_config *c, sq_memit *e, int l) {
  const int64_t h = c->hidden_size, nh = c->num_attention_heads;
  const int64_t qk = c->qk_nope_head_dim + c->qk_rope_head_dim;
  const char *pre = "model.layers";
  size_t first = e->n;
  if (c->q_lora_rank > 0)
    sq_mod(e, l, -1, SQ_PLAN_ATTN, SQ_SLICE_NONE, c->q_lora_rank, h, NULL,
           "%s.%d.self_attn.q_a_proj", pre, l);
  else
    sq_mod(e, l, -1, SQ_PLAN_ATTN, SQ_SLICE_NONE, nh * qk, h, NULL, "%s.%d.self_attn.q_proj", pre,
           l);
  sq_mod(e, l, -1, SQ_PLAN_ATTN, SQ_SLICE_NONE, c->kv_lora_rank + c->qk_rope_head_dim, h, NULL,
         "%s.%d.self_attn.kv_a_proj_with_mqa", pre, l);
  sq_group_end(e, first, 0);
  if (c->q_lora_rank > 0) {
    first = e->n;
    sq_mod(e, l, -1, SQ_PLAN_ATTN, SQ_SLICE_NONE, nh * qk, c->q_lora_rank, NULL,
           "%s.%d.self_attn.q_b_proj", pre, l);
    sq_group_end(e, first, 0);
  }
  first = e->n;
  sq_mod(e, l, -1, SQ_PLAN_ATTN, SQ_SLICE_NONE, nh * (c->qk_nope_head_dim + c->v_head_dim),
         c->kv_lora_rank, NULL, "%s.%d.self_attn.kv_b_proj", pre, l);
  sq_group_end(e, first, 0);
  first = e->n;
  sq_mod(e, l, -1, SQ_PLAN_ATTN, SQ_SLICE_NONE, h, nh * c->v_head_dim, NULL,
         "%s.%d.self_attn.o_proj", pre, l);
  sq_group_end(e, first, 0);
}

/* Integer key of the text model's JSON (text_config for llama4), or def. */
static int64_t sq_json_int(const sq_model_config *c, const char *key, int64_t def) {
  json_t *root = c->json, *tc = root ? json_object_get(root, "text_config") : NULL;
  json_t *v = json_is_object(tc) ? json_object_get(tc, key) : NULL;
  if (!v && root) v = json_object_get(root, key);
  return json_is_integer(v) ? (int64_t)json_integer_value(v) : def;
}

static bool sq_json_list_has(const sq_model_config *c, const char *key, int l, bool *listed) {
  json_t *root = c->json, *tc = root ? json_object_get(root, "text_config") : NULL;
  json_t *v = json_is_object(tc) ? json_object_get(tc, key) : NULL;
  if (!v && root) v = json_object_get(root, key);
  *listed = json_is_array(v);
  if (!*listed) return false;
  size_t i;
  json_t *x;
  json_array_foreach(v, i, x) if (json_is_integer(x) && json_integer_value(x) == l) return true;
  return false;
}

/* Is layer l an MoE layer? Follows each family's modeling code. */
static bool sq_layer_is_moe(const sq_model_config *c, int l) {
  if (c->num_experts <= 0) return false;
  bool listed;
  switch (c->family) {
    case SQ_FAMILY_MIXTRAL:
      return true;
    case SQ_FAMILY_DEEPSEEK_V3: {
      int64_t freq = sq_json_int(c, "moe_layer_freq", 1);
      return l >= c->first_k_dense_replace && (freq <= 1 || l % freq == 0);
    }
    case SQ_FAMILY_QWEN_MOE: {
      bool only = sq_json_list_has(c, "mlp_only_layers", l, &listed);
      int64_t step = sq_json_int(c, "decoder_sparse_step", 1);
      return !only && (step <= 1 || (l + 1) % step == 0);
    }
    case SQ_FAMILY_LLAMA4: {
      bool in = sq_json_list_has(c, "moe_layers", l, &listed);
      if (listed) return in;
      int64_t step = c->interleave_moe_layer_step > 0 ? c->interleave_moe_layer_step : 1;
      return (l + 1) % step == 0;
    }
    default:
      return false;
  }
}

static void sq_emit_layer(const sq_model_config *c, sq_memit *e, int l, sq_plan_layer *L) {
  const int64_t h = c->hidden_size, E = c->num_experts;
  const bool l4 = c->family == SQ_FAMILY_LLAMA4;
  const char *p = l4 ? "language_model." : "";
  char base[96], q[128];
  if (L) {
    L->first = e->n;
    L->first_group = e->group;
  }
  if (c->family == SQ_FAMILY_DEEPSEEK_V3)
    sq_emit_mla(c, e, l);
  else
    sq_emit_gqa(c, e, p, l);
  const bool moe = sq_layer_is_moe(c, l);
  if (!moe) {
    int64_t inter = c->intermediate_size;
    if (l4 && c->intermediate_size_mlp > 0) inter = c->intermediate_size_mlp;
    snprintf(base, sizeof base, "%smodel.layers.%d.%s", p, l, l4 ? "feed_forward" : "mlp");
    sq_emit_mlp(e, l, -1, SQ_PLAN_MLP, base, "gate_proj", "up_proj", "down_proj", h, inter);
  } else {
    for (int64_t x = 0; x < E; ++x) {
      switch (c->family) {
        case SQ_FAMILY_MIXTRAL:
          snprintf(base, sizeof base, "model.layers.%d.block_sparse_moe.experts.%lld", l,
                   (long long)x);
          sq_emit_mlp(e, l, (int)x, SQ_PLAN_EXPERT, base, "w1", "w3", "w2", h,
                      c->intermediate_size);
          break;
        case SQ_FAMILY_LLAMA4: {
          /* Slices of the fused stacks; named as llm-compressor unpacks them. */
          const int64_t ff = c->intermediate_size;
          char gu[112], dn[112];
          snprintf(base, sizeof base, "%smodel.layers.%d.feed_forward.experts", p, l);
          snprintf(gu, sizeof gu, "%s.gate_up_proj", base);
          snprintf(dn, sizeof dn, "%s.down_proj", base);
          size_t first = e->n;
          sq_mod(e, l, (int)x, SQ_PLAN_EXPERT, SQ_SLICE_GATE, ff, h, gu, "%s.%lld.gate_proj", base,
                 (long long)x);
          sq_mod(e, l, (int)x, SQ_PLAN_EXPERT, SQ_SLICE_UP, ff, h, gu, "%s.%lld.up_proj", base,
                 (long long)x);
          sq_group_end(e, first, 1);
          first = e->n;
          sq_mod(e, l, (int)x, SQ_PLAN_EXPERT, SQ_SLICE_DOWN, h, ff, dn, "%s.%lld.down_proj", base,
                 (long long)x);
          sq_group_end(e, first, 1);
          break;
        }
        default: /* deepseek, qwen-moe */
          snprintf(base, sizeof base, "model.layers.%d.mlp.experts.%lld", l, (long long)x);
          sq_emit_mlp(
              e, l, (int)x, SQ_PLAN_EXPERT, base, "gate_proj", "up_proj", "down_proj", h,
              c->moe_intermediate_size > 0 ? c->moe_intermediate_size : c->intermediate_size);
          break;
      }
    }
    int64_t shared = 0;
    const char *sname = NULL;
    if (c->family == SQ_FAMILY_DEEPSEEK_V3 && c->n_shared_experts > 0) {
      shared = c->n_shared_experts * c->moe_intermediate_size;
      sname = "mlp.shared_experts";
    } else if (c->family == SQ_FAMILY_QWEN_MOE) {
      shared = sq_json_int(c, "shared_expert_intermediate_size", 0);
      sname = "mlp.shared_expert";
    } else if (l4) {
      shared = c->intermediate_size;
      sname = "feed_forward.shared_expert";
    }
    if (shared > 0) {
      snprintf(q, sizeof q, "%smodel.layers.%d.%s", p, l, sname);
      sq_emit_mlp(e, l, -1, SQ_PLAN_SHARED, q, "gate_proj", "up_proj", "down_proj", h, shared);
    }
  }
  if (L) {
    L->count = e->n - L->first;
    L->moe = moe;
    L->n_experts = moe ? E : 0;
    L->n_groups = e->group - L->first_group;
  }
}

static sq_status sq_modules_check(const sq_model_config *c) {
  bool ok = sq_model_config_is_dense(c) || c->family == SQ_FAMILY_MIXTRAL ||
            c->family == SQ_FAMILY_QWEN_MOE || c->family == SQ_FAMILY_DEEPSEEK_V3 ||
            c->family == SQ_FAMILY_LLAMA4;
  if (!ok)
    return sq_error_set(SQ_ERR_UNSUPPORTED,
                        "%s: model_type '%s' has no module list for the plan -- hint: llama, "
                        "mistral, qwen2, mixtral, qwen2_moe, qwen3_moe, deepseek_v2/v3 and llama4 "
                        "are known",
                        c->label, c->model_type);
  if (c->family == SQ_FAMILY_DEEPSEEK_V3 && (c->kv_lora_rank <= 0 || c->v_head_dim <= 0 ||
                                             c->qk_nope_head_dim + c->qk_rope_head_dim <= 0))
    return sq_error_set(
        SQ_ERR_FORMAT,
        "%s: deepseek MLA needs kv_lora_rank, v_head_dim and qk_{nope,rope}_head_dim "
        "> 0",
        c->label);
  if (c->num_experts > 0 && c->family != SQ_FAMILY_MIXTRAL && c->family != SQ_FAMILY_LLAMA4 &&
      c->moe_intermediate_size <= 0 && c->intermediate_size <= 0)
    return sq_error_set(SQ_ERR_FORMAT, "%s: MoE config without moe_intermediate_size", c->label);
  if (c->hidden_size <= 0 || c->num_hidden_layers <= 0 || c->num_hidden_layers > 100000)
    return sq_error_set(SQ_ERR_FORMAT, "%s: hidden_size/num_hidden_layers out of range", c->label);
  if ((double)c->num_hidden_layers * (3.0 * (double)c->num_experts + 16.0) > 5e7)
    return sq_error_set(SQ_ERR_FORMAT, "%s: %lld layers x %lld experts is not a plausible model",
                        c->label, (long long)c->num_hidden_layers, (long long)c->num_experts);
  return SQ_OK;
}

sq_status sq_plan_modules(const sq_model_config *c, const sq_plan_opts *o, sq_plan_module **modules,
                          size_t *n, sq_plan_layer **layers) {
  *modules = NULL;
  *layers = NULL;
  *n = 0;
  SQ_CHECK(sq_modules_check(c));
  sq_plan_opts def;
  if (!o) {
    sq_plan_opts_default(&def);
    o = &def;
  }
  sq_memit e = {NULL, 0, 0, 0.0, 0.0};
  bool fp8;
  e.byte_load = o->byte_cost * sq_plan_weight_elem_bytes(c, &fp8);
  if (c->num_experts > 0)
    e.routed_tokens = (double)o->samples * (double)o->seq_len *
                      (double)(c->num_experts_per_tok > 0 ? c->num_experts_per_tok : 1) /
                      (double)c->num_experts;
  const int nl = (int)c->num_hidden_layers;
  for (int l = 0; l < nl; ++l) sq_emit_layer(c, &e, l, NULL);
  size_t count = e.n;
  sq_plan_module *m = calloc(count ? count : 1, sizeof *m);
  sq_plan_layer *L = calloc((size_t)nl, sizeof *L);
  if (!m || !L) {
    free(m);
    free(L);
    return sq_error_set(SQ_ERR_NOMEM, "%s: out of memory listing %zu modules", c->label, count);
  }
  e.m = m;
  e.n = 0;
  e.group = 0;
  for (int l = 0; l < nl; ++l) sq_emit_layer(c, &e, l, &L[l]);
  *modules = m;
  *layers = L;
  *n = count;
  return SQ_OK;
}

double sq_plan_weight_elem_bytes(const sq_model_config *c, bool *fp8) {
  *fp8 = false;
  json_t *q = c->json ? json_object_get(c->json, "quantization_config") : NULL;
  json_t *m = json_is_object(q) ? json_object_get(q, "quant_method") : NULL;
  if (json_is_string(m) && strcmp(json_string_value(m), "fp8") == 0) {
    *fp8 = true;
    return 1.0;
  }
  size_t s = c->torch_dtype != SQ_DTYPE_INVALID ? sq_dtype_size(c->torch_dtype) : 2;
  return s ? (double)s : 2.0;
}

const char *sq_plan_kind_name(sq_plan_kind k) {
  switch (k) {
    case SQ_PLAN_ATTN:
      return "attn";
    case SQ_PLAN_MLP:
      return "mlp";
    case SQ_PLAN_EXPERT:
      return "expert";
    case SQ_PLAN_SHARED:
      return "shared";
  }
  return "?";
}
