/* One MoE decoder layer's calibrate -> reduce -> solve -> write -> share ->
 * re-run step over all ranks (see moe_layer_quant.h). */
#include "worker/moe_layer_quant.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "kernels/gptq.h"
#include "kernels/quant.h"
#include "sharding/compressed.h"

enum { SQ_MLQ_QKV = 0, SQ_MLQ_O, SQ_MLQ_FFN, SQ_MLQ_DOWN, SQ_MLQ_QB, SQ_MLQ_KVB, SQ_MLQ_NG };

sq_mlq_opts sq_mlq_opts_default(void) {
  sq_mlq_opts o;
  memset(&o, 0, sizeof o);
  o.lq.method = SQ_LQ_GPTQ;
  o.lq.quantize = 1;
  o.lq.q.type = SQ_QTYPE_INT;
  o.lq.q.num_bits = 4;
  o.lq.q.symmetric = 1;
  o.lq.q.strategy = SQ_QSTRAT_GROUP;
  o.lq.q.group_size = 128;
  o.lq.q.scale_dtype = SQ_DTYPE_F32;
  o.lq.fmt = SQ_CT_FMT_PACK;
  o.lq.block = 128;
  o.lq.damp = 0.01f;
  o.all_tokens = 1;
  o.min_tokens = SQ_MOE_CALIB_MIN_TOKENS;
  o.batch = 8;
  return o;
}

/* Agreement at the end of a local step: any rank's failure, on every rank. */
static sq_status sq_mlq_agree(const sq_mlq *q, sq_status local) {
  if (sq_comm_size(q->c) == 1) return local;
  char mine[1024], msg[1200];
  snprintf(mine, sizeof mine, "%s", local != SQ_OK ? sq_error_message() : "");
  sq_status global = SQ_OK;
  SQ_CHECK(sq_comm_agree_status(q->c, local, mine, &global, msg, sizeof msg));
  if (global == SQ_OK) return SQ_OK;
  sq_error_clear();
  return sq_error_set(global, "%s", msg);
}

static int sq_mlq_is_expert(const sq_mm_module *mm) {
  return mm->part == SQ_MM_EGATE || mm->part == SQ_MM_EUP || mm->part == SQ_MM_EDOWN;
}

void sq_mlq_free(sq_mlq *q) {
  for (int g = 0; g < SQ_MLQ_NG; g++) sq_hessian_free(&q->hg[g]);
  for (int64_t e = 0; q->m && e < q->m->n_experts; e++) {
    if (q->egu) sq_hessian_free(&q->egu[e]);
    if (q->edn) sq_hessian_free(&q->edn[e]);
  }
  free(q->egu);
  free(q->edn);
  sq_hessian_free(&q->sgu);
  sq_hessian_free(&q->sdn);
  free(q->expert_owner);
  free(q->owned);
  free(q->fallback);
  free(q->tokens);
  free(q->H);
  free(q->codes);
  free(q->scales);
  free(q->deq);
  free(q->zps);
  free(q->gidx);
  free(q->res);
  free(q->xn2);
  free(q->y);
  free(q->x);
  free(q->zero_ffn);
  free(q->ws);
  sq_moe_lbuf_free(&q->buf);
  memset(q, 0, sizeof *q);
}

/* The attention-only configuration: a dense FFN of width 1 with zero weights,
 * so that the layer kernel returns h = x + attn(norm1(x)) exactly (the FFN
 * adds 0) and its ffn_in hook hands over norm2(h). */
static sq_moe_layer_cfg sq_mlq_attn_cfg(const sq_moe_model *m, int64_t layer) {
  sq_moe_layer_cfg cfg = sq_moe_model_layer_cfg(m, layer);
  cfg.moe = 0;
  cfg.intermediate = 1;
  return cfg;
}

