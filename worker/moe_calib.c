/* Expert-parallel calibration of one MoE layer's FFN: route locally, send
 * token rows all-to-all to the experts' owners, accumulate each expert's
 * Hessians and compute its outputs there, send the outputs back and combine
 * them in sq_moe_forward's order. The protocol, its layouts and the
 * determinism argument are in moe_calib.h.
 *
 * Layouts (rows; "owned by p" = expert_owner[e] == p):
 *   routed layout of a SOURCE rank s: for p ascending, for e owned by p
 *     ascending, s's tokens of e ascending. Used by the routed dispatch
 *     (row = h row | weight) and by the returned outputs (row = d floats).
 *   receive layout on an owner p: for s ascending, s's part of the above,
 *     i.e. for e owned by p ascending, s's tokens of e. Expert e's rows from
 *     s start at rdispl[s] + Σ_{e' < e owned by p} C[s][e'], where C[s][e] is
 *     s's routed count of e (exchanged up front, the "count matrix").
 *   all-tokens dispatch: s's T_s token rows (h row | k ids | k weights) to
 *     every owning rank; the owner rebuilds the global token order
 *     (s ascending, then token) and returns routed rows in the layout above. */
#include "worker/moe_calib.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "kernels/forward.h"

/* Everything one call allocates, freed in one place (ctx_free). */
typedef struct ctx {
  const sq_comm *c;
  const sq_moe_calib_cfg *cfg;
  int P, me, E, k;
  int64_t D, F, SF, T, Tall;
  int owns_any; /* this rank owns at least one expert */
  size_t elem;  /* bytes per dispatched row */
  /* local routing: logits (T, E), ids/wts (T, k), dispatch lists */
  float *logits, *wts;
  int32_t *ids;
  sq_moe_dispatch disp;
  /* shared expert on the local tokens: out (T, D), gate logits (T), G/U (T, SF) */
  float *sh_out, *sh_gl, *sh_G, *sh_U;
  /* counts */
  int64_t *cmat;  /* (P, E+1) C[s][e], then T_s in column E */
  int64_t *tot;   /* (E) routed tokens per expert over all ranks */
  int64_t *crow;  /* (E+1) this rank's routed counts, then T */
  int64_t *lbase; /* (E) first row of expert e in this rank's routed layout */
  int64_t *a2a;   /* 12 (P) arrays: sc sd rc rd (dispatch), bsc bsd brc brd (combine), 4 (counts) */
  /* exchange buffers */
  float *sendbuf, *recvbuf, *backsend, *backrecv;
  /* owner compute: X (nmax, D), G/U (nmax, F), O (nmax, D); all mode Hall (Tall, D) */
  float *X, *G, *U, *O, *Hall;
  int32_t *gids; /* all mode (Tall, k) */
  float *gw;     /* all mode (Tall, k) */
} ctx;

static void ctx_free(ctx *x) {
  free(x->logits);
  free(x->wts);
  free(x->ids);
  sq_moe_dispatch_free(&x->disp);
  free(x->sh_out);
  free(x->sh_gl);
  free(x->sh_G);
  free(x->sh_U);
  free(x->cmat);
  free(x->tot);
  free(x->lbase);
  free(x->crow);
  free(x->a2a);
  free(x->sendbuf);
  free(x->recvbuf);
  free(x->backsend);
  free(x->backrecv);
  free(x->X);
  free(x->G);
  free(x->U);
  free(x->O);
  free(x->Hall);
  free(x->gids);
  free(x->gw);
}

static float sigmoid1(float v) { /* as kernels/cpu/moe.c, so y matches bit for bit */
  return 1.0f / (1.0f + expf(-v));
}

/* calloc of n elements of sz bytes, never 0 bytes (n may be 0). */
static void *zalloc(size_t n, size_t sz) {
  return calloc(n ? n : 1, sz);
}

