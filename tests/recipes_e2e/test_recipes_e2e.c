/* Every example recipe in recipes/ through `shardq quantize --recipe`, end to
 * end, on a synthetic model (2 layers, hidden 64, bf16) and on the real
 * stories260K (fp32; skipped when ../shared/testdata is absent). Checks:
 *  - config.json's quantization_config, field by field, against literal
 *    values written here from each recipe's text (not from the code path):
 *    format, the config group's targets and every weights/input_activations
 *    QuantizationArgs field, ignore, kv_cache_scheme, sparsity_config;
 *  - the tensors each module is stored as (packed / int8 / fp8 / dense),
 *    2:4 and 50% sparsity of the pruned weights;
 *  - k_scale / v_scale / input_scale of layer 0 equal absmax/448 of k (after
 *    RoPE), v and the q/k/v input recomputed here by a second path: this
 *    test's own forward of layer 0 over the calibration samples with hooks;
 *  - SmoothQuant: the written input_layernorm changed, and the folded product
 *    (dequantized W) * (new norm) matches W * (old norm) to quantization error;
 *  - GPTQ via the W4A16 recipe writes the same bytes as the equivalent
 *    --scheme command line (second path);
 *  - a recipe's ignore list (regex) leaves those modules dense and lists them
 *    by name in ignore; dampening_frac 0 is accepted. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kernels/forward.h"
#include "sharding/checkpoint.h"
#include "sharding/compressed.h"
#include "test_util.h"
#include "worker/calib.h"
#include "worker/model.h"

static const char *bin;
static char src_recipes[4096];

static int run(const char *cmd) {
  fprintf(stderr, "+ %s\n", cmd);
  return system(cmd);
}

/* ---- expected values, written from the recipe files -------------------- */

typedef struct {
  int bits;
  const char *type, *strategy, *actorder, *observer; /* NULL = JSON null */
  int sym, group, dynamic;                          /* group -1 = null */
} xargs;

typedef struct {
  const char *recipe, *format;
  int has_w;
  xargs w;
  int has_a;
  xargs a;
  int has_kv;
  xargs kv;
  const char *sparsity; /* NULL: sparsity_config {} */
  int input_scale, smooth;
  const char *store;    /* "packed", "int", "fp8", "dense" */
} expect;

#define FP8_STATIC {8, "float", "tensor", NULL, "minmax", 1, -1, 0}
static const expect cases[] = {
    {"fp8_dynamic.yaml", "float-quantized", 1, {8, "float", "channel", NULL, "minmax", 1, -1, 0},
     1, {8, "float", "token", NULL, NULL, 1, -1, 1}, 0, {0}, NULL, 0, 0, "fp8"},
    {"fp8_fp8kv.yaml", "float-quantized", 1, FP8_STATIC, 1, FP8_STATIC, 1, FP8_STATIC, NULL, 1, 0,
     "fp8"},
    {"sparse24_sparsegpt_fp8.yaml", "float-quantized", 1, FP8_STATIC, 1, FP8_STATIC, 0, {0}, "2:4",
     1, 0, "fp8"},
    {"sparse50_sparsegpt.yaml", "dense", 0, {0}, 0, {0}, 0, {0}, "unstructured", 0, 0, "dense"},
    {"w4a16_gptq_fp8_kv.yaml", "pack-quantized", 1, {4, "int", "group", "weight", "minmax", 1, 128, 0},
     0, {0}, 1, FP8_STATIC, NULL, 0, 0, "packed"},
    {"w4a16_gptq_g128.yaml", "pack-quantized", 1, {4, "int", "group", "weight", "minmax", 1, 128, 0},
     0, {0}, 0, {0}, NULL, 0, 0, "packed"},
    {"w8a8_int8_smoothquant_gptq.yaml", "int-quantized", 1,
     {8, "int", "channel", NULL, "minmax", 1, -1, 0}, 1, {8, "int", "token", NULL, NULL, 1, -1, 1},
     0, {0}, NULL, 0, 1, "int"},
};

