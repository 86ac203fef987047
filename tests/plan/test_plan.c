/* The distributed plan on real published configs: every module owned exactly
 * once, module counts and Linear parameter totals equal to formulas written
 * here from the raw JSON (and to the Linear tensors of model_config's tensor
 * list, a second code path), Hessian groups co-located, deterministic owners,
 * LPT balance bounds, the sample split, and the estimate's accounting. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sharding/plan.h"
#include "test_util.h"

static char g_path[1024];

static const char *cfg_path(const char *dir, const char *model) {
  const char *src = getenv("SHARDQ_SOURCE_DIR");
  snprintf(g_path, sizeof g_path, "%s/%s/%s/config.json", src ? src : ".", dir, model);
  return g_path;
}

/* The text model's object from the raw JSON (independent of model_config). */
static json_t *text_obj(json_t *root) {
  json_t *tc = json_object_get(root, "text_config");
  return json_is_object(tc) ? tc : root;
}
static long long J(json_t *o, const char *k, long long def) {
  json_t *v = json_object_get(o, k);
  return json_is_integer(v) ? (long long)json_integer_value(v) : def;
}

typedef struct {
  long long moe_step, moe_first; /* layer l is MoE iff l >= moe_first && l % step == step - 1 */
  long long modules, params;     /* expected totals */
  int moe_layers;
  long long experts; /* per MoE layer */
} expect_t;

/* Expected module count and Σ d_out·d_in from the config, written per family
 * straight from the modeling files' shapes. */
static void expect_from_json(json_t *root, expect_t *x) {
  memset(x, 0, sizeof *x);
  json_t *t = text_obj(root);
  const char *mt = json_string_value(json_object_get(t, "model_type"));
  const char *top = json_string_value(json_object_get(root, "model_type"));
  long long h = J(t, "hidden_size", 0), L = J(t, "num_hidden_layers", 0);
  long long nh = J(t, "num_attention_heads", 0), kvh = J(t, "num_key_value_heads", nh);
  long long hd = J(t, "head_dim", h / nh), ff = J(t, "intermediate_size", 0);
  long long attn_p = h * nh * hd * 2 + 2 * h * kvh * hd; /* q, o + k, v */
  if (!strcmp(top, "deepseek_v3")) {
    long long ql = J(t, "q_lora_rank", 0), kl = J(t, "kv_lora_rank", 0);
    long long nope = J(t, "qk_nope_head_dim", 0), rope = J(t, "qk_rope_head_dim", 0);
    long long vd = J(t, "v_head_dim", 0), E = J(t, "n_routed_experts", 0);
    long long mff = J(t, "moe_intermediate_size", 0), ns = J(t, "n_shared_experts", 0);
    long long k = J(t, "first_k_dense_replace", 0);
    attn_p =
        h * ql + ql * nh * (nope + rope) + h * (kl + rope) + kl * nh * (nope + vd) + nh * vd * h;
    x->moe_layers = (int)(L - k);
    x->moe_first = k, x->moe_step = 1;
    x->experts = E;
    x->modules = L * 5 + k * 3 + (L - k) * (3 * E + 3);
    x->params = L * attn_p + k * 3 * h * ff + (L - k) * (3 * h * mff * E + 3 * h * mff * ns);
  } else if (!strcmp(top, "llama4")) {
    long long step = J(t, "interleave_moe_layer_step", 1), E = J(t, "num_local_experts", 0);
    long long fmlp = J(t, "intermediate_size_mlp", ff);
    int moe = 0;
    for (long long l = 0; l < L; ++l) moe += (l % step) == step - 1;
    x->moe_layers = moe;
    x->moe_step = step;
    x->experts = E;
    x->modules = L * 4 + (L - moe) * 3 + moe * (3 * E + 3);
    /* fused gate_up (E, h, 2ff) + down (E, ff, h), shared expert (ff) */
    x->params =
        L * attn_p + (L - moe) * 3 * h * fmlp + moe * (E * h * 2 * ff + E * ff * h + 3 * h * ff);
  } else if (!strcmp(mt, "mixtral")) {
    long long E = J(t, "num_local_experts", 0);
    x->moe_layers = (int)L;
    x->moe_step = 1;
    x->experts = E;
    x->modules = L * (4 + 3 * E);
    x->params = L * (attn_p + E * 3 * h * ff);
  } else if (!strcmp(mt, "qwen2_moe") || !strcmp(mt, "qwen3_moe")) {
    long long E = J(t, "num_experts", 0), mff = J(t, "moe_intermediate_size", 0);
    long long sff = J(t, "shared_expert_intermediate_size", 0);
    x->moe_layers = (int)L; /* decoder_sparse_step 1, no mlp_only_layers in these fixtures */
    x->moe_step = 1;
    x->experts = E;
    x->modules = L * (4 + 3 * E + (sff ? 3 : 0));
    x->params = L * (attn_p + E * 3 * h * mff + 3 * h * sff);
  } else { /* dense llama / mistral / qwen2 */
    x->modules = L * 7;
    x->params = L * (attn_p + 3 * h * ff);
  }
}

