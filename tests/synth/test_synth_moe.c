/* `shardq synth` for the MoE architectures (sharding/synth.h): for mixtral,
 * qwen2_moe, qwen3_moe, deepseek_v3 and llama4, the written checkpoint holds
 * exactly the Hugging Face tensor names and shapes listed here by hand from the
 * transformers modeling files (not from shardq's lists), config.json has the
 * released models' keys, Llama-4's fused expert stacks are stored (E, d_in, d_out)
 * (outlier input columns show up as rows of each expert's slice), and the CLI
 * accepts the new flags and refuses --fp8-blocks for other architectures. */
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "sharding/checkpoint.h"
#include "sharding/model_config.h"
#include "sharding/safetensors.h"
#include "sharding/synth.h"
#include "test_util.h"

enum { L = 4, H = 64, NH = 4, KVH = 2, HD = 16, I = 96, V = 128, E = 4 };

typedef struct want {
  char name[128];
  int ndim;
  int64_t shape[3];
} want;

typedef struct wlist {
  want w[2048];
  int n;
} wlist;

static void add(wlist *l, int ndim, int64_t a, int64_t b, int64_t c, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));
static void add(wlist *l, int ndim, int64_t a, int64_t b, int64_t c, const char *fmt, ...) {
  want *w = &l->w[l->n++];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(w->name, sizeof w->name, fmt, ap);
  va_end(ap);
  w->ndim = ndim;
  w->shape[0] = a;
  w->shape[1] = b;
  w->shape[2] = c;
}

static void add_mlp(wlist *l, const char *pre, int64_t f) {
  add(l, 2, f, H, 0, "%s.gate_proj.weight", pre);
  add(l, 2, f, H, 0, "%s.up_proj.weight", pre);
  add(l, 2, H, f, 0, "%s.down_proj.weight", pre);
}

static void add_gqa(wlist *l, const char *p, int layer, int bias, int qk_norm) {
  add(l, 2, NH * HD, H, 0, "%smodel.layers.%d.self_attn.q_proj.weight", p, layer);
  add(l, 2, KVH * HD, H, 0, "%smodel.layers.%d.self_attn.k_proj.weight", p, layer);
  add(l, 2, KVH * HD, H, 0, "%smodel.layers.%d.self_attn.v_proj.weight", p, layer);
  add(l, 2, H, NH * HD, 0, "%smodel.layers.%d.self_attn.o_proj.weight", p, layer);
  if (bias) {
    add(l, 1, NH * HD, 0, 0, "%smodel.layers.%d.self_attn.q_proj.bias", p, layer);
    add(l, 1, KVH * HD, 0, 0, "%smodel.layers.%d.self_attn.k_proj.bias", p, layer);
    add(l, 1, KVH * HD, 0, 0, "%smodel.layers.%d.self_attn.v_proj.bias", p, layer);
  }
  if (qk_norm) {
    add(l, 1, HD, 0, 0, "%smodel.layers.%d.self_attn.q_norm.weight", p, layer);
    add(l, 1, HD, 0, 0, "%smodel.layers.%d.self_attn.k_norm.weight", p, layer);
  }
}

/* The tensors of each architecture with this test's sizes (moe_intermediate 48,
 * shared 96, deepseek first_k_dense 1 + MLA defaults, llama4/qwen moe step 2). */