static void expect_str(const json_t *o, const char *key, const char *want, const char *label) {
  const json_t *v = json_object_get(o, key);
  if (!want)
    SQ_EXPECT_MSG(v && json_is_null(v), "%s.%s: expected null", label, key);
  else
    SQ_EXPECT_MSG(json_is_string(v) && !strcmp(json_string_value(v), want),
                  "%s.%s: expected \"%s\", got %s", label, key, want,
                  json_is_string(v) ? json_string_value(v) : "(not a string)");
}

static void expect_args(const json_t *a, const xargs *x, const char *label) {
  SQ_EXPECT_MSG(json_is_object(a), "%s: expected an object", label);
  if (!json_is_object(a)) return;
  SQ_EXPECT_MSG(json_integer_value(json_object_get(a, "num_bits")) == x->bits, "%s.num_bits", label);
  expect_str(a, "type", x->type, label);
  expect_str(a, "strategy", x->strategy, label);
  expect_str(a, "actorder", x->actorder, label);
  expect_str(a, "observer", x->observer, label);
  SQ_EXPECT_MSG(json_is_boolean(json_object_get(a, "symmetric")) &&
                    json_boolean_value(json_object_get(a, "symmetric")) == x->sym,
                "%s.symmetric", label);
  SQ_EXPECT_MSG(json_is_boolean(json_object_get(a, "dynamic")) &&
                    json_boolean_value(json_object_get(a, "dynamic")) == x->dynamic,
                "%s.dynamic", label);
  const json_t *g = json_object_get(a, "group_size");
  if (x->group < 0) SQ_EXPECT_MSG(json_is_null(g), "%s.group_size: expected null", label);
  else SQ_EXPECT_MSG(json_integer_value(g) == x->group, "%s.group_size", label);
  SQ_EXPECT_MSG(json_is_null(json_object_get(a, "block_structure")), "%s.block_structure", label);
}

static void expect_list(const json_t *arr, const char *const *want, size_t n, const char *label) {
  SQ_EXPECT_MSG(json_is_array(arr) && json_array_size(arr) == n, "%s: expected %zu entries, got %zu",
                label, n, json_is_array(arr) ? json_array_size(arr) : 0);
  for (size_t i = 0; json_is_array(arr) && i < n && i < json_array_size(arr); i++) {
    const char *s = json_string_value(json_array_get(arr, i));
    SQ_EXPECT_MSG(s && !strcmp(s, want[i]), "%s[%zu]: expected %s, got %s", label, i, want[i],
                  s ? s : "?");
  }
}

static json_t *load_qc(const char *dir) {
  char p[4200];
  snprintf(p, sizeof p, "%s/config.json", dir);
  json_t *doc = json_load_file(p, 0, NULL);
  SQ_EXPECT_MSG(doc, "%s: cannot read", p);
  return doc;
}

