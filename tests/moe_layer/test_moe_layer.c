/* One MoE decoder layer (kernels/moe_layer.h) against a naive composition in
 * double: per-token loops for RMSNorm, Linear, RoPE (rotate_half, and DeepSeek's
 * interleaved layout), causal GQA / MLA attention, the three routers written
 * from their HF definitions, and the SwiGLU experts. Four tiny configurations:
 *  - Mixtral-like: GQA + softmax top-2 (renormalised), no shared expert;
 *  - Qwen2-MoE-like: q/k/v biases, softmax top-2 not renormalised, shared expert
 *    with shared_expert_gate, all-tokens hooks; a Qwen3-like variant with
 *    q_norm/k_norm;
 *  - DeepSeek-like: MLA with YaRN + group-limited sigmoid router with score bias
 *    and routed_scaling_factor + shared experts; and its dense first layer;
 *  - Llama-4-like: NoPE GQA + top-1 sigmoid on the expert input + shared expert;
 *    and its dense layer, also checked against sq_fwd_layer (a second path).
 * Every hook's input is compared with the naive tensor it should be, and the
 * tokens-per-expert counts with the naive routing. */
#include "kernels/moe_layer.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../kernels_moe/moe_naive.h"
#include "test_util.h"

enum { B = 2, T = 5, ROWS = B * T, D = 32, MAXE = 8 };

typedef struct tcase {
  const char *name;
  sq_moe_layer_cfg cfg;
  sq_moe_layer_weights w;
  sq_moe_expert experts[MAXE];
  sq_mla_cfg mla;
  sq_mla_rope mla_rope;
  sq_rope rope;
  double rope_theta; /* GQA rope (0: none) */
  float *bias;       /* deepseek score bias */
  float *owned[64];
  int n_owned;
  uint64_t seed;
} tcase;

static float *tc_rand(tcase *c, size_t n, double a) {
  float *p = mn_alloc_rand(n, &c->seed, a);
  c->owned[c->n_owned++] = p;
  return p;
}

static float *tc_norm(tcase *c, size_t n) {
  float *p = tc_rand(c, n, 0.2);
  for (size_t i = 0; i < n; i++) p[i] += 1.0f;
  return p;
}

static void tc_free(tcase *c) {
  for (int i = 0; i < c->n_owned; i++) free(c->owned[i]);
  sq_fwd_rope_free(&c->rope);
  sq_mla_rope_free(&c->mla_rope);
}

/* ---- naive pieces (double) ---- */

static void naive_norm_rows(const double *x, const float *w, int64_t rows, int64_t d, double *y) {
  for (int64_t r = 0; r < rows; r++) mn_rmsnorm_row(x + r * d, w, d, 1e-6, y + r * d);
}

/* Default RoPE (rotate_half) of one head vector at position t, theta. */
static void naive_rope_head(double *v, int64_t hd, int64_t t, double theta) {
  const int64_t half = hd / 2;
  double out[64];
  for (int64_t i = 0; i < hd; i++) {
    int64_t j = i % half;
    double ang = (double)t * pow(theta, -2.0 * (double)j / (double)hd);
    double rh = i < half ? -v[i + half] : v[i - half];
    out[i] = v[i] * cos(ang) + rh * sin(ang);
  }
  for (int64_t i = 0; i < hd; i++) v[i] = out[i];
}

/* Causal attention over per-row q (rows, H, qk) · k (rows, Hk, qk), v (rows, Hk, vd). */
static void naive_attend(const double *q, const double *k, const double *v, int64_t H, int64_t Hk,
                         int64_t qk, int64_t vd, double scale, double *out) {
  for (int64_t b = 0; b < B; b++)
    for (int64_t h = 0; h < H; h++) {
      const int64_t kh = h / (H / Hk);
      for (int64_t i = 0; i < T; i++) {
        const int64_t ri = b * T + i;
        double sc[T], mx = -INFINITY, z = 0;
        for (int64_t j = 0; j <= i; j++) {
          double a = 0;
          for (int64_t e = 0; e < qk; e++)
            a += q[(ri * H + h) * qk + e] * k[((b * T + j) * Hk + kh) * qk + e];
          sc[j] = a * scale;
          mx = fmax(mx, sc[j]);
        }
        for (int64_t j = 0; j <= i; j++) z += (sc[j] = exp(sc[j] - mx));
        for (int64_t e = 0; e < vd; e++) {
          double a = 0;
          for (int64_t j = 0; j <= i; j++) a += sc[j] / z * v[((b * T + j) * Hk + kh) * vd + e];
          out[ri * H * vd + h * vd + e] = a;
        }
      }
    }
}