/* Σ elements of the Linear tensors in model_config's tensor list (the fused
 * Llama-4 stacks are 3-D): a second path to the same total. */
static long long linear_params_from_tensor_list(const sq_model_config *c) {
  sq_tensor_spec *s = NULL;
  size_t n = 0;
  if (sq_model_config_tensors(c, &s, &n) != SQ_OK) {
    sq_error_clear();
    return -1;
  }
  long long tot = 0;
  for (size_t i = 0; i < n; ++i) {
    if (s[i].role != SQ_ROLE_LINEAR || s[i].layer < 0) continue;
    long long e = 1;
    for (int d = 0; d < s[i].ndim; ++d) e *= s[i].shape[d];
    tot += e;
  }
  free(s);
  return tot;
}

/* The module that must share m's Hessian, by name: k/v -> q, up/w3 -> gate/w1,
 * kv_a_proj_with_mqa -> q_a_proj. "" when m has no partner. */
static void partner_name(const char *name, char *out, size_t n) {
  static const char *pairs[][2] = {{".k_proj", ".q_proj"},
                                   {".v_proj", ".q_proj"},
                                   {".up_proj", ".gate_proj"},
                                   {".w3", ".w1"},
                                   {".kv_a_proj_with_mqa", ".q_a_proj"}};
  out[0] = 0;
  size_t len = strlen(name);
  for (size_t k = 0; k < sizeof pairs / sizeof pairs[0]; ++k) {
    size_t sl = strlen(pairs[k][0]);
    if (len > sl && !strcmp(name + len - sl, pairs[k][0])) {
      snprintf(out, n, "%.*s%s", (int)(len - sl), name, pairs[k][1]);
      return;
    }
  }
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Index of name among the plan's modules via a sorted name array (names are
 * the first member of sq_plan_module, so the pointer maps back to the index). */
static long find_sorted(const sq_plan *p, const char **sorted, const char *name) {
  const char **hit = bsearch(&name, sorted, p->n_modules, sizeof *sorted, cmp_str);
  return hit ? (long)((const sq_plan_module *)(const void *)*hit - p->modules) : -1;
}

