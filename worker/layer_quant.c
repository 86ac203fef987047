/* One decoder layer's quantization steps (see layer_quant.h). */
#include "worker/layer_quant.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "kernels/gptq.h"
#include "kernels/quant.h"
#include "kernels/sparsegpt.h"

sq_status sq_lq_init(sq_lq *lq, const sq_model_info *info, const sq_lq_opts *opts, int n_opts) {
  memset(lq, 0, sizeof *lq);
  lq->info = info;
  lq->opts = opts[0];
  lq->h_group = -1;
  lq->layer = -1;
  int post_rtn = 0;
  for (int i = 0; i < n_opts; i++) {
    if (opts[i].method != SQ_LQ_RTN) lq->hessians = 1;
    if (opts[i].method == SQ_LQ_SPARSEGPT && opts[i].quantize && opts[i].post_rtn) post_rtn = 1;
  }
  int64_t dmax = 0, wmax = 0, omax = 0;
  for (int g = 0; g < SQ_HG_COUNT; g++) {
    int64_t d = sq_model_group_dim(info, g);
    dmax = d > dmax ? d : dmax;
    if (lq->hessians) SQ_CHECK(sq_hessian_init(&lq->h[g], d, 0, "layer input"));
  }
  for (int m = 0; m < SQ_MOD_COUNT; m++) {
    int64_t d_out, d_in;
    sq_model_module_shape(info, m, &d_out, &d_in);
    wmax = d_out * d_in > wmax ? d_out * d_in : wmax;
    for (int i = 0; i < n_opts; i++) {
      int64_t ns = sq_gptq_scale_count(&opts[i].q, d_out, d_in);
      omax = ns > omax ? ns : omax;
    }
    omax = d_in > omax ? d_in : omax;
  }
  if (lq->hessians) lq->H = malloc((size_t)(dmax * dmax) * sizeof(float));
  lq->codes = malloc((size_t)wmax);
  lq->deq = malloc((size_t)wmax * sizeof(float));
  lq->mask = malloc((size_t)wmax);
  lq->scales = malloc((size_t)omax * sizeof(float));
  lq->zps = calloc((size_t)omax, sizeof(int32_t));
  lq->gidx = calloc((size_t)omax, sizeof(int32_t));
  if (post_rtn) lq->tmp = malloc((size_t)wmax * sizeof(float));
  if ((lq->hessians && !lq->H) || (post_rtn && !lq->tmp) || !lq->codes || !lq->deq ||
      !lq->mask || !lq->scales ||
      !lq->zps || !lq->gidx) {
    sq_lq_free(lq);
    return sq_error_set(SQ_ERR_NOMEM, "%s: out of memory for the solver buffers of one layer",
                        info->dir);
  }
  return SQ_OK;
}

void sq_lq_free(sq_lq *lq) {
  for (int g = 0; g < SQ_HG_COUNT; g++) sq_hessian_free(&lq->h[g]);
  free(lq->H);
  free(lq->codes);
  free(lq->deq);
  free(lq->mask);
  free(lq->scales);
  free(lq->zps);
  free(lq->gidx);
  free(lq->tmp);
  memset(lq, 0, sizeof *lq);
}

void sq_lq_set_opts(sq_lq *lq, const sq_lq_opts *opts) { lq->opts = *opts; }

int sq_lq_needs_calibration(const sq_lq *lq) { return lq->hessians; }

void sq_lq_begin_layer(sq_lq *lq, int layer) {
  static const char *const gname[SQ_HG_COUNT] = {"q/k/v_proj input", "o_proj input",
                                                 "gate/up_proj input", "down_proj input"};
  lq->layer = layer;
  lq->h_group = -1;
  for (int g = 0; g < SQ_HG_COUNT; g++) {
    snprintf(lq->hname[g], sizeof lq->hname[g], "model.layers.%d %s", layer, gname[g]);
    if (lq->hessians) sq_hessian_reset(&lq->h[g]);
    lq->absmax[g] = 0.0f;
  }
  lq->k_absmax = lq->v_absmax = 0.0f;
}

/* max |x| over n values, NaN-propagating (a NaN input must not hide). */
static float sq_lq_absmax(const float *x, int64_t n, float m) {
  for (int64_t i = 0; i < n; i++) {
    float a = fabsf(x[i]);
    if (!(a <= m)) m = a;
  }
  return m;
}