sq_moe_calib_cfg sq_moe_calib_cfg_default(void) {
  sq_moe_calib_cfg c;
  memset(&c, 0, sizeof c);
  c.all_tokens = 1;
  c.min_tokens = SQ_MOE_CALIB_MIN_TOKENS;
  return c;
}

sq_status sq_moe_calib_check(const sq_comm *c, const sq_moe_calib_cfg *cfg) {
  if (!c || !cfg) return sq_error_set(SQ_ERR_ARG, "moe calib: NULL communicator or config");
  SQ_CHECK(sq_moe_router_check(&cfg->router));
  const int P = sq_comm_size(c), me = sq_comm_rank(c), E = cfg->router.n_experts;
  if (cfg->hidden <= 0 || cfg->ff <= 0)
    return sq_error_set(SQ_ERR_ARG, "moe calib: hidden %lld and ff %lld must be positive",
                        (long long)cfg->hidden, (long long)cfg->ff);
  if (!cfg->router_w || !cfg->experts || !cfg->expert_owner)
    return sq_error_set(SQ_ERR_ARG, "moe calib: router weight, experts or expert_owner is NULL");
  for (int e = 0; e < E; e++) {
    int o = cfg->expert_owner[e];
    if (o < 0 || o >= P)
      return sq_error_set(SQ_ERR_ARG,
                          "moe calib: expert %d has owner rank %d but the job has %d ranks -- "
                          "hint: build the plan for this rank count",
                          e, o, P);
    const sq_moe_expert *w = &cfg->experts[e];
    if (o == me && (!w->gate || !w->up || !w->down))
      return sq_error_set(SQ_ERR_ARG,
                          "moe calib: rank %d owns expert %d but lacks its gate/up/down weights",
                          me, e);
  }
  if (cfg->shared.gate && (!cfg->shared.up || !cfg->shared.down || cfg->shared_ff <= 0))
    return sq_error_set(SQ_ERR_ARG, "moe calib: shared expert lacks up/down or shared_ff <= 0");
  if (cfg->shared.gate && (cfg->shared_owner < 0 || cfg->shared_owner >= P))
    return sq_error_set(SQ_ERR_ARG, "moe calib: shared_owner %d is not a rank of %d",
                        cfg->shared_owner, P);
  if (cfg->min_tokens < 1)
    return sq_error_set(SQ_ERR_ARG, "moe calib: min_tokens %lld must be >= 1",
                        (long long)cfg->min_tokens);
  return SQ_OK;
}

static sq_status check_hessian(const sq_hessian *h, int64_t d, const char *what, int e) {
  if (!h->sum && !h->sum64)
    return sq_error_set(SQ_ERR_ARG, "moe calib: %s Hessian of expert %d is not initialised", what,
                        e);
  if (h->d != d)
    return sq_error_set(SQ_ERR_ARG, "moe calib: %s Hessian of expert %d has d %lld, expected %lld",
                        what, e, (long long)h->d, (long long)d);
  return SQ_OK;
}

/* Agree a local status across ranks before the next collective. On a failure
 * anywhere, every rank records the lowest failing rank's "rank R (host): ..."
 * line and returns its status. */
static sq_status agree(const ctx *x, sq_status local) {
  char msg[1024];
  sq_status global = SQ_OK;
  if (sq_comm_agree_status(x->c, local, local != SQ_OK ? sq_error_message() : "", &global, msg,
                           sizeof msg) != SQ_OK)
    return SQ_ERR_MPI;
  if (global == SQ_OK) return SQ_OK;
  sq_error_clear();
  return sq_error_set(global, "%s", msg);
}

/* One SwiGLU expert on X (n, D): hessians of X and of the SwiGLU rows, O (n, D). */
static sq_status run_expert(const sq_moe_expert *w, int64_t D, int64_t F, const float *X, int64_t n,
                            sq_hessian *hgu, sq_hessian *hdn, float *G, float *U, float *O,
                            const char *name) {
  if (hgu) SQ_CHECK(sq_hessian_accumulate(hgu, X, n, name));
  sq_fwd_linear(X, n, D, w->gate, F, NULL, G);
  sq_fwd_linear(X, n, D, w->up, F, NULL, U);
  sq_fwd_silu_mul(G, U, n * F);
  if (hdn) SQ_CHECK(sq_hessian_accumulate(hdn, G, n, name));
  sq_fwd_linear(G, n, F, w->down, D, NULL, O);
  return SQ_OK;
}