static void expected(const char *arch, wlist *l) {
  const int mix = !strcmp(arch, "mixtral"), q2 = !strcmp(arch, "qwen2_moe");
  const int q3 = !strcmp(arch, "qwen3_moe"), ds = !strcmp(arch, "deepseek_v3");
  const int l4 = !strcmp(arch, "llama4");
  const char *p = l4 ? "language_model." : "";
  char pre[160];
  l->n = 0;
  add(l, 2, V, H, 0, "%smodel.embed_tokens.weight", p);
  add(l, 1, H, 0, 0, "%smodel.norm.weight", p);
  add(l, 2, V, H, 0, "%slm_head.weight", p);
  for (int x = 0; x < L; x++) {
    add(l, 1, H, 0, 0, "%smodel.layers.%d.input_layernorm.weight", p, x);
    add(l, 1, H, 0, 0, "%smodel.layers.%d.post_attention_layernorm.weight", p, x);
    if (ds) { /* MLA: q_lora 32, kv_lora 16, nope 16, rope 8, v 16 */
      add(l, 2, 32, H, 0, "model.layers.%d.self_attn.q_a_proj.weight", x);
      add(l, 1, 32, 0, 0, "model.layers.%d.self_attn.q_a_layernorm.weight", x);
      add(l, 2, NH * 24, 32, 0, "model.layers.%d.self_attn.q_b_proj.weight", x);
      add(l, 2, 16 + 8, H, 0, "model.layers.%d.self_attn.kv_a_proj_with_mqa.weight", x);
      add(l, 1, 16, 0, 0, "model.layers.%d.self_attn.kv_a_layernorm.weight", x);
      add(l, 2, NH * 32, 16, 0, "model.layers.%d.self_attn.kv_b_proj.weight", x);
      add(l, 2, H, NH * 16, 0, "model.layers.%d.self_attn.o_proj.weight", x);
    } else {
      add_gqa(l, p, x, q2, q3);
    }
    if (mix) {
      add(l, 2, E, H, 0, "model.layers.%d.block_sparse_moe.gate.weight", x);
      for (int e = 0; e < E; e++) {
        add(l, 2, I, H, 0, "model.layers.%d.block_sparse_moe.experts.%d.w1.weight", x, e);
        add(l, 2, H, I, 0, "model.layers.%d.block_sparse_moe.experts.%d.w2.weight", x, e);
        add(l, 2, I, H, 0, "model.layers.%d.block_sparse_moe.experts.%d.w3.weight", x, e);
      }
    } else if (q2 || q3) {
      snprintf(pre, sizeof pre, "model.layers.%d.mlp", x);
      if ((x + 1) % 2 != 0) { /* decoder_sparse_step 2 */
        add_mlp(l, pre, I);
        continue;
      }
      add(l, 2, E, H, 0, "model.layers.%d.mlp.gate.weight", x);
      for (int e = 0; e < E; e++) {
        snprintf(pre, sizeof pre, "model.layers.%d.mlp.experts.%d", x, e);
        add_mlp(l, pre, 48);
      }
      if (q2) {
        snprintf(pre, sizeof pre, "model.layers.%d.mlp.shared_expert", x);
        add_mlp(l, pre, I);
        add(l, 2, 1, H, 0, "model.layers.%d.mlp.shared_expert_gate.weight", x);
      }
    } else if (ds) {
      snprintf(pre, sizeof pre, "model.layers.%d.mlp", x);
      if (x < 1) {
        add_mlp(l, pre, I);
        continue;
      }
      add(l, 2, E, H, 0, "model.layers.%d.mlp.gate.weight", x);
      add(l, 1, E, 0, 0, "model.layers.%d.mlp.gate.e_score_correction_bias", x);
      for (int e = 0; e < E; e++) {
        snprintf(pre, sizeof pre, "model.layers.%d.mlp.experts.%d", x, e);
        add_mlp(l, pre, 48);
      }
      snprintf(pre, sizeof pre, "model.layers.%d.mlp.shared_experts", x);
      add_mlp(l, pre, 48);
    } else if (l4) {
      snprintf(pre, sizeof pre, "language_model.model.layers.%d.feed_forward", x);
      if ((x + 1) % 2 != 0) { /* interleave_moe_layer_step 2: dense of intermediate_size_mlp */
        add_mlp(l, pre, I);
        continue;
      }
      add(l, 2, E, H, 0, "%s.router.weight", pre);
      add(l, 3, E, H, 2 * 48, "%s.experts.gate_up_proj", pre);
      add(l, 3, E, 48, H, "%s.experts.down_proj", pre);
      snprintf(pre, sizeof pre, "language_model.model.layers.%d.feed_forward.shared_expert", x);
      add_mlp(l, pre, 48);
    }
  }
}