static void check_config(const char *dir, const expect *e, const char *const *ignore, size_t n_ign) {
  json_t *doc = load_qc(dir);
  if (!doc) return;
  const json_t *qc = json_object_get(doc, "quantization_config");
  char label[256];
  snprintf(label, sizeof label, "%s quantization_config", e->recipe);
  SQ_EXPECT_MSG(json_is_object(qc), "%s: missing", label);
  expect_str(qc, "format", e->format, label);
  expect_str(qc, "quant_method", "compressed-tensors", label);
  expect_str(qc, "quantization_status", "compressed", label);
  expect_list(json_object_get(qc, "ignore"), ignore, n_ign, "ignore");
  const json_t *groups = json_object_get(qc, "config_groups");
  SQ_EXPECT_EQ_INT(json_object_size(groups), e->has_w ? 1 : 0);
  const json_t *g = json_object_get(groups, "group_0");
  if (e->has_w && g) {
    static const char *const lin[] = {"Linear"};
    expect_list(json_object_get(g, "targets"), lin, 1, "group_0.targets");
    expect_args(json_object_get(g, "weights"), &e->w, "group_0.weights");
    if (e->has_a) expect_args(json_object_get(g, "input_activations"), &e->a, "group_0.input_activations");
    else SQ_EXPECT_MSG(json_is_null(json_object_get(g, "input_activations")), "%s: input null", label);
    SQ_EXPECT(json_is_null(json_object_get(g, "output_activations")));
  }
  const json_t *kv = json_object_get(qc, "kv_cache_scheme");
  if (e->has_kv) expect_args(kv, &e->kv, "kv_cache_scheme");
  else SQ_EXPECT_MSG(json_is_null(kv), "%s: kv_cache_scheme should be null", label);
  const json_t *sp = json_object_get(qc, "sparsity_config");
  if (!e->sparsity) {
    SQ_EXPECT_MSG(json_is_object(sp) && json_object_size(sp) == 0, "%s: sparsity_config {}", label);
  } else {
    expect_str(sp, "sparsity_structure", e->sparsity, "sparsity_config");
    expect_str(sp, "format", "dense", "sparsity_config");
    SQ_EXPECT_NEAR(json_real_value(json_object_get(sp, "global_sparsity")), 0.5, 0, 0);
    static const char *const lin[] = {"Linear"}, *const lmh[] = {"lm_head"};
    expect_list(json_object_get(sp, "targets"), lin, 1, "sparsity_config.targets");
    expect_list(json_object_get(sp, "ignore"), lmh, 1, "sparsity_config.ignore");
  }
  json_decref(doc);
}

/* ---- tensors --------------------------------------------------------------- */

static const char *const mods[7] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                    "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj",
                                    "mlp.down_proj"};

static void check_tensors(const char *dir, const expect *e, int n_layers, sq_dtype model_dt) {
  sq_ckpt *c = NULL;
  SQ_EXPECT(sq_ckpt_open(dir, &c) == SQ_OK);
  if (!c) return;
  for (int l = 0; l < n_layers; l++)
    for (int m = 0; m < 7; m++) {
      char n[256];
      const sq_st_file *f;
      snprintf(n, sizeof n, "model.layers.%d.%s.weight", l, mods[m]);
      const sq_st_tensor *w = sq_ckpt_find(c, n, &f);
      snprintf(n, sizeof n, "model.layers.%d.%s.weight_packed", l, mods[m]);
      const sq_st_tensor *wp = sq_ckpt_find(c, n, NULL);
      if (!strcmp(e->store, "packed")) SQ_EXPECT_MSG(wp && !w, "%s: expected packed", n);
      else if (!strcmp(e->store, "int")) SQ_EXPECT_MSG(w && w->dtype == SQ_DTYPE_I8, "%s: int8", n);
      else if (!strcmp(e->store, "fp8")) SQ_EXPECT_MSG(w && w->dtype == SQ_DTYPE_F8_E4M3, "%s: fp8", n);
      else SQ_EXPECT_MSG(w && w->dtype == model_dt, "%s: dense", n);
      snprintf(n, sizeof n, "model.layers.%d.%s.input_scale", l, mods[m]);
      const sq_st_tensor *is = sq_ckpt_find(c, n, NULL);
      SQ_EXPECT_MSG(!is == !e->input_scale, "%s: present %d, expected %d", n, !!is, e->input_scale);
      if (is) SQ_EXPECT(is->ndim == 1 && is->shape[0] == 1 && is->dtype == model_dt);
      if (e->sparsity && w) { /* zeros per row of 4 (2:4) or overall (50%) */
        size_t cnt = (size_t)(w->shape[0] * w->shape[1]), es = sq_dtype_size(w->dtype), zeros = 0;
        unsigned char *raw = malloc(cnt * es);
        SQ_EXPECT(sq_st_read_raw(f, w, 0, raw, cnt * es) == SQ_OK);
        int bad24 = 0;
        for (size_t i = 0; i < cnt; i += 4) {
          int z = 0;
          for (size_t k = i; k < i + 4 && k < cnt; k++) {
            int zero = 1;
            for (size_t b = 0; b < es; b++) /* +0 or -0 in any float format */
              zero &= (raw[k * es + b] & (b == es - 1 ? 0x7f : 0xff)) == 0;
            z += zero;
          }
          zeros += (size_t)z;
          bad24 += z < 2;
        }
        if (!strcmp(e->sparsity, "2:4")) SQ_EXPECT_MSG(!bad24, "%s: %d groups of 4 break 2:4", n, bad24);
        else SQ_EXPECT_MSG(zeros * 100 >= cnt * 49, "%s: %zu of %zu zero", n, zeros, cnt);
        free(raw);
      }
    }
  for (int kv = 0; kv < 2; kv++) {
    char n[128];
    snprintf(n, sizeof n, "model.layers.%d.self_attn.%s", n_layers - 1, kv ? "v_scale" : "k_scale");
    const sq_st_tensor *t = sq_ckpt_find(c, n, NULL);
    SQ_EXPECT_MSG(!t == !e->has_kv, "%s: present %d, expected %d", n, !!t, e->has_kv);
    if (t) SQ_EXPECT(t->ndim == 1 && t->shape[0] == 1 && t->dtype == model_dt);
  }
  sq_ckpt_close(c);
}