/* Phase A, local: route, shared expert, routed layout, send buffer. */
static sq_status phase_local(ctx *x, const float *h, sq_moe_calib_out *out) {
  const sq_moe_calib_cfg *cfg = x->cfg;
  const int E = x->E, k = x->k, P = x->P;
  const int64_t T = x->T, D = x->D;
  SQ_CHECK(sq_moe_calib_check(x->c, cfg));
  if (!out || !out->y || (T > 0 && !h))
    return sq_error_set(SQ_ERR_ARG, "moe calib: NULL output or hidden states");
  if (!out->gate_up || !out->down)
    return sq_error_set(SQ_ERR_ARG, "moe calib: NULL expert Hessian arrays");
  for (int e = 0; e < E; e++)
    if (cfg->expert_owner[e] == x->me) {
      SQ_CHECK(check_hessian(&out->gate_up[e], D, "gate/up", e));
      SQ_CHECK(check_hessian(&out->down[e], x->F, "down", e));
    }
  if (cfg->shared.gate) {
    if (!out->shared_gate_up || !out->shared_down)
      return sq_error_set(SQ_ERR_ARG, "moe calib: the shared expert needs shared Hessians");
    SQ_CHECK(check_hessian(out->shared_gate_up, D, "shared gate/up", SQ_MOE_SHARED));
    SQ_CHECK(check_hessian(out->shared_down, x->SF, "shared down", SQ_MOE_SHARED));
  }
  x->logits = zalloc((size_t)T * E, sizeof(float));
  x->ids = zalloc((size_t)T * k, sizeof(int32_t));
  x->wts = zalloc((size_t)T * k, sizeof(float));
  x->cmat = zalloc((size_t)P * (E + 1), sizeof(int64_t));
  x->tot = zalloc((size_t)E, sizeof(int64_t));
  x->lbase = zalloc((size_t)E, sizeof(int64_t));
  x->crow = zalloc((size_t)E + 1, sizeof(int64_t));
  x->a2a = zalloc((size_t)12 * P, sizeof(int64_t));
  if (!x->logits || !x->ids || !x->wts || !x->cmat || !x->tot || !x->lbase || !x->crow || !x->a2a)
    return sq_error_set(SQ_ERR_NOMEM, "moe calib: cannot allocate routing for %lld tokens",
                        (long long)T);
  sq_fwd_linear(h, T, D, cfg->router_w, E, NULL, x->logits);
  SQ_CHECK(sq_moe_route(&cfg->router, x->logits, T, x->ids, x->wts));
  SQ_CHECK(sq_moe_dispatch_build(x->ids, x->wts, T, k, E, &x->disp));

  /* Shared expert (replicated) on the local tokens: partial Hessians now,
   * its output is added after the routed experts (sq_moe_forward's order). */
  if (cfg->shared.gate && T > 0) {
    x->sh_out = zalloc((size_t)T * D, sizeof(float));
    x->sh_gl = zalloc((size_t)T, sizeof(float));
    x->sh_G = zalloc((size_t)T * x->SF, sizeof(float));
    x->sh_U = zalloc((size_t)T * x->SF, sizeof(float));
    if (!x->sh_out || !x->sh_gl || !x->sh_G || !x->sh_U)
      return sq_error_set(SQ_ERR_NOMEM, "moe calib: cannot allocate the shared expert's buffers");
    SQ_CHECK(run_expert(&cfg->shared, D, x->SF, h, T, out->shared_gate_up, out->shared_down,
                        x->sh_G, x->sh_U, x->sh_out, "moe shared expert"));
    if (cfg->shared_gate) sq_fwd_linear(h, T, D, cfg->shared_gate, 1, NULL, x->sh_gl);
  }

  /* Routed layout: for p, for e owned by p, tokens ascending; brc/brd (the
   * combine's receive counts and displacements) describe it per owner p. */
  int64_t *brc = x->a2a + 6 * P, *brd = x->a2a + 7 * P;
  int64_t row = 0;
  for (int p = 0; p < P; p++) {
    brd[p] = row;
    for (int e = 0; e < E; e++)
      if (cfg->expert_owner[e] == p) {
        x->lbase[e] = row;
        row += x->disp.counts[e];
        if (p == x->me) x->owns_any = 1;
      }
    brc[p] = row - brd[p];
  }
  /* Dispatch send buffer. */
  if (!cfg->all_tokens) {
    x->elem = (size_t)(D + 1) * sizeof(float);
    x->sendbuf = zalloc((size_t)row * (D + 1), sizeof(float));
    if (!x->sendbuf) return sq_error_set(SQ_ERR_NOMEM, "moe calib: cannot allocate the send rows");
    for (int e = 0; e < E; e++) {
      const int64_t off = x->disp.offsets[e];
      for (int64_t j = 0; j < x->disp.counts[e]; j++) {
        float *r = x->sendbuf + (size_t)(x->lbase[e] + j) * (D + 1);
        memcpy(r, h + (size_t)x->disp.tokens[off + j] * D, (size_t)D * sizeof(float));
        r[D] = x->disp.weights[off + j];
      }
    }
    for (int p = 0; p < P; p++) {
      x->a2a[p] = brc[p];     /* sc */
      x->a2a[P + p] = brd[p]; /* sd */
    }
  } else {
    const int64_t w = D + 2 * k;
    x->elem = (size_t)w * sizeof(float);
    x->sendbuf = zalloc((size_t)T * w, sizeof(float));
    if (!x->sendbuf) return sq_error_set(SQ_ERR_NOMEM, "moe calib: cannot allocate the send rows");
    for (int64_t t = 0; t < T; t++) {
      float *r = x->sendbuf + (size_t)t * w;
      memcpy(r, h + (size_t)t * D, (size_t)D * sizeof(float));
      memcpy(r + D, x->ids + (size_t)t * k, (size_t)k * sizeof(int32_t));
      memcpy(r + D + k, x->wts + (size_t)t * k, (size_t)k * sizeof(float));
    }
    for (int p = 0; p < P; p++) {
      int owns = 0;
      for (int e = 0; e < E && !owns; e++) owns = cfg->expert_owner[e] == p;
      x->a2a[p] = owns ? T : 0;
      x->a2a[P + p] = 0;
    }
  }
  return sq_comm_failpoint(x->c, SQ_MOE_CALIB_FAILPOINT);
}