typedef struct expect {
  double *xn1, *att, *qb, *kvb, *xn2, *down_in; /* hook inputs */
  int32_t ids[ROWS * MAXE];
  double wts[ROWS * MAXE];
  int64_t counts[MAXE];
  double *y;
} expect;

static void naive_gqa(const tcase *c, const double *xn, expect *ex, double *out) {
  const sq_moe_layer_cfg *g = &c->cfg;
  const int64_t H = g->n_heads, KV = g->n_kv_heads, hd = g->head_dim;
  double *q = calloc((size_t)(ROWS * H * hd), sizeof(double));
  double *k = calloc((size_t)(ROWS * KV * hd), sizeof(double));
  double *v = calloc((size_t)(ROWS * KV * hd), sizeof(double));
  mn_linear(xn, ROWS, D, c->w.q, H * hd, c->w.q_bias, q);
  mn_linear(xn, ROWS, D, c->w.k, KV * hd, c->w.k_bias, k);
  mn_linear(xn, ROWS, D, c->w.v, KV * hd, c->w.v_bias, v);
  for (int64_t r = 0; r < ROWS; r++) {
    for (int64_t h = 0; h < H; h++) {
      double *qh = q + (r * H + h) * hd;
      if (c->w.q_norm) mn_rmsnorm_row(qh, c->w.q_norm, hd, 1e-6, qh);
      if (c->rope_theta > 0) naive_rope_head(qh, hd, r % T, c->rope_theta);
    }
    for (int64_t h = 0; h < KV; h++) {
      double *kh = k + (r * KV + h) * hd;
      if (c->w.k_norm) mn_rmsnorm_row(kh, c->w.k_norm, hd, 1e-6, kh);
      if (c->rope_theta > 0) naive_rope_head(kh, hd, r % T, c->rope_theta);
    }
  }
  naive_attend(q, k, v, H, KV, hd, hd, 1.0 / sqrt((double)hd), ex->att);
  mn_linear(ex->att, ROWS, H * hd, c->w.o, D, c->w.o_bias, out);
  free(q);
  free(k);
  free(v);
}

/* DeepSeek's interleaved rope vector r (dim) at position t: permute, rotate_half. */
static void naive_mla_rope(double *r, int64_t dim, int64_t t, const float *inv, double af) {
  const int64_t half = dim / 2;
  double p[64], o[64];
  for (int64_t j = 0; j < half; j++) {
    p[j] = r[2 * j];
    p[half + j] = r[2 * j + 1];
  }
  for (int64_t i = 0; i < dim; i++) {
    double ang = (double)t * (double)inv[i % half];
    double rh = i < half ? -p[i + half] : p[i - half];
    o[i] = (p[i] * cos(ang) + rh * sin(ang)) * af;
  }
  for (int64_t i = 0; i < dim; i++) r[i] = o[i];
}

static void naive_mla(const tcase *c, const double *xn, expect *ex, double *out) {
  const sq_mla_cfg *m = &c->mla;
  const sq_mla_weights *w = &c->w.mla;
  const int64_t H = m->n_heads, nope = m->qk_nope, rp = m->qk_rope, vh = m->v_head;
  const int64_t qk = nope + rp, ql = m->q_lora_rank, kl = m->kv_lora_rank;
  double *qa = calloc((size_t)(ROWS * ql), sizeof(double));
  double *q = calloc((size_t)(ROWS * H * qk), sizeof(double));
  double *kva = calloc((size_t)(ROWS * (kl + rp)), sizeof(double));
  double *kvo = calloc((size_t)(ROWS * H * (nope + vh)), sizeof(double));
  double *K = calloc((size_t)(ROWS * H * qk), sizeof(double));
  double *V = calloc((size_t)(ROWS * H * vh), sizeof(double));
  mn_linear(xn, ROWS, D, w->q_a_proj, ql, NULL, qa);
  naive_norm_rows(qa, w->q_a_norm, ROWS, ql, ex->qb);
  mn_linear(ex->qb, ROWS, ql, w->q_b_proj, H * qk, NULL, q);
  mn_linear(xn, ROWS, D, w->kv_a_proj, kl + rp, NULL, kva);
  for (int64_t r = 0; r < ROWS; r++)
    mn_rmsnorm_row(kva + r * (kl + rp), w->kv_a_norm, kl, 1e-6, ex->kvb + r * kl);
  mn_linear(ex->kvb, ROWS, kl, w->kv_b_proj, H * (nope + vh), NULL, kvo);
  double af = c->mla_rope.attention_factor;
  for (int64_t r = 0; r < ROWS; r++) {
    double *kpe = kva + r * (kl + rp) + kl;
    naive_mla_rope(kpe, rp, r % T, c->mla_rope.inv_freq, af);
    for (int64_t h = 0; h < H; h++) {
      naive_mla_rope(q + (r * H + h) * qk + nope, rp, r % T, c->mla_rope.inv_freq, af);
      for (int64_t e = 0; e < nope; e++)
        K[(r * H + h) * qk + e] = kvo[(r * H + h) * (nope + vh) + e];
      for (int64_t e = 0; e < rp; e++) K[(r * H + h) * qk + nope + e] = kpe[e];
      for (int64_t e = 0; e < vh; e++)
        V[(r * H + h) * vh + e] = kvo[(r * H + h) * (nope + vh) + nope + e];
    }
  }
  naive_attend(q, K, V, H, H, qk, vh, m->scale, ex->att);
  mn_linear(ex->att, ROWS, H * vh, w->o_proj, D, NULL, out);
  free(qa);
  free(q);
  free(kva);
  free(kvo);
  free(K);
  free(V);
}

