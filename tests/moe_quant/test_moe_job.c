/* `shardq quantize` on MoE checkpoints (coordinator/quantize_moe.h) end to
 * end, driven by moe_job.sh:
 *   test_moe_job synth DIR ARCH            tiny synthetic checkpoint (+ calib, eval);
 *                                          ARCH deepseek_v3_fp8: fp8 block-scaled
 *   test_moe_job check DIR OUT1 OUT2       (a) and (b) below
 *   test_moe_job tensors DIR OUT           (a) only, for OUT alone
 *     (a) every Linear module of the plan (attention, every routed expert's
 *         gate/up/down, the shared expert) is stored compressed in OUT1 and
 *         OUT2 (weight_packed, weight_scale, weight_shape), the routers
 *         (mlp.gate / block_sparse_moe.gate) and shared_expert_gate are stored
 *         dense with the input's exact bytes, and config.json's
 *         quantization_config ignores lm_head and the routers;
 *     (b) OUT1 and OUT2 (different rank counts) agree: every dequantized
 *         weight within one quantization step, >= 95% of the values equal;
 *         every other tensor byte-identical. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "sharding/checkpoint.h"
#include "sharding/compressed.h"
#include "sharding/plan.h"
#include "sharding/synth.h"
#include "test_util.h"

static int synth(const char *dir, const char *arch) {
  sq_synth_options o;
  sq_synth_options_default(&o);
  o.arch = arch;
  if (!strcmp(arch, "deepseek_v3_fp8")) { /* F8_E4M3 weights + 128x128 weight_scale_inv */
    o.arch = "deepseek_v3";
    o.fp8_blocks = true;
  }
  o.layers = 2;
  o.hidden = 64;
  o.heads = 4;
  o.kv_heads = 2;
  o.intermediate = 64;
  o.vocab = 256;
  o.shards = 2;
  o.seed = 11;
  o.calib_samples = 16;
  o.calib_seq_len = 32;
  o.eval_samples = 8;
  o.progress = false;
  o.experts = 4;
  o.experts_per_tok = 2;
  if (!strcmp(arch, "qwen2_moe")) o.moe_step = 2;
  if (sq_synth_write(dir, &o) != SQ_OK) {
    fprintf(stderr, "synth: %s\n", sq_error_message());
    return 1;
  }
  return 0;
}

/* Raw bytes of tensor name in c (malloc'd). */
static void *raw(const sq_ckpt *c, const char *name, uint64_t *nb) {
  const sq_st_file *f = NULL;
  const sq_st_tensor *t = sq_ckpt_find(c, name, &f);
  if (!t) return NULL;
  *nb = t->end - t->begin;
  void *p = malloc(*nb ? *nb : 1);
  if (sq_st_read_raw(f, t, 0, p, *nb) != SQ_OK) {
    free(p);
    return NULL;
  }
  return p;
}

static int same_raw(const sq_ckpt *a, const sq_ckpt *b, const char *name) {
  uint64_t na = 0, nb = 0;
  void *x = raw(a, name, &na), *y = raw(b, name, &nb);
  int ok = x && y && na == nb && !memcmp(x, y, na);
  free(x);
  free(y);
  return ok;
}