/* Row offset of expert e's rows from source s in the receive layout. */
static int64_t recv_base(const ctx *x, int s, int e) {
  int64_t b = x->a2a[5 * x->P + s]; /* bsd: the routed receive layout */
  for (int e2 = 0; e2 < e; e2++)
    if (x->cfg->expert_owner[e2] == x->me) b += x->cmat[(size_t)s * (x->E + 1) + e2];
  return b;
}

/* Phase B: counts, receive sizes, buffers (local allocation, agreed after). */
static sq_status phase_sizes(ctx *x) {
  const int P = x->P, E = x->E, me = x->me;
  const sq_moe_calib_cfg *cfg = x->cfg;
  int64_t *rc = x->a2a + 2 * P, *rd = x->a2a + 3 * P;
  int64_t *bsc = x->a2a + 4 * P, *bsd = x->a2a + 5 * P;
  int64_t nback = 0, nrecv = 0, nmax = 0;
  x->Tall = 0;
  for (int s = 0; s < P; s++) x->Tall += x->cmat[(size_t)s * (E + 1) + E];
  for (int s = 0; s < P; s++) {
    int64_t n = 0;
    for (int e = 0; e < E; e++)
      if (cfg->expert_owner[e] == me) n += x->cmat[(size_t)s * (E + 1) + e];
    bsc[s] = n; /* routed rows of s this rank returns */
    bsd[s] = nback;
    nback += n;
    rc[s] = cfg->all_tokens ? (x->owns_any ? x->cmat[(size_t)s * (E + 1) + E] : 0) : n;
    rd[s] = nrecv;
    nrecv += rc[s];
  }
  for (int e = 0; e < E; e++)
    if (cfg->expert_owner[e] == me) {
      int64_t n = cfg->all_tokens ? x->Tall : x->tot[e];
      if (n > nmax) nmax = n;
    }
  const int64_t D = x->D, F = x->F, T = x->T, k = x->k;
  const int64_t w = (int64_t)(x->elem / sizeof(float));
  x->recvbuf = zalloc((size_t)nrecv * w, sizeof(float));
  x->backsend = zalloc((size_t)nback * D, sizeof(float));
  x->backrecv = zalloc((size_t)T * k * D, sizeof(float));
  x->X = zalloc((size_t)nmax * D, sizeof(float));
  x->G = zalloc((size_t)nmax * F, sizeof(float));
  x->U = zalloc((size_t)nmax * F, sizeof(float));
  x->O = zalloc((size_t)nmax * D, sizeof(float));
  if (!x->recvbuf || !x->backsend || !x->backrecv || !x->X || !x->G || !x->U || !x->O)
    return sq_error_set(SQ_ERR_NOMEM,
                        "moe calib: rank %d cannot allocate buffers for %lld received rows "
                        "(%lld rows per expert) -- hint: spread the experts over more ranks or "
                        "calibrate on fewer tokens per call",
                        me, (long long)nrecv, (long long)nmax);
  if (cfg->all_tokens && x->owns_any) {
    x->Hall = zalloc((size_t)x->Tall * D, sizeof(float));
    x->gids = zalloc((size_t)x->Tall * k, sizeof(int32_t));
    x->gw = zalloc((size_t)x->Tall * k, sizeof(float));
    if (!x->Hall || !x->gids || !x->gw)
      return sq_error_set(SQ_ERR_NOMEM, "moe calib: rank %d cannot hold all %lld tokens", me,
                          (long long)x->Tall);
  }
  return SQ_OK;
}