static void check_names(const char *arch, const char *dir) {
  static wlist l;
  expected(arch, &l);
  sq_ckpt *c = NULL;
  SQ_EXPECT_MSG(sq_ckpt_open(dir, &c) == SQ_OK, "%s: %s", arch, sq_error_message());
  if (!c) return;
  SQ_EXPECT_MSG(sq_ckpt_count(c) == (size_t)l.n, "%s: %zu tensors, expected %d", arch,
                sq_ckpt_count(c), l.n);
  for (int i = 0; i < l.n; i++) {
    const sq_st_tensor *t = sq_ckpt_find(c, l.w[i].name, NULL);
    SQ_EXPECT_MSG(t != NULL, "%s: no tensor %s", arch, l.w[i].name);
    if (!t) continue;
    int ok = t->ndim == l.w[i].ndim;
    for (int d = 0; ok && d < t->ndim; d++) ok = t->shape[d] == l.w[i].shape[d];
    SQ_EXPECT_MSG(ok, "%s: %s has the wrong shape (ndim %d, [%lld, %lld, %lld])", arch, l.w[i].name,
                  t->ndim, (long long)t->shape[0], (long long)(t->ndim > 1 ? t->shape[1] : 0),
                  (long long)(t->ndim > 2 ? t->shape[2] : 0));
    SQ_EXPECT_MSG(
        t->dtype == (strstr(t->name, "e_score_correction_bias") ? SQ_DTYPE_F32 : SQ_DTYPE_BF16),
        "%s: %s dtype %d", arch, t->name, (int)t->dtype);
  }
  if (!strcmp(arch, "llama4")) {
    /* Expert e's slice (d_in=H, d_out=2*48) of gate_up_proj: the 1% outlier input
     * columns (>= 1) are rows here with ~10x the RMS of the median row. */
    const sq_st_tensor *t =
        sq_ckpt_find(c, "language_model.model.layers.1.feed_forward.experts.gate_up_proj", NULL);
    if (t) {
      float *v = malloc((size_t)t->nelem * sizeof(float));
      SQ_EXPECT(sq_ckpt_read_f32(c, t->name, v, t->nelem) == SQ_OK);
      for (int e = 0; e < E; e++) {
        double rms[H], mx = 0, sorted[H];
        for (int i = 0; i < H; i++) {
          double s = 0;
          for (int o = 0; o < 96; o++) {
            double x = v[((size_t)e * H + (size_t)i) * 96 + (size_t)o];
            s += x * x;
          }
          rms[i] = sqrt(s / 96);
          mx = fmax(mx, rms[i]);
          sorted[i] = rms[i];
        }
        for (int i = 1; i < H; i++) /* insertion sort for the median */
          for (int j = i; j > 0 && sorted[j] < sorted[j - 1]; j--) {
            double tmp = sorted[j];
            sorted[j] = sorted[j - 1];
            sorted[j - 1] = tmp;
          }
        double med = sorted[H / 2];
        SQ_EXPECT_MSG(mx > 5 * med, "llama4 expert %d: max input-row RMS %.3g vs median %.3g", e,
                      mx, med);
        SQ_EXPECT_MSG(fabs(med - 1.0 / sqrt((double)H)) < 0.3 / sqrt((double)H),
                      "llama4 expert %d: median RMS %.3g, expected ~1/sqrt(d_in)", e, med);
      }
      free(v);
    }
  }
  sq_ckpt_close(c);
}

static json_t *load_config(const char *dir) {
  char path[700];
  snprintf(path, sizeof path, "%s/config.json", dir);
  json_error_t err;
  json_t *j = json_load_file(path, 0, &err);
  SQ_EXPECT_MSG(j != NULL, "%s: %s", path, err.text);
  return j;
}

static long long geti(json_t *o, const char *k) {
  json_t *v = json_object_get(o, k);
  SQ_EXPECT_MSG(json_is_integer(v), "config key %s is not an integer", k);
  return json_is_integer(v) ? json_integer_value(v) : -1;
}

static const char *gets_(json_t *o, const char *k) {
  json_t *v = json_object_get(o, k);
  SQ_EXPECT_MSG(json_is_string(v), "config key %s is not a string", k);
  return json_is_string(v) ? json_string_value(v) : "";
}