/* ---- layer 0 recomputed here ------------------------------------------------- */

typedef struct { float k, v, x; } amax3;
static float amax_of(const float *X, int64_t n, float m) {
  for (int64_t i = 0; i < n; i++) m = fabsf(X[i]) > m ? fabsf(X[i]) : m;
  return m;
}
static sq_status hk(void *u, const float *X, int64_t r, int64_t c) {
  ((amax3 *)u)->k = amax_of(X, r * c, ((amax3 *)u)->k);
  return SQ_OK;
}
static sq_status hv(void *u, const float *X, int64_t r, int64_t c) {
  ((amax3 *)u)->v = amax_of(X, r * c, ((amax3 *)u)->v);
  return SQ_OK;
}
static sq_status hx(void *u, const float *X, int64_t r, int64_t c) {
  ((amax3 *)u)->x = amax_of(X, r * c, ((amax3 *)u)->x);
  return SQ_OK;
}

/* absmax of k, v and norm1(x) of layer 0 over calib (first n rows, T tokens). */
static amax3 layer0_absmax(const char *model, const char *calib, int64_t n, int64_t T) {
  amax3 a = {0, 0, 0};
  sq_model m;
  sq_calib cb;
  SQ_EXPECT(sq_model_open(model, 0, &m) == SQ_OK);
  SQ_EXPECT(sq_calib_load(calib, n, T, 0, &cb) == SQ_OK);
  const sq_model_info *mi = &m.info;
  sq_layer_buf buf;
  SQ_EXPECT(sq_layer_buf_init(&buf, mi) == SQ_OK);
  SQ_EXPECT(sq_layer_buf_load(&buf, &m, 0) == SQ_OK);
  float *emb = malloc(sizeof(float) * (size_t)(mi->vocab * mi->hidden));
  SQ_EXPECT(sq_model_read_f32(&m, "model.embed_tokens.weight", emb,
                              (uint64_t)(mi->vocab * mi->hidden)) == SQ_OK);
  sq_rope rope = {0};
  SQ_EXPECT(sq_model_rope_init(mi, cb.T, &rope) == SQ_OK);
  sq_fwd_layer_cfg cfg = sq_model_fwd_cfg(mi, &rope);
  /* one sample at a time (the pipeline batches 8: a different path) */
  float *x = malloc(sizeof(float) * (size_t)(cb.T * mi->hidden));
  float *y = malloc(sizeof(float) * (size_t)(cb.T * mi->hidden));
  size_t wsb = (sq_fwd_layer_workspace_bytes(&cfg, 1, cb.T) + 63) / 64 * 64;
  void *ws = aligned_alloc(64, wsb);
  sq_fwd_layer_weights w = sq_layer_buf_weights(&buf);
  sq_fwd_hooks h = {.k_cache = hk, .v_cache = hv, .qkv_in = hx, .user = &a};
  for (int64_t s = 0; s < cb.n; s++) {
    SQ_EXPECT(sq_fwd_embed(emb, mi->vocab, mi->hidden, cb.ids + s * cb.T, cb.T, x) == SQ_OK);
    SQ_EXPECT(sq_fwd_layer(&cfg, &w, x, 1, cb.T, &h, ws, y) == SQ_OK);
  }
  free(x), free(y), free(ws), free(emb);
  sq_fwd_rope_free(&rope);
  sq_layer_buf_free(&buf);
  sq_calib_free(&cb);
  sq_model_close(&m);
  return a;
}

