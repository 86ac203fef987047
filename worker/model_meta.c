/* config.json -> sq_model_info (see model_meta.h). The only pipeline file that
 * includes sharding/model_config.h. */
#include "worker/model_meta.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sharding/compressed.h"
#include "sharding/model_config.h"

sq_status sq_model_info_load(const char *dir, sq_model_info *out) {
  memset(out, 0, sizeof *out);
  snprintf(out->dir, sizeof out->dir, "%s", dir);
  sq_model_config *c = calloc(1, sizeof *c);
  if (!c) return sq_error_set(SQ_ERR_NOMEM, "%s: out of memory reading config.json", dir);
  out->config_ = c;
  sq_status st;
  sq_tensor_spec *specs = NULL;
  size_t n = 0;
  SQ_CHECK_GOTO(sq_model_config_load(dir, c), st, fail);
  SQ_CHECK_GOTO(sq_model_config_check_forward(c), st, fail);
  out->hidden = c->hidden_size;
  out->intermediate = c->intermediate_size;
  out->n_layers = c->num_hidden_layers;
  out->n_heads = c->num_attention_heads;
  out->n_kv_heads = c->num_key_value_heads;
  out->head_dim = c->head_dim;
  out->vocab = c->vocab_size;
  out->eps = (float)c->rms_norm_eps;
  out->tied = c->tie_word_embeddings;
  out->rope_theta = c->rope_theta;
  out->rope_factor = c->rope_scaling.factor > 0 ? c->rope_scaling.factor : 1.0;
  out->rope_low = c->rope_scaling.low_freq_factor;
  out->rope_high = c->rope_scaling.high_freq_factor;
  out->rope_orig_max = c->rope_scaling.original_max_position_embeddings;
  switch (c->rope_scaling.kind) {
    case SQ_ROPE_LINEAR: out->rope_kind = SQ_MM_ROPE_LINEAR; break;
    case SQ_ROPE_LLAMA3: out->rope_kind = SQ_MM_ROPE_LLAMA3; break;
    default: out->rope_kind = SQ_MM_ROPE_DEFAULT; break;
  }
  SQ_CHECK_GOTO(sq_model_config_tensors(c, &specs, &n), st, fail);
  out->tensors = calloc(n, sizeof *out->tensors);
  if (!out->tensors) {
    st = sq_error_set(SQ_ERR_NOMEM, "%s: out of memory listing %zu tensors", dir, n);
    goto fail;
  }
  for (size_t i = 0; i < n; i++) {
    sq_model_tensor *t = &out->tensors[i];
    snprintf(t->name, sizeof t->name, "%s", specs[i].name);
    t->role = (int)specs[i].role;
    t->layer = specs[i].layer;
    t->ndim = specs[i].ndim;
    t->shape[0] = specs[i].shape[0];
    t->shape[1] = specs[i].shape[1];
    if (t->role == SQ_MT_BIAS) {
      if (strstr(t->name, "o_proj")) out->o_bias = 1;
      else if (strstr(t->name, "self_attn")) out->qkv_bias = 1;
      else out->mlp_bias = 1;
    }
  }
  out->n_tensors = n;
  free(specs);
  return SQ_OK;
fail:
  free(specs);
  sq_model_info_free(out);
  return st;
}

void sq_model_info_free(sq_model_info *m) {
  if (m->config_) {
    sq_model_config_free(m->config_);
    free(m->config_);
  }
  free(m->tensors);
  m->tensors = NULL;
  m->config_ = NULL;
}

sq_status sq_model_info_save(const sq_model_info *m, const struct sq_ct_config *qc,
                             const char *outdir) {
  sq_model_config *c = m->config_;
  if (qc) SQ_CHECK(sq_ct_config_insert(c->json, qc));
  return sq_model_config_save(c, outdir);
}