sq_status sq_mlq_init(sq_mlq *q, const sq_moe_model *m, const sq_comm *c, const sq_mlq_opts *o,
                      int64_t n_samples, int64_t T) {
  memset(q, 0, sizeof *q);
  q->m = m;
  q->c = c;
  q->o = *o;
  q->rank = sq_comm_rank(c);
  q->n = n_samples;
  q->T = T;
  if (q->o.batch <= 0) q->o.batch = 8;
  if (q->o.batch > n_samples && n_samples > 0) q->o.batch = n_samples;
  if (o->lq.method == SQ_LQ_SPARSEGPT || !o->lq.quantize)
    return sq_error_set(SQ_ERR_UNSUPPORTED,
                        "%s: SparseGPT on MoE models is not supported yet -- "
                        "hint: use --method gptq or rtn",
                        m->cfg.label);
  if (T > m->rope_T)
    return sq_error_set(SQ_ERR_ARG, "%s: sequence length %lld exceeds the rope tables (%lld)",
                        m->cfg.label, (long long)T, (long long)m->rope_T);
  const int64_t d = m->hidden, E = m->n_experts, qd = m->n_heads * m->head_dim;
  const int64_t rows = n_samples * T;
  sq_status st;
  SQ_CHECK_GOTO(sq_moe_lbuf_init(&q->buf, m), st, fail);
  SQ_CHECK_GOTO(sq_hessian_init(&q->hg[SQ_MLQ_QKV], d, 0, "q/k/v_proj input"), st, fail);
  const sq_mla_cfg *mc = &m->mla_cfg;
  SQ_CHECK_GOTO(
      sq_hessian_init(&q->hg[SQ_MLQ_O], m->mla ? mc->n_heads * mc->v_head : qd, 0, "o_proj input"),
      st, fail);
  if (m->mla && mc->q_lora_rank > 0)
    SQ_CHECK_GOTO(sq_hessian_init(&q->hg[SQ_MLQ_QB], mc->q_lora_rank, 0, "q_b_proj input"), st,
                  fail);
  if (m->mla)
    SQ_CHECK_GOTO(sq_hessian_init(&q->hg[SQ_MLQ_KVB], mc->kv_lora_rank, 0, "kv_b_proj input"), st,
                  fail);
  if (m->intermediate > 0) {
    SQ_CHECK_GOTO(sq_hessian_init(&q->hg[SQ_MLQ_FFN], d, 0, "mlp gate/up input"), st, fail);
    SQ_CHECK_GOTO(sq_hessian_init(&q->hg[SQ_MLQ_DOWN], m->intermediate, 0, "mlp down input"), st,
                  fail);
  }
  if (m->shared_ff > 0) {
    SQ_CHECK_GOTO(sq_hessian_init(&q->sgu, d, 0, "shared expert gate/up input"), st, fail);
    SQ_CHECK_GOTO(sq_hessian_init(&q->sdn, m->shared_ff, 0, "shared expert down input"), st, fail);
  }
  size_t En = (size_t)(E > 0 ? E : 1);
  q->egu = calloc(En, sizeof *q->egu);
  q->edn = calloc(En, sizeof *q->edn);
  q->expert_owner = calloc(En, sizeof *q->expert_owner);
  q->owned = calloc(En, sizeof *q->owned);
  q->fallback = calloc(En, sizeof *q->fallback);
  q->tokens = calloc(En, sizeof *q->tokens);
  int64_t ns = 0;
  for (size_t i = 0; i < m->plan->n_modules; i++) {
    const sq_plan_module *pm = &m->plan->modules[i];
    int64_t k = sq_gptq_scale_count(&o->lq.q, pm->d_out, pm->d_in);
    ns = k > ns ? k : ns;
    ns = pm->d_in > ns ? pm->d_in : ns;
  }
  q->H = malloc((size_t)(m->max_din * m->max_din) * sizeof(float));
  q->codes = malloc((size_t)m->max_w);
  q->deq = malloc((size_t)m->max_w * sizeof(float));
  q->scales = malloc((size_t)ns * sizeof(float));
  q->zps = calloc((size_t)ns, sizeof(int32_t));
  q->gidx = calloc((size_t)ns, sizeof(int32_t));
  size_t act = (size_t)(rows > 0 ? rows : 1) * (size_t)d;
  q->res = malloc(act * sizeof(float));
  q->xn2 = malloc(act * sizeof(float));
  q->y = malloc(act * sizeof(float));
  q->x = malloc((size_t)(q->o.batch > 0 ? q->o.batch : 1) * (size_t)T * (size_t)d * sizeof(float));
  q->zero_ffn = calloc((size_t)d, sizeof(float));
  size_t wsb = 0;
  for (int64_t l = 0; l < m->n_layers; l++) {
    sq_moe_layer_cfg a = sq_mlq_attn_cfg(m, l), f = sq_moe_model_layer_cfg(m, l);
    size_t b1 = sq_moe_layer_workspace_bytes(&a, q->o.batch, T);
    size_t b2 = f.moe ? 0 : sq_moe_layer_workspace_bytes(&f, q->o.batch, T);
    wsb = b1 > wsb ? b1 : wsb;
    wsb = b2 > wsb ? b2 : wsb;
  }
  q->ws_bytes = (wsb + 63) / 64 * 64;
  q->ws = aligned_alloc(64, q->ws_bytes ? q->ws_bytes : 64);
  if (!q->egu || !q->edn || !q->expert_owner || !q->owned || !q->fallback || !q->tokens || !q->H ||
      !q->codes || !q->deq || !q->scales || !q->zps || !q->gidx || !q->res || !q->xn2 || !q->y ||
      !q->x || !q->zero_ffn || !q->ws) {
    st = sq_error_set(SQ_ERR_NOMEM, "%s: out of memory for the MoE layer buffers (%lld tokens)",
                      m->cfg.label, (long long)rows);
    goto fail;
  }
  return SQ_OK;
fail:
  sq_mlq_free(q);
  return st;
}

