/* Recipe parser tests: the example recipes resolve to the QuantizationArgs of
 * compressed-tensors' PRESET_SCHEMES (the table below is transcribed from
 * quant_scheme.py, not from our output), regex targets behave like Python's
 * re.match, target priority and modifier order follow llm-compressor, and
 * the size limit holds. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "recipes/recipe.h"
#include "test_util.h"

/* Expected QuantizationArgs, written from compressed-tensors' definitions. */
typedef struct want {
  int present, bits;
  sq_qtype type;
  sq_qstrategy strat;
  int group, sym, dynamic;
} want;

static const want W_NONE = {0, 0, 0, 0, 0, 0, 0};
static const want W_INT4_G128 = {1, 4, SQ_QTYPE_INT, SQ_QSTRAT_GROUP, 128, 1, 0};     /* W4A16 */
static const want W_INT4_G128_ASYM = {1, 4, SQ_QTYPE_INT, SQ_QSTRAT_GROUP, 128, 0, 0};/* W4A16_ASYM */
static const want W_INT8_CH = {1, 8, SQ_QTYPE_INT, SQ_QSTRAT_CHANNEL, 0, 1, 0};       /* W8A16, W8A8 */
static const want A_INT8_TOK_DYN = {1, 8, SQ_QTYPE_INT, SQ_QSTRAT_TOKEN, 0, 1, 1};    /* W8A8 acts */
static const want W_FP8_TENSOR = {1, 8, SQ_QTYPE_FLOAT, SQ_QSTRAT_TENSOR, 0, 1, 0};   /* FP8 W and A */
static const want W_FP8_CH = {1, 8, SQ_QTYPE_FLOAT, SQ_QSTRAT_CHANNEL, 0, 1, 0};      /* FP8_DYNAMIC W */
static const want A_FP8_TOK_DYN = {1, 8, SQ_QTYPE_FLOAT, SQ_QSTRAT_TOKEN, 0, 1, 1};   /* FP8_DYNAMIC A */

static void expect_q(const char *what, const sq_recipe_qargs *q, want w, int line) {
  int ok = q->present == w.present;
  if (ok && w.present)
    ok = q->num_bits == w.bits && q->type == w.type && q->strategy == w.strat && q->group_size == w.group &&
         q->symmetric == w.sym && q->dynamic == w.dynamic && (w.dynamic ? !q->observer[0] : !strcmp(q->observer, "minmax"));
  if (!ok) {
    char b[160];
    sq_test_fail(__FILE__, line, "%s: got %s (present %d), want bits %d type %d strat %d group %d sym %d dyn %d",
                 what, sq_recipe_qargs_format(q, b, sizeof b), q->present, w.bits, w.type, w.strat, w.group,
                 w.sym, w.dynamic);
  }
}
#define EXPECT_Q(what, q, w) expect_q(what, q, w, __LINE__)

static sq_recipe *load_example(const char *file) {
  const char *src = getenv("SHARDQ_SOURCE_DIR");
  char path[4096];
  snprintf(path, sizeof path, "%s/recipes/%s", src ? src : ".", file);
  sq_recipe *r = NULL;
  sq_status st = sq_recipe_load(path, &r);
  SQ_EXPECT_MSG(st == SQ_OK, "%s: %s", file, sq_error_message());
  sq_error_clear();
  return r;
}

static sq_recipe_resolution resolve(const sq_recipe *r, const char *name, const char *cls) {
  sq_recipe_resolution res;
  SQ_EXPECT(sq_recipe_resolve(r, name, cls, &res) == SQ_OK);
  return res;
}

static sq_recipe *parse_str(const char *text) {
  sq_recipe *r = NULL;
  sq_status st = sq_recipe_parse("inline.yaml", text, strlen(text), &r);
  SQ_EXPECT_MSG(st == SQ_OK, "inline recipe failed: %s", sq_error_message());
  sq_error_clear();
  return r;
}

