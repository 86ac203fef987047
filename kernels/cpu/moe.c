/* CPU reference of the mixture-of-experts ops (kernels/moe.h): the three
 * routers, the per-expert dispatch (counting sort by expert, ascending tokens)
 * and the SwiGLU expert combine with per-expert calibration hooks. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/moe.h"

/* ---- routers ---- */

static float sigmoidf(float x) {
  return 1.0f / (1.0f + expf(-x));
}

/* The k largest of v[0..n) (only where eligible[i], if eligible is given) into
 * idx[0..k), in descending value; equal values keep ascending index, and a
 * value equal to the current k-th never displaces it, so ties go to the lowest
 * index. Returns how many were picked (< k only if fewer are eligible). */
static int topk_lowest_index(const float *v, int n, const unsigned char *eligible, int k,
                             int32_t *idx) {
  int cnt = 0;
  for (int i = 0; i < n; i++) {
    if (eligible && !eligible[i]) continue;
    float x = v[i];
    int pos;
    if (cnt < k) {
      pos = cnt++;
    } else if (x > v[idx[k - 1]]) {
      pos = k - 1;
    } else {
      continue;
    }
    while (pos > 0 && v[idx[pos - 1]] < x) {
      idx[pos] = idx[pos - 1];
      pos--;
    }
    idx[pos] = i;
  }
  return cnt;
}

sq_status sq_moe_router_check(const sq_moe_router_cfg *cfg) {
  if (!cfg) return sq_error_set(SQ_ERR_ARG, "moe router: no configuration");
  if (cfg->n_experts <= 0 || cfg->top_k <= 0 || cfg->top_k > cfg->n_experts)
    return sq_error_set(SQ_ERR_ARG,
                        "moe router: num_experts_per_tok %d must be in [1, n_experts %d]",
                        cfg->top_k, cfg->n_experts);
  switch (cfg->kind) {
    case SQ_MOE_ROUTER_SOFTMAX:
    case SQ_MOE_ROUTER_LLAMA4:
      return SQ_OK;
    case SQ_MOE_ROUTER_DEEPSEEK_V3: {
      int g = cfg->n_group;
      if (g <= 0 || cfg->n_experts % g != 0 || cfg->n_experts / g < 2)
        return sq_error_set(SQ_ERR_ARG,
                            "moe router deepseek_v3: n_group %d must divide n_routed_experts %d "
                            "into groups of at least 2 (group score sums the top 2)",
                            g, cfg->n_experts);
      if (cfg->topk_group <= 0 || cfg->topk_group > g ||
          cfg->topk_group * (cfg->n_experts / g) < cfg->top_k)
        return sq_error_set(SQ_ERR_ARG,
                            "moe router deepseek_v3: topk_group %d must be in [1, n_group %d] and "
                            "keep at least num_experts_per_tok %d experts",
                            cfg->topk_group, g, cfg->top_k);
      if (!isfinite(cfg->routed_scaling_factor))
        return sq_error_set(SQ_ERR_ARG, "moe router deepseek_v3: routed_scaling_factor is %g",
                            (double)cfg->routed_scaling_factor);
      return SQ_OK;
    }
  }
  return sq_error_set(SQ_ERR_ARG, "moe router: unknown router kind %d", (int)cfg->kind);
}

int sq_moe_routing_scales_input(sq_moe_router_kind kind) {
  return kind == SQ_MOE_ROUTER_LLAMA4;
}

/* weights /= sum (+ eps): the k weights of one token, summed in selection order. */
static void renormalise(float *w, int k, float eps) {
  float s = 0.0f;
  for (int j = 0; j < k; j++) s += w[j];
  s += eps;
  for (int j = 0; j < k; j++) w[j] /= s;
}

/* DeepSeek-V3 group-limited choice for one token. s: sigmoid scores (E),
 * c: scratch (E) for the biased scores, gs and kept: (n_group), mask: (E). */
