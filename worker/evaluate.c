/* Layer-by-layer perplexity and KL of one or two models (see evaluate.h). */
#include "worker/evaluate.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/fsio.h"
#include "common/log.h"
#include "worker/activations.h"
#include "worker/calib.h"
#include "worker/model.h"
#include "worker/moe_eval.h"

typedef struct {
  sq_model m[2];
  int nm;
  sq_calib data;
  sq_acts acts[2];
  sq_acts_runner runner;
  sq_layer_buf buf;
  sq_rope rope;
  float *table, *head[2], *norm[2], *hid, *logits[2], *xn;
  double *kl;
} sq_eval_job;

static int sq_eval_cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

void sq_eval_summarize(sq_eval_result *r, int64_t n, int64_t T, int64_t V, const double nll[2],
                       double *kl, double t0) {
  memset(r, 0, sizeof *r);
  r->samples = n;
  r->seq_len = T;
  r->vocab = V;
  r->tokens = n * (T - 1);
  r->nll_a = nll[0] / (double)r->tokens;
  r->ppl_a = exp(r->nll_a);
  if (kl) {
    r->has_b = 1;
    r->nll_b = nll[1] / (double)r->tokens;
    r->ppl_b = exp(r->nll_b);
    double sum = 0;
    for (int64_t i = 0; i < r->tokens; i++) sum += kl[i];
    r->kl_mean = sum / (double)r->tokens;
    qsort(kl, (size_t)r->tokens, sizeof(double), sq_eval_cmp);
    int64_t k99 = (int64_t)ceil(0.99 * (double)r->tokens) - 1;
    r->kl_p99 = kl[k99 < 0 ? 0 : k99];
    r->kl_max = kl[r->tokens - 1];
  }
  r->seconds = sq_time_now() - t0;
}


/* log-softmax of one row into out (double). */
static void sq_eval_logsoftmax(const float *l, int64_t v, double *out) {
  double m = -INFINITY;
  for (int64_t i = 0; i < v; i++) m = l[i] > m ? l[i] : m;
  double s = 0.0;
  for (int64_t i = 0; i < v; i++) s += exp((double)l[i] - m);
  double lse = m + log(s);
  for (int64_t i = 0; i < v; i++) out[i] = (double)l[i] - lse;
}

