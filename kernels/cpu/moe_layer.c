/* CPU reference of one MoE-architecture decoder layer (kernels/moe_layer.h):
 * RMSNorm, GQA or MLA attention, residual, RMSNorm, dense SwiGLU or routed MoE
 * block with shared expert, residual; hooks on every Linear input. */
#include "kernels/moe_layer.h"

#include <string.h>

int sq_moe_layer_is_moe(int64_t layer, int64_t n_experts, int64_t first_k_dense, int64_t step) {
  if (n_experts <= 0 || layer < first_k_dense) return 0;
  return step <= 1 || (layer + 1) % step == 0;
}

/* Floats rounded up to a multiple of 4 (16-byte alignment of every view). */
static size_t r4(size_t n) {
  return (n + 3) & ~(size_t)3;
}

typedef struct {
  float *xn, *h, *tmp; /* (rows, d) each */
  /* attention (GQA) */
  float *q, *k, *v, *att, *S;
  void *mla_ws;
  /* FFN, sharing the attention's space */
  float *g, *u;   /* dense (rows, I) */
  float *logits;  /* (rows, E) */
  float *weights; /* (rows, k) */
  int32_t *ids;   /* (rows, k) */
  void *moe_ws;
} ml_ws;

static void moe_block_of(const sq_moe_layer_cfg *c, const sq_moe_layer_weights *w,
                         sq_moe_block *b) {
  memset(b, 0, sizeof *b);
  b->hidden = c->hidden;
  b->ff = c->moe_ff;
  b->n_experts = c->router.n_experts;
  b->experts = w ? w->experts : NULL;
  b->scale_input = sq_moe_routing_scales_input(c->router.kind);
  if (w) {
    b->shared = w->shared;
    b->shared_gate = w->shared_gate;
  }
  b->shared_ff = c->shared_ff;
}

/* Lay the workspace out (ws NULL: only count). Returns the floats needed. */
static size_t ml_layout(const sq_moe_layer_cfg *c, int64_t B, int64_t T, void *ws, ml_ws *s) {
  const size_t rows = (size_t)(B * T), d = (size_t)c->hidden;
  size_t attn = 0, ffn = 0;
  if (c->attn == SQ_MOE_ATTN_MLA) {
    attn = r4((c->mla ? sq_mla_workspace_bytes(c->mla, B, T) : 0) / sizeof(float) + 1);
  } else {
    const size_t qw = (size_t)(c->n_heads * c->head_dim),
                 kw = (size_t)(c->n_kv_heads * c->head_dim);
    attn = 2 * r4(rows * qw) + 2 * r4(rows * kw) + r4(sq_fwd_attention_workspace_floats(T));
  }
  if (c->moe) {
    sq_moe_block b;
    moe_block_of(c, NULL, &b); /* no weights: size for the larger of the two expert widths */
    if (c->shared_ff > b.ff) b.ff = c->shared_ff;
    const size_t E = (size_t)c->router.n_experts, k = (size_t)c->router.top_k;
    ffn = r4(rows * E) + 2 * r4(rows * k) +
          r4(sq_moe_workspace_bytes(&b, (int64_t)rows) / sizeof(float) + 1);
  } else {
    ffn = 2 * r4(rows * (size_t)c->intermediate);
  }
  const size_t total = 3 * r4(rows * d) + (attn > ffn ? attn : ffn);
  if (!ws) return total;
  float *p = ws;
  s->xn = p;
  s->h = p + r4(rows * d);
  s->tmp = s->h + r4(rows * d);
  float *un = s->tmp + r4(rows * d);
  if (c->attn == SQ_MOE_ATTN_MLA) {
    s->mla_ws = un;
  } else {
    const size_t qw = (size_t)(c->n_heads * c->head_dim),
                 kw = (size_t)(c->n_kv_heads * c->head_dim);
    s->q = un;
    s->k = s->q + r4(rows * qw);
    s->v = s->k + r4(rows * kw);
    s->att = s->v + r4(rows * kw);
    s->S = s->att + r4(rows * qw);
  }
  if (c->moe) {
    const size_t E = (size_t)c->router.n_experts, k = (size_t)c->router.top_k;
    s->logits = un;
    s->weights = s->logits + r4(rows * E);
    s->ids = (int32_t *)(s->weights + r4(rows * k));
    s->moe_ws = (float *)s->ids + r4(rows * k);
  } else {
    s->g = un;
    s->u = un + r4(rows * (size_t)c->intermediate);
  }
  return total;
}

