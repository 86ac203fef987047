/* Perplexity / KL of MoE models, layer by layer on one process (moe_eval.h). */
#include "worker/moe_eval.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/fsio.h"
#include "common/log.h"
#include "sharding/checkpoint.h"
#include "sharding/compressed.h"
#include "worker/activations.h"
#include "worker/calib.h"
#include "worker/evaluate.h"
#include "worker/moe_model.h"

int sq_moe_eval_detect(const char *dir) {
  sq_model_config c;
  memset(&c, 0, sizeof c);
  if (sq_model_config_load(dir, &c) != SQ_OK) {
    sq_error_clear();
    return 0;
  }
  int moe = c.family == SQ_FAMILY_MIXTRAL || c.family == SQ_FAMILY_QWEN_MOE ||
            c.family == SQ_FAMILY_DEEPSEEK_V3;
  sq_model_config_free(&c);
  return moe;
}

typedef struct {
  sq_moe_model m[2];
  sq_ct_reader *r[2];
  int nm;
  sq_calib data;
  sq_acts acts[2];
  sq_moe_lbuf buf;
  int *all;     /* (E) ones: every expert is loaded */
  float *x, *y; /* (batch, T, d) */
  void *ws;
  float *table, *head[2], *norm[2], *logits[2], *xn;
  double *kl, *lsa, *lsb;
} sq_meval;

static void sq_meval_logsoftmax(const float *l, int64_t v, double *out) {
  double m = -INFINITY, s = 0.0;
  for (int64_t i = 0; i < v; i++) m = l[i] > m ? l[i] : m;
  for (int64_t i = 0; i < v; i++) s += exp((double)l[i] - m);
  double lse = m + log(s);
  for (int64_t i = 0; i < v; i++) out[i] = (double)l[i] - lse;
}

/* Tensor name of model k as fp32: through the compressed-tensors reader, or,
 * for a DeepSeek fp8 block-scaled checkpoint (which that reader refuses),
 * Linear weights (d_in > 0) dequantized by fp8_block.h and the rest as stored. */
static sq_status sq_meval_read(const sq_meval *j, int k, const char *name, float *dst,
                               int64_t d_out, int64_t d_in) {
  if (j->r[k])
    return sq_ct_read_dense_f32(j->r[k], name, dst, (uint64_t)(d_out * (d_in > 0 ? d_in : 1)));
  if (d_in > 0) return sq_moe_model_read_linear(&j->m[k], name, dst, d_out, d_in);
  return sq_ckpt_read_f32(j->m[k].ckpt, name, dst, (uint64_t)d_out);
}

/* Layer l of model k over all rows, in batches. */
static sq_status sq_meval_layer(sq_meval *j, int k, int l, int64_t batch) {
  const sq_moe_model *m = &j->m[k];
  SQ_CHECK(sq_moe_lbuf_load_small(&j->buf, m, l, j->all));
  size_t f, n;
  sq_moe_model_layer_modules(m, l, &f, &n);
  for (size_t i = f; i < f + n; i++) {
    const sq_mm_module *mm = &m->mods[i];
    SQ_CHECK(sq_meval_read(j, k, mm->pm->tensor, sq_moe_lbuf_module(&j->buf, mm), mm->pm->d_out,
                           mm->pm->d_in));
  }
  sq_moe_layer_cfg cfg = sq_moe_model_layer_cfg(m, l);
  sq_moe_layer_weights w = sq_moe_lbuf_weights(&j->buf, m);
  const sq_acts *a = &j->acts[k];
  for (int64_t s = 0; s < a->n; s += batch) {
    int64_t nb = a->n - s < batch ? a->n - s : batch;
    SQ_CHECK(sq_acts_read(a, s, nb, j->x));
    SQ_CHECK(sq_moe_layer_forward(&cfg, &w, j->x, nb, a->T, NULL, j->ws, j->y, NULL));
    SQ_CHECK(sq_acts_write(&j->acts[k], s, nb, j->y));
  }
  return sq_acts_set_layer(&j->acts[k], l + 1);
}