int sq_mlq_writes_layer(const sq_mlq *q, int64_t layer) {
  size_t f, n;
  sq_moe_model_layer_modules(q->m, layer, &f, &n);
  for (size_t i = f; i < f + n; i++)
    if (q->m->mods[i].owner == q->rank) return 1;
  return 0;
}

sq_status sq_mlq_declare(const sq_mlq *q, int64_t layer, sq_st_writer *w) {
  size_t f, n;
  sq_moe_model_layer_modules(q->m, layer, &f, &n);
  for (size_t i = f; i < f + n; i++) {
    const sq_mm_module *mm = &q->m->mods[i];
    if (mm->owner != q->rank) continue;
    SQ_CHECK(sq_ct_declare_module(w, q->o.lq.fmt, mm->pm->name, &q->o.lq.q, mm->pm->d_out,
                                  mm->pm->d_in, q->o.lq.actorder == 1));
  }
  return SQ_OK;
}

/* ---- hooks ---- */

typedef struct {
  sq_mlq *q;
  int calibrate; /* accumulate Hessians */
  int64_t row;   /* next row of xn2 the ffn_in hook fills */
} sq_mlq_hctx;

static sq_status sq_mlq_acc(sq_mlq_hctx *h, int g, const float *X, int64_t rows) {
  return h->calibrate ? sq_hessian_accumulate(&h->q->hg[g], X, rows, "MoE layer input") : SQ_OK;
}
static sq_status sq_mlq_hook_qkv(void *u, const float *X, int64_t rows, int64_t cols) {
  (void)cols;
  return sq_mlq_acc(u, SQ_MLQ_QKV, X, rows);
}
static sq_status sq_mlq_hook_o(void *u, const float *X, int64_t rows, int64_t cols) {
  (void)cols;
  return sq_mlq_acc(u, SQ_MLQ_O, X, rows);
}
static sq_status sq_mlq_hook_qb(void *u, const float *X, int64_t rows, int64_t cols) {
  (void)cols;
  return sq_mlq_acc(u, SQ_MLQ_QB, X, rows);
}
static sq_status sq_mlq_hook_kvb(void *u, const float *X, int64_t rows, int64_t cols) {
  (void)cols;
  return sq_mlq_acc(u, SQ_MLQ_KVB, X, rows);
}
static sq_status sq_mlq_hook_down(void *u, const float *X, int64_t rows, int64_t cols) {
  (void)cols;
  sq_mlq_hctx *h = u;
  if (h->q->buf.moe) return SQ_OK; /* the zero dummy FFN of the attention pass */
  return sq_mlq_acc(h, SQ_MLQ_DOWN, X, rows);
}
/* norm2(h): the MoE block's input (kept for moe_calib) or the dense MLP's. */
static sq_status sq_mlq_hook_ffn(void *u, const float *X, int64_t rows, int64_t cols) {
  sq_mlq_hctx *h = u;
  if (h->q->buf.moe) {
    memcpy(h->q->xn2 + h->row * cols, X, (size_t)(rows * cols) * sizeof(float));
    h->row += rows;
    return SQ_OK;
  }
  return sq_mlq_acc(h, SQ_MLQ_FFN, X, rows);
}

