/* One decoder layer of `shardq quantize` (quantize_job.h): every rank loads
 * the layer's norms and biases and the modules it owns, the owners broadcast
 * the weights, an optional SmoothQuant pass folds its scales, the calibration
 * forward accumulates Hessians and observers (reduced to the owners), every
 * rank writes its pass-through tensors and calibrated scales, each owner
 * solves and writes its modules, the dequantized weights are shared and the
 * quantized layer's outputs become the next layer's inputs. Also which rank
 * writes which tensor, and the declaration of a layer group's shard part. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/fsio.h"
#include "common/log.h"
#include "coordinator/quantize_job.h"
#include "coordinator/quantize_output.h"

/* Write n fp32 values as tensor name in dtype dt (declared so). */
static sq_status sq_q_write_f32_as(sq_st_writer *w, const char *name, const float *x, size_t n,
                                   sq_dtype dt) {
  void *tmp = malloc(n * sq_dtype_size(dt));
  if (!tmp) return sq_error_set(SQ_ERR_NOMEM, "%s: out of memory converting the tensor", name);
  sq_dtype_convert_from_f32(dt, x, tmp, n);
  sq_status st = sq_st_writer_write(w, name, tmp);
  free(tmp);
  return st;
}

/* "self_attn.q_proj.weight" of layer l -> module index, else -1. */
static int sq_q_module_of(const char *name, int l) {
  for (int m = 0; m < SQ_MOD_COUNT; m++) {
    char full[176];
    snprintf(full, sizeof full, "model.layers.%d.%s.weight", l, sq_model_module_suffix(m));
    if (!strcmp(full, name)) return m;
  }
  return -1;
}

/* The rank that writes tensor `name` of layer l: a Linear's weight, bias and
 * input_scale go with the module's owner; norms and kv scales with q_proj's. */
static int sq_q_writer_of(const sq_qjob *j, const char *name, int l) {
  for (int m = 0; m < SQ_MOD_COUNT; m++) {
    char pre[160];
    int n = snprintf(pre, sizeof pre, "model.layers.%d.%s.", l, sq_model_module_suffix(m));
    if (!strncmp(name, pre, (size_t)n)) return SQ_Q_OWNER(j, l, m);
  }
  return SQ_Q_OWNER(j, l, SQ_MOD_Q);
}

/* Does this rank write any tensor of layers [first, last]? */
int sq_qjob_writes_group(const sq_qjob *j, int first, int last) {
  const sq_model_info *mi = &j->model.info;
  for (size_t i = 0; i < mi->n_tensors; i++) {
    const sq_model_tensor *t = &mi->tensors[i];
    if (t->layer >= first && t->layer <= last && sq_q_writer_of(j, t->name, t->layer) == j->rank)
      return 1;
  }
  return 0;
}

/* Open layer group k's shard writer (this rank's part) and declare every
 * tensor of its layers that this rank writes, plus the calibrated scales
 * (input_scale, k_scale, v_scale: shape [1] in the model's dtype, as
 * compressed-tensors registers them). */