/* Phase C, routed mode: expert e's rows from every source, in rank order. */
static sq_status compute_routed(ctx *x, sq_moe_calib_out *out) {
  const sq_moe_calib_cfg *cfg = x->cfg;
  const int64_t D = x->D, E = x->E;
  const int scale = sq_moe_routing_scales_input(cfg->router.kind);
  char name[64];
  for (int e = 0; e < E; e++) {
    if (cfg->expert_owner[e] != x->me || x->tot[e] == 0) continue;
    int64_t n = 0;
    for (int s = 0; s < x->P; s++) {
      const int64_t b = recv_base(x, s, e), cnt = x->cmat[(size_t)s * (E + 1) + e];
      for (int64_t j = 0; j < cnt; j++, n++) {
        const float *src = x->recvbuf + (size_t)(b + j) * (D + 1);
        float *r = x->X + (size_t)n * D;
        if (scale)
          for (int64_t i = 0; i < D; i++) r[i] = src[i] * src[D];
        else
          memcpy(r, src, (size_t)D * sizeof(float));
      }
    }
    if (n != x->tot[e])
      return sq_error_set(SQ_ERR_INTERNAL, "moe calib: expert %d received %lld rows, counted %lld",
                          e, (long long)n, (long long)x->tot[e]);
    snprintf(name, sizeof name, "moe expert %d", e);
    SQ_CHECK(run_expert(&cfg->experts[e], D, x->F, x->X, n, &out->gate_up[e], &out->down[e], x->G,
                        x->U, x->O, name));
    /* Outputs go back in the receive layout (rows of D). */
    n = 0;
    for (int s = 0; s < x->P; s++) {
      const int64_t b = recv_base(x, s, e), cnt = x->cmat[(size_t)s * (E + 1) + e];
      memcpy(x->backsend + (size_t)b * D, x->O + (size_t)n * D, (size_t)cnt * D * sizeof(float));
      n += cnt;
    }
  }
  return SQ_OK;
}