/* Attention (+ dense FFN) over this rank's samples: res gets the layer's
 * output for a dense FFN, or h = x + attn(norm1(x)) for a MoE FFN (and xn2
 * norm2(h)). Local. */
static sq_status sq_mlq_forward_local(sq_mlq *q, int64_t layer, sq_acts *acts, int calibrate) {
  const sq_moe_model *m = q->m;
  const int64_t d = m->hidden, T = q->T;
  sq_moe_layer_cfg cfg = q->buf.moe ? sq_mlq_attn_cfg(m, layer) : sq_moe_lbuf_cfg(&q->buf, m);
  sq_moe_layer_weights w = sq_moe_lbuf_weights(&q->buf, m);
  if (q->buf.moe) w.gate = w.up = w.down = q->zero_ffn;
  sq_mlq_hctx hc = {.q = q, .calibrate = calibrate, .row = 0};
  sq_moe_layer_hooks hooks = {.qkv_in = sq_mlq_hook_qkv,
                              .o_in = sq_mlq_hook_o,
                              .qa_kva_in = sq_mlq_hook_qkv,
                              .q_b_in = sq_mlq_hook_qb,
                              .kv_b_in = sq_mlq_hook_kvb,
                              .ffn_in = sq_mlq_hook_ffn,
                              .down_in = sq_mlq_hook_down,
                              .user = &hc};
  for (int64_t s = 0; s < q->n; s += q->o.batch) {
    int64_t nb = q->n - s < q->o.batch ? q->n - s : q->o.batch;
    SQ_CHECK(sq_acts_read(acts, s, nb, q->x));
    SQ_CHECK(sq_moe_layer_forward(&cfg, &w, q->x, nb, T, &hooks, q->ws, q->res + s * T * d, NULL));
  }
  return SQ_OK;
}

/* The MoE block over this rank's tokens, expert-parallel (collective). */
static sq_status sq_mlq_moe(sq_mlq *q, int all_tokens, int64_t min_tokens, sq_moe_calib_stats *s) {
  const sq_moe_model *m = q->m;
  sq_moe_calib_cfg cfg = sq_moe_calib_cfg_default();
  sq_moe_layer_cfg lc = sq_moe_lbuf_cfg(&q->buf, m);
  sq_moe_layer_weights w = sq_moe_lbuf_weights(&q->buf, m);
  cfg.router = lc.router;
  cfg.hidden = m->hidden;
  cfg.ff = m->moe_ff;
  cfg.router_w = w.router;
  cfg.experts = w.experts;
  cfg.expert_owner = q->expert_owner;
  cfg.shared = w.shared;
  cfg.shared_ff = m->shared_ff;
  cfg.shared_gate = w.shared_gate;
  cfg.all_tokens = all_tokens;
  cfg.min_tokens = min_tokens;
  size_t f, n;
  sq_moe_model_layer_modules(m, q->buf.layer, &f, &n);
  for (size_t i = f; i < f + n; i++)
    if (m->mods[i].part == SQ_MM_SGATE) cfg.shared_owner = m->mods[i].owner;
  sq_moe_calib_out out;
  memset(&out, 0, sizeof out);
  out.y = q->y;
  out.gate_up = q->egu;
  out.down = q->edn;
  if (m->shared_ff > 0) {
    out.shared_gate_up = &q->sgu;
    out.shared_down = &q->sdn;
  }
  out.rtn_fallback = q->fallback;
  out.expert_tokens = q->tokens;
  SQ_CHECK(sq_moe_calib(q->c, &cfg, q->xn2, q->n * q->T, &out));
  if (s) *s = out.stats;
  return SQ_OK;
}