sq_status sq_qjob_open_layer_shard(sq_qjob *j, int first, int last, int k) {
  if (!j->files[k]) return SQ_OK;
  char *path = sq_fs_join(j->a.out, j->files[k]);
  sq_status st = path ? sq_st_writer_create(path, &j->w) : SQ_ERR_NOMEM;
  free(path);
  SQ_CHECK(st);
  const sq_model_info *mi = &j->model.info;
  const sq_qplan *p = &j->plan;
  int64_t one[1] = {1};
  for (size_t i = 0; i < mi->n_tensors; i++) {
    const sq_model_tensor *t = &mi->tensors[i];
    if (t->layer < first || t->layer > last) continue;
    if (sq_q_writer_of(j, t->name, t->layer) != j->rank) continue;
    int m = t->role == SQ_MT_LINEAR ? sq_q_module_of(t->name, (int)t->layer) : -1;
    const sq_qplan_mod *pm = m >= 0 ? sq_qplan_module(p, (int)t->layer, m) : NULL;
    if (pm && pm->process) {
      char mod[160];
      snprintf(mod, sizeof mod, "%.*s", (int)(strlen(t->name) - 7), t->name);
      sq_lq_set_opts(&j->lq, &pm->lq);
      SQ_CHECK(sq_lq_declare(&j->lq, j->w, mod, t->shape[0], t->shape[1]));
      if (pm->input_scale) {
        char iname[192];
        snprintf(iname, sizeof iname, "%s.input_scale", mod);
        SQ_CHECK(sq_st_writer_declare(j->w, iname, p->dtype, 1, one));
      }
    } else {
      SQ_CHECK(sq_qout_declare_raw(j->w, j->model.ckpt, t->name));
    }
  }
  for (int l = first; p->kv_cache && l <= last; l++) {
    if (SQ_Q_OWNER(j, l, SQ_MOD_Q) != j->rank) continue;
    for (int kv = 0; kv < 2; kv++) {
      char name[96];
      snprintf(name, sizeof name, "model.layers.%d.self_attn.%s", l, kv ? "v_scale" : "k_scale");
      SQ_CHECK(sq_st_writer_declare(j->w, name, p->dtype, 1, one));
    }
  }
  return SQ_OK;
}

/* SmoothQuant for layer l: observe the norms' outputs over this rank's
 * calibration samples (agreed, then min/max-reduced over ranks), fold the
 * scales into the norms and balance layers, then round the changed tensors to
 * the checkpoint dtype (what is written and what the rest of the layer's
 * calibration sees). Every rank computes the same scales from the same data. */
static sq_status sq_q_smooth_layer(sq_qjob *j, int l, const sq_fwd_layer_cfg *cfg) {
  static const int bal[SQ_SMOOTH_COUNT][3] = {{SQ_MOD_Q, SQ_MOD_K, SQ_MOD_V},
                                              {SQ_MOD_GATE, SQ_MOD_UP, -1}};
  const sq_model_info *mi = &j->model.info;
  char label[96];
  snprintf(label, sizeof label, "model.layers.%d (SmoothQuant)", l);
  j->smooth.label = label;
  sq_smooth_reset(&j->smooth);
  sq_fwd_hooks hooks = sq_smooth_hooks(&j->smooth);
  sq_fwd_layer_weights w = sq_layer_buf_weights(&j->buf);
  SQ_Q_STEP(j, sq_acts_forward(&j->acts, &j->runner, cfg, &w, &hooks, 0));
  for (int k = 0; k < SQ_SMOOTH_COUNT && j->ranks > 1; k++) {
    if (!j->smooth.enabled[k]) continue;
    sq_smooth_range *r = &j->smooth.r[k];
    SQ_Q_COLL(j, sq_comm_allreduce_max_f32(j->comm, r->mx, r->d, label));
    for (int64_t c = 0; c < r->d; c++) r->mn[c] = -r->mn[c]; /* min = -max(-x): exact */
    SQ_Q_COLL(j, sq_comm_allreduce_max_f32(j->comm, r->mn, r->d, label));
    for (int64_t c = 0; c < r->d; c++) r->mn[c] = -r->mn[c];
    SQ_Q_COLL(j, sq_comm_allreduce_sum_i64(j->comm, &r->rows, 1, label));
  }
  sq_dtype dt = j->plan.dtype;
  for (int k = 0; k < SQ_SMOOTH_COUNT; k++) {
    if (!j->smooth.enabled[k]) continue;
    float *W[3];
    int64_t d_out[3], d_in;
    int n = 0;
    for (int b = 0; b < 3 && bal[k][b] >= 0; b++, n++) {
      W[b] = j->buf.mod[bal[k][b]];
      sq_model_module_shape(mi, bal[k][b], &d_out[b], &d_in);
    }
    float *norm = k == SQ_SMOOTH_ATTN ? j->buf.attn_norm : j->buf.mlp_norm;
    SQ_Q_STEP(j, sq_smooth_scales(&j->smooth.r[k], (const float *const *)W, d_out, n,
                                  j->smooth.alpha, j->svec, label));
    sq_smooth_apply(norm, W, d_out, n, mi->hidden, j->svec);
    for (int64_t c = 0; c < mi->hidden; c++) norm[c] = sq_round_to_dtype(norm[c], dt);
    for (int b = 0; b < n; b++)
      for (int64_t e = 0; e < d_out[b] * d_in; e++) W[b][e] = sq_round_to_dtype(W[b][e], dt);
  }
  return SQ_OK;
}