static void route_deepseek(const sq_moe_router_cfg *cfg, const float *s, float *c, float *gs,
                           int32_t *kept, unsigned char *mask, int32_t *ids, float *w) {
  const int E = cfg->n_experts, G = cfg->n_group, per = E / G, k = cfg->top_k;
  const float *bias = cfg->e_score_correction_bias;
  for (int e = 0; e < E; e++) c[e] = s[e] + (bias ? bias[e] : 0.0f);
  int32_t two[2];
  for (int g = 0; g < G; g++) {
    topk_lowest_index(c + g * per, per, NULL, 2, two);
    gs[g] = c[g * per + two[0]] + c[g * per + two[1]]; /* topk(2).sum(): largest first */
  }
  int nk = topk_lowest_index(gs, G, NULL, cfg->topk_group, kept);
  memset(mask, 0, (size_t)E);
  for (int j = 0; j < nk; j++) memset(mask + kept[j] * per, 1, (size_t)per);
  topk_lowest_index(c, E, mask, k, ids);
  for (int j = 0; j < k; j++) w[j] = s[ids[j]]; /* unbiased scores */
  if (cfg->norm_topk_prob) renormalise(w, k, 1e-20f);
  for (int j = 0; j < k; j++) w[j] = w[j] * cfg->routed_scaling_factor;
}

sq_status sq_moe_route(const sq_moe_router_cfg *cfg, const float *logits, int64_t T, int32_t *ids,
                       float *weights) {
  SQ_CHECK(sq_moe_router_check(cfg));
  if (T < 0 || (T > 0 && (!logits || !ids || !weights)))
    return sq_error_set(SQ_ERR_ARG, "moe router: bad arguments (T %lld)", (long long)T);
  const int E = cfg->n_experts, k = cfg->top_k;
  /* scratch: p or s (E) | c (E) | group scores (G) | kept groups (G int32) | mask (E bytes) */
  const size_t G = (size_t)(cfg->n_group > 0 ? cfg->n_group : 1);
  size_t nf = 2 * (size_t)E + G;
  char *buf = malloc(nf * sizeof(float) + G * sizeof(int32_t) + (size_t)E);
  if (!buf) return sq_error_set(SQ_ERR_NOMEM, "moe router: cannot allocate %d experts' scratch", E);
  float *p = (float *)buf, *c = p + E, *gs = p + 2 * (size_t)E;
  int32_t *kept = (int32_t *)(buf + nf * sizeof(float));
  unsigned char *mask = (unsigned char *)(kept + G);
  sq_status st = SQ_OK;
  for (int64_t t = 0; t < T; t++) {
    const float *lt = logits + (size_t)t * E;
    int32_t *it = ids + (size_t)t * k;
    float *wt = weights + (size_t)t * k;
    for (int e = 0; e < E; e++) {
      if (isnan(lt[e])) {
        st = sq_error_set(SQ_ERR_NUMERIC,
                          "moe router: token %lld has a NaN router logit (expert %d) -- hint: the "
                          "layer input or the router weight holds NaN/Inf",
                          (long long)t, e);
        goto done;
      }
    }
    switch (cfg->kind) {
      case SQ_MOE_ROUTER_SOFTMAX:
        memcpy(p, lt, (size_t)E * sizeof(float));
        sq_fwd_softmax_row(p, E); /* fp32 over all experts, before the top-k */
        topk_lowest_index(p, E, NULL, k, it);
        for (int j = 0; j < k; j++) wt[j] = p[it[j]];
        if (cfg->norm_topk_prob) renormalise(wt, k, 0.0f);
        break;
      case SQ_MOE_ROUTER_DEEPSEEK_V3:
        for (int e = 0; e < E; e++) p[e] = sigmoidf(lt[e]);
        route_deepseek(cfg, p, c, gs, kept, mask, it, wt);
        break;
      case SQ_MOE_ROUTER_LLAMA4:
        topk_lowest_index(lt, E, NULL, k, it);
        for (int j = 0; j < k; j++) wt[j] = sigmoidf(lt[it[j]]);
        break;
    }
  }
done:
  free(buf);
  return st;
}

/* ---- dispatch ---- */

void sq_moe_dispatch_free(sq_moe_dispatch *d) {
  if (!d) return;
  free(d->counts);
  free(d->offsets);
  free(d->tokens);
  free(d->weights);
  memset(d, 0, sizeof *d);
}