static void test_presets(void) {
  struct {
    const char *name;
    want w, a;
  } t[] = {{"W4A16", W_INT4_G128, W_NONE},       {"w4a16_asym", W_INT4_G128_ASYM, W_NONE},
           {"W8A16", W_INT8_CH, W_NONE},         {"W8A8", W_INT8_CH, A_INT8_TOK_DYN},
           {"INT8", W_INT8_CH, A_INT8_TOK_DYN},  {"W4A8", W_INT4_G128, A_INT8_TOK_DYN},
           {"FP8", W_FP8_TENSOR, W_FP8_TENSOR},  {"fp8_dynamic", W_FP8_CH, A_FP8_TOK_DYN},
           {"UNQUANTIZED", W_NONE, W_NONE}};
  for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
    sq_recipe_scheme s;
    SQ_EXPECT(sq_recipe_preset(t[i].name, &s) == SQ_OK);
    EXPECT_Q(t[i].name, &s.weights, t[i].w);
    EXPECT_Q(t[i].name, &s.input_activations, t[i].a);
    SQ_EXPECT(!s.output_activations.present);
  }
  sq_recipe_scheme s;
  SQ_EXPECT(sq_recipe_preset("W3A16", &s) != SQ_OK);
  sq_error_clear();
}

static void test_examples(void) {
  sq_recipe *r = load_example("w4a16_gptq_g128.yaml");
  if (r) {
    SQ_EXPECT_EQ_INT(r->n_mods, 1);
    SQ_EXPECT_EQ_INT(r->mods[0].kind, SQ_MOD_GPTQ);
    SQ_EXPECT_EQ_INT(r->mods[0].block_size, 128);
    SQ_EXPECT_NEAR(r->mods[0].dampening_frac, 0.01, 0, 0);
    sq_recipe_resolution q = resolve(r, "model.layers.3.self_attn.q_proj", "Linear");
    EXPECT_Q("w4a16 q_proj", &q.weights, W_INT4_G128);
    SQ_EXPECT_EQ_INT(q.method, SQ_METHOD_GPTQ);
    SQ_EXPECT_EQ_INT(q.weights.actorder, SQ_ACTORDER_WEIGHT); /* "static" is an alias of weight */
    sq_recipe_resolution h = resolve(r, "lm_head", "Linear");
    SQ_EXPECT(h.ignored && h.method == SQ_METHOD_NONE);
    sq_recipe_resolution e = resolve(r, "model.embed_tokens", "Embedding");
    SQ_EXPECT(!e.ignored && e.method == SQ_METHOD_NONE);
    sq_recipe_free(r);
  }
  r = load_example("w8a8_int8_smoothquant_gptq.yaml");
  if (r) {
    SQ_EXPECT_EQ_INT(r->n_mods, 2);
    SQ_EXPECT_EQ_INT(r->mods[0].kind, SQ_MOD_SMOOTHQUANT);
    SQ_EXPECT_EQ_INT(r->mods[1].kind, SQ_MOD_GPTQ);
    SQ_EXPECT_NEAR(r->mods[0].smoothing_strength, 0.8, 0, 0);
    SQ_EXPECT_EQ_INT(r->mods[0].n_mappings, 2);
    sq_recipe_resolution d = resolve(r, "model.layers.0.mlp.down_proj", "Linear");
    EXPECT_Q("w8a8 W", &d.weights, W_INT8_CH);
    EXPECT_Q("w8a8 A", &d.input_activations, A_INT8_TOK_DYN);
    SQ_EXPECT_EQ_INT(d.weights.actorder, SQ_ACTORDER_NONE); /* channel: GPTQ adds no actorder */
    SQ_EXPECT(d.smooth_mod == NULL);
    sq_recipe_resolution k = resolve(r, "model.layers.0.self_attn.k_proj", "Linear");
    SQ_EXPECT(k.smooth_mod == &r->mods[0] && k.method == SQ_METHOD_GPTQ);
    sq_recipe_free(r);
  }
  r = load_example("fp8_dynamic.yaml");
  if (r) {
    sq_recipe_resolution o = resolve(r, "model.layers.1.self_attn.o_proj", "Linear");
    EXPECT_Q("fp8_dynamic W", &o.weights, W_FP8_CH);
    EXPECT_Q("fp8_dynamic A", &o.input_activations, A_FP8_TOK_DYN);
    SQ_EXPECT_EQ_INT(o.method, SQ_METHOD_RTN);
    SQ_EXPECT(sq_recipe_kv_cache(r) == NULL);
    sq_recipe_free(r);
  }
  r = load_example("w4a16_gptq_fp8_kv.yaml");
  if (r) {
    sq_recipe_resolution u = resolve(r, "model.layers.0.mlp.up_proj", "Linear");
    EXPECT_Q("w4a16 kv W", &u.weights, W_INT4_G128);
    SQ_EXPECT(!u.input_activations.present);
    const sq_recipe_qargs *kv = sq_recipe_kv_cache(r);
    SQ_EXPECT(kv != NULL);
    if (kv) EXPECT_Q("kv", kv, W_FP8_TENSOR);
    sq_recipe_free(r);
  }
  r = load_example("sparse24_sparsegpt_fp8.yaml");
  if (r) {
    SQ_EXPECT_EQ_INT(r->n_mods, 2);
    SQ_EXPECT_EQ_INT(r->mods[0].mask_n, 2);
    SQ_EXPECT_EQ_INT(r->mods[0].mask_m, 4);
    SQ_EXPECT_NEAR(r->mods[0].sparsity, 0.5, 0, 0);
    SQ_EXPECT(!strcmp(r->mods[0].stage, "sparsity") && !strcmp(r->mods[1].stage, "quantization"));
    sq_recipe_resolution g = resolve(r, "model.layers.2.mlp.gate_proj", "Linear");
    SQ_EXPECT(g.sparse_mod == &r->mods[0]);
    EXPECT_Q("sparse24 W", &g.weights, W_FP8_TENSOR);
    EXPECT_Q("sparse24 A", &g.input_activations, W_FP8_TENSOR);
    SQ_EXPECT(resolve(r, "lm_head", "Linear").ignored);
    sq_recipe_free(r);
  }
  r = load_example("sparse50_sparsegpt.yaml");
  if (r) {
    SQ_EXPECT_EQ_INT(r->mods[0].mask_m, 0);
    SQ_EXPECT(resolve(r, "model.layers.12.self_attn.q_proj", "Linear").sparse_mod != NULL);
    SQ_EXPECT(resolve(r, "model.layers.3.mlp.down_proj", "Linear").sparse_mod != NULL);
    SQ_EXPECT(resolve(r, "model.layers.x.mlp.down_proj", "Linear").sparse_mod == NULL);
    SQ_EXPECT(resolve(r, "lm_head", "Linear").sparse_mod == NULL);
    sq_recipe_free(r);
  }
  r = load_example("fp8_fp8kv.yaml");
  if (r) {
    sq_recipe_resolution v = resolve(r, "model.layers.0.self_attn.v_proj", "Linear");
    EXPECT_Q("fp8 W", &v.weights, W_FP8_TENSOR);
    EXPECT_Q("fp8 A", &v.input_activations, W_FP8_TENSOR);
    const sq_recipe_qargs *kv = sq_recipe_kv_cache(r);
    SQ_EXPECT(kv != NULL);
    if (kv) EXPECT_Q("fp8 kv", kv, W_FP8_TENSOR);
    sq_recipe_free(r);
  }
}