/* Top-k of s (n) among allowed, largest first, lowest index on ties. */
static void naive_topk(const double *s, const int *allowed, int n, int k, int32_t *ids) {
  int used[MAXE] = {0};
  for (int j = 0; j < k; j++) {
    int best = -1;
    for (int e = 0; e < n; e++)
      if ((!allowed || allowed[e]) && !used[e] && (best < 0 || s[e] > s[best])) best = e;
    used[best] = 1;
    ids[j] = best;
  }
}

static void naive_route(const sq_moe_router_cfg *rc, const double *lg, int32_t *ids, double *w) {
  const int E = rc->n_experts, k = rc->top_k;
  double s[MAXE], cs[MAXE];
  if (rc->kind == SQ_MOE_ROUTER_SOFTMAX) {
    double mx = -INFINITY, z = 0;
    for (int e = 0; e < E; e++) mx = fmax(mx, lg[e]);
    for (int e = 0; e < E; e++) z += (s[e] = exp(lg[e] - mx));
    for (int e = 0; e < E; e++) s[e] /= z;
    naive_topk(s, NULL, E, k, ids);
    double sum = 0;
    for (int j = 0; j < k; j++) sum += (w[j] = s[ids[j]]);
    if (rc->norm_topk_prob)
      for (int j = 0; j < k; j++) w[j] /= sum;
  } else if (rc->kind == SQ_MOE_ROUTER_LLAMA4) {
    for (int e = 0; e < E; e++) s[e] = lg[e];
    naive_topk(s, NULL, E, k, ids);
    for (int j = 0; j < k; j++) w[j] = mn_sigmoid(lg[ids[j]]);
  } else {
    const int G = rc->n_group, per = E / G;
    double gs[MAXE];
    int32_t gsel[MAXE];
    int allowed[MAXE] = {0};
    for (int e = 0; e < E; e++) {
      s[e] = mn_sigmoid(lg[e]);
      cs[e] = s[e] + (rc->e_score_correction_bias ? rc->e_score_correction_bias[e] : 0.0f);
    }
    for (int g = 0; g < G; g++) { /* sum of the two largest corrected scores */
      double a = -INFINITY, b2 = -INFINITY;
      for (int e = g * per; e < (g + 1) * per; e++) {
        if (cs[e] > a) {
          b2 = a;
          a = cs[e];
        } else if (cs[e] > b2) {
          b2 = cs[e];
        }
      }
      gs[g] = a + b2;
    }
    naive_topk(gs, NULL, G, rc->topk_group, gsel);
    for (int j = 0; j < rc->topk_group; j++)
      for (int e = gsel[j] * per; e < (gsel[j] + 1) * per; e++) allowed[e] = 1;
    naive_topk(cs, allowed, E, k, ids);
    double sum = 0;
    for (int j = 0; j < k; j++) sum += (w[j] = s[ids[j]]);
    for (int j = 0; j < k; j++)
      w[j] = (rc->norm_topk_prob ? w[j] / (sum + 1e-20) : w[j]) * rc->routed_scaling_factor;
  }
}

