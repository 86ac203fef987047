/* End to end on a synthetic model: `shardq synth` (3 layers, hidden 64) ->
 * `shardq quantize` W4A16 (group 32) with GPTQ, twice, and with RTN. Checks:
 *  - every Linear of the decoder layers is stored compressed (weight_packed,
 *    weight_scale, weight_shape, no dense weight), ignored modules (one given
 *    with --ignore, and lm_head) are dense, embeddings/norms pass through with
 *    their original bytes;
 *  - the output reads back through the compressed-tensors reader, and the
 *    decompressed weights equal, bit for bit, the dequantized weights the
 *    pipeline used for error propagation (dumped by the hidden --dump-dequant);
 *  - two runs write byte-identical files;
 *  - GPTQ's KL to the original is below RTN's (eval). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sharding/checkpoint.h"
#include "sharding/compressed.h"
#include "test_util.h"
#include "worker/evaluate.h"
#include "worker/model_meta.h"

static int run(const char *cmd) {
  fprintf(stderr, "+ %s\n", cmd);
  return system(cmd);
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

int main(void) {
  const char *bin = getenv("SHARDQ_BIN");
  if (!bin) sq_test_skip("SHARDQ_BIN not set");
  setenv("OPENBLAS_NUM_THREADS", "1", 0);
  char *tmp = sq_test_tmpdir("pipeline-quantize");
  char cmd[8192];
  snprintf(cmd, sizeof cmd,
           "'%s' synth --out %s/m --layers 3 --hidden 64 --heads 4 --kv-heads 2 "
           "--intermediate 160 --vocab 256 --calib-samples 16 --calib-seq-len 64 "
           "--eval-samples 8 --shards 2 -q",
           bin, tmp);
  SQ_EXPECT(run(cmd) == 0);
  const char *ign = "model.layers.1.mlp.down_proj";
  for (int r = 0; r < 2; r++) {
    snprintf(cmd, sizeof cmd,
             "'%s' quantize --model %s/m --calib %s/m/calib.safetensors --out %s/g%d "
             "--scheme W4A16 --group 32 --method gptq --ignore %s --layers-per-shard 2 "
             "--batch 3 --dump-dequant %s/deq%d.safetensors -q",
             bin, tmp, tmp, tmp, r, ign, tmp, r);
    SQ_EXPECT(run(cmd) == 0);
  }
  snprintf(cmd, sizeof cmd,
           "'%s' quantize --model %s/m --calib %s/m/calib.safetensors --out %s/rtn "
           "--scheme W4A16 --group 32 --method rtn --ignore %s -q",
           bin, tmp, tmp, tmp, ign);
  SQ_EXPECT(run(cmd) == 0);

  /* Determinism: byte-identical shards, index and config. */
  const char *files[] = {"model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors",
                         "model-00003-of-00003.safetensors", "model.safetensors.index.json",
                         "config.json"};
  char a[4096], b[4096];
  for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
    snprintf(a, sizeof a, "%s/g0/%s", tmp, files[i]);
    snprintf(b, sizeof b, "%s/g1/%s", tmp, files[i]);
    SQ_EXPECT_MSG(same_file(a, b), "%s differs between two runs", files[i]);
  }

  /* Tensor set and bit-exact decompression. */
  snprintf(a, sizeof a, "%s/m", tmp);
  sq_model_info info;
  SQ_EXPECT(sq_model_info_load(a, &info) == SQ_OK);
  sq_ckpt *orig = NULL;
  SQ_EXPECT(sq_ckpt_open(a, &orig) == SQ_OK);
  snprintf(b, sizeof b, "%s/g0", tmp);
  sq_ct_reader *rd = NULL;
  SQ_EXPECT(sq_ct_open(b, &rd) == SQ_OK);
  snprintf(a, sizeof a, "%s/deq0.safetensors", tmp);
  sq_st_file *dump = NULL;
  SQ_EXPECT(sq_st_open(a, &dump) == SQ_OK);
  if (!rd || !dump || !orig) return sq_test_result("test_pipeline_quantize");
  const sq_ckpt *out = sq_ct_reader_ckpt(rd);
  SQ_EXPECT(sq_ct_reader_config(rd) != NULL);
  int n_quant = 0;
  for (size_t i = 0; i < info.n_tensors; i++) {
    const sq_model_tensor *t = &info.tensors[i];
    char mod[128], nm[160];
    size_t len = strlen(t->name);
    snprintf(mod, sizeof mod, "%.*s", (int)(len - 7), t->name);
    int quant = t->role == SQ_MT_LINEAR && strcmp(mod, ign) != 0;
    if (!quant) {
      /* dense pass-through: same dtype and bytes as the input */
      const sq_st_file *fo = NULL, *fi = NULL;
      const sq_st_tensor *to = sq_ckpt_find(out, t->name, &fo), *ti = sq_ckpt_find(orig, t->name, &fi);
      SQ_EXPECT_MSG(to != NULL, "dense tensor %s missing from the output", t->name);
      if (!to || !ti) continue;
      SQ_EXPECT(to->dtype == ti->dtype && to->end - to->begin == ti->end - ti->begin);
      size_t nb = to->end - to->begin;
      char *x = malloc(nb), *y = malloc(nb);
      SQ_EXPECT(sq_st_read_raw(fo, to, 0, x, nb) == SQ_OK);
      SQ_EXPECT(sq_st_read_raw(fi, ti, 0, y, nb) == SQ_OK);
      SQ_EXPECT_MSG(memcmp(x, y, nb) == 0, "%s bytes changed", t->name);
      free(x);
      free(y);
      continue;
    }
    n_quant++;
    SQ_EXPECT_MSG(sq_ckpt_find(out, t->name, NULL) == NULL, "%s stored dense", t->name);
    const char *sfx[] = {"weight_packed", "weight_scale", "weight_shape"};
    for (int s = 0; s < 3; s++) {
      snprintf(nm, sizeof nm, "%s.%s", mod, sfx[s]);
      SQ_EXPECT_MSG(sq_ckpt_find(out, nm, NULL) != NULL, "%s missing", nm);
    }
    uint64_t n = (uint64_t)(t->shape[0] * t->shape[1]);
    float *dq = malloc(n * sizeof(float)), *used = malloc(n * sizeof(float));
    SQ_EXPECT(sq_ct_read_dense_f32(rd, t->name, dq, n) == SQ_OK);
    const sq_st_tensor *dt = sq_st_find(dump, t->name);
    SQ_EXPECT_MSG(dt != NULL, "%s not in the dequant dump", t->name);
    if (dt) SQ_EXPECT(sq_st_read_f32(dump, dt, used, n) == SQ_OK);
    SQ_EXPECT_MSG(dt && memcmp(dq, used, n * sizeof(float)) == 0,
                  "%s: decompressed weight differs from the one the pipeline used", t->name);
    free(dq);
    free(used);
  }
  SQ_EXPECT_EQ_INT(n_quant, 3 * 7 - 1);
  /* lm_head (not tied in synth) stays dense */
  SQ_EXPECT(sq_ckpt_find(out, "lm_head.weight", NULL) != NULL);
  sq_st_close(dump);
  sq_ct_close(rd);
  sq_ckpt_close(orig);
  sq_model_info_free(&info);

  /* GPTQ beats RTN on KL to the original. */
  sq_eval_opts eo = {0};
  sq_eval_result rg, rr;
  snprintf(a, sizeof a, "%s/m", tmp);
  snprintf(b, sizeof b, "%s/m/eval.safetensors", tmp);
  char g[4096], r[4096];
  snprintf(g, sizeof g, "%s/g0", tmp);
  snprintf(r, sizeof r, "%s/rtn", tmp);
  SQ_EXPECT(sq_eval_run(a, g, b, &eo, &rg) == SQ_OK);
  SQ_EXPECT(sq_eval_run(a, r, b, &eo, &rr) == SQ_OK);
  fprintf(stderr, "KL gptq %.6f rtn %.6f; ppl orig %.4f gptq %.4f rtn %.4f\n", rg.kl_mean,
          rr.kl_mean, rg.ppl_a, rg.ppl_b, rr.ppl_b);
  SQ_EXPECT_MSG(rg.kl_mean < rr.kl_mean, "GPTQ KL %.6f is not below RTN KL %.6f", rg.kl_mean,
                rr.kl_mean);
  SQ_EXPECT(rg.kl_mean > 0);
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
  if (sq_test_failures == 0 && run(cmd) != 0) fprintf(stderr, "cannot remove %s\n", tmp);
  free(tmp);
  return sq_test_result("test_pipeline_quantize");
}