/* Expected booleans follow Python's re.match (anchored at the start only). */
static void test_regex(void) {
  struct {
    const char *target, *name, *cls;
    int want;
  } t[] = {
      {"re:.*lm_head", "lm_head", "Linear", 1},
      {"re:.*lm_head", "model.lm_head", "Linear", 1},
      {"re:model.layers.\\d+.mlp", "model.layers.3.mlp.down_proj", "Linear", 1},
      {"re:model.layers.\\d+.mlp", "model.layers.x.mlp.down_proj", "Linear", 0},
      {"re:.*mlp.gate$", "model.layers.0.mlp.gate", "Linear", 1},
      {"re:.*mlp.gate$", "model.layers.0.mlp.gate_proj", "Linear", 0},
      {"re:.*self_attn.(q|k|v)_proj$", "model.layers.0.self_attn.k_proj", "Linear", 1},
      {"re:.*self_attn.(q|k|v)_proj$", "model.layers.0.self_attn.o_proj", "Linear", 0},
      {"re:layers", "model.layers.0.mlp", "Linear", 0}, /* re.match does not search */
      {"re:[\\w.]+_proj$", "model.layers.0.mlp.up_proj", "Linear", 1},
      {"re:[\\w]+$", "model.layers", "Linear", 0},
      {"re:.*\\.0\\.", "model.layers.0.mlp", "Linear", 1},
      {"re:.*\\.0\\.", "model.layers.10mlp", "Linear", 0},
      {"re:\\S+\\s", "a b", "Linear", 1},
      {"re:\\D+$", "lm_head", "Linear", 1},
      {"re:\\D+$", "layer1", "Linear", 0},
      {"re:.*experts\\.\\d{2}\\.", "model.layers.1.mlp.experts.17.up_proj", "Linear", 1},
      {"re:.*experts\\.\\d{2}\\.", "model.layers.1.mlp.experts.7.up_proj", "Linear", 0},
      {"Linear", "model.layers.0.mlp.up_proj", "Linear", 1},
      {"Linear", "model.embed_tokens", "Embedding", 0},
      {"lm_head", "lm_head", "Linear", 1},
      {"lm_head", "model.lm_head", "Linear", 0},
  };
  for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
    char text[512];
    snprintf(text, sizeof text, "quant_stage:\n  quant_modifiers:\n    QuantizationModifier:\n"
             "      scheme: W8A16\n      ignore: ['%s']\n", t[i].target);
    sq_recipe *r = parse_str(text);
    if (!r) continue;
    int got = sq_recipe_target_match(&r->mods[0].ignore.v[0], t[i].name, t[i].cls);
    SQ_EXPECT_MSG(got == t[i].want, "target %s vs %s: got %d want %d", t[i].target, t[i].name, got, t[i].want);
    sq_recipe_free(r);
  }
  /* rejected constructs */
  const char *bad[] = {"re:.*?proj", "re:(?i)proj", "re:\\bproj", "re:[a-", "re:a(b", "re:\\1"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    char text[512];
    snprintf(text, sizeof text, "m_modifiers:\n  QuantizationModifier:\n    scheme: W8A16\n    ignore: ['%s']\n",
             bad[i]);
    sq_recipe *r = NULL;
    sq_status st = sq_recipe_parse("bad.yaml", text, strlen(text), &r);
    SQ_EXPECT_MSG(st != SQ_OK && !strncmp(sq_error_message(), "bad.yaml:4:14:", 14), "%s: %s", bad[i],
                  sq_error_message());
    sq_error_clear();
    sq_recipe_free(r);
  }
}