static void check_model(const char *dir, const char *model, const int *ranks, int nranks) {
  sq_model_config c;
  memset(&c, 0, sizeof c);
  if (sq_model_config_load(cfg_path(dir, model), &c) != SQ_OK) {
    sq_test_fail(__FILE__, __LINE__, "%s: load: %s", model, sq_error_message());
    sq_error_clear();
    return;
  }
  json_error_t jerr;
  json_t *root = json_load_file(g_path, 0, &jerr);
  SQ_EXPECT(root != NULL);
  expect_t x;
  expect_from_json(root, &x);
  sq_plan_opts o;
  sq_plan_opts_default(&o);
  o.samples = 100; /* not divisible by most rank counts */
  const char *qm = json_string_value(
      json_object_get(json_object_get(root, "quantization_config"), "quant_method"));
  const double eb = qm && !strcmp(qm, "fp8") ? 1.0 : 2.0;
  for (int ri = 0; ri < nranks; ++ri) {
    const int N = ranks[ri];
    sq_plan *p = NULL, *q = NULL;
    if (sq_plan_build(&c, N, &o, &p) != SQ_OK || sq_plan_build(&c, N, &o, &q) != SQ_OK) {
      sq_test_fail(__FILE__, __LINE__, "%s N=%d: %s", model, N, sq_error_message());
      sq_error_clear();
      sq_plan_free(p);
      break;
    }
    SQ_EXPECT_MSG((long long)p->n_modules == x.modules, "%s: %zu modules, formula %lld", model,
                  p->n_modules, x.modules);
    const char **names = malloc(p->n_modules * sizeof *names);
    for (size_t i = 0; i < p->n_modules; ++i) names[i] = p->modules[i].name;
    qsort(names, p->n_modules, sizeof *names, cmp_str);
    long long params = 0;
    int moe_layers = 0;
    size_t per_rank_sum = 0;
    for (size_t i = 0; i < p->n_modules; ++i) {
      const sq_plan_module *m = &p->modules[i];
      params += m->d_out * m->d_in;
      SQ_EXPECT(m->owner >= 0 && m->owner < N);
      SQ_EXPECT(m->owner == q->modules[i].owner); /* deterministic */
      if (N == 1) SQ_EXPECT_EQ_INT(m->owner, 0);
      /* solve cost d_in²(d_out + d_in), experts add tokens·d_in² on their group's first */
      double i2 = (double)m->d_in * (double)m->d_in, solve = i2 * (double)(m->d_out + m->d_in);
      if (m->kind != SQ_PLAN_EXPERT)
        SQ_EXPECT_NEAR(m->cost, solve, 0, 1e-12);
      else
        SQ_EXPECT(m->cost >= solve * (1 - 1e-12));
      /* load = cost + byte_cost × checkpoint bytes (fp8 for DeepSeek-V3, else bf16) */
      SQ_EXPECT_NEAR(m->load, m->cost + o.byte_cost * eb * (double)m->d_out * (double)m->d_in, 0,
                     1e-12);
      if (i > 0)
        SQ_EXPECT(m->group == p->modules[i - 1].group || m->group == p->modules[i - 1].group + 1);
      char pn[160];
      partner_name(m->name, pn, sizeof pn);
      if (pn[0]) {
        long k = find_sorted(p, names, pn);
        SQ_EXPECT_MSG(k >= 0, "%s: partner %s of %s missing", model, pn, m->name);
        if (k >= 0) {
          SQ_EXPECT_MSG(p->modules[k].owner == m->owner, "%s: %s and %s split", model, pn, m->name);
          SQ_EXPECT_MSG(p->modules[k].group == m->group, "%s: %s and %s groups", model, pn,
                        m->name);
        }
      }
    }
    for (int r = 0; r < N; ++r) per_rank_sum += p->rank[r].n_modules;
    SQ_EXPECT_EQ_INT(per_rank_sum, p->n_modules);
    SQ_EXPECT_MSG(params == x.params, "%s: planned params %lld, formula %lld", model, params,
                  x.params);
    long long tl = linear_params_from_tensor_list(&c);
    if (tl >= 0)
      SQ_EXPECT_MSG(params == tl, "%s: planned params %lld, tensor list %lld", model, params, tl);
    for (int l = 0; l < p->n_layers; ++l) {
      const sq_plan_layer *L = &p->layers[l];
      moe_layers += L->moe;
      const bool want_moe = x.moe_step > 0 && l >= x.moe_first && l % x.moe_step == x.moe_step - 1;
      SQ_EXPECT_MSG(L->moe == want_moe, "%s layer %d: moe %d, config says %d", model, l, L->moe,
                    want_moe);
      if (L->moe) {
        /* distinct expert indices among the layer's modules */
        long long seen = 0, last = -1;
        for (size_t i = L->first; i < L->first + L->count; ++i)
          if (p->modules[i].expert >= 0 && p->modules[i].expert != last)
            last = p->modules[i].expert, seen++;
        SQ_EXPECT_MSG(seen == x.experts, "%s layer %d: %lld experts, config %lld", model, l, seen,
                      x.experts);
      }
      /* Greedy list scheduling bound (Graham): max load <= total/N + largest group. */
      double *load = calloc((size_t)N, sizeof *load), tot = 0, big = 0, gsum = 0;
      for (size_t i = L->first; i < L->first + L->count; ++i) {
        load[p->modules[i].owner] += p->modules[i].load;
        tot += p->modules[i].load;
        gsum += p->modules[i].load;
        if (i + 1 == L->first + L->count || p->modules[i + 1].group != p->modules[i].group) {
          if (gsum > big) big = gsum;
          gsum = 0;
        }
      }
      for (int r = 0; r < N; ++r)
        SQ_EXPECT_MSG(load[r] <= tot / N + big * (1 + 1e-9), "%s N=%d layer %d: load %g > %g",
                      model, N, l, load[r], tot / N + big);
      free(load);
    }
    SQ_EXPECT_EQ_INT(moe_layers, x.moe_layers);
    /* names are unique: each module is owned exactly once */
    for (size_t i = 1; i < p->n_modules; ++i)
      SQ_EXPECT_MSG(strcmp(names[i - 1], names[i]) != 0, "%s: duplicate %s", model, names[i]);
    free(names);
    /* samples: contiguous, covering, sizes differ by at most one */
    long long prev = 0, mn = 1LL << 60, mx = 0;
    for (int r = 0; r < N; ++r) {
      SQ_EXPECT_EQ_INT(p->rank[r].sample_begin, prev);
      SQ_EXPECT_EQ_INT(p->rank[r].sample_begin, (long long)r * o.samples / N);
      long long sz = p->rank[r].sample_end - p->rank[r].sample_begin;
      if (sz < mn) mn = sz;
      if (sz > mx) mx = sz;
      prev = p->rank[r].sample_end;
    }
    SQ_EXPECT_EQ_INT(prev, o.samples);
    SQ_EXPECT(mx - mn <= 1);
    sq_plan_free(p);
    sq_plan_free(q);
  }
  json_decref(root);
  sq_model_config_free(&c);
}