/* The Hessian module mm's input has (NULL: RTN fallback expert). */
static const sq_hessian *sq_mlq_hessian(const sq_mlq *q, const sq_mm_module *mm) {
  switch (mm->part) {
    case SQ_MM_Q:
    case SQ_MM_K:
    case SQ_MM_V:
    case SQ_MM_QA:
    case SQ_MM_KVA:
      return &q->hg[SQ_MLQ_QKV];
    case SQ_MM_QB:
      return &q->hg[SQ_MLQ_QB];
    case SQ_MM_KVB:
      return &q->hg[SQ_MLQ_KVB];
    case SQ_MM_O:
      return &q->hg[SQ_MLQ_O];
    case SQ_MM_GATE:
    case SQ_MM_UP:
      return &q->hg[SQ_MLQ_FFN];
    case SQ_MM_DOWN:
      return &q->hg[SQ_MLQ_DOWN];
    case SQ_MM_EGATE:
    case SQ_MM_EUP:
      return q->fallback[mm->expert] ? NULL : &q->egu[mm->expert];
    case SQ_MM_EDOWN:
      return q->fallback[mm->expert] ? NULL : &q->edn[mm->expert];
    case SQ_MM_SGATE:
    case SQ_MM_SUP:
      return &q->sgu;
    case SQ_MM_SDOWN:
      return &q->sdn;
  }
  return NULL;
}

/* Solve module mm (owned here), write it, leave deq in its buffer. */
static sq_status sq_mlq_solve(sq_mlq *q, const sq_mm_module *mm, sq_st_writer *w,
                              sq_mlq_stat *stat) {
  const sq_lq_opts *o = &q->o.lq;
  const char *name = mm->pm->name;
  const int64_t d_out = mm->pm->d_out, d_in = mm->pm->d_in;
  float *W = sq_moe_lbuf_module(&q->buf, mm);
  const sq_hessian *h = o->method == SQ_LQ_GPTQ ? sq_mlq_hessian(q, mm) : NULL;
  int has_gidx = o->actorder == 1;
  memset(q->gidx, 0, (size_t)d_in * sizeof(int32_t));
  if (h) {
    if (q->h_of_H != h) {
      SQ_CHECK(sq_hessian_finalize(h, q->H, name));
      q->h_of_H = h;
    }
    sq_gptq_opts go = sq_gptq_opts_default();
    go.q = o->q;
    go.actorder = (sq_actorder)o->actorder;
    go.block_size = o->block;
    go.damp_frac = o->damp;
    sq_gptq_out out = {.codes = q->codes,
                       .scales = q->scales,
                       .zero_points = q->zps,
                       .g_idx = q->gidx,
                       .deq = q->deq};
    SQ_CHECK(sq_gptq_quantize(name, W, q->H, d_out, d_in, &go, NULL, 0, &out));
    stat->loss += out.loss;
  } else {
    if (o->method == SQ_LQ_GPTQ) stat->rtn_fallback++;
    if (has_gidx)
      for (int64_t j = 0; j < d_in; j++)
        q->gidx[j] = o->q.group_size > 0 ? (int32_t)(j / o->q.group_size) : 0;
    SQ_CHECK(sq_quant_rtn(&o->q, name, W, d_out, d_in, q->codes, q->scales,
                          o->q.symmetric || o->q.type == SQ_QTYPE_FLOAT ? NULL : q->zps, q->deq));
  }
  int asym = o->q.type == SQ_QTYPE_INT && !o->q.symmetric;
  SQ_CHECK(sq_ct_write_module(w, o->fmt, name, &o->q, d_out, d_in, q->codes, q->scales,
                              asym ? q->zps : NULL, has_gidx ? q->gidx : NULL));
  memcpy(W, q->deq, (size_t)(d_out * d_in) * sizeof(float));
  stat->solved++;
  stat->bytes_out += sq_ct_module_bytes(o->fmt, &o->q, d_out, d_in, has_gidx);
  bool fp8;
  stat->bytes_in +=
      (uint64_t)((double)(d_out * d_in) * sq_plan_weight_elem_bytes(&q->m->cfg, &fp8));
  return SQ_OK;
}

