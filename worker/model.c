/* Model weight sources and per-layer weight buffers (see model.h). */
#include "worker/model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sharding/checkpoint.h"
#include "sharding/compressed.h"

static const char *const sq_mod_suffix[SQ_MOD_COUNT] = {
    "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
    "mlp.gate_proj",    "mlp.up_proj",      "mlp.down_proj"};
static const int sq_mod_group[SQ_MOD_COUNT] = {SQ_HG_QKV,     SQ_HG_QKV,     SQ_HG_QKV, SQ_HG_O,
                                               SQ_HG_GATE_UP, SQ_HG_GATE_UP, SQ_HG_DOWN};

const char *sq_model_module_suffix(int mod) { return sq_mod_suffix[mod]; }
int sq_model_module_group(int mod) { return sq_mod_group[mod]; }

void sq_model_module_shape(const sq_model_info *m, int mod, int64_t *d_out, int64_t *d_in) {
  int64_t qd = m->n_heads * m->head_dim, kvd = m->n_kv_heads * m->head_dim;
  switch (mod) {
    case SQ_MOD_Q: *d_out = qd; *d_in = m->hidden; break;
    case SQ_MOD_K:
    case SQ_MOD_V: *d_out = kvd; *d_in = m->hidden; break;
    case SQ_MOD_O: *d_out = m->hidden; *d_in = qd; break;
    case SQ_MOD_GATE:
    case SQ_MOD_UP: *d_out = m->intermediate; *d_in = m->hidden; break;
    default: *d_out = m->hidden; *d_in = m->intermediate; break;
  }
}

int64_t sq_model_group_dim(const sq_model_info *m, int g) {
  if (g == SQ_HG_O) return m->n_heads * m->head_dim;
  if (g == SQ_HG_DOWN) return m->intermediate;
  return m->hidden;
}

sq_status sq_model_open(const char *dir, int compressed, sq_model *out) {
  memset(out, 0, sizeof *out);
  SQ_CHECK(sq_model_info_load(dir, &out->info));
  sq_status st = compressed ? sq_ct_open(dir, &out->ct) : sq_ckpt_open(dir, &out->ckpt);
  if (st != SQ_OK) {
    sq_model_info_free(&out->info);
    return st;
  }
  return SQ_OK;
}

void sq_model_close(sq_model *m) {
  if (m->ckpt) sq_ckpt_close(m->ckpt);
  if (m->ct) sq_ct_close(m->ct);
  sq_model_info_free(&m->info);
  memset(m, 0, sizeof *m);
}

/* Checkpoint bytes read by this process (benchmarks: bytes per rank). */
static uint64_t sq_model_read_bytes;

uint64_t sq_model_bytes_read(void) { return sq_model_read_bytes; }
void sq_model_count_read(uint64_t bytes) { sq_model_read_bytes += bytes; }

sq_status sq_model_read_f32(const sq_model *m, const char *name, float *dst, uint64_t n) {
  if (m->ct) return sq_ct_read_dense_f32(m->ct, name, dst, n);
  sq_dtype dt = sq_model_tensor_dtype(m, name);
  if (dt != SQ_DTYPE_INVALID) sq_model_read_bytes += n * sq_dtype_size(dt);
  return sq_ckpt_read_f32(m->ckpt, name, dst, n);
}

sq_dtype sq_model_tensor_dtype(const sq_model *m, const char *name) {
  const sq_ckpt *c = m->ckpt ? m->ckpt : sq_ct_reader_ckpt(m->ct);
  const sq_st_tensor *t = sq_ckpt_find(c, name, NULL);
  return t ? t->dtype : SQ_DTYPE_INVALID;
}

sq_status sq_layer_buf_init(sq_layer_buf *b, const sq_model_info *info) {
  memset(b, 0, sizeof *b);
  b->layer = -1;
  size_t total = 2 * (size_t)info->hidden;
  for (int i = 0; i < SQ_MOD_COUNT; i++) {
    int64_t d_out, d_in;
    sq_model_module_shape(info, i, &d_out, &d_in);
    total += (size_t)(d_out * d_in + d_out);
  }
  b->base_ = malloc(total * sizeof(float));
  if (!b->base_)
    return sq_error_set(SQ_ERR_NOMEM, "%s: out of memory for one layer's weights (%zu floats)",
                        info->dir, total);
  float *p = b->base_;
  b->attn_norm = p;
  p += info->hidden;
  b->mlp_norm = p;
  p += info->hidden;
  for (int i = 0; i < SQ_MOD_COUNT; i++) {
    int64_t d_out, d_in;
    sq_model_module_shape(info, i, &d_out, &d_in);
    b->mod[i] = p;
    p += d_out * d_in;
    int has = (i <= SQ_MOD_V && info->qkv_bias) || (i == SQ_MOD_O && info->o_bias) ||
              (i >= SQ_MOD_GATE && info->mlp_bias);
    b->bias[i] = has ? p : NULL;
    p += d_out;
  }
  return SQ_OK;
}