static sq_status sq_lq_acc(sq_lq *lq, int g, const float *X, int64_t rows, int64_t cols) {
  lq->absmax[g] = sq_lq_absmax(X, rows * cols, lq->absmax[g]);
  if (!lq->hessians) return SQ_OK;
  return sq_hessian_accumulate(&lq->h[g], X, rows, lq->hname[g]);
}
static sq_status sq_lq_hook_qkv(void *u, const float *X, int64_t rows, int64_t cols) {
  return sq_lq_acc(u, SQ_HG_QKV, X, rows, cols);
}
static sq_status sq_lq_hook_o(void *u, const float *X, int64_t rows, int64_t cols) {
  return sq_lq_acc(u, SQ_HG_O, X, rows, cols);
}
static sq_status sq_lq_hook_gu(void *u, const float *X, int64_t rows, int64_t cols) {
  return sq_lq_acc(u, SQ_HG_GATE_UP, X, rows, cols);
}
static sq_status sq_lq_hook_down(void *u, const float *X, int64_t rows, int64_t cols) {
  return sq_lq_acc(u, SQ_HG_DOWN, X, rows, cols);
}
static sq_status sq_lq_hook_k(void *u, const float *X, int64_t rows, int64_t cols) {
  sq_lq *lq = u;
  lq->k_absmax = sq_lq_absmax(X, rows * cols, lq->k_absmax);
  return SQ_OK;
}
static sq_status sq_lq_hook_v(void *u, const float *X, int64_t rows, int64_t cols) {
  sq_lq *lq = u;
  lq->v_absmax = sq_lq_absmax(X, rows * cols, lq->v_absmax);
  return SQ_OK;
}

sq_fwd_hooks sq_lq_hooks(sq_lq *lq) {
  sq_fwd_hooks h = {.qkv_in = sq_lq_hook_qkv,
                    .o_in = sq_lq_hook_o,
                    .gate_up_in = sq_lq_hook_gu,
                    .down_in = sq_lq_hook_down,
                    .k_cache = sq_lq_hook_k,
                    .v_cache = sq_lq_hook_v,
                    .user = lq};
  return h;
}

sq_status sq_lq_reduce(sq_lq *lq, const sq_comm *comm, const int owner[SQ_HG_COUNT]) {
  if (!lq->hessians) return SQ_OK;
  /* One reduction per group, groups in a fixed order, each to its owner. */
  for (int g = 0; g < SQ_HG_COUNT; g++)
    SQ_CHECK(sq_comm_reduce_hessian(comm, &lq->h[g], owner[g], lq->hname[g]));
  return SQ_OK;
}

sq_status sq_lq_reduce_observers(sq_lq *lq, const sq_comm *comm) {
  float v[SQ_HG_COUNT + 2];
  for (int g = 0; g < SQ_HG_COUNT; g++) v[g] = lq->absmax[g];
  v[SQ_HG_COUNT] = lq->k_absmax;
  v[SQ_HG_COUNT + 1] = lq->v_absmax;
  char label[96];
  snprintf(label, sizeof label, "absmax observers of model.layers.%d", lq->layer);
  SQ_CHECK(sq_comm_allreduce_max_f32(comm, v, SQ_HG_COUNT + 2, label));
  for (int g = 0; g < SQ_HG_COUNT; g++) lq->absmax[g] = v[g];
  lq->k_absmax = v[SQ_HG_COUNT];
  lq->v_absmax = v[SQ_HG_COUNT + 1];
  return SQ_OK;
}

sq_status sq_lq_declare(const sq_lq *lq, sq_st_writer *w, const char *name, int64_t d_out,
                        int64_t d_in) {
  char tname[192];
  if (!lq->opts.quantize) {
    int64_t shape[2] = {d_out, d_in};
    snprintf(tname, sizeof tname, "%s.weight", name);
    return sq_st_writer_declare(w, tname, lq->opts.dense_dtype, 2, shape);
  }
  /* compressed-tensors (and so vLLM) refuses group quantization whose group
   * size does not divide in_features; say so once rather than let the serving
   * side fail later. The file itself is still exact (partial last group). */
  static int warned_partial_group;
  const sq_qargs *q = &lq->opts.q;
  if (q->strategy == SQ_QSTRAT_GROUP && q->group_size > 0 && d_in % q->group_size != 0 &&
      !warned_partial_group) {
    warned_partial_group = 1;
    sq_log_warn("%s: in_features %lld is not a multiple of group_size %d: compressed-tensors "
                "loaders (vLLM, transformers) refuse such groups -- hint: pick a group size "
                "that divides every in_features, or per-channel (--group 0)",
                name, (long long)d_in, q->group_size);
  }
  return sq_ct_declare_module(w, lq->opts.fmt, name, &lq->opts.q, d_out, d_in,
                              lq->opts.actorder == 1);
}

/* Finalize the Hessian of group g into lq->H (once per layer and group). */
static sq_status sq_lq_finalize(sq_lq *lq, int g) {
  if (lq->h_group == g) return SQ_OK;
  SQ_CHECK(sq_hessian_finalize(&lq->h[g], lq->H, lq->hname[g]));
  lq->h_group = g;
  return SQ_OK;
}