/* Step 1 (local): small tensors, owned Linear weights, owned expert Hessians. */
static sq_status sq_mlq_load(sq_mlq *q, int64_t layer) {
  const sq_moe_model *m = q->m;
  size_t f, n;
  sq_moe_model_layer_modules(m, layer, &f, &n);
  for (int64_t e = 0; e < m->n_experts; e++) {
    sq_hessian_free(&q->egu[e]);
    sq_hessian_free(&q->edn[e]);
    q->owned[e] = 0;
    q->fallback[e] = 0;
    q->expert_owner[e] = 0;
  }
  for (size_t i = f; i < f + n; i++) {
    const sq_mm_module *mm = &m->mods[i];
    if (mm->part != SQ_MM_EGATE) continue;
    q->expert_owner[mm->expert] = mm->owner;
    q->owned[mm->expert] = mm->owner == q->rank;
  }
  SQ_CHECK(sq_moe_lbuf_load_small(&q->buf, m, layer, q->owned));
  for (int64_t e = 0; q->buf.moe && e < m->n_experts; e++) {
    if (!q->owned[e]) continue;
    SQ_CHECK(sq_hessian_init(&q->egu[e], m->hidden, 0, "expert gate/up input"));
    SQ_CHECK(sq_hessian_init(&q->edn[e], m->moe_ff, 0, "expert down input"));
  }
  for (size_t i = f; i < f + n; i++) {
    const sq_mm_module *mm = &m->mods[i];
    if (mm->owner != q->rank) continue;
    SQ_CHECK(sq_moe_model_read_linear(m, mm->pm->tensor, sq_moe_lbuf_module(&q->buf, mm),
                                      mm->pm->d_out, mm->pm->d_in));
  }
  for (int g = 0; g < SQ_MLQ_NG; g++)
    if (q->hg[g].sum) sq_hessian_reset(&q->hg[g]);
  if (q->sgu.sum) sq_hessian_reset(&q->sgu);
  if (q->sdn.sum) sq_hessian_reset(&q->sdn);
  q->h_of_H = NULL;
  return SQ_OK;
}

/* Replicated modules of the layer from their owners to every rank. */
static sq_status sq_mlq_share(sq_mlq *q, int64_t layer, const char *what) {
  const sq_moe_model *m = q->m;
  size_t f, n;
  sq_moe_model_layer_modules(m, layer, &f, &n);
  for (size_t i = f; i < f + n && sq_comm_size(q->c) > 1; i++) {
    const sq_mm_module *mm = &m->mods[i];
    if (sq_mlq_is_expert(mm)) continue;
    char label[160];
    snprintf(label, sizeof label, "%s (%s)", mm->pm->name, what);
    SQ_CHECK(sq_comm_share_f32(q->c, sq_moe_lbuf_module(&q->buf, mm), mm->pm->d_out * mm->pm->d_in,
                               mm->owner, label));
  }
  return SQ_OK;
}

static int sq_mlq_owner_of(const sq_mlq *q, int64_t layer, sq_mm_part part) {
  size_t f, n;
  sq_moe_model_layer_modules(q->m, layer, &f, &n);
  for (size_t i = f; i < f + n; i++)
    if (q->m->mods[i].part == part) return q->m->mods[i].owner;
  return 0;
}

/* Steps 4 (local): every owned module of the layer, in plan order. */
static sq_status sq_mlq_solve_owned(sq_mlq *q, int64_t layer, sq_st_writer *w, sq_mlq_stat *st) {
  size_t f, n;
  sq_moe_model_layer_modules(q->m, layer, &f, &n);
  for (size_t i = f; i < f + n; i++) {
    const sq_mm_module *mm = &q->m->mods[i];
    if (mm->owner != q->rank) continue;
    if (!w)
      return sq_error_set(SQ_ERR_ARG, "%s: no shard writer on rank %d", mm->pm->name, q->rank);
    SQ_CHECK(sq_mlq_solve(q, mm, w, st));
  }
  return SQ_OK;
}