static void test_priority_and_order(void) {
  /* exact name > regex > class name within one modifier; ignore wins */
  sq_recipe *r = parse_str(
      "modifiers:\n"
      "  GPTQModifier:\n"
      "    ignore: ['re:.*layers.5.']\n"
      "    config_groups:\n"
      "      a: {targets: [Linear], weights: {num_bits: 8, strategy: channel}}\n"
      "      b: {targets: ['re:.*down_proj$'], weights: {num_bits: 4, group_size: 128}}\n"
      "      c: {targets: [model.layers.0.mlp.down_proj], weights: {num_bits: 2, group_size: 64, symmetric: false}}\n");
  if (r) {
    SQ_EXPECT(!strcmp(resolve(r, "model.layers.1.mlp.up_proj", "Linear").scheme->name, "a"));
    SQ_EXPECT(!strcmp(resolve(r, "model.layers.1.mlp.down_proj", "Linear").scheme->name, "b"));
    sq_recipe_resolution c = resolve(r, "model.layers.0.mlp.down_proj", "Linear");
    SQ_EXPECT(!strcmp(c.scheme->name, "c"));
    want w2 = {1, 2, SQ_QTYPE_INT, SQ_QSTRAT_GROUP, 64, 0, 0};
    EXPECT_Q("c", &c.weights, w2);
    SQ_EXPECT(resolve(r, "model.layers.5.mlp.down_proj", "Linear").ignored);
    sq_recipe_free(r);
  }
  /* a later modifier overrides; GPTQ without a scheme runs on earlier weights;
   * actorder: true means group */
  r = parse_str(
      "a_stage:\n"
      "  x_modifiers:\n"
      "    QuantizationModifier: {scheme: {W4A16_ASYM: ['re:.*proj$']}, ignore: [lm_head]}\n"
      "b_stage:\n"
      "  y_modifiers:\n"
      "    GPTQModifier: {actorder: true, ignore: ['re:.*o_proj']}\n");
  if (r) {
    SQ_EXPECT_EQ_INT(r->n_mods, 2);
    sq_recipe_resolution q = resolve(r, "model.layers.0.self_attn.q_proj", "Linear");
    EXPECT_Q("asym", &q.weights, W_INT4_G128_ASYM);
    SQ_EXPECT(q.method == SQ_METHOD_GPTQ && q.weights.actorder == SQ_ACTORDER_GROUP);
    sq_recipe_resolution o = resolve(r, "model.layers.0.self_attn.o_proj", "Linear");
    SQ_EXPECT(o.method == SQ_METHOD_RTN && o.weights.actorder == SQ_ACTORDER_NONE);
    sq_recipe_free(r);
  }
  /* scheme as a QuantizationScheme mapping; strategy inferred from group_size */
  r = parse_str("quant_stage:\n  quant_modifiers:\n    QuantizationModifier:\n      targets: Linear\n"
                "      scheme:\n        weights: {num_bits: 8, group_size: -1}\n"
                "        input_activations: {num_bits: 8, strategy: token, dynamic: true, observer: minmax}\n");
  if (r) {
    sq_recipe_resolution d = resolve(r, "model.layers.0.mlp.down_proj", "Linear");
    EXPECT_Q("inferred channel", &d.weights, W_INT8_CH);
    EXPECT_Q("dynamic drops observer", &d.input_activations, A_INT8_TOK_DYN);
    sq_recipe_free(r);
  }
}