sq_status sq_lq_solve(sq_lq *lq, int mod, const char *name, const float *W, sq_dtype src_dtype,
                      sq_st_writer *w, sq_lq_stat *stat) {
  const sq_lq_opts *o = &lq->opts;
  int64_t d_out, d_in;
  sq_model_module_shape(lq->info, mod, &d_out, &d_in);
  double t0 = sq_time_now();
  memset(stat, 0, sizeof *stat);
  stat->loss = NAN;
  int g = sq_model_module_group(mod);
  int has_gidx = o->quantize && o->actorder == 1;
  if (o->method != SQ_LQ_RTN) SQ_CHECK(sq_lq_finalize(lq, g));

  if (o->method == SQ_LQ_GPTQ) {
    sq_gptq_opts go = sq_gptq_opts_default();
    go.q = o->q;
    go.actorder = (sq_actorder)o->actorder;
    go.block_size = o->block;
    go.damp_frac = o->damp;
    sq_gptq_out out = {.codes = lq->codes, .scales = lq->scales, .zero_points = lq->zps,
                       .g_idx = lq->gidx, .deq = lq->deq};
    SQ_CHECK(sq_gptq_quantize(name, W, lq->H, d_out, d_in, &go, NULL, 0, &out));
    stat->loss = out.loss;
  } else if (o->method == SQ_LQ_SPARSEGPT) {
    sq_sparsegpt_opts so = sq_sparsegpt_opts_default();
    so.sparsity = o->sparsity;
    so.prune_n = o->prune_n;
    so.prune_m = o->prune_m;
    so.block_size = o->block;
    so.damp_frac = o->damp;
    int joint = o->quantize && !o->post_rtn;
    so.quantize = joint;
    so.q = o->q;
    sq_sparsegpt_out out = {.weight = o->post_rtn && o->quantize ? lq->tmp : lq->deq,
                            .mask = lq->mask,
                            .codes = joint ? lq->codes : NULL,
                            .scales = joint ? lq->scales : NULL,
                            .zero_points = joint ? lq->zps : NULL};
    SQ_CHECK(sq_sparsegpt_prune(name, W, lq->H, d_out, d_in, &so, NULL, 0, &out));
    stat->loss = out.loss;
    if (o->quantize && o->post_rtn) {
      if (!lq->tmp)
        return sq_error_set(SQ_ERR_ARG, "%s: prune-then-quantize options were not given to "
                            "sq_lq_init", name);
      /* zeros stay zero: int symmetric and fp8 map 0 to code 0 */
      SQ_CHECK(sq_quant_rtn(&o->q, name, lq->tmp, d_out, d_in, lq->codes, lq->scales,
                            o->q.symmetric || o->q.type == SQ_QTYPE_FLOAT ? NULL : lq->zps,
                            lq->deq));
    }
  } else {
    SQ_CHECK(sq_quant_rtn(&o->q, name, W, d_out, d_in, lq->codes, lq->scales,
                          o->q.symmetric || o->q.type == SQ_QTYPE_FLOAT ? NULL : lq->zps,
                          lq->deq));
  }

  char tname[192];
  if (!o->quantize) {
    /* Pruned only: stored dense in dense_dtype; the forward must use exactly
     * the stored values, so round deq through that dtype. */
    size_t n = (size_t)(d_out * d_in), es = sq_dtype_size(o->dense_dtype);
    void *tmp = malloc(n * es);
    if (!tmp) return sq_error_set(SQ_ERR_NOMEM, "%s: out of memory converting the weight", name);
    sq_dtype_convert_from_f32(o->dense_dtype, lq->deq, tmp, n);
    sq_dtype_convert_to_f32(o->dense_dtype, tmp, lq->deq, n);
    snprintf(tname, sizeof tname, "%s.weight", name);
    sq_status st = sq_st_writer_write(w, tname, tmp);
    free(tmp);
    SQ_CHECK(st);
    stat->bytes_out = n * es;
  } else {
    int asym = o->q.type == SQ_QTYPE_INT && !o->q.symmetric;
    SQ_CHECK(sq_ct_write_module(w, o->fmt, name, &o->q, d_out, d_in, lq->codes, lq->scales,
                                asym ? lq->zps : NULL, has_gidx ? lq->gidx : NULL));
    stat->bytes_out = sq_ct_module_bytes(o->fmt, &o->q, d_out, d_in, has_gidx);
  }
  stat->bytes_in = (uint64_t)(d_out * d_in) * sq_dtype_size(src_dtype);
  stat->seconds = sq_time_now() - t0;
  return SQ_OK;
}

sq_status sq_lq_share(sq_lq *lq, const sq_comm *comm, int owner, float *W, int64_t d_out,
                      int64_t d_in, const char *name) {
  if (comm->rank == owner) memcpy(W, lq->deq, (size_t)(d_out * d_in) * sizeof(float));
  return sq_comm_share_f32(comm, W, d_out * d_in, owner, name);
}