/* The whole layer in double; fills ex. */
static void naive_layer(const tcase *c, const float *xf, expect *ex) {
  const sq_moe_layer_cfg *g = &c->cfg;
  double *x = malloc(ROWS * D * sizeof(double)), *a = malloc(ROWS * D * sizeof(double));
  double *h = malloc(ROWS * D * sizeof(double));
  for (int i = 0; i < ROWS * D; i++) x[i] = xf[i];
  naive_norm_rows(x, c->w.attn_norm, ROWS, D, ex->xn1);
  if (g->attn == SQ_MOE_ATTN_MLA)
    naive_mla(c, ex->xn1, ex, a);
  else
    naive_gqa(c, ex->xn1, ex, a);
  for (int i = 0; i < ROWS * D; i++) h[i] = x[i] + a[i];
  naive_norm_rows(h, c->w.ffn_norm, ROWS, D, ex->xn2);
  memset(ex->counts, 0, sizeof ex->counts);
  for (int64_t r = 0; r < ROWS; r++) {
    const double *xr = ex->xn2 + r * D;
    double f[D] = {0}, hb[256], o[D];
    if (!g->moe) {
      mn_expert(xr, D, g->intermediate, c->w.gate, c->w.up, c->w.down,
                ex->down_in + r * g->intermediate, f);
    } else {
      const sq_moe_router_cfg *rc = &g->router;
      double lg[MAXE];
      mn_linear(xr, 1, D, c->w.router, rc->n_experts, NULL, lg);
      naive_route(rc, lg, ex->ids + r * rc->top_k, ex->wts + r * rc->top_k);
      for (int j = 0; j < rc->top_k; j++) {
        const int e = ex->ids[r * rc->top_k + j];
        const double wt = ex->wts[r * rc->top_k + j];
        const sq_moe_expert *xp = &c->w.experts[e];
        ex->counts[e]++;
        if (rc->kind == SQ_MOE_ROUTER_LLAMA4) { /* expert(x * w) */
          double xs[D];
          for (int i = 0; i < D; i++) xs[i] = xr[i] * wt;
          mn_expert(xs, D, g->moe_ff, xp->gate, xp->up, xp->down, hb, o);
          for (int i = 0; i < D; i++) f[i] += o[i];
        } else {
          mn_expert(xr, D, g->moe_ff, xp->gate, xp->up, xp->down, hb, o);
          for (int i = 0; i < D; i++) f[i] += wt * o[i];
        }
      }
      if (c->w.shared.gate) {
        mn_expert(xr, D, g->shared_ff, c->w.shared.gate, c->w.shared.up, c->w.shared.down, hb, o);
        double sg = 1.0;
        if (c->w.shared_gate) {
          double z = 0;
          for (int i = 0; i < D; i++) z += xr[i] * c->w.shared_gate[i];
          sg = mn_sigmoid(z);
        }
        for (int i = 0; i < D; i++) f[i] += sg * o[i];
      }
    }
    for (int i = 0; i < D; i++) ex->y[r * D + i] = h[r * D + i] + f[i];
  }
  free(x);
  free(a);
  free(h);
}

/* ---- hooks compare against the naive tensors ---- */

typedef struct hctx {
  const tcase *c;
  const expect *ex;
  int all_tokens;
  int calls;
  int64_t rows_seen[MAXE + 1]; /* gate_up rows per expert, [MAXE] = shared */
  double maxerr;
} hctx;

static void cmp(hctx *h, const char *what, const float *X, const double *ref, int64_t n) {
  double m = 0;
  for (int64_t i = 0; i < n; i++) {
    double e = fabs((double)X[i] - ref[i]) / (1.0 + fabs(ref[i]));
    if (e > m) m = e;
  }
  if (m > h->maxerr) h->maxerr = m;
  SQ_EXPECT_MSG(m < 2e-4, "%s: hook %s differs from naive by %.3g", h->c->name, what, m);
  h->calls++;
}

#define HOOK(fn, field, label)                                         \
  static sq_status fn(void *u, const float *X, int64_t r, int64_t c) { \
    hctx *h = u;                                                       \
    SQ_EXPECT_EQ_INT(r, ROWS);                                         \
    cmp(h, label, X, h->ex->field, r *c);                              \
    return SQ_OK;                                                      \
  }
HOOK(h_qkv, xn1, "qkv_in")
HOOK(h_o, att, "o_in")
HOOK(h_qb, qb, "q_b_in")
HOOK(h_kvb, kvb, "kv_b_in")
HOOK(h_ffn, xn2, "ffn_in")
HOOK(h_down, down_in, "down_in")

