/* The forward through two code paths: `shardq eval`'s layer-by-layer engine
 * with the hidden states spilled to HDF5 (written and read back every layer,
 * batches of 3 samples) against a full-model forward written here (all layers
 * loaded at once, one sample at a time through every layer, no activation
 * store). Logits must agree (atol 1e-4, rtol 1e-4: batch shapes change the
 * gemm's summation order); in-memory and spilled evaluation must agree bit
 * for bit. Perplexity is recomputed here from the reference logits. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_util.h"
#include "worker/calib.h"
#include "worker/evaluate.h"
#include "worker/model.h"

int main(void) {
  const char *bin = getenv("SHARDQ_BIN");
  if (!bin) sq_test_skip("SHARDQ_BIN not set");
  setenv("OPENBLAS_NUM_THREADS", "1", 0);
  char *tmp = sq_test_tmpdir("pipeline-spill");
  char cmd[4096], dir[2048], data[2048];
  snprintf(cmd, sizeof cmd,
           "'%s' synth --out %s/m --layers 3 --hidden 64 --heads 4 --kv-heads 2 "
           "--intermediate 96 --vocab 128 --calib-samples 0 --calib-seq-len 24 "
           "--eval-samples 5 --dtype fp32 --shards 1 -q",
           bin, tmp);
  SQ_EXPECT(system(cmd) == 0);
  snprintf(dir, sizeof dir, "%s/m", tmp);
  snprintf(data, sizeof data, "%s/m/eval.safetensors", tmp);

  sq_model m;
  SQ_EXPECT(sq_model_open(dir, 1, &m) == SQ_OK);
  sq_calib ids;
  SQ_EXPECT(sq_calib_load(data, 0, 0, 0, &ids) == SQ_OK);
  const sq_model_info *mi = &m.info;
  int64_t n = ids.n, T = ids.T, d = mi->hidden, V = mi->vocab, L = mi->n_layers;

  /* Path 1: layer by layer, spilled to HDF5, and in memory. */
  float *la = malloc((size_t)(n * T * V) * sizeof(float));
  float *lb = malloc((size_t)(n * T * V) * sizeof(float));
  sq_eval_opts o = {.batch = 3, .spill_dir = tmp, .logits_a = la};
  sq_eval_result rs, rm;
  SQ_EXPECT(sq_eval_run(dir, NULL, data, &o, &rs) == SQ_OK);
  o.spill_dir = NULL;
  o.logits_a = lb;
  SQ_EXPECT(sq_eval_run(dir, NULL, data, &o, &rm) == SQ_OK);
  SQ_EXPECT_MSG(memcmp(la, lb, (size_t)(n * T * V) * sizeof(float)) == 0,
                "spilled and in-memory logits differ");

  /* Path 2: the whole model resident, one sample at a time. */
  sq_layer_buf *bufs = calloc((size_t)L, sizeof *bufs);
  for (int64_t l = 0; l < L; l++) {
    SQ_EXPECT(sq_layer_buf_init(&bufs[l], mi) == SQ_OK);
    SQ_EXPECT(sq_layer_buf_load(&bufs[l], &m, (int)l) == SQ_OK);
  }
  float *emb = malloc((size_t)(V * d) * sizeof(float)), *norm = malloc((size_t)d * sizeof(float));
  float *head = malloc((size_t)(V * d) * sizeof(float));
  SQ_EXPECT(sq_model_read_f32(&m, "model.embed_tokens.weight", emb, (uint64_t)(V * d)) == SQ_OK);
  SQ_EXPECT(sq_model_read_f32(&m, "model.norm.weight", norm, (uint64_t)d) == SQ_OK);
  SQ_EXPECT(sq_model_read_f32(&m, mi->tied ? "model.embed_tokens.weight" : "lm_head.weight", head,
                              (uint64_t)(V * d)) == SQ_OK);
  sq_rope rope;
  SQ_EXPECT(sq_model_rope_init(mi, T, &rope) == SQ_OK);
  sq_fwd_layer_cfg cfg = sq_model_fwd_cfg(mi, &rope);
  size_t wsb = sq_fwd_layer_workspace_bytes(&cfg, 1, T);
  void *ws = aligned_alloc(64, (wsb + 63) / 64 * 64);
  float *x = malloc((size_t)(T * d) * sizeof(float)), *xn = malloc((size_t)(T * d) * sizeof(float));
  float *lg = malloc((size_t)(T * V) * sizeof(float));
  double nll = 0, maxdiff = 0;
  int64_t bad = 0;
  for (int64_t s = 0; s < n; s++) {
    SQ_EXPECT(sq_fwd_embed(emb, V, d, ids.ids + s * T, T, x) == SQ_OK);
    for (int64_t l = 0; l < L; l++) {
      sq_fwd_layer_weights w = sq_layer_buf_weights(&bufs[l]);
      SQ_EXPECT(sq_fwd_layer(&cfg, &w, x, 1, T, NULL, ws, x) == SQ_OK);
    }
    sq_fwd_logits(x, T, d, norm, mi->eps, head, V, xn, lg);
    for (int64_t i = 0; i < T * V; i++) {
      double ref = lg[i], got = la[s * T * V + i], diff = fabs(ref - got);
      if (diff > maxdiff) maxdiff = diff;
      if (!(diff <= 1e-4 + 1e-4 * fabs(ref))) bad++;
    }
    /* NLL from scratch: -log softmax at the next token. */
    for (int64_t t = 0; t + 1 < T; t++) {
      const float *row = lg + t * V;
      double mx = -INFINITY, sum = 0;
      for (int64_t v = 0; v < V; v++) mx = row[v] > mx ? row[v] : mx;
      for (int64_t v = 0; v < V; v++) sum += exp(row[v] - mx);
      nll += mx + log(sum) - row[ids.ids[s * T + t + 1]];
    }
  }
  fprintf(stderr, "max |logit diff| %.3g over %lld values; ppl ref %.6f eval %.6f\n", maxdiff,
          (long long)(n * T * V), exp(nll / (double)(n * (T - 1))), rs.ppl_a);
  SQ_EXPECT_MSG(bad == 0, "%lld logits differ beyond tolerance", (long long)bad);
  SQ_EXPECT_NEAR(rs.ppl_a, exp(nll / (double)(n * (T - 1))), 1e-6, 1e-5);
  SQ_EXPECT(rs.ppl_a == rm.ppl_a);
  SQ_EXPECT_EQ_INT(rs.tokens, n * (T - 1));

  for (int64_t l = 0; l < L; l++) sq_layer_buf_free(&bufs[l]);
  free(bufs);
  free(emb);
  free(norm);
  free(head);
  free(ws);
  free(x);
  free(xn);
  free(lg);
  free(la);
  free(lb);
  sq_fwd_rope_free(&rope);
  sq_calib_free(&ids);
  sq_model_close(&m);
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
  if (sq_test_failures == 0 && system(cmd) != 0) fprintf(stderr, "cannot remove %s\n", tmp);
  free(tmp);
  return sq_test_result("test_pipeline_spill");
}