sq_status sq_moe_dispatch_build(const int32_t *ids, const float *weights, int64_t T, int k,
                                int n_experts, sq_moe_dispatch *d) {
  if (!d || T < 0 || k <= 0 || n_experts <= 0 || k > n_experts || (T > 0 && (!ids || !weights)))
    return sq_error_set(SQ_ERR_ARG, "moe dispatch: bad arguments (T %lld, k %d, experts %d)",
                        (long long)T, k, n_experts);
  memset(d, 0, sizeof *d);
  size_t n = (size_t)T * (size_t)k;
  d->counts = calloc((size_t)n_experts, sizeof(int64_t));
  d->offsets = calloc((size_t)n_experts + 1, sizeof(int64_t));
  d->tokens = malloc((n ? n : 1) * sizeof(int64_t));
  d->weights = malloc((n ? n : 1) * sizeof(float));
  if (!d->counts || !d->offsets || !d->tokens || !d->weights) {
    sq_moe_dispatch_free(d);
    return sq_error_set(SQ_ERR_NOMEM, "moe dispatch: cannot allocate %zu entries", n);
  }
  d->n_experts = n_experts;
  d->n_tokens = T;
  d->top_k = k;
  for (int64_t t = 0; t < T; t++) {
    const int32_t *it = ids + (size_t)t * k;
    for (int j = 0; j < k; j++) {
      int e = it[j];
      int dup = 0;
      for (int i = 0; i < j; i++) dup |= it[i] == e;
      if (e < 0 || e >= n_experts || dup) {
        sq_moe_dispatch_free(d);
        return sq_error_set(SQ_ERR_ARG,
                            "moe dispatch: token %lld slot %d has expert id %d (%s; experts "
                            "0..%d)",
                            (long long)t, j, e, dup ? "chosen twice" : "out of range",
                            n_experts - 1);
      }
      d->counts[e]++;
    }
  }
  for (int e = 0; e < n_experts; e++) d->offsets[e + 1] = d->offsets[e] + d->counts[e];
  /* Counting sort: walking tokens in order keeps each expert's list ascending. */
  int64_t *fill = malloc((size_t)n_experts * sizeof(int64_t));
  if (!fill) {
    sq_moe_dispatch_free(d);
    return sq_error_set(SQ_ERR_NOMEM, "moe dispatch: cannot allocate %d cursors", n_experts);
  }
  memcpy(fill, d->offsets, (size_t)n_experts * sizeof(int64_t));
  for (int64_t t = 0; t < T; t++)
    for (int j = 0; j < k; j++) {
      int e = ids[(size_t)t * k + j];
      int64_t at = fill[e]++;
      d->tokens[at] = t;
      d->weights[at] = weights[(size_t)t * k + j];
    }
  free(fill);
  return SQ_OK;
}

/* ---- expert combine ---- */

static size_t r4(size_t n) {
  return (n + 3) & ~(size_t)3;
}

static int64_t max_ff(const sq_moe_block *blk) {
  int64_t f = blk->ff;
  if (blk->shared.gate && blk->shared_ff > f) f = blk->shared_ff;
  return f;
}

/* Workspace in floats: X (T, d) | G (T, ff) | U (T, ff) | O (T, d) | gate (T). */
size_t sq_moe_workspace_bytes(const sq_moe_block *blk, int64_t T) {
  size_t t = (size_t)(T > 0 ? T : 0), d = (size_t)blk->hidden, f = (size_t)max_ff(blk);
  return (2 * r4(t * d) + 2 * r4(t * f) + r4(t)) * sizeof(float);
}

static sq_status check_block(const sq_moe_block *blk, const sq_moe_dispatch *d) {
  if (!blk || !d || blk->hidden <= 0 || blk->ff <= 0 || !blk->experts)
    return sq_error_set(SQ_ERR_ARG, "moe block: missing weights or non-positive hidden/ff sizes");
  if (blk->n_experts != d->n_experts)
    return sq_error_set(SQ_ERR_ARG, "moe block: %d experts but the dispatch was built for %d",
                        blk->n_experts, d->n_experts);
  for (int e = 0; e < blk->n_experts; e++) {
    const sq_moe_expert *x = &blk->experts[e];
    if (!x->gate || !x->up || !x->down)
      return sq_error_set(SQ_ERR_ARG,
                          "moe block: expert %d lacks gate_proj, up_proj or down_proj weights", e);
  }
  if (blk->shared.gate && (!blk->shared.up || !blk->shared.down || blk->shared_ff <= 0))
    return sq_error_set(SQ_ERR_ARG,
                        "moe block: shared expert lacks up/down weights or shared_ff %lld <= 0",
                        (long long)blk->shared_ff);
  return SQ_OK;
}