/* Weight of (token r, expert e) in the naive routing, or -1 when not routed. */
static double routed_w(const hctx *h, int64_t r, int e) {
  const int k = h->c->cfg.router.top_k;
  for (int j = 0; j < k; j++)
    if (h->ex->ids[r * k + j] == e) return h->ex->wts[r * k + j];
  return -1;
}

/* Expected rows of expert e's gate/up input (stage 0) or down input (stage 1). */
static void expert_rows(hctx *h, int e, int stage, const float *X, int64_t rows, int64_t cols) {
  const tcase *c = h->c;
  const int shared = e == SQ_MOE_SHARED;
  const int scale = c->cfg.router.kind == SQ_MOE_ROUTER_LLAMA4;
  const sq_moe_expert *xp = shared ? &c->w.shared : &c->w.experts[e];
  const int64_t ff = shared ? c->cfg.shared_ff : c->cfg.moe_ff;
  int64_t want = 0, j = 0;
  for (int64_t r = 0; r < ROWS; r++)
    if (shared || h->all_tokens || routed_w(h, r, e) >= 0) want++;
  SQ_EXPECT_MSG(rows == want, "%s: expert %d hook rows %lld, want %lld", c->name, e,
                (long long)rows, (long long)want);
  if (rows != want) return;
  SQ_EXPECT_EQ_INT(cols, stage ? ff : D);
  if (!stage) h->rows_seen[shared ? MAXE : e] += rows;
  double xs[D], hb[256], o[D];
  for (int64_t r = 0; r < ROWS; r++) {
    double w = shared ? -1 : routed_w(h, r, e);
    if (!shared && !h->all_tokens && w < 0) continue;
    for (int i = 0; i < D; i++) xs[i] = h->ex->xn2[r * D + i] * (scale && w >= 0 ? w : 1.0);
    if (stage) {
      mn_expert(xs, D, ff, xp->gate, xp->up, xp->down, hb, o);
      cmp(h, "expert down_in", X + j * ff, hb, ff);
    } else {
      cmp(h, "expert gate_up_in", X + j * D, xs, D);
    }
    j++;
  }
}

static sq_status h_egu(void *u, int e, const float *X, int64_t r, int64_t c) {
  expert_rows(u, e, 0, X, r, c);
  return SQ_OK;
}
static sq_status h_edown(void *u, int e, const float *X, int64_t r, int64_t c) {
  expert_rows(u, e, 1, X, r, c);
  return SQ_OK;
}

/* ---- cases ---- */

static void init_gqa(tcase *c, int64_t H, int64_t KV, int64_t hd, double theta, int bias) {
  c->cfg.attn = SQ_MOE_ATTN_GQA;
  c->cfg.n_heads = H;
  c->cfg.n_kv_heads = KV;
  c->cfg.head_dim = hd;
  c->rope_theta = theta;
  c->w.q = tc_rand(c, (size_t)(H * hd * D), 0.3);
  c->w.k = tc_rand(c, (size_t)(KV * hd * D), 0.3);
  c->w.v = tc_rand(c, (size_t)(KV * hd * D), 0.3);
  c->w.o = tc_rand(c, (size_t)(D * H * hd), 0.3);
  if (bias) {
    c->w.q_bias = tc_rand(c, (size_t)(H * hd), 0.1);
    c->w.k_bias = tc_rand(c, (size_t)(KV * hd), 0.1);
    c->w.v_bias = tc_rand(c, (size_t)(KV * hd), 0.1);
  }
  if (theta > 0) {
    sq_rope_cfg rc = {0};
    rc.type = SQ_FWD_ROPE_DEFAULT;
    rc.head_dim = (int)hd;
    rc.theta = theta;
    SQ_EXPECT(sq_fwd_rope_init(&c->rope, &rc, T) == SQ_OK);
    c->cfg.rope = &c->rope;
  }
}

static void init_mla(tcase *c) {
  sq_mla_cfg *m = &c->mla;
  m->hidden = D;
  m->n_heads = 4;
  m->q_lora_rank = 16;
  m->kv_lora_rank = 12;
  m->qk_nope = 8;
  m->qk_rope = 4;
  m->v_head = 8;
  m->eps = 1e-6f;
  m->rope_interleave = 1;
  sq_mla_rope_cfg rc = {0};
  rc.dim = 4;
  rc.theta = 10000;
  rc.yarn = 1;
  rc.factor = 40;
  rc.original_max_position = 4096;
  rc.mscale = 1;
  rc.mscale_all_dim = 1;
  SQ_EXPECT(sq_mla_rope_init(&c->mla_rope, &rc, T) == SQ_OK);
  m->scale = (float)sq_mla_softmax_scale(&rc, 12);
  m->rope = &c->mla_rope;
  sq_mla_weights *w = &c->w.mla;
  w->q_a_proj = tc_rand(c, 16 * D, 0.3);
  w->q_a_norm = tc_norm(c, 16);
  w->q_b_proj = tc_rand(c, 4 * 12 * 16, 0.3);
  w->kv_a_proj = tc_rand(c, (12 + 4) * D, 0.3);
  w->kv_a_norm = tc_norm(c, 12);
  w->kv_b_proj = tc_rand(c, 4 * 16 * 12, 0.3);
  w->o_proj = tc_rand(c, D * 4 * 8, 0.3);
  c->cfg.attn = SQ_MOE_ATTN_MLA;
  c->cfg.mla = m;
}