static sq_status sq_eval_body(sq_eval_job *j, const char *dir_a, const char *dir_b,
                              const char *data, const sq_eval_opts *o, sq_eval_result *r) {
  j->nm = dir_b ? 2 : 1;
  SQ_CHECK(sq_model_open(dir_a, 1, &j->m[0]));
  if (dir_b) SQ_CHECK(sq_model_open(dir_b, 1, &j->m[1]));
  const sq_model_info *mi = &j->m[0].info;
  if (dir_b) {
    const sq_model_info *mb = &j->m[1].info;
    if (mb->hidden != mi->hidden || mb->vocab != mi->vocab || mb->n_layers != mi->n_layers ||
        mb->intermediate != mi->intermediate || mb->n_heads != mi->n_heads ||
        mb->n_kv_heads != mi->n_kv_heads)
      return sq_error_set(SQ_ERR_ARG,
                          "%s and %s have different architectures (config.json sizes differ) -- "
                          "hint: compare a model with its own quantization",
                          dir_a, dir_b);
  }
  SQ_CHECK(sq_calib_load(data, o->samples, o->seq_len, 0, &j->data));
  int64_t n = j->data.n, T = j->data.T, d = mi->hidden, V = mi->vocab;
  double t0 = sq_time_now();

  size_t tab = (size_t)(V * d);
  j->table = malloc(tab * sizeof(float));
  if (!j->table) return sq_error_set(SQ_ERR_NOMEM, "out of memory for the embedding table");
  for (int k = 0; k < j->nm; k++) {
    char *spill = NULL;
    if (o->spill_dir) {
      char nm[64];
      snprintf(nm, sizeof nm, "shardq-eval-acts-%d.h5", k);
      spill = sq_fs_join(o->spill_dir, nm);
    }
    sq_status st = sq_acts_init(&j->acts[k], n, T, d, spill);
    free(spill);
    SQ_CHECK(st);
    SQ_CHECK(sq_model_read_f32(&j->m[k], "model.embed_tokens.weight", j->table, tab));
    SQ_CHECK(sq_acts_embed(&j->acts[k], j->data.ids, j->table, V));
  }
  free(j->table);
  j->table = NULL;

  SQ_CHECK(sq_model_rope_init(mi, T, &j->rope));
  sq_fwd_layer_cfg cfg = sq_model_fwd_cfg(mi, &j->rope);
  int64_t batch = o->batch > 0 ? o->batch : 8;
  if (batch > n) batch = n;
  SQ_CHECK(sq_acts_runner_init(&j->runner, &cfg, batch, T));
  SQ_CHECK(sq_layer_buf_init(&j->buf, mi));
  for (int l = 0; l < mi->n_layers; l++) {
    for (int k = 0; k < j->nm; k++) {
      SQ_CHECK(sq_layer_buf_load(&j->buf, &j->m[k], l));
      sq_fwd_layer_weights w = sq_layer_buf_weights(&j->buf);
      SQ_CHECK(sq_acts_forward(&j->acts[k], &j->runner, &cfg, &w, NULL, 1));
      SQ_CHECK(sq_acts_set_layer(&j->acts[k], l + 1));
    }
    sq_log_debug("eval: layer %d/%lld done", l + 1, (long long)mi->n_layers);
  }

  /* Head: final norm + lm_head (the embeddings when tied) of each model. */
  j->hid = malloc((size_t)(T * d) * sizeof(float));
  j->xn = malloc((size_t)(T * d) * sizeof(float));
  j->kl = dir_b ? malloc((size_t)(n * (T - 1)) * sizeof(double)) : NULL;
  double *lsa = malloc((size_t)V * sizeof(double)), *lsb = malloc((size_t)V * sizeof(double));
  if (!j->hid || !j->xn || (dir_b && !j->kl) || !lsa || !lsb) {
    free(lsa);
    free(lsb);
    return sq_error_set(SQ_ERR_NOMEM, "out of memory for the evaluation head");
  }
  for (int k = 0; k < j->nm; k++) {
    j->head[k] = malloc(tab * sizeof(float));
    j->norm[k] = malloc((size_t)d * sizeof(float));
    j->logits[k] = malloc((size_t)(T * V) * sizeof(float));
    if (!j->head[k] || !j->norm[k] || !j->logits[k]) {
      free(lsa);
      free(lsb);
      return sq_error_set(SQ_ERR_NOMEM, "out of memory for the lm_head");
    }
    const sq_model_info *ki = &j->m[k].info;
    sq_status st = sq_model_read_f32(&j->m[k], ki->tied ? "model.embed_tokens.weight" : "lm_head.weight",
                                     j->head[k], tab);
    if (st == SQ_OK) st = sq_model_read_f32(&j->m[k], "model.norm.weight", j->norm[k], (uint64_t)d);
    if (st != SQ_OK) {
      free(lsa);
      free(lsb);
      return st;
    }
  }
  double nll[2] = {0, 0};
  sq_status st = SQ_OK;
  for (int64_t s = 0; s < n && st == SQ_OK; s++) {
    const int32_t *ids = j->data.ids + (size_t)(s * T);
    for (int k = 0; k < j->nm && st == SQ_OK; k++) {
      st = sq_acts_read(&j->acts[k], s, 1, j->hid);
      if (st != SQ_OK) break;
      sq_fwd_logits(j->hid, T, d, j->norm[k], j->m[k].info.eps, j->head[k], V, j->xn,
                    j->logits[k]);
      double part = 0;
      st = sq_fwd_nll(j->logits[k], T - 1, V, ids + 1, &part);
      nll[k] += part;
    }
    if (st != SQ_OK) break;
    if (o->logits_a)
      memcpy(o->logits_a + (size_t)(s * T * V), j->logits[0], (size_t)(T * V) * sizeof(float));
    if (!dir_b) continue;
    for (int64_t t = 0; t < T - 1; t++) {
      sq_eval_logsoftmax(j->logits[0] + (size_t)(t * V), V, lsa);
      sq_eval_logsoftmax(j->logits[1] + (size_t)(t * V), V, lsb);
      double kl = 0;
      for (int64_t v = 0; v < V; v++) kl += exp(lsa[v]) * (lsa[v] - lsb[v]);
      j->kl[s * (T - 1) + t] = kl > 0 ? kl : 0; /* rounding can give -1e-17 */
    }
  }
  free(lsa);
  free(lsb);
  SQ_CHECK(st);

  sq_eval_summarize(r, n, T, V, nll, dir_b ? j->kl : NULL, t0);
  return SQ_OK;
}

sq_status sq_eval_run(const char *dir_a, const char *dir_b, const char *data,
                      const sq_eval_opts *opts, sq_eval_result *out) {
  /* MoE families run their own layer loop (worker/moe_eval.h). */
  if (sq_moe_eval_detect(dir_a)) return sq_moe_eval_run(dir_a, dir_b, data, opts, out);
  sq_eval_job *j = calloc(1, sizeof *j);
  if (!j) return sq_error_set(SQ_ERR_NOMEM, "out of memory");
  for (int k = 0; k < 2; k++) {
    j->acts[k].h5file = j->acts[k].h5dset = -1;
  }
  sq_status st = sq_eval_body(j, dir_a, dir_b, data, opts, out);
  for (int k = 0; k < 2; k++) {
    sq_acts_free(&j->acts[k], 0);
    free(j->head[k]);
    free(j->norm[k]);
    free(j->logits[k]);
    if (k < j->nm) sq_model_close(&j->m[k]);
  }
  free(j->table);
  free(j->hid);
  free(j->xn);
  free(j->kl);
  sq_layer_buf_free(&j->buf);
  sq_acts_runner_free(&j->runner);
  sq_fwd_rope_free(&j->rope);
  sq_calib_free(&j->data);
  free(j);
  return st;
}