static void check_scale(const sq_ckpt *c, const char *name, float amax, sq_dtype dt) {
  float got = -1;
  SQ_EXPECT_MSG(sq_ckpt_read_f32(c, name, &got, 1) == SQ_OK, "%s: missing", name);
  double want = (double)amax / 448.0;
  /* stored in the model dtype: within half an ulp (relative 2^-8 bf16, 2^-11 f16) */
  double tol = dt == SQ_DTYPE_BF16 ? 1.0 / 256 : dt == SQ_DTYPE_F16 ? 1.0 / 2048 : 2e-6;
  fprintf(stderr, "%s = %.9g, recomputed absmax/448 = %.9g\n", name, got, want);
  SQ_EXPECT_NEAR(got, want, 0, tol);
}

static void check_layer0_scales(const char *model, const char *calib, int64_t n, int64_t T,
                                const char *out, const expect *e, sq_dtype dt) {
  if (!e->has_kv && !e->input_scale) return;
  amax3 a = layer0_absmax(model, calib, n, T);
  SQ_EXPECT(a.k > 0 && a.v > 0 && a.x > 0);
  sq_ckpt *c = NULL;
  SQ_EXPECT(sq_ckpt_open(out, &c) == SQ_OK);
  if (!c) return;
  if (e->has_kv) {
    check_scale(c, "model.layers.0.self_attn.k_scale", a.k, dt);
    check_scale(c, "model.layers.0.self_attn.v_scale", a.v, dt);
  }
  if (e->input_scale) {
    check_scale(c, "model.layers.0.self_attn.q_proj.input_scale", a.x, dt);
    check_scale(c, "model.layers.0.self_attn.v_proj.input_scale", a.x, dt);
  }
  sq_ckpt_close(c);
}