static int routed_to(const int32_t *ids, int k, int e, float *w, const float *wts) {
  for (int j = 0; j < k; j++)
    if (ids[j] == e) {
      *w = wts[j];
      return 1;
    }
  return 0;
}

/* Phase C, all-tokens mode: every expert runs on all Tall tokens. */
static sq_status compute_all(ctx *x, sq_moe_calib_out *out) {
  const sq_moe_calib_cfg *cfg = x->cfg;
  const int64_t D = x->D, E = x->E, k = x->k, w = D + 2 * k, Tall = x->Tall;
  const int scale = sq_moe_routing_scales_input(cfg->router.kind);
  if (!x->owns_any || Tall == 0) return SQ_OK;
  /* Global token order: source rank, then its token order. */
  for (int64_t g = 0; g < Tall; g++) {
    const float *r = x->recvbuf + (size_t)g * w;
    memcpy(x->Hall + (size_t)g * D, r, (size_t)D * sizeof(float));
    memcpy(x->gids + (size_t)g * k, r + D, (size_t)k * sizeof(int32_t));
    memcpy(x->gw + (size_t)g * k, r + D + k, (size_t)k * sizeof(float));
  }
  char name[64];
  for (int e = 0; e < E; e++) {
    if (cfg->expert_owner[e] != x->me) continue;
    const float *X = x->Hall;
    if (scale) { /* routed rows enter scaled, the others as they are */
      memcpy(x->X, x->Hall, (size_t)Tall * D * sizeof(float));
      for (int64_t g = 0; g < Tall; g++) {
        float wt;
        if (!routed_to(x->gids + (size_t)g * k, (int)k, e, &wt, x->gw + (size_t)g * k)) continue;
        float *r = x->X + (size_t)g * D;
        const float *src = x->Hall + (size_t)g * D;
        for (int64_t i = 0; i < D; i++) r[i] = src[i] * wt;
      }
      X = x->X;
    }
    snprintf(name, sizeof name, "moe expert %d", e);
    SQ_CHECK(run_expert(&cfg->experts[e], D, x->F, X, Tall, &out->gate_up[e], &out->down[e], x->G,
                        x->U, x->O, name));
    int64_t g = 0;
    for (int s = 0; s < x->P; s++) {
      const int64_t Ts = x->cmat[(size_t)s * (E + 1) + E];
      int64_t at = recv_base(x, s, e), n = 0;
      for (int64_t j = 0; j < Ts; j++, g++) {
        float wt;
        if (!routed_to(x->gids + (size_t)g * k, (int)k, e, &wt, x->gw + (size_t)g * k)) continue;
        memcpy(x->backsend + (size_t)(at + n++) * D, x->O + (size_t)g * D,
               (size_t)D * sizeof(float));
      }
      if (n != x->cmat[(size_t)s * (E + 1) + e])
        return sq_error_set(SQ_ERR_INTERNAL,
                            "moe calib: expert %d: rank %d sent %lld routed tokens, counted %lld",
                            e, s, (long long)n, (long long)x->cmat[(size_t)s * (E + 1) + e]);
    }
  }
  return SQ_OK;
}