static void init_moe(tcase *c, sq_moe_router_kind kind, int E, int k, int64_t ff, int64_t shared_ff,
                     int shared_gate) {
  c->cfg.moe = 1;
  c->cfg.router.kind = kind;
  c->cfg.router.n_experts = E;
  c->cfg.router.top_k = k;
  c->cfg.moe_ff = ff;
  c->cfg.shared_ff = shared_ff;
  c->w.router = tc_rand(c, (size_t)(E * D), 1.0);
  for (int e = 0; e < E; e++) {
    c->experts[e].gate = tc_rand(c, (size_t)(ff * D), 0.3);
    c->experts[e].up = tc_rand(c, (size_t)(ff * D), 0.3);
    c->experts[e].down = tc_rand(c, (size_t)(D * ff), 0.3);
  }
  c->w.experts = c->experts;
  if (shared_ff) {
    c->w.shared.gate = tc_rand(c, (size_t)(shared_ff * D), 0.3);
    c->w.shared.up = tc_rand(c, (size_t)(shared_ff * D), 0.3);
    c->w.shared.down = tc_rand(c, (size_t)(D * shared_ff), 0.3);
  }
  if (shared_gate) c->w.shared_gate = tc_rand(c, D, 0.5);
}

static void init_dense(tcase *c, int64_t I) {
  c->cfg.moe = 0;
  c->cfg.intermediate = I;
  c->w.gate = tc_rand(c, (size_t)(I * D), 0.3);
  c->w.up = tc_rand(c, (size_t)(I * D), 0.3);
  c->w.down = tc_rand(c, (size_t)(D * I), 0.3);
}

static void init_common(tcase *c, const char *name, uint64_t seed) {
  memset(c, 0, sizeof *c);
  c->name = name;
  c->seed = seed;
  c->cfg.hidden = D;
  c->cfg.eps = 1e-6f;
  c->w.attn_norm = tc_norm(c, D);
  c->w.ffn_norm = tc_norm(c, D);
}