static void test_limits(void) {
  size_t n = SQ_RECIPE_MAX_BYTES + 1;
  char *big = malloc(n);
  if (!big) return;
  memset(big, ' ', n);
  memcpy(big, "x_stage: {}\n#", 13);
  sq_recipe *r = NULL;
  SQ_EXPECT(sq_recipe_parse("big.yaml", big, n, &r) == SQ_ERR_FORMAT && r == NULL);
  SQ_EXPECT(strstr(sq_error_message(), "big.yaml:1:1:") == sq_error_message());
  sq_error_clear();
  char *dir = sq_test_tmpdir("recipe_limits");
  if (dir) {
    char path[4096];
    snprintf(path, sizeof path, "%s/big.yaml", dir);
    FILE *f = fopen(path, "wb");
    if (f) {
      fwrite(big, 1, n, f);
      fclose(f);
      SQ_EXPECT(sq_recipe_load(path, &r) == SQ_ERR_FORMAT);
      SQ_EXPECT(strstr(sq_error_message(), "larger than") != NULL);
      sq_error_clear();
      remove(path);
    }
    SQ_EXPECT(sq_recipe_load("/nonexistent/recipe.yaml", &r) == SQ_ERR_IO);
    sq_error_clear();
    free(dir);
  }
  free(big);
}

int main(void) {
  test_presets();
  test_examples();
  test_regex();
  test_priority_and_order();
  test_limits();
  return sq_test_result("test_recipe");
}