static sq_status sq_meval_body(sq_meval *j, const char *dir_a, const char *dir_b, const char *data,
                               const sq_eval_opts *o, sq_eval_result *r) {
  j->nm = dir_b ? 2 : 1;
  SQ_CHECK(sq_calib_load(data, o->samples, o->seq_len, 0, &j->data));
  const int64_t n = j->data.n, T = j->data.T;
  const char *dirs[2] = {dir_a, dir_b};
  for (int k = 0; k < j->nm; k++) {
    SQ_CHECK(sq_moe_model_open(dirs[k], 1, n, T, &j->m[k]));
    if (j->m[k].fp8_bo <= 0) SQ_CHECK(sq_ct_open(dirs[k], &j->r[k]));
  }
  const sq_moe_model *m = &j->m[0];
  const int64_t d = m->hidden, V = m->cfg.vocab_size;
  if (dir_b) {
    const sq_moe_model *b = &j->m[1];
    if (b->hidden != d || b->cfg.vocab_size != V || b->n_layers != m->n_layers ||
        b->n_experts != m->n_experts || b->moe_ff != m->moe_ff || b->n_heads != m->n_heads)
      return sq_error_set(SQ_ERR_ARG,
                          "%s and %s have different architectures (config.json sizes "
                          "differ) -- hint: compare a model with its own quantization",
                          dir_a, dir_b);
  }
  double t0 = sq_time_now();
  int64_t batch = o->batch > 0 ? o->batch : 8;
  if (batch > n) batch = n;
  size_t tab = (size_t)(V * d);
  j->table = malloc(tab * sizeof(float));
  j->all = malloc((size_t)(m->n_experts > 0 ? m->n_experts : 1) * sizeof(int));
  j->x = malloc((size_t)(batch * T * d) * sizeof(float));
  j->y = malloc((size_t)(batch * T * d) * sizeof(float));
  size_t wsb = 0;
  for (int64_t l = 0; l < m->n_layers; l++) {
    sq_moe_layer_cfg cfg = sq_moe_model_layer_cfg(m, l);
    size_t b = sq_moe_layer_workspace_bytes(&cfg, batch, T);
    wsb = b > wsb ? b : wsb;
  }
  j->ws = aligned_alloc(64, (wsb + 63) / 64 * 64 + 64);
  if (!j->table || !j->all || !j->x || !j->y || !j->ws)
    return sq_error_set(SQ_ERR_NOMEM, "out of memory for the MoE evaluation buffers");
  for (int64_t e = 0; e < m->n_experts; e++) j->all[e] = 1;
  SQ_CHECK(sq_moe_lbuf_init(&j->buf, m));
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
    SQ_CHECK(sq_meval_read(j, k, "model.embed_tokens.weight", j->table, (int64_t)tab, 0));
    SQ_CHECK(sq_acts_embed(&j->acts[k], j->data.ids, j->table, V));
  }
  for (int l = 0; l < m->n_layers; l++)
    for (int k = 0; k < j->nm; k++) SQ_CHECK(sq_meval_layer(j, k, l, batch));

  /* Head: final norm + lm_head (the embeddings when tied). */
  j->xn = malloc((size_t)(T * d) * sizeof(float));
  j->kl = dir_b ? malloc((size_t)(n * (T - 1)) * sizeof(double)) : NULL;
  j->lsa = malloc((size_t)V * sizeof(double));
  j->lsb = malloc((size_t)V * sizeof(double));
  if (!j->xn || (dir_b && !j->kl) || !j->lsa || !j->lsb)
    return sq_error_set(SQ_ERR_NOMEM, "out of memory for the evaluation head");
  for (int k = 0; k < j->nm; k++) {
    j->head[k] = malloc(tab * sizeof(float));
    j->norm[k] = malloc((size_t)d * sizeof(float));
    j->logits[k] = malloc((size_t)(T * V) * sizeof(float));
    if (!j->head[k] || !j->norm[k] || !j->logits[k])
      return sq_error_set(SQ_ERR_NOMEM, "out of memory for the lm_head");
    const char *hn =
        j->m[k].cfg.tie_word_embeddings ? "model.embed_tokens.weight" : "lm_head.weight";
    SQ_CHECK(sq_meval_read(j, k, hn, j->head[k], (int64_t)tab, 0));
    SQ_CHECK(sq_meval_read(j, k, "model.norm.weight", j->norm[k], d, 0));
  }
  double nll[2] = {0, 0};
  for (int64_t s = 0; s < n; s++) {
    const int32_t *ids = j->data.ids + (size_t)(s * T);
    for (int k = 0; k < j->nm; k++) {
      SQ_CHECK(sq_acts_read(&j->acts[k], s, 1, j->x));
      sq_fwd_logits(j->x, T, d, j->norm[k], j->m[k].eps, j->head[k], V, j->xn, j->logits[k]);
      double part = 0;
      SQ_CHECK(sq_fwd_nll(j->logits[k], T - 1, V, ids + 1, &part));
      nll[k] += part;
    }
    if (o->logits_a)
      memcpy(o->logits_a + (size_t)(s * T * V), j->logits[0], (size_t)(T * V) * sizeof(float));
    for (int64_t t = 0; dir_b && t < T - 1; t++) {
      sq_meval_logsoftmax(j->logits[0] + (size_t)(t * V), V, j->lsa);
      sq_meval_logsoftmax(j->logits[1] + (size_t)(t * V), V, j->lsb);
      double kl = 0;
      for (int64_t v = 0; v < V; v++) kl += exp(j->lsa[v]) * (j->lsa[v] - j->lsb[v]);
      j->kl[s * (T - 1) + t] = kl > 0 ? kl : 0;
    }
  }
  sq_eval_summarize(r, n, T, V, nll, dir_b ? j->kl : NULL, t0);
  return SQ_OK;
}

sq_status sq_moe_eval_run(const char *dir_a, const char *dir_b, const char *data,
                          const sq_eval_opts *opts, sq_eval_result *out) {
  sq_meval *j = calloc(1, sizeof *j);
  if (!j) return sq_error_set(SQ_ERR_NOMEM, "out of memory");
  for (int k = 0; k < 2; k++) j->acts[k].h5file = j->acts[k].h5dset = -1;
  sq_status st = sq_meval_body(j, dir_a, dir_b, data, opts, out);
  for (int k = 0; k < 2; k++) {
    sq_acts_free(&j->acts[k], 0);
    free(j->head[k]);
    free(j->norm[k]);
    free(j->logits[k]);
    if (j->r[k]) sq_ct_close(j->r[k]);
    sq_moe_model_close(&j->m[k]);
  }
  sq_moe_lbuf_free(&j->buf);
  free(j->table);
  free(j->all);
  free(j->x);
  free(j->y);
  free(j->ws);
  free(j->xn);
  free(j->kl);
  free(j->lsa);
  free(j->lsb);
  sq_calib_free(&j->data);
  free(j);
  return st;
}