/* Run the kernel with hooks (and all_tokens), compare everything with the naive layer. */
static void run(tcase *c, int all_tokens) {
  uint64_t s = c->seed * 7 + 3;
  float *x = mn_alloc_rand(ROWS * D, &s, 1.0);
  expect ex;
  memset(&ex, 0, sizeof ex);
  const int64_t I = c->cfg.intermediate > 0 ? c->cfg.intermediate : 1;
  ex.xn1 = calloc(ROWS * D, sizeof(double));
  ex.att = calloc(ROWS * 64, sizeof(double));
  ex.qb = calloc(ROWS * 64, sizeof(double));
  ex.kvb = calloc(ROWS * 64, sizeof(double));
  ex.xn2 = calloc(ROWS * D, sizeof(double));
  ex.down_in = calloc((size_t)(ROWS * I), sizeof(double));
  ex.y = calloc(ROWS * D, sizeof(double));
  naive_layer(c, x, &ex);

  hctx h = {c, &ex, all_tokens, 0, {0}, 0};
  sq_moe_layer_hooks hk = {0};
  hk.qkv_in = c->cfg.attn == SQ_MOE_ATTN_GQA ? h_qkv : NULL;
  hk.qa_kva_in = c->cfg.attn == SQ_MOE_ATTN_MLA ? h_qkv : NULL;
  hk.q_b_in = h_qb;
  hk.kv_b_in = h_kvb;
  hk.o_in = h_o;
  hk.ffn_in = h_ffn;
  hk.down_in = h_down;
  hk.expert_gate_up_in = h_egu;
  hk.expert_down_in = h_edown;
  hk.all_tokens = all_tokens;
  hk.user = &h;
  size_t wsb = sq_moe_layer_workspace_bytes(&c->cfg, B, T);
  void *ws = aligned_alloc(64, (wsb + 63) / 64 * 64);
  float *y = malloc(ROWS * D * sizeof(float));
  int64_t counts[MAXE];
  sq_status st = sq_moe_layer_forward(&c->cfg, &c->w, x, B, T, &hk, ws, y, counts);
  SQ_EXPECT_MSG(st == SQ_OK, "%s: %s", c->name, sq_error_message());
  double m = 0;
  for (int i = 0; i < ROWS * D; i++) m = fmax(m, fabs(y[i] - ex.y[i]) / (1.0 + fabs(ex.y[i])));
  SQ_EXPECT_MSG(m < 2e-4, "%s: y differs from the naive layer by %.3g", c->name, m);
  if (c->cfg.moe) {
    const int E = c->cfg.router.n_experts;
    int64_t tot = 0;
    for (int e = 0; e < E; e++) {
      SQ_EXPECT_MSG(counts[e] == ex.counts[e], "%s: expert %d routed %lld tokens, naive %lld",
                    c->name, e, (long long)counts[e], (long long)ex.counts[e]);
      SQ_EXPECT_EQ_INT(h.rows_seen[e], all_tokens ? ROWS : ex.counts[e]);
      tot += counts[e];
    }
    SQ_EXPECT_EQ_INT(tot, ROWS * c->cfg.router.top_k);
    if (c->w.shared.gate) SQ_EXPECT_EQ_INT(h.rows_seen[MAXE], ROWS);
  }
  /* In place (y == x), without hooks. */
  float *xy = malloc(ROWS * D * sizeof(float));
  memcpy(xy, x, ROWS * D * sizeof(float));
  SQ_EXPECT(sq_moe_layer_forward(&c->cfg, &c->w, xy, B, T, NULL, ws, xy, NULL) == SQ_OK);
  double dip = 0;
  for (int i = 0; i < ROWS * D; i++) dip = fmax(dip, fabs(xy[i] - y[i]));
  /* Bit-identical to the routed run; all-tokens mode runs the experts' gemms on
   * more rows, which may round differently (BLAS blocking), so only close. */
  SQ_EXPECT_MSG(dip <= (all_tokens ? 1e-5 : 0.0), "%s: in-place result differs by %.3g", c->name,
                dip);
  printf("%-22s y max rel err %.2e, hook max rel err %.2e over %d hook calls%s\n", c->name, m,
         h.maxerr, h.calls, all_tokens ? " (all tokens)" : "");
  free(xy);
  free(y);
  free(ws);
  free(x);
  free(ex.xn1);
  free(ex.att);
  free(ex.qb);
  free(ex.kvb);
  free(ex.xn2);
  free(ex.down_in);
  free(ex.y);
}

/* The Llama-4-like dense layer through sq_fwd_layer too (same ops, another code path). */
static void cross_check_fwd_layer(tcase *c) {
  uint64_t s = 99;
  float *x = mn_alloc_rand(ROWS * D, &s, 1.0);
  sq_fwd_layer_cfg fc = {
      D,          c->cfg.n_heads, c->cfg.n_kv_heads, c->cfg.head_dim, c->cfg.intermediate,
      c->cfg.eps, c->cfg.rope};
  sq_fwd_layer_weights fw = {0};
  fw.attn_norm = c->w.attn_norm;
  fw.q = c->w.q;
  fw.k = c->w.k;
  fw.v = c->w.v;
  fw.o = c->w.o;
  fw.mlp_norm = c->w.ffn_norm;
  fw.gate = c->w.gate;
  fw.up = c->w.up;
  fw.down = c->w.down;
  void *ws1 = aligned_alloc(64, (sq_fwd_layer_workspace_bytes(&fc, B, T) + 63) / 64 * 64);
  void *ws2 = aligned_alloc(64, (sq_moe_layer_workspace_bytes(&c->cfg, B, T) + 63) / 64 * 64);
  float y1[ROWS * D], y2[ROWS * D];
  SQ_EXPECT(sq_fwd_layer(&fc, &fw, x, B, T, NULL, ws1, y1) == SQ_OK);
  SQ_EXPECT(sq_moe_layer_forward(&c->cfg, &c->w, x, B, T, NULL, ws2, y2, NULL) == SQ_OK);
  double m = 0;
  for (int i = 0; i < ROWS * D; i++) m = fmax(m, fabs(y1[i] - y2[i]));
  SQ_EXPECT_MSG(m < 1e-5, "dense layer differs from sq_fwd_layer by %.3g", m);
  free(ws1);
  free(ws2);
  free(x);
}