/* Phase D, local: y = Σ_e (ascending) w·out_e, then the shared expert. */
static void combine(const ctx *x, float *y) {
  const int64_t D = x->D, T = x->T;
  const int scale = sq_moe_routing_scales_input(x->cfg->router.kind);
  memset(y, 0, (size_t)T * D * sizeof(float));
  for (int e = 0; e < x->E; e++) {
    const int64_t off = x->disp.offsets[e], cnt = x->disp.counts[e];
    for (int64_t j = 0; j < cnt; j++) {
      const float *o = x->backrecv + (size_t)(x->lbase[e] + j) * D;
      float *yr = y + (size_t)x->disp.tokens[off + j] * D;
      float s = scale ? 1.0f : x->disp.weights[off + j];
      for (int64_t i = 0; i < D; i++) yr[i] += o[i] * s;
    }
  }
  if (x->sh_out)
    for (int64_t t = 0; t < T; t++) {
      float g = x->cfg->shared_gate ? sigmoid1(x->sh_gl[t]) : 1.0f;
      for (int64_t i = 0; i < D; i++) y[(size_t)t * D + i] += g * x->sh_out[(size_t)t * D + i];
    }
}

static int cmp_i64(const void *a, const void *b) {
  int64_t u = *(const int64_t *)a, v = *(const int64_t *)b;
  return (u > v) - (u < v);
}

/* Token statistics, RTN flags (same on every rank: tot is allreduced). */
static sq_status finish_stats(const ctx *x, sq_moe_calib_out *out) {
  const int E = x->E;
  sq_moe_calib_stats *st = &out->stats;
  int64_t *sorted = malloc((size_t)E * sizeof(int64_t));
  if (!sorted) return sq_error_set(SQ_ERR_NOMEM, "moe calib: cannot allocate %d counts", E);
  memcpy(sorted, x->tot, (size_t)E * sizeof(int64_t));
  qsort(sorted, (size_t)E, sizeof(int64_t), cmp_i64);
  st->total_tokens = x->Tall;
  st->tok_min = sorted[0];
  st->tok_max = sorted[E - 1];
  st->tok_median =
      E % 2 ? (double)sorted[E / 2] : 0.5 * ((double)sorted[E / 2 - 1] + (double)sorted[E / 2]);
  free(sorted);
  char ids[160] = "";
  size_t used = 0;
  st->n_fallback = 0;
  for (int e = 0; e < E; e++) {
    /* Tokens the expert's Hessian saw: all of them in all-tokens mode. */
    int64_t seen = x->cfg->all_tokens ? x->Tall : x->tot[e];
    int flag = seen < x->cfg->min_tokens;
    if (out->rtn_fallback) out->rtn_fallback[e] = flag;
    if (out->expert_tokens) out->expert_tokens[e] = x->tot[e];
    if (!flag) continue;
    if (st->n_fallback < 8 && used + 24 < sizeof ids)
      used += (size_t)snprintf(ids + used, sizeof ids - used, "%s%d (%lld)", used ? ", " : "", e,
                               (long long)seen);
    st->n_fallback++;
  }
  if (st->n_fallback && x->me == 0)
    sq_log_warn(
        "moe calib: %d of %d experts saw fewer than %lld calibration tokens and fall back "
        "to RTN: expert (tokens) %s%s -- hint: calibrate with all_tokens on or more samples",
        st->n_fallback, E, (long long)x->cfg->min_tokens, ids, st->n_fallback > 8 ? ", ..." : "");
  return SQ_OK;
}

static int64_t bytes_other(const int64_t *counts, int P, int me, size_t elem) {
  int64_t b = 0;
  for (int p = 0; p < P; p++)
    if (p != me) b += counts[p] * (int64_t)elem;
  return b;
}