/* Re-run with quantized weights (local part + expert-parallel MoE), states out. */
static sq_status sq_mlq_rerun(sq_mlq *q, int64_t layer, sq_acts *acts, sq_moe_calib_stats *s) {
  const int64_t rows = q->n * q->T, d = q->m->hidden;
  SQ_CHECK(sq_mlq_agree(q, sq_mlq_forward_local(q, layer, acts, 0)));
  if (q->buf.moe) {
    /* Routed rows only; its Hessians and RTN-fallback flags are not used, so
     * its fallback warning (experts with no token) would mislead: muted. */
    sq_log_level lv = sq_log_get_level();
    if (lv > SQ_LOG_ERROR) sq_log_set_level(SQ_LOG_ERROR);
    sq_status st = sq_mlq_moe(q, 0, 1, s);
    sq_log_set_level(lv);
    SQ_CHECK(st);
    for (int64_t i = 0; i < rows * d; i++) q->res[i] += q->y[i];
  }
  sq_status st = q->n > 0 ? sq_acts_write(acts, 0, q->n, q->res) : SQ_OK;
  if (st == SQ_OK) st = sq_acts_set_layer(acts, layer + 1);
  return sq_mlq_agree(q, st);
}

sq_status sq_mlq_layer(sq_mlq *q, int64_t layer, sq_acts *acts, sq_st_writer *w, sq_mlq_stat *st) {
  const sq_moe_model *m = q->m;
  double t0 = sq_time_now();
  memset(st, 0, sizeof *st);
  if (layer < 0 || layer >= m->n_layers)
    return sq_error_set(SQ_ERR_ARG, "%s: layer %lld out of range", m->cfg.label, (long long)layer);
  SQ_CHECK(sq_mlq_agree(q, sq_mlq_load(q, layer)));
  st->moe = q->buf.moe;
  SQ_CHECK(sq_mlq_share(q, layer, "original"));
  int gptq = q->o.lq.method == SQ_LQ_GPTQ;
  if (gptq) {
    SQ_CHECK(sq_mlq_agree(q, sq_mlq_forward_local(q, layer, acts, 1)));
    if (q->buf.moe) SQ_CHECK(sq_mlq_moe(q, q->o.all_tokens, q->o.min_tokens, &st->moe_stats));
    /* each group goes to the owner of a module reading it (co-located by the plan) */
    const sq_mm_part gpart[SQ_MLQ_NG] = {
        m->mla ? (m->mla_cfg.q_lora_rank > 0 ? SQ_MM_QA : SQ_MM_Q) : SQ_MM_Q,
        SQ_MM_O,
        SQ_MM_GATE,
        SQ_MM_DOWN,
        SQ_MM_QB,
        SQ_MM_KVB};
    for (int g = 0; g < SQ_MLQ_NG; g++) {
      if (!q->hg[g].sum || ((g == SQ_MLQ_FFN || g == SQ_MLQ_DOWN) && q->buf.moe)) continue;
      char label[96];
      snprintf(label, sizeof label, "model.layers.%lld hessian %d", (long long)layer, g);
      SQ_CHECK(sq_comm_reduce_hessian(q->c, &q->hg[g], sq_mlq_owner_of(q, layer, gpart[g]), label));
    }
  }
  SQ_CHECK(sq_mlq_agree(q, sq_mlq_solve_owned(q, layer, w, st)));
  SQ_CHECK(sq_mlq_share(q, layer, "quantized"));
  /* RTN has no calibration pass: the routing statistics of the re-run. */
  SQ_CHECK(sq_mlq_rerun(q, layer, acts, gptq ? NULL : &st->moe_stats));
  if (!gptq) st->moe_stats.n_fallback = 0; /* RTN everywhere: nothing falls back */
  st->seconds = sq_time_now() - t0;
  return SQ_OK;
}