/* SmoothQuant folded: W_deq * g_new ~ W * g_old for q_proj of layer 0. */
static void check_smooth(const char *model, const char *out, int64_t hidden) {
  sq_ckpt *in = NULL;
  sq_ct_reader *rd = NULL;
  SQ_EXPECT(sq_ckpt_open(model, &in) == SQ_OK);
  SQ_EXPECT(sq_ct_open(out, &rd) == SQ_OK);
  if (!in || !rd) return;
  const char *gn = "model.layers.0.input_layernorm.weight";
  const char *wn = "model.layers.0.self_attn.q_proj.weight";
  int64_t d_out = hidden; /* q_proj (H*hd, hidden): H*hd == hidden here */
  size_t nw = (size_t)(d_out * hidden);
  float *g0 = malloc(sizeof(float) * (size_t)hidden), *g1 = malloc(sizeof(float) * (size_t)hidden);
  float *w0 = malloc(sizeof(float) * nw), *w1 = malloc(sizeof(float) * nw);
  SQ_EXPECT(sq_ckpt_read_f32(in, gn, g0, (uint64_t)hidden) == SQ_OK);
  SQ_EXPECT(sq_ckpt_read_f32(in, wn, w0, nw) == SQ_OK);
  SQ_EXPECT(sq_ct_read_dense_f32(rd, gn, g1, (uint64_t)hidden) == SQ_OK);
  SQ_EXPECT(sq_ct_read_dense_f32(rd, wn, w1, nw) == SQ_OK);
  int changed = 0;
  for (int64_t j = 0; j < hidden; j++) changed += g0[j] != g1[j];
  SQ_EXPECT_MSG(changed > hidden / 2, "input_layernorm: only %d of %lld values changed", changed,
                (long long)hidden);
  double num = 0, den = 0;
  for (int64_t i = 0; i < d_out; i++)
    for (int64_t j = 0; j < hidden; j++) {
      double a = (double)w0[i * hidden + j] * g0[j], b = (double)w1[i * hidden + j] * g1[j];
      num += (a - b) * (a - b);
      den += a * a;
    }
  fprintf(stderr, "SmoothQuant fold: |W g - Wq' g'| / |W g| = %.4g\n", sqrt(num / den));
  SQ_EXPECT_MSG(sqrt(num / den) < 0.02, "folded weights disagree: %.4g", sqrt(num / den));
  free(g0), free(g1), free(w0), free(w1);
  sq_ct_close(rd);
  sq_ckpt_close(in);
}

static int same_file(const char *a, const char *b) {
  FILE *fa = fopen(a, "rb"), *fb = fopen(b, "rb");
  int same = fa && fb;
  while (same) {
    int ca = fgetc(fa), cb = fgetc(fb);
    if (ca != cb) same = 0;
    if (ca == EOF || cb == EOF) break;
  }
  if (fa) fclose(fa);
  if (fb) fclose(fb);
  return same;
}

/* All recipes on one model. extra: options for quantize (calib size). */
static void all_recipes(const char *tmp, const char *tag, const char *model, const char *calib,
                        int64_t n, int64_t T, const char *extra, int n_layers, sq_dtype dt,
                        int64_t hidden) {
  static const char *const lmh[] = {"lm_head"};
  char cmd[16384], out[4096];
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    const expect *e = &cases[i];
    snprintf(out, sizeof out, "%s/%s_%s", tmp, tag, e->recipe);
    snprintf(cmd, sizeof cmd, "'%s' quantize --model '%s' --calib '%s' --out '%s' --recipe %s/%s %s -q",
             bin, model, calib, out, src_recipes, e->recipe, extra);
    SQ_EXPECT_MSG(run(cmd) == 0, "%s: quantize failed", e->recipe);
    check_config(out, e, lmh, 1);
    check_tensors(out, e, n_layers, dt);
    check_layer0_scales(model, calib, n, T, out, e, dt);
    if (e->smooth) check_smooth(model, out, hidden);
  }
}