static int check(const char *dir, const char *o1, const char *o2) {
  const int equiv = o2 != NULL;
  if (!o2) o2 = o1;
  sq_model_config cfg;
  memset(&cfg, 0, sizeof cfg);
  if (sq_model_config_load(dir, &cfg) != SQ_OK) return 1;
  sq_plan *p = NULL;
  if (sq_plan_build(&cfg, 1, NULL, &p) != SQ_OK) return 1;
  sq_ckpt *in = NULL;
  sq_ct_reader *r[2] = {NULL, NULL};
  if (sq_ckpt_open(dir, &in) != SQ_OK || sq_ct_open(o1, &r[0]) != SQ_OK ||
      sq_ct_open(o2, &r[1]) != SQ_OK) {
    fprintf(stderr, "open: %s\n", sq_error_message());
    return 1;
  }
  /* (a) compressed modules */
  int64_t experts = 0;
  for (size_t i = 0; i < p->n_modules; i++) {
    const sq_plan_module *pm = &p->modules[i];
    experts += pm->kind == SQ_PLAN_EXPERT;
    for (int k = 0; k < 2; k++) {
      const sq_ckpt *c = sq_ct_reader_ckpt(r[k]);
      static const char *const sfx[] = {"weight_packed", "weight_scale", "weight_shape"};
      for (int s = 0; s < 3; s++) {
        char t[192];
        snprintf(t, sizeof t, "%s.%s", pm->name, sfx[s]);
        SQ_EXPECT_MSG(sq_ckpt_find(c, t, NULL) != NULL, "%s: %s missing", k ? o2 : o1, t);
      }
      char w[192];
      snprintf(w, sizeof w, "%s.weight", pm->name);
      SQ_EXPECT_MSG(sq_ckpt_find(c, w, NULL) == NULL, "%s: %s stored dense", k ? o2 : o1, w);
    }
  }
  int64_t moe_layers = 0;
  for (int l = 0; l < p->n_layers; l++) moe_layers += p->layers[l].moe;
  SQ_EXPECT(moe_layers >= 1);
  SQ_EXPECT_EQ_INT(experts, 3 * cfg.num_experts * moe_layers);
  /* routers and every other non-module tensor: the input's bytes */
  int64_t routers = 0;
  for (size_t i = 0; i < sq_ckpt_count(in); i++) {
    const sq_st_tensor *t = sq_ckpt_at(in, i, NULL);
    char mod[160];
    snprintf(mod, sizeof mod, "%.*s", (int)(strlen(t->name) > 7 ? strlen(t->name) - 7 : 0),
             t->name);
    if (sq_plan_find(p, mod) >= 0 || strstr(t->name, "_scale_inv")) continue;
    routers +=
        strstr(t->name, ".gate.weight") != NULL || strstr(t->name, "shared_expert_gate") != NULL;
    for (int k = 0; k < 2; k++)
      SQ_EXPECT_MSG(same_raw(in, sq_ct_reader_ckpt(r[k]), t->name), "%s: %s not copied as it is",
                    k ? o2 : o1, t->name);
  }
  SQ_EXPECT(routers >= 1);
  for (int k = 0; k < 2; k++) {
    const sq_ct_config *qc = sq_ct_reader_config(r[k]);
    SQ_EXPECT(qc != NULL);
    if (!qc) continue;
    char router[96];
    snprintf(router, sizeof router, "model.layers.1.%s.gate",
             cfg.family == SQ_FAMILY_MIXTRAL ? "block_sparse_moe" : "mlp");
    SQ_EXPECT_MSG(sq_ct_config_match(qc, router) == NULL, "%s: router %s matches a scheme",
                  k ? o2 : o1, router);
    SQ_EXPECT(sq_ct_config_match(qc, "lm_head") == NULL);
    SQ_EXPECT(sq_ct_config_match(qc, p->modules[0].name) != NULL);
  }
  /* (b) the two outputs agree */
  int64_t diff = 0, total = 0;
  for (size_t i = 0; equiv && i < p->n_modules; i++) {
    const sq_plan_module *pm = &p->modules[i];
    int64_t n = pm->d_out * pm->d_in;
    float *a = malloc((size_t)n * sizeof(float)), *b = malloc((size_t)n * sizeof(float));
    char w[192];
    snprintf(w, sizeof w, "%s.weight", pm->name);
    if (sq_ct_read_dense_f32(r[0], w, a, (uint64_t)n) != SQ_OK ||
        sq_ct_read_dense_f32(r[1], w, b, (uint64_t)n) != SQ_OK) {
      SQ_EXPECT_MSG(0, "read %s: %s", w, sq_error_message());
    } else {
      /* one step: the largest group's absmax / 7 bounds any scale */
      float amax = 0;
      for (int64_t k = 0; k < n; k++) amax = fabsf(a[k]) > amax ? fabsf(a[k]) : amax;
      int64_t dm = 0;
      float mx = 0;
      for (int64_t k = 0; k < n; k++) {
        float dd = fabsf(a[k] - b[k]);
        dm += dd != 0.0f;
        mx = dd > mx ? dd : mx;
      }
      SQ_EXPECT_MSG(mx <= amax / 7.0f * 1.01f + 1e-6f, "%s: max diff %g across rank counts", w, mx);
      SQ_EXPECT_MSG(dm * 20 <= n, "%s: %lld of %lld values differ across rank counts", w,
                    (long long)dm, (long long)n);
      diff += dm;
      total += n;
    }
    free(a);
    free(b);
  }
  printf(
      "check %s: %zu modules (%lld expert projections) compressed in both outputs, %lld "
      "routers/gates dense, %lld of %lld dequantized values differ between the rank counts\n",
      cfg.model_type, p->n_modules, (long long)experts, (long long)routers, (long long)diff,
      (long long)total);
  sq_ct_close(r[0]);
  sq_ct_close(r[1]);
  sq_ckpt_close(in);
  sq_plan_free(p);
  sq_model_config_free(&cfg);
  return sq_test_result("test_moe_job check");
}

int main(int argc, char **argv) {
  if (argc == 4 && !strcmp(argv[1], "synth")) return synth(argv[2], argv[3]);
  if (argc == 5 && !strcmp(argv[1], "check")) return check(argv[2], argv[3], argv[4]);
  if (argc == 4 && !strcmp(argv[1], "tensors")) return check(argv[2], argv[3], NULL);
  fprintf(stderr, "usage: test_moe_job synth DIR ARCH | check DIR OUT1 OUT2 | tensors DIR OUT\n");
  return 2;
}