static void check_config(const char *arch, const char *dir) {
  json_t *top = load_config(dir);
  if (!top) return;
  json_t *c = top;
  if (!strcmp(arch, "llama4")) {
    SQ_EXPECT(!strcmp(gets_(top, "model_type"), "llama4"));
    SQ_EXPECT(!strcmp(json_string_value(json_array_get(json_object_get(top, "architectures"), 0)),
                      "Llama4ForConditionalGeneration"));
    c = json_object_get(top, "text_config");
    SQ_EXPECT(json_is_object(c));
    if (!c) return;
    SQ_EXPECT(!strcmp(gets_(c, "model_type"), "llama4_text"));
    SQ_EXPECT_EQ_INT(geti(c, "num_local_experts"), E);
    SQ_EXPECT_EQ_INT(geti(c, "num_experts_per_tok"), 1);
    SQ_EXPECT_EQ_INT(geti(c, "interleave_moe_layer_step"), 2);
    SQ_EXPECT_EQ_INT(geti(c, "intermediate_size"), 48);
    SQ_EXPECT_EQ_INT(geti(c, "intermediate_size_mlp"), I);
    SQ_EXPECT(json_is_array(json_object_get(c, "no_rope_layers")));
    SQ_EXPECT(json_is_integer(json_object_get(c, "attention_chunk_size")));
  } else if (!strcmp(arch, "mixtral")) {
    SQ_EXPECT_EQ_INT(geti(c, "num_local_experts"), E);
    SQ_EXPECT_EQ_INT(geti(c, "num_experts_per_tok"), 2);
    SQ_EXPECT_EQ_INT(geti(c, "intermediate_size"), I);
  } else if (!strcmp(arch, "deepseek_v3")) {
    SQ_EXPECT_EQ_INT(geti(c, "n_routed_experts"), E);
    SQ_EXPECT_EQ_INT(geti(c, "n_shared_experts"), 1);
    SQ_EXPECT_EQ_INT(geti(c, "first_k_dense_replace"), 1);
    SQ_EXPECT_EQ_INT(geti(c, "moe_intermediate_size"), 48);
    SQ_EXPECT_EQ_INT(geti(c, "n_group"), 2);
    SQ_EXPECT_EQ_INT(geti(c, "topk_group"), 1);
    SQ_EXPECT_EQ_INT(geti(c, "kv_lora_rank"), 16);
    SQ_EXPECT_EQ_INT(geti(c, "q_lora_rank"), 32);
    SQ_EXPECT_EQ_INT(geti(c, "qk_nope_head_dim"), 16);
    SQ_EXPECT_EQ_INT(geti(c, "qk_rope_head_dim"), 8);
    SQ_EXPECT_EQ_INT(geti(c, "v_head_dim"), 16);
    SQ_EXPECT(!strcmp(gets_(c, "topk_method"), "noaux_tc"));
    SQ_EXPECT(!strcmp(gets_(c, "scoring_func"), "sigmoid"));
    SQ_EXPECT(json_is_number(json_object_get(c, "routed_scaling_factor")));
    json_t *rs = json_object_get(c, "rope_scaling");
    SQ_EXPECT(rs && !strcmp(gets_(rs, "type"), "yarn"));
    SQ_EXPECT(json_object_get(c, "quantization_config") == NULL);
  } else {
    SQ_EXPECT_EQ_INT(geti(c, "num_experts"), E);
    SQ_EXPECT_EQ_INT(geti(c, "moe_intermediate_size"), 48);
    SQ_EXPECT_EQ_INT(geti(c, "decoder_sparse_step"), 2);
    if (!strcmp(arch, "qwen2_moe"))
      SQ_EXPECT_EQ_INT(geti(c, "shared_expert_intermediate_size"), I);
    else
      SQ_EXPECT_EQ_INT(geti(c, "head_dim"), HD);
  }
  /* shardq's own parser reads it back with the same MoE fields. */
  sq_model_config cfg;
  SQ_EXPECT_MSG(sq_model_config_load(dir, &cfg) == SQ_OK, "%s: %s", arch, sq_error_message());
  SQ_EXPECT_EQ_INT(cfg.num_experts, E);
  SQ_EXPECT_EQ_INT(cfg.hidden_size, H);
  sq_model_config_free(&cfg);
  json_decref(top);
}