size_t sq_moe_layer_workspace_bytes(const sq_moe_layer_cfg *cfg, int64_t B, int64_t T) {
  return ml_layout(cfg, B, T, NULL, NULL) * sizeof(float);
}

static sq_status hook(sq_fwd_hook_fn fn, void *user, const float *X, int64_t rows, int64_t cols,
                      const char *which) {
  if (!fn) return SQ_OK;
  sq_status st = fn(user, X, rows, cols);
  if (st != SQ_OK) sq_error_set(st, "moe layer: the %s calibration hook failed", which);
  return st;
}

static sq_status ml_check(const sq_moe_layer_cfg *c, const sq_moe_layer_weights *w, int64_t B,
                          int64_t T) {
  if (c->hidden <= 0 || B <= 0 || T <= 0 || !w->attn_norm || !w->ffn_norm)
    return sq_error_set(SQ_ERR_ARG,
                        "moe layer: hidden %lld, B %lld, T %lld must be positive and both layer "
                        "norms given",
                        (long long)c->hidden, (long long)B, (long long)T);
  if (c->attn == SQ_MOE_ATTN_MLA) {
    if (!c->mla || c->mla->hidden != c->hidden)
      return sq_error_set(SQ_ERR_ARG, "moe layer: MLA attention needs cfg.mla with hidden %lld",
                          (long long)c->hidden);
  } else {
    if (c->n_heads <= 0 || c->n_kv_heads <= 0 || c->head_dim <= 0 ||
        c->n_heads % c->n_kv_heads != 0 || !w->q || !w->k || !w->v || !w->o)
      return sq_error_set(SQ_ERR_ARG,
                          "moe layer: GQA needs q/k/v/o weights and kv heads %lld dividing heads "
                          "%lld (head_dim %lld)",
                          (long long)c->n_kv_heads, (long long)c->n_heads, (long long)c->head_dim);
    if (c->rope && (c->rope->head_dim != c->head_dim || c->rope->max_t < T))
      return sq_error_set(SQ_ERR_ARG,
                          "moe layer: rope tables (head_dim %d, %lld positions) do not cover "
                          "head_dim %lld and T %lld -- hint: sq_fwd_rope_init with max_t >= T",
                          c->rope->head_dim, (long long)c->rope->max_t, (long long)c->head_dim,
                          (long long)T);
  }
  if (c->moe) {
    SQ_CHECK(sq_moe_router_check(&c->router));
    if (!w->router || !w->experts || c->moe_ff <= 0)
      return sq_error_set(SQ_ERR_ARG,
                          "moe layer: a MoE FFN needs the router, %d experts and moe_ff > 0 "
                          "(got %lld)",
                          c->router.n_experts, (long long)c->moe_ff);
  } else if (c->intermediate <= 0 || !w->gate || !w->up || !w->down) {
    return sq_error_set(SQ_ERR_ARG,
                        "moe layer: a dense FFN needs gate/up/down and intermediate > 0 (got %lld)",
                        (long long)c->intermediate);
  }
  return SQ_OK;
}

/* tmp (rows, d) = GQA attention of xn. */
static sq_status ml_gqa(const sq_moe_layer_cfg *c, const sq_moe_layer_weights *w, ml_ws *s,
                        int64_t B, int64_t T, const sq_moe_layer_hooks *hk) {
  const int64_t rows = B * T, d = c->hidden, H = c->n_heads, KV = c->n_kv_heads;
  const int64_t hd = c->head_dim, qw = H * hd, kw = KV * hd;
  SQ_CHECK(hook(hk->qkv_in, hk->user, s->xn, rows, d, "qkv_in"));
  sq_fwd_linear(s->xn, rows, d, w->q, qw, w->q_bias, s->q);
  sq_fwd_linear(s->xn, rows, d, w->k, kw, w->k_bias, s->k);
  sq_fwd_linear(s->xn, rows, d, w->v, kw, w->v_bias, s->v);
  /* Qwen3 q_norm / k_norm: RMSNorm over each head's head_dim, before RoPE. */
  if (w->q_norm) sq_fwd_rmsnorm(s->q, w->q_norm, rows * H, hd, c->eps, s->q);
  if (w->k_norm) sq_fwd_rmsnorm(s->k, w->k_norm, rows * KV, hd, c->eps, s->k);
  if (c->rope) {
    sq_fwd_rope_apply(c->rope, s->q, B, T, H);
    sq_fwd_rope_apply(c->rope, s->k, B, T, KV);
  }
  SQ_CHECK(sq_fwd_attention(s->q, s->k, s->v, B, T, H, KV, hd, s->S, s->att));
  SQ_CHECK(hook(hk->o_in, hk->user, s->att, rows, qw, "o_in"));
  sq_fwd_linear(s->att, rows, qw, w->o, d, w->o_bias, s->tmp);
  return SQ_OK;
}