void sq_layer_buf_free(sq_layer_buf *b) {
  free(b->base_);
  memset(b, 0, sizeof *b);
  b->layer = -1;
}

sq_status sq_layer_buf_load(sq_layer_buf *b, const sq_model *m, int layer) {
  static const int all[SQ_MOD_COUNT] = {1, 1, 1, 1, 1, 1, 1};
  return sq_layer_buf_load_parts(b, m, layer, all);
}

sq_status sq_layer_buf_load_parts(sq_layer_buf *b, const sq_model *m, int layer,
                                  const int load_mod[SQ_MOD_COUNT]) {
  const sq_model_info *info = &m->info;
  char name[160];
  snprintf(name, sizeof name, "model.layers.%d.input_layernorm.weight", layer);
  SQ_CHECK(sq_model_read_f32(m, name, b->attn_norm, (uint64_t)info->hidden));
  snprintf(name, sizeof name, "model.layers.%d.post_attention_layernorm.weight", layer);
  SQ_CHECK(sq_model_read_f32(m, name, b->mlp_norm, (uint64_t)info->hidden));
  for (int i = 0; i < SQ_MOD_COUNT; i++) {
    int64_t d_out, d_in;
    sq_model_module_shape(info, i, &d_out, &d_in);
    snprintf(name, sizeof name, "model.layers.%d.%s.weight", layer, sq_mod_suffix[i]);
    if (load_mod[i]) SQ_CHECK(sq_model_read_f32(m, name, b->mod[i], (uint64_t)(d_out * d_in)));
    if (b->bias[i]) {
      snprintf(name, sizeof name, "model.layers.%d.%s.bias", layer, sq_mod_suffix[i]);
      SQ_CHECK(sq_model_read_f32(m, name, b->bias[i], (uint64_t)d_out));
    }
  }
  b->layer = layer;
  return SQ_OK;
}

sq_fwd_layer_weights sq_layer_buf_weights(const sq_layer_buf *b) {
  sq_fwd_layer_weights w = {
      .attn_norm = b->attn_norm, .q = b->mod[SQ_MOD_Q], .k = b->mod[SQ_MOD_K],
      .v = b->mod[SQ_MOD_V], .o = b->mod[SQ_MOD_O], .q_bias = b->bias[SQ_MOD_Q],
      .k_bias = b->bias[SQ_MOD_K], .v_bias = b->bias[SQ_MOD_V], .o_bias = b->bias[SQ_MOD_O],
      .mlp_norm = b->mlp_norm, .gate = b->mod[SQ_MOD_GATE], .up = b->mod[SQ_MOD_UP],
      .down = b->mod[SQ_MOD_DOWN], .gate_bias = b->bias[SQ_MOD_GATE],
      .up_bias = b->bias[SQ_MOD_UP], .down_bias = b->bias[SQ_MOD_DOWN]};
  return w;
}

sq_status sq_model_rope_init(const sq_model_info *info, int64_t max_t, sq_rope *rope) {
  memset(rope, 0, sizeof *rope);
  /* rope_kind follows sq_rope_type's order (model_meta.h), so a cast maps it. */
  sq_rope_cfg rc = {.type = (sq_rope_type)info->rope_kind,
                    .head_dim = (int)info->head_dim,
                    .theta = info->rope_theta,
                    .factor = info->rope_factor,
                    .low_freq_factor = info->rope_low,
                    .high_freq_factor = info->rope_high,
                    .original_max_position = info->rope_orig_max};
  return sq_fwd_rope_init(rope, &rc, max_t);
}

sq_fwd_layer_cfg sq_model_fwd_cfg(const sq_model_info *info, const sq_rope *rope) {
  sq_fwd_layer_cfg c = {.hidden = info->hidden,
                        .n_heads = info->n_heads,
                        .n_kv_heads = info->n_kv_heads,
                        .head_dim = info->head_dim,
                        .intermediate = info->intermediate,
                        .eps = info->eps,
                        .rope = rope};
  return c;
}