static int run(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int run(const char *fmt, ...) {
  char cmd[4096];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(cmd, sizeof cmd, fmt, ap);
  va_end(ap);
  int rc = system(cmd);
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

int main(void) {
  char *tmp = sq_test_tmpdir("synth_moe");
  const char *archs[] = {"mixtral", "qwen2_moe", "qwen3_moe", "deepseek_v3", "llama4"};
  for (size_t a = 0; a < sizeof archs / sizeof *archs; a++) {
    sq_synth_options o;
    sq_synth_options_default(&o);
    o.arch = archs[a];
    o.layers = L;
    o.hidden = H;
    o.heads = NH;
    o.kv_heads = KVH;
    o.intermediate = I;
    o.vocab = V;
    o.experts = E;
    o.moe_intermediate = 48;
    o.moe_step = 2;
    o.n_group = 2;
    o.topk_group = 1;
    o.shards = 3;
    o.calib_samples = 2;
    o.calib_seq_len = 8;
    o.eval_samples = 1;
    o.progress = false;
    if (!strcmp(archs[a], "llama4")) o.experts_per_tok = 1;
    char dir[600];
    snprintf(dir, sizeof dir, "%s/%s", tmp, archs[a]);
    SQ_EXPECT_MSG(sq_synth_write(dir, &o) == SQ_OK, "%s: %s", archs[a], sq_error_message());
    check_names(archs[a], dir);
    check_config(archs[a], dir);
  }

  /* Bad combinations are refused with a line naming the flag. */
  sq_synth_options o;
  sq_synth_options_default(&o);
  o.arch = "mixtral";
  o.fp8_blocks = true;
  SQ_EXPECT(sq_synth_check(&o) == SQ_ERR_ARG && strstr(sq_error_message(), "--fp8-blocks"));
  sq_error_clear();
  o.arch = "deepseek_v3";
  o.fp8_blocks = false;
  o.experts = 6;
  o.n_group = 4;
  SQ_EXPECT(sq_synth_check(&o) == SQ_ERR_ARG && strstr(sq_error_message(), "--n-group"));
  sq_error_clear();
  o.experts = 8;
  o.experts_per_tok = 9;
  SQ_EXPECT(sq_synth_check(&o) == SQ_ERR_ARG);
  sq_error_clear();

  /* Through the command line. */
  const char *bin = getenv("SHARDQ_BIN");
  if (bin) {
    SQ_EXPECT_EQ_INT(run("'%s' synth --out '%s/cli-ds' --arch deepseek_v3 --layers 2 --hidden 48 "
                         "--heads 4 --experts 4 --n-group 2 --topk-group 1 --fp8-blocks --shards 1 "
                         "--calib-samples 1 --eval-samples 0 -q",
                         bin, tmp),
                     0);
    SQ_EXPECT_EQ_INT(
        run("'%s' synth --out '%s/cli-bad' --arch mixtral --fp8-blocks -q 2>/dev/null", bin, tmp),
        2); /* SQ_EXIT_USAGE */
    SQ_EXPECT_EQ_INT(run("'%s' synth --help | grep -q -- --moe-step", bin), 0);
    char p[700];
    snprintf(p, sizeof p, "%s/cli-ds", tmp);
    sq_ckpt *c = NULL;
    SQ_EXPECT(sq_ckpt_open(p, &c) == SQ_OK);
    if (c) {
      const sq_st_tensor *t =
          sq_ckpt_find(c, "model.layers.1.mlp.experts.3.down_proj.weight", NULL);
      SQ_EXPECT(t && t->dtype == SQ_DTYPE_F8_E4M3);
      SQ_EXPECT(sq_ckpt_find(c, "model.layers.1.mlp.experts.3.down_proj.weight_scale_inv", NULL));
      sq_ckpt_close(c);
    }
  }
  free(tmp);
  return sq_test_result("test_synth_moe");
}