/* The calibrated scales of layer l (after the calibration forward and the
 * observers' max-reduce) that this rank writes. */
static sq_status sq_q_write_scales(sq_qjob *j, int l) {
  const sq_qplan *p = &j->plan;
  for (int m = 0; m < SQ_MOD_COUNT; m++) {
    const sq_qplan_mod *pm = sq_qplan_module(p, l, m);
    if (!pm->process || !pm->input_scale || SQ_Q_OWNER(j, l, m) != j->rank) continue;
    float amax = j->lq.absmax[sq_model_module_group(m)], scale;
    int zp;
    sq_q_params(pm->input_q, -amax, amax, &scale, &zp);
    char name[192];
    snprintf(name, sizeof name, "model.layers.%d.%s.input_scale", l, sq_model_module_suffix(m));
    SQ_CHECK(sq_q_write_f32_as(j->w, name, &scale, 1, p->dtype));
  }
  for (int kv = 0; p->kv_cache && kv < 2 && SQ_Q_OWNER(j, l, SQ_MOD_Q) == j->rank; kv++) {
    float amax = kv ? j->lq.v_absmax : j->lq.k_absmax, scale;
    int zp;
    sq_q_params(p->kv_q, -amax, amax, &scale, &zp);
    char name[96];
    snprintf(name, sizeof name, "model.layers.%d.self_attn.%s", l, kv ? "v_scale" : "k_scale");
    SQ_CHECK(sq_q_write_f32_as(j->w, name, &scale, 1, p->dtype));
  }
  return SQ_OK;
}

/* Norms and Linears the solver does not write (this rank's share): raw
 * bytes, or the smoothed values when SmoothQuant changed them. */
static sq_status sq_q_write_passthrough(sq_qjob *j, int l) {
  const sq_model_info *mi = &j->model.info;
  for (size_t i = 0; i < mi->n_tensors; i++) {
    const sq_model_tensor *t = &mi->tensors[i];
    if (t->layer != l || sq_q_writer_of(j, t->name, l) != j->rank) continue;
    int m = t->role == SQ_MT_LINEAR ? sq_q_module_of(t->name, l) : -1;
    if (m >= 0 && sq_qplan_module(&j->plan, l, m)->process) continue;
    const float *changed = NULL;
    size_t n = (size_t)mi->hidden;
    char an[96], mn[96];
    snprintf(an, sizeof an, "model.layers.%d.input_layernorm.weight", l);
    snprintf(mn, sizeof mn, "model.layers.%d.post_attention_layernorm.weight", l);
    if (j->plan.smooth_attn && !strcmp(t->name, an)) changed = j->buf.attn_norm;
    if (j->plan.smooth_mlp && !strcmp(t->name, mn)) changed = j->buf.mlp_norm;
    if (m >= 0) {
      int attn = m == SQ_MOD_Q || m == SQ_MOD_K || m == SQ_MOD_V;
      int mlp = m == SQ_MOD_GATE || m == SQ_MOD_UP;
      if ((attn && j->plan.smooth_attn) || (mlp && j->plan.smooth_mlp)) {
        int64_t d_out, d_in;
        sq_model_module_shape(mi, m, &d_out, &d_in);
        changed = j->buf.mod[m];
        n = (size_t)(d_out * d_in);
      }
    }
    if (changed) SQ_CHECK(sq_q_write_f32_as(j->w, t->name, changed, n, j->plan.dtype));
    else SQ_CHECK(sq_qout_write_raw(j->w, j->model.ckpt, t->name));
  }
  return SQ_OK;
}