/* tmp (rows, d) = MoE block of xn; counts (E) when given. */
static sq_status ml_moe(const sq_moe_layer_cfg *c, const sq_moe_layer_weights *w, ml_ws *s,
                        int64_t rows, const sq_moe_layer_hooks *hk, int64_t *counts) {
  const int64_t d = c->hidden;
  const int E = c->router.n_experts, k = c->router.top_k;
  sq_fwd_linear(s->xn, rows, d, w->router, E, NULL, s->logits);
  SQ_CHECK(sq_moe_route(&c->router, s->logits, rows, s->ids, s->weights));
  sq_moe_dispatch disp;
  memset(&disp, 0, sizeof disp);
  SQ_CHECK(sq_moe_dispatch_build(s->ids, s->weights, rows, k, E, &disp));
  if (counts) memcpy(counts, disp.counts, (size_t)E * sizeof *counts);
  sq_moe_block b;
  moe_block_of(c, w, &b);
  sq_moe_hooks mh = {hk->expert_gate_up_in, hk->expert_down_in, hk->user, hk->all_tokens};
  sq_status st = sq_moe_forward(&b, s->xn, &disp, &mh, s->moe_ws, s->tmp);
  sq_moe_dispatch_free(&disp);
  return st;
}

sq_status sq_moe_layer_forward(const sq_moe_layer_cfg *cfg, const sq_moe_layer_weights *w,
                               const float *x, int64_t B, int64_t T,
                               const sq_moe_layer_hooks *hooks, void *ws, float *y,
                               int64_t *counts) {
  SQ_CHECK(ml_check(cfg, w, B, T));
  static const sq_moe_layer_hooks none = {0};
  const sq_moe_layer_hooks *hk = hooks ? hooks : &none;
  const int64_t rows = B * T, d = cfg->hidden;
  const size_t n = (size_t)rows * (size_t)d;
  ml_ws s;
  ml_layout(cfg, B, T, ws, &s);
  if (counts && cfg->moe) memset(counts, 0, (size_t)cfg->router.n_experts * sizeof *counts);

  /* h = x + attn(norm1(x)) */
  sq_fwd_rmsnorm(x, w->attn_norm, rows, d, cfg->eps, s.xn);
  if (cfg->attn == SQ_MOE_ATTN_MLA) {
    sq_mla_hooks mh = {hk->qa_kva_in, hk->q_b_in, hk->kv_b_in, hk->o_in, hk->user};
    SQ_CHECK(sq_mla_forward(cfg->mla, &w->mla, s.xn, B, T, &mh, s.mla_ws, s.tmp));
  } else {
    SQ_CHECK(ml_gqa(cfg, w, &s, B, T, hk));
  }
  for (size_t i = 0; i < n; i++) s.h[i] = x[i] + s.tmp[i];

  /* y = h + ffn(norm2(h)) */
  sq_fwd_rmsnorm(s.h, w->ffn_norm, rows, d, cfg->eps, s.xn);
  SQ_CHECK(hook(hk->ffn_in, hk->user, s.xn, rows, d, "ffn_in"));
  if (cfg->moe) {
    SQ_CHECK(ml_moe(cfg, w, &s, rows, hk, counts));
  } else {
    const int64_t I = cfg->intermediate;
    sq_fwd_linear(s.xn, rows, d, w->gate, I, NULL, s.g);
    sq_fwd_linear(s.xn, rows, d, w->up, I, NULL, s.u);
    sq_fwd_silu_mul(s.g, s.u, rows * I);
    SQ_CHECK(hook(hk->down_in, hk->user, s.g, rows, I, "down_in"));
    sq_fwd_linear(s.g, rows, I, w->down, d, NULL, s.tmp);
  }
  for (size_t i = 0; i < n; i++) y[i] = s.h[i] + s.tmp[i];
  return SQ_OK;
}