int main(void) {
  bin = getenv("SHARDQ_BIN");
  const char *srcdir = getenv("SHARDQ_SOURCE_DIR");
  if (!bin || !srcdir) sq_test_skip("SHARDQ_BIN / SHARDQ_SOURCE_DIR not set");
  setenv("OPENBLAS_NUM_THREADS", "1", 0);
  snprintf(src_recipes, sizeof src_recipes, "%s/recipes", srcdir);
  char *tmp = sq_test_tmpdir("recipes-e2e");
  char cmd[16384], m[4096], calib[4200];
  snprintf(m, sizeof m, "%s/m", tmp);
  snprintf(calib, sizeof calib, "%s/calib.safetensors", m);
  snprintf(cmd, sizeof cmd,
           "'%s' synth --out %s --layers 2 --hidden 64 --heads 4 --kv-heads 2 "
           "--intermediate 160 --vocab 256 --calib-samples 16 --calib-seq-len 64 "
           "--eval-samples 0 --shards 1 -q",
           bin, m);
  SQ_EXPECT(run(cmd) == 0);
  all_recipes(tmp, "synth", m, calib, 16, 64, "", 2, SQ_DTYPE_BF16, 64);

  /* GPTQ via recipe == the equivalent --scheme command line, byte for byte. */
  snprintf(cmd, sizeof cmd,
           "'%s' quantize --model %s --calib %s --out %s/scheme --scheme W4A16 --method gptq "
           "--actorder weight --damp 0.01 --block 128 -q",
           bin, m, calib, tmp);
  SQ_EXPECT(run(cmd) == 0);
  const char *files[] = {"model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors",
                         "model-00003-of-00003.safetensors", "model.safetensors.index.json",
                         "config.json"};
  for (size_t i = 0; i < 5; i++) {
    char a[4600], b[4600];
    snprintf(a, sizeof a, "%s/scheme/%s", tmp, files[i]);
    snprintf(b, sizeof b, "%s/synth_w4a16_gptq_g128.yaml/%s", tmp, files[i]);
    SQ_EXPECT_MSG(same_file(a, b), "%s differs between --recipe and --scheme", files[i]);
  }

  /* A recipe's ignore (regex) and dampening_frac 0. */
  char rp[4200];
  snprintf(rp, sizeof rp, "%s/ignore.yaml", tmp);
  FILE *f = fopen(rp, "w");
  SQ_EXPECT(f != NULL);
  if (f) {
    fputs("quant_stage:\n  quant_modifiers:\n    GPTQModifier:\n      targets: [Linear]\n"
          "      ignore: [lm_head, \"re:.*down_proj$\"]\n      dampening_frac: 0.0\n"
          "      scheme: W4A16\n",
          f);
    fclose(f);
  }
  snprintf(cmd, sizeof cmd, "'%s' quantize --model %s --calib %s --out %s/ign --recipe %s -q", bin,
           m, calib, tmp, rp);
  SQ_EXPECT(run(cmd) == 0);
  static const char *const ign[] = {"lm_head", "model.layers.0.mlp.down_proj",
                                    "model.layers.1.mlp.down_proj"};
  expect ei = cases[5];
  ei.recipe = "ignore.yaml";
  ei.w.actorder = "weight"; /* W4A16 group weights under GPTQ: actorder static by default */
  char od[4200];
  snprintf(od, sizeof od, "%s/ign", tmp);
  check_config(od, &ei, ign, 3);
  sq_ckpt *ci = NULL, *cm = NULL;
  SQ_EXPECT(sq_ckpt_open(od, &ci) == SQ_OK && sq_ckpt_open(m, &cm) == SQ_OK);
  if (ci && cm) {
    const char *dn = "model.layers.1.mlp.down_proj.weight";
    const sq_st_file *fa, *fb;
    const sq_st_tensor *ta = sq_ckpt_find(ci, dn, &fa), *tb = sq_ckpt_find(cm, dn, &fb);
    SQ_EXPECT_MSG(ta && tb && ta->dtype == tb->dtype, "%s: ignored module not dense", dn);
    if (ta && tb) {
      size_t nb = (size_t)(tb->shape[0] * tb->shape[1]) * sq_dtype_size(tb->dtype);
      char *a = malloc(nb), *b = malloc(nb);
      SQ_EXPECT(sq_st_read_raw(fa, ta, 0, a, nb) == SQ_OK && sq_st_read_raw(fb, tb, 0, b, nb) == SQ_OK);
      SQ_EXPECT_MSG(!memcmp(a, b, nb), "%s: ignored module changed", dn);
      free(a), free(b);
    }
    SQ_EXPECT(sq_ckpt_find(ci, "model.layers.1.mlp.up_proj.weight_packed", NULL) != NULL);
  }
  if (ci) sq_ckpt_close(ci);
  if (cm) sq_ckpt_close(cm);

  /* Two named config groups (regex targets) keep their names and args; an
   * unsupported SmoothQuant mapping is a clean error. */
  snprintf(rp, sizeof rp, "%s/groups.yaml", tmp);
  f = fopen(rp, "w");
  SQ_EXPECT(f != NULL);
  if (f) {
    fputs("quant_stage:\n  quant_modifiers:\n    GPTQModifier:\n      config_groups:\n"
          "        attn:\n          targets: [\"re:.*self_attn.*\"]\n"
          "          weights: {num_bits: 8, type: int, symmetric: true, strategy: channel}\n"
          "        mlp:\n          targets: [\"re:.*mlp.*\"]\n"
          "          weights: {num_bits: 4, type: int, symmetric: false, strategy: group, "
          "group_size: 32}\n",
          f);
    fclose(f);
  }
  snprintf(cmd, sizeof cmd, "'%s' quantize --model %s --calib %s --out %s/grp --recipe %s -q", bin,
           m, calib, tmp, rp);
  SQ_EXPECT(run(cmd) == 0);
  snprintf(od, sizeof od, "%s/grp", tmp);
  json_t *doc = load_qc(od);
  if (doc) {
    const json_t *qc = json_object_get(doc, "quantization_config");
    const json_t *groups = json_object_get(qc, "config_groups");
    expect_str(qc, "format", "pack-quantized", "groups.yaml");
    SQ_EXPECT_EQ_INT(json_object_size(groups), 2);
    static const char *const ta[] = {"re:.*self_attn.*"}, *const tm[] = {"re:.*mlp.*"};
    const xargs wa = {8, "int", "channel", NULL, "minmax", 1, -1, 0};
    const xargs wm = {4, "int", "group", "weight", "minmax", 0, 32, 0};
    const json_t *ga = json_object_get(groups, "attn"), *gm = json_object_get(groups, "mlp");
    SQ_EXPECT(ga && gm);
    if (ga && gm) {
      expect_list(json_object_get(ga, "targets"), ta, 1, "attn.targets");
      expect_list(json_object_get(gm, "targets"), tm, 1, "mlp.targets");
      expect_args(json_object_get(ga, "weights"), &wa, "attn.weights");
      expect_args(json_object_get(gm, "weights"), &wm, "mlp.weights");
    }
    json_decref(doc);
  }
  snprintf(rp, sizeof rp, "%s/badmap.yaml", tmp);
  f = fopen(rp, "w");
  if (f) {
    fputs("quant_stage:\n  quant_modifiers:\n    SmoothQuantModifier:\n      mappings:\n"
          "        - [[\"re:.*o_proj\"], \"re:.*v_proj\"]\n    GPTQModifier:\n"
          "      scheme: W8A8\n",
          f);
    fclose(f);
  }
  snprintf(cmd, sizeof cmd,
           "'%s' quantize --model %s --calib %s --out %s/badmap --recipe %s -q 2>%s/badmap.err",
           bin, m, calib, tmp, rp, tmp);
  SQ_EXPECT_MSG(run(cmd) != 0, "an unsupported SmoothQuant mapping was accepted");

  /* The real model (fp32, 5 layers, hidden 64, intermediate 172). */
  char *stories = sq_test_data_path("stories260K");
  char *tiny = sq_test_data_path("tinystories/calib.safetensors");
  if (stories && tiny && access(stories, R_OK) == 0 && access(tiny, R_OK) == 0)
    all_recipes(tmp, "stories", stories, tiny, 16, 128, "--calib-samples 16 --seq-len 128", 5,
                SQ_DTYPE_F32, 64);
  else
    fprintf(stderr, "stories260K / tinystories absent: real-model part skipped\n");
  free(stories);
  free(tiny);
  free(tmp);
  return sq_test_result("test_recipes_e2e");
}