/* H (n, ff) = silu(X · gateᵀ) * (X · upᵀ), with both hooks; O (n, d) = H · downᵀ. */
static sq_status run_expert(const sq_moe_expert *w, int id, int64_t d, int64_t ff, const float *X,
                            int64_t n, const sq_moe_hooks *hooks, float *G, float *U, float *O) {
  if (hooks && hooks->gate_up_in) SQ_CHECK(hooks->gate_up_in(hooks->user, id, X, n, d));
  sq_fwd_linear(X, n, d, w->gate, ff, NULL, G);
  sq_fwd_linear(X, n, d, w->up, ff, NULL, U);
  sq_fwd_silu_mul(G, U, n * ff);
  if (hooks && hooks->down_in) SQ_CHECK(hooks->down_in(hooks->user, id, G, n, ff));
  sq_fwd_linear(G, n, ff, w->down, d, NULL, O);
  return SQ_OK;
}

sq_status sq_moe_forward(const sq_moe_block *blk, const float *x, const sq_moe_dispatch *d,
                         const sq_moe_hooks *hooks, void *ws, float *y) {
  SQ_CHECK(check_block(blk, d));
  const int64_t T = d->n_tokens, D = blk->hidden, F = blk->ff;
  const int all = hooks && hooks->all_tokens;
  float *X = ws;
  float *G = X + r4((size_t)T * D);
  float *U = G + r4((size_t)T * max_ff(blk));
  float *O = U + r4((size_t)T * max_ff(blk));
  float *gl = O + r4((size_t)T * D);
  memset(y, 0, (size_t)T * D * sizeof(float));
  for (int e = 0; e < blk->n_experts; e++) {
    const int64_t off = d->offsets[e], cnt = d->counts[e];
    const int64_t *tok = d->tokens + off;
    const float *wt = d->weights + off;
    int64_t n = all ? T : cnt;
    if (n == 0) continue;
    /* X_e: the expert's rows; in all-tokens mode row t is token t. */
    if (all) {
      memcpy(X, x, (size_t)T * D * sizeof(float));
      if (blk->scale_input)
        for (int64_t j = 0; j < cnt; j++) {
          float *r = X + (size_t)tok[j] * D;
          for (int64_t i = 0; i < D; i++) r[i] = x[(size_t)tok[j] * D + i] * wt[j];
        }
    } else {
      for (int64_t j = 0; j < cnt; j++) {
        const float *src = x + (size_t)tok[j] * D;
        float *r = X + (size_t)j * D;
        if (blk->scale_input)
          for (int64_t i = 0; i < D; i++) r[i] = src[i] * wt[j];
        else
          memcpy(r, src, (size_t)D * sizeof(float));
      }
    }
    SQ_CHECK(run_expert(&blk->experts[e], e, D, F, X, n, hooks, G, U, O));
    /* Scatter-add the routed rows only, in ascending token order. */
    for (int64_t j = 0; j < cnt; j++) {
      const float *o = O + (size_t)(all ? tok[j] : j) * D;
      float *yr = y + (size_t)tok[j] * D;
      float s = blk->scale_input ? 1.0f : wt[j];
      for (int64_t i = 0; i < D; i++) yr[i] += o[i] * s;
    }
  }
  if (blk->shared.gate && T > 0) {
    SQ_CHECK(run_expert(&blk->shared, SQ_MOE_SHARED, D, blk->shared_ff, x, T, hooks, G, U, O));
    if (blk->shared_gate) sq_fwd_linear(x, T, D, blk->shared_gate, 1, NULL, gl);
    for (int64_t t = 0; t < T; t++) {
      float g = blk->shared_gate ? sigmoidf(gl[t]) : 1.0f;
      for (int64_t i = 0; i < D; i++) y[(size_t)t * D + i] += g * O[(size_t)t * D + i];
    }
  }
  return SQ_OK;
}