static void test_is_moe(void) {
  /* Mixtral: every layer; DeepSeek-V3: from first_k_dense_replace = 3; Maverick: step 2. */
  for (int l = 0; l < 6; l++) {
    SQ_EXPECT_EQ_INT(sq_moe_layer_is_moe(l, 8, 0, 1), 1);
    SQ_EXPECT_EQ_INT(sq_moe_layer_is_moe(l, 256, 3, 1), l >= 3);
    SQ_EXPECT_EQ_INT(sq_moe_layer_is_moe(l, 128, 0, 2), l % 2 == 1);
    SQ_EXPECT_EQ_INT(sq_moe_layer_is_moe(l, 0, 0, 1), 0);
  }
}

static void test_errors(void) {
  tcase c;
  init_common(&c, "errors", 5);
  init_gqa(&c, 4, 2, 8, 10000, 0);
  init_moe(&c, SQ_MOE_ROUTER_SOFTMAX, 4, 2, 16, 0, 0);
  float x[ROWS * D] = {0}, y[ROWS * D];
  void *ws = aligned_alloc(64, (sq_moe_layer_workspace_bytes(&c.cfg, B, T) + 63) / 64 * 64);
  const float *router = c.w.router;
  c.w.router = NULL;
  SQ_EXPECT(sq_moe_layer_forward(&c.cfg, &c.w, x, B, T, NULL, ws, y, NULL) == SQ_ERR_ARG);
  SQ_EXPECT(strstr(sq_error_message(), "router") != NULL);
  sq_error_clear();
  c.w.router = router;
  c.cfg.router.top_k = 9;
  SQ_EXPECT(sq_moe_layer_forward(&c.cfg, &c.w, x, B, T, NULL, ws, y, NULL) != SQ_OK);
  sq_error_clear();
  free(ws);
  tc_free(&c);
}

int main(void) {
  test_is_moe();
  test_errors();
  tcase c;

  init_common(&c, "mixtral-like", 11);
  init_gqa(&c, 4, 2, 8, 1e6, 0);
  init_moe(&c, SQ_MOE_ROUTER_SOFTMAX, 4, 2, 24, 0, 0);
  c.cfg.router.norm_topk_prob = 1;
  run(&c, 0);
  run(&c, 1);
  tc_free(&c);

  init_common(&c, "qwen2-moe-like", 12);
  init_gqa(&c, 4, 4, 8, 1e6, 1);
  init_moe(&c, SQ_MOE_ROUTER_SOFTMAX, 6, 2, 16, 40, 1);
  run(&c, 0);
  run(&c, 1);
  tc_free(&c);

  init_common(&c, "qwen3-moe-like", 13);
  init_gqa(&c, 4, 2, 8, 1e6, 0);
  c.w.q_norm = tc_norm(&c, 8);
  c.w.k_norm = tc_norm(&c, 8);
  init_moe(&c, SQ_MOE_ROUTER_SOFTMAX, 8, 3, 12, 0, 0);
  c.cfg.router.norm_topk_prob = 1;
  run(&c, 0);
  tc_free(&c);

  init_common(&c, "deepseek-like", 14);
  init_mla(&c);
  init_moe(&c, SQ_MOE_ROUTER_DEEPSEEK_V3, 8, 2, 12, 24, 0);
  c.bias = tc_rand(&c, 8, 0.3);
  c.cfg.router.e_score_correction_bias = c.bias;
  c.cfg.router.n_group = 4;
  c.cfg.router.topk_group = 2;
  c.cfg.router.norm_topk_prob = 1;
  c.cfg.router.routed_scaling_factor = 2.5f;
  run(&c, 0);
  run(&c, 1);
  tc_free(&c);

  init_common(&c, "deepseek-like dense", 15);
  init_mla(&c);
  init_dense(&c, 40);
  run(&c, 0);
  tc_free(&c);

  init_common(&c, "llama4-like (NoPE)", 16);
  init_gqa(&c, 4, 2, 8, 0, 0);
  init_moe(&c, SQ_MOE_ROUTER_LLAMA4, 4, 1, 16, 16, 0);
  run(&c, 0);
  run(&c, 1);
  tc_free(&c);

  init_common(&c, "llama4-like dense", 17);
  init_gqa(&c, 4, 2, 8, 5e5, 0);
  init_dense(&c, 48);
  run(&c, 0);
  cross_check_fwd_layer(&c);
  tc_free(&c);
  return sq_test_result("test_moe_layer");
}