/* Step "load": the layer's norms and biases, and the modules this rank owns. */
static sq_status sq_q_load(sq_qjob *j, int l) {
  SQ_CHECK(sq_comm_failpoint(j->comm, "load"));
  int mine[SQ_MOD_COUNT];
  for (int m = 0; m < SQ_MOD_COUNT; m++) mine[m] = SQ_Q_OWNER(j, l, m) == j->rank;
  return sq_layer_buf_load_parts(&j->buf, &j->model, l, mine);
}

/* Step "solve": the modules this rank owns, written to its shard; the
 * dequantized weight replaces the module's weight here (shared afterwards).
 * stats (SQ_MOD_COUNT, 4): loss, seconds, bytes in, bytes out of each. */
static sq_status sq_q_solve(sq_qjob *j, int l, double *stats) {
  const sq_model_info *mi = &j->model.info;
  SQ_CHECK(sq_comm_failpoint(j->comm, "solve"));
  for (int m = 0; m < SQ_MOD_COUNT; m++) {
    const sq_qplan_mod *pm = sq_qplan_module(&j->plan, l, m);
    if (!pm->process || SQ_Q_OWNER(j, l, m) != j->rank) continue;
    char name[160], wname[176];
    snprintf(name, sizeof name, "model.layers.%d.%s", l, sq_model_module_suffix(m));
    snprintf(wname, sizeof wname, "%s.weight", name);
    sq_lq_set_opts(&j->lq, &pm->lq);
    int64_t d_out, d_in;
    sq_model_module_shape(mi, m, &d_out, &d_in);
    sq_lq_stat stat = {0};
    SQ_CHECK(sq_lq_solve(&j->lq, m, name, j->buf.mod[m],
                         sq_model_tensor_dtype(&j->model, wname), j->w, &stat));
    memcpy(j->buf.mod[m], j->lq.deq, (size_t)(d_out * d_in) * sizeof(float));
    double *s = stats + 4 * m;
    s[0] = stat.loss;
    s[1] = stat.seconds;
    s[2] = (double)stat.bytes_in;
    s[3] = (double)stat.bytes_out;
  }
  return SQ_OK;
}

static void sq_q_progress(const sq_qjob *j, int l, int m, double loss_v, double t_start,
                          double layer_t0) {
  const sq_model_info *mi = &j->model.info;
  double done = sq_time_now() - t_start;
  double per = (l > 0 ? done / l : sq_time_now() - layer_t0 + 1e-9);
  double eta = per * (double)(mi->n_layers - l) - (l > 0 ? 0 : done);
  char loss[32];
  if (isnan(loss_v)) snprintf(loss, sizeof loss, "-");
  else snprintf(loss, sizeof loss, "%.4g", loss_v);
  fprintf(stderr, "layer %d/%lld  %-18s loss %-10s %6.2f s/layer  ETA %.0f s\n", l + 1,
          (long long)mi->n_layers, sq_model_module_suffix(m), loss, per, eta < 0 ? 0 : eta);
}