sq_status sq_moe_calib(const sq_comm *c, const sq_moe_calib_cfg *cfg, const float *h,
                       int64_t n_tokens, sq_moe_calib_out *out) {
  if (!c || !cfg || !out) return sq_error_set(SQ_ERR_ARG, "moe calib: NULL argument");
  const double t0 = sq_time_now();
  ctx x;
  memset(&x, 0, sizeof x);
  x.c = c;
  x.cfg = cfg;
  x.P = sq_comm_size(c);
  x.me = sq_comm_rank(c);
  x.E = cfg->router.n_experts;
  x.k = cfg->router.top_k;
  x.D = cfg->hidden;
  x.F = cfg->ff;
  x.SF = cfg->shared.gate ? cfg->shared_ff : 0;
  x.T = n_tokens;
  memset(&out->stats, 0, sizeof out->stats);
  sq_status st = n_tokens < 0
                     ? sq_error_set(SQ_ERR_ARG, "moe calib: %lld tokens", (long long)n_tokens)
                     : phase_local(&x, h, out);
  SQ_CHECK_GOTO(agree(&x, st), st, done);

  /* Counts: per-expert totals (allreduce) and the count matrix (who sends
   * how many rows of which expert, plus T_s) by an all-to-all. */
  const int P = x.P, E = x.E;
  int64_t *cs = x.a2a + 8 * P, *cd = cs + P, *cr = cd + P, *crd = cr + P;
  memcpy(x.crow, x.disp.counts, (size_t)E * sizeof(int64_t));
  x.crow[E] = x.T;
  memcpy(x.tot, x.disp.counts, (size_t)E * sizeof(int64_t));
  for (int p = 0; p < P; p++) {
    cs[p] = cr[p] = E + 1;
    cd[p] = 0;
    crd[p] = (int64_t)p * (E + 1);
  }
  SQ_CHECK_GOTO(sq_comm_allreduce_sum_i64(c, x.tot, E, "moe expert counts"), st, done);
  SQ_CHECK_GOTO(
      sq_comm_alltoallv(c, x.crow, cs, cd, x.cmat, cr, crd, sizeof(int64_t), "moe count matrix"),
      st, done);

  SQ_CHECK_GOTO(agree(&x, phase_sizes(&x)), st, done);
  SQ_CHECK_GOTO(sq_comm_alltoallv(c, x.sendbuf, x.a2a, x.a2a + P, x.recvbuf, x.a2a + 2 * P,
                                  x.a2a + 3 * P, x.elem, "moe dispatch"),
                st, done);
  st = cfg->all_tokens ? compute_all(&x, out) : compute_routed(&x, out);
  SQ_CHECK_GOTO(agree(&x, st), st, done);
  SQ_CHECK_GOTO(
      sq_comm_alltoallv(c, x.backsend, x.a2a + 4 * P, x.a2a + 5 * P, x.backrecv, x.a2a + 6 * P,
                        x.a2a + 7 * P, (size_t)x.D * sizeof(float), "moe combine"),
      st, done);
  combine(&x, out->y);
  if (cfg->shared.gate) {
    SQ_CHECK_GOTO(sq_comm_reduce_hessian(c, out->shared_gate_up, cfg->shared_owner,
                                         "moe shared expert gate/up"),
                  st, done);
    SQ_CHECK_GOTO(
        sq_comm_reduce_hessian(c, out->shared_down, cfg->shared_owner, "moe shared expert down"),
        st, done);
  }
  SQ_CHECK_GOTO(finish_stats(&x, out), st, done);
  out->stats.bytes_sent = bytes_other(x.a2a, P, x.me, x.elem) +
                          bytes_other(x.a2a + 4 * P, P, x.me, (size_t)x.D * sizeof(float));
  out->stats.bytes_recv = bytes_other(x.a2a + 2 * P, P, x.me, x.elem) +
                          bytes_other(x.a2a + 6 * P, P, x.me, (size_t)x.D * sizeof(float));
  out->stats.seconds = sq_time_now() - t0;
done:
  ctx_free(&x);
  return st;
}

void sq_moe_calib_describe(const sq_moe_calib_stats *s, int n_experts, char *buf, size_t len) {
  char a[32], b[32];
  snprintf(buf, len,
           "tokens/expert min %lld median %.1f max %lld over %d experts (%lld tokens), %d RTN "
           "fallbacks, a2a sent %s recv %s, %.3f s",
           (long long)s->tok_min, s->tok_median, (long long)s->tok_max, n_experts,
           (long long)s->total_tokens, s->n_fallback,
           sq_format_bytes((uint64_t)s->bytes_sent, a, sizeof a),
           sq_format_bytes((uint64_t)s->bytes_recv, b, sizeof b), s->seconds);
}