/* Balance on Llama-3.1-405B: per-rank owned load max/mean, with the load
 * (solve d_out·d_in² + d_in³ + byte_cost × bf16 weight bytes) summed here
 * from the shapes, and the per-layer critical path. */
static void check_balance_405b(int N, double bound_total, double *ratio_out, double *mk_out) {
  sq_model_config c;
  memset(&c, 0, sizeof c);
  *ratio_out = *mk_out = 0;
  if (sq_model_config_load(cfg_path("tests/assets/configs", "Llama-3.1-405B"), &c) != SQ_OK) {
    sq_test_fail(__FILE__, __LINE__, "405B: %s", sq_error_message());
    sq_error_clear();
    return;
  }
  sq_plan_opts o = {512, 2048, 2e5};
  sq_plan *p = NULL;
  SQ_EXPECT(sq_plan_build(&c, N, &o, &p) == SQ_OK);
  if (!p) return;
  double *load = calloc((size_t)N, sizeof *load), sum = 0, mx = 0;
  for (size_t i = 0; i < p->n_modules; ++i) {
    const sq_plan_module *m = &p->modules[i];
    double din = (double)m->d_in, w = (double)m->d_out * din;
    load[m->owner] += w * din + din * din * din + o.byte_cost * 2.0 * w;
  }
  for (int r = 0; r < N; ++r) {
    sum += load[r];
    if (load[r] > mx) mx = load[r];
  }
  *ratio_out = mx / (sum / N);
  *mk_out = p->layer_makespan / (sum / N);
  SQ_EXPECT_MSG(*ratio_out < bound_total, "405B N=%d: max/mean %.4f >= %.2f", N, *ratio_out,
                bound_total);
  /* With N >= 4 groups per layer each group gets its own rank, so the
   * critical path is 126 × the largest group: qkv, o, gate+up or down. */
  if (N >= 4) {
    const double h = 16384, ff = 53248, kv = 1024, bc = o.byte_cost * 2.0;
    double g[4] = {(h + 2 * kv) * h * h + 3 * h * h * h + bc * (h + 2 * kv) * h, /* q, k, v */
                   h * h * h + h * h * h + bc * h * h,                           /* o */
                   2 * (ff * h * h + h * h * h) + bc * 2 * ff * h,               /* gate, up */
                   h * ff * ff + ff * ff * ff + bc * h * ff};                    /* down */
    double big = 0;
    for (int k = 0; k < 4; ++k) big = g[k] > big ? g[k] : big;
    SQ_EXPECT_NEAR(p->layer_makespan, 126 * big, 0, 1e-9);
  }
  free(load);
  sq_plan_free(p);
  sq_model_config_free(&c);
}

/* Qwen-MoE dense layers: mlp_only_layers and decoder_sparse_step. */
static void check_qwen_sparse_step(void) {
  const char *js =
      "{\"model_type\":\"qwen2_moe\",\"hidden_size\":64,\"intermediate_size\":96,"
      "\"num_hidden_layers\":6,\"num_attention_heads\":4,\"vocab_size\":100,"
      "\"num_experts\":4,\"num_experts_per_tok\":2,\"moe_intermediate_size\":32,"
      "\"shared_expert_intermediate_size\":48,\"decoder_sparse_step\":2,"
      "\"mlp_only_layers\":[3]}";
  sq_model_config c;
  memset(&c, 0, sizeof c);
  SQ_EXPECT(sq_model_config_parse("inline", js, strlen(js), &c) == SQ_OK);
  sq_plan *p = NULL;
  SQ_EXPECT(sq_plan_build(&c, 3, NULL, &p) == SQ_OK);
  if (!p) return;
  /* sparse iff (l+1) % 2 == 0 and l not in [3]: layers 1 and 5 */
  const int want[6] = {0, 1, 0, 0, 0, 1};
  for (int l = 0; l < 6; ++l) SQ_EXPECT_EQ_INT(p->layers[l].moe, want[l]);
  SQ_EXPECT_EQ_INT(p->n_modules, 4 * 7 + 2 * (4 + 3 * 4 + 3));
  long k = sq_plan_find(p, "model.layers.5.mlp.shared_expert.down_proj");
  SQ_EXPECT(k >= 0 && p->modules[k].d_in == 48 && p->modules[k].d_out == 64);
  k = sq_plan_find(p, "model.layers.3.mlp.down_proj");
  SQ_EXPECT(k >= 0 && p->modules[k].d_in == 96);
  sq_plan_free(p);
  sq_model_config_free(&c);
}