sq_status sq_qjob_layer(sq_qjob *j, int l, double t_start) {
  const sq_model_info *mi = &j->model.info;
  const sq_comm *comm = j->comm;
  sq_fwd_layer_cfg cfg = sq_model_fwd_cfg(mi, &j->rope);
  SQ_Q_STEP(j, sq_q_load(j, l));
  /* The owners' weights to every rank (the forward needs the whole layer). */
  for (int m = 0; m < SQ_MOD_COUNT && j->ranks > 1; m++) {
    int64_t d_out, d_in;
    sq_model_module_shape(mi, m, &d_out, &d_in);
    char name[160];
    snprintf(name, sizeof name, "model.layers.%d.%s (original)", l, sq_model_module_suffix(m));
    SQ_Q_COLL(j, sq_comm_share_f32(comm, j->buf.mod[m], d_out * d_in, SQ_Q_OWNER(j, l, m), name));
  }
  /* 0: SmoothQuant (its own calibration pass) changes the weights first. */
  if (j->smoothing) SQ_CHECK(sq_q_smooth_layer(j, l, &cfg));
  /* 1-2: calibration forward with the layer's unquantized weights: Hessians,
   * activation and kv-cache absmax; Hessian reduce to the groups' owners. */
  sq_lq_begin_layer(&j->lq, l);
  if (sq_qplan_needs_calibration(&j->plan)) {
    sq_fwd_hooks hooks = sq_lq_hooks(&j->lq);
    sq_fwd_layer_weights w = sq_layer_buf_weights(&j->buf);
    sq_status st = sq_comm_failpoint(comm, "hessian");
    if (st == SQ_OK) st = sq_acts_forward(&j->acts, &j->runner, &cfg, &w, &hooks, 0);
    SQ_Q_STEP(j, st);
    SQ_Q_STEP(j, sq_comm_failpoint(comm, "reduce"));
    static const int first_mod[SQ_HG_COUNT] = {SQ_MOD_Q, SQ_MOD_O, SQ_MOD_GATE, SQ_MOD_DOWN};
    int gowner[SQ_HG_COUNT];
    for (int g = 0; g < SQ_HG_COUNT; g++) gowner[g] = SQ_Q_OWNER(j, l, first_mod[g]);
    SQ_Q_COLL(j, sq_lq_reduce(&j->lq, comm, gowner));
    SQ_Q_COLL(j, sq_lq_reduce_observers(&j->lq, comm));
  }
  sq_status st = sq_comm_failpoint(comm, "write");
  if (st == SQ_OK) st = sq_q_write_scales(j, l);
  if (st == SQ_OK) st = sq_q_write_passthrough(j, l);
  SQ_Q_STEP(j, st);
  /* 3: each owner solves its modules and writes them to its shard. */
  double layer_t0 = sq_time_now();
  double stats[SQ_MOD_COUNT * 4] = {0};
  SQ_Q_STEP(j, sq_q_solve(j, l, stats));
  /* 4: the dequantized weights from their owners to every rank. */
  SQ_Q_STEP(j, sq_comm_failpoint(comm, "share"));
  for (int m = 0; m < SQ_MOD_COUNT; m++) {
    if (!sq_qplan_module(&j->plan, l, m)->process) continue;
    int64_t d_out, d_in;
    sq_model_module_shape(mi, m, &d_out, &d_in);
    char name[160];
    snprintf(name, sizeof name, "model.layers.%d.%s", l, sq_model_module_suffix(m));
    SQ_Q_COLL(j, sq_comm_share_f32(comm, j->buf.mod[m], d_out * d_in, SQ_Q_OWNER(j, l, m), name));
  }
  /* Each module's figures from its owner (only its slot is non-zero). */
  SQ_Q_COLL(j, sq_comm_reduce_sum_f64(comm, stats, SQ_MOD_COUNT * 4, 0, "module figures"));
  st = SQ_OK;
  for (int m = 0; m < SQ_MOD_COUNT && j->rank == 0; m++) {
    if (!sq_qplan_module(&j->plan, l, m)->process) continue;
    if (j->dump && st == SQ_OK) {
      char wname[176];
      snprintf(wname, sizeof wname, "model.layers.%d.%s.weight", l, sq_model_module_suffix(m));
      st = sq_st_writer_write_f32(j->dump, wname, j->buf.mod[m]);
    }
    const double *s = stats + 4 * m;
    sq_qsum *q = &j->sum[m];
    q->seconds += s[1];
    q->bytes_in += (uint64_t)s[2];
    q->bytes_out += (uint64_t)s[3];
    q->count++;
    if (!isnan(s[0])) {
      q->loss += s[0];
      q->has_loss = 1;
    }
    if (!j->a.quiet) sq_q_progress(j, l, m, s[0], t_start, layer_t0);
  }
  SQ_Q_STEP(j, st);
  /* 5: the quantized layer's outputs are the next layer's inputs. */
  if (l + 1 < mi->n_layers) {
    sq_fwd_layer_weights w = sq_layer_buf_weights(&j->buf);
    st = sq_acts_forward(&j->acts, &j->runner, &cfg, &w, NULL, 1);
    if (st == SQ_OK) st = sq_acts_set_layer(&j->acts, l + 1);
    SQ_Q_STEP(j, st);
  }
  return SQ_OK;
}