/* Estimate accounting: checkpoint bytes read across ranks = every planned
 * weight once + per-rank copies of the small tensors (identical per rank);
 * the 1-rank plan reads each weight once too. Peak memory falls with ranks. */
static void check_estimate(void) {
  sq_model_config c;
  memset(&c, 0, sizeof c);
  if (sq_model_config_load(cfg_path("tests/assets/configs", "Llama-3.1-8B"), &c) != SQ_OK) {
    sq_test_fail(__FILE__, __LINE__, "8B: %s", sq_error_message());
    sq_error_clear();
    return;
  }
  sq_plan_device d;
  sq_plan_device_default(&d);
  sq_plan *p1 = NULL, *p8 = NULL;
  sq_plan_estimate e1, e8;
  SQ_EXPECT(sq_plan_build(&c, 1, NULL, &p1) == SQ_OK && sq_plan_build(&c, 8, NULL, &p8) == SQ_OK);
  SQ_EXPECT(sq_plan_estimate_build(p1, &c, &d, &e1) == SQ_OK);
  SQ_EXPECT(sq_plan_estimate_build(p8, &c, &d, &e8) == SQ_OK);
  /* Linear weights of Llama-3.1-8B in bf16: 32 layers x 218,103,808 params x 2 B */
  const double lin = 32.0 * (4096.0 * 4096 * 2 + 2 * 4096.0 * 1024 + 3 * 4096.0 * 14336) * 2;
  const double small1 = (double)e1.total.bytes_read - lin; /* embed + norms, one copy */
  SQ_EXPECT_NEAR(small1, 128256.0 * 4096 * 2 + 32 * 2 * 4096.0 * 2, 64, 0);
  SQ_EXPECT_NEAR((double)e8.total.bytes_read, lin + 8 * small1, 64 * 8, 0);
  SQ_EXPECT(e8.total.peak_mem < e1.total.peak_mem);
  SQ_EXPECT(!e1.over_memory || e1.total.peak_mem > d.gpu_mem);
  SQ_EXPECT_NEAR(e8.total.flops, e1.total.flops, 0, 0.05); /* same work, split */
  d.gpu_mem = 1 << 20;
  sq_plan_estimate e9;
  SQ_EXPECT(sq_plan_estimate_build(p8, &c, &d, &e9) == SQ_OK);
  SQ_EXPECT(e9.over_memory);
  sq_plan_estimate_free(&e9);
  sq_plan_estimate_free(&e1);
  sq_plan_estimate_free(&e8);
  sq_plan_free(p1);
  sq_plan_free(p8);
  sq_model_config_free(&c);
}

int main(void) {
  const int ranks[] = {1, 3, 8, 64};
  const char *assets[] = {"Llama-3.1-8B", "Llama-3.1-405B", "Mistral-7B-v0.3",
                          "Qwen2.5-7B",   "DeepSeek-V3",    "Llama-4-Maverick-17B-128E-Instruct"};
  for (size_t i = 0; i < sizeof assets / sizeof assets[0]; ++i)
    check_model("tests/assets/configs", assets[i], ranks, 4);
  const char *mine[] = {"Mixtral-8x7B-v0.1", "Qwen1.5-MoE-A2.7B", "Qwen3-30B-A3B"};
  for (size_t i = 0; i < sizeof mine / sizeof mine[0]; ++i)
    check_model("tests/plan/configs", mine[i], ranks, 4);
  double r8, m8, r64, m64;
  check_balance_405b(8, 1.05, &r8, &m8);
  check_balance_405b(64, 1.35, &r64, &m64);
  printf(
      "Llama-3.1-405B owned load max/mean: 8 ranks %.4f, 64 ranks %.4f; "
      "per-layer critical path / ideal: %.3f, %.3f\n",
      r8, r64, m8, m64);
  check_qwen_sparse_step();
  check_estimate();
  sq_plan_opts o = {512, 2048, 0};
  sq_plan *p = NULL;
  sq_model_config c;
  memset(&c, 0, sizeof c);
  SQ_EXPECT(sq_plan_build(&c, 0, &o, &p) == SQ_ERR_ARG && p == NULL);
  sq_error_clear();
  return sq_test_result("test_plan");
}
