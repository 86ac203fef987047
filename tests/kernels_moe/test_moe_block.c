/* MoE dispatch and expert combine (kernels/moe.h) against a naive per-token
 * loop over each token's selected experts in double (HF's formulas:
 * Σ w·expert(x), or Σ expert(w·x) for Llama-4, plus the shared expert, gated
 * by sigmoid(x·g) for Qwen2-MoE). The hooks must see exactly the routed rows
 * of each expert in ascending token order (or all tokens in all-tokens mode),
 * with H_e = silu(gate)*up; counts sum to T·k; all-tokens mode leaves y
 * unchanged; an expert nobody chose is skipped in routed mode. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/forward.h"
#include "kernels/moe.h"
#include "moe_naive.h"
#include "test_util.h"

enum { T = 41, D = 24, FF = 16, SFF = 20, E = 6 };

typedef struct weights {
  float *gate[E], *up[E], *down[E];
  float *sgate, *sup, *sdown, *shared_gate, *router;
} weights;

/* What the hooks saw: per expert (E + 1 for the shared one at index E). */
typedef struct seen {
  int calls_in[E + 1], calls_down[E + 1];
  int64_t rows_in[E + 1], rows_down[E + 1];
  float *in[E + 1];   /* (rows, D) */
  float *down[E + 1]; /* (rows, FF or SFF) */
} seen;

static sq_status hook_in(void *user, int e, const float *X, int64_t rows, int64_t cols) {
  seen *s = user;
  int i = e == SQ_MOE_SHARED ? E : e;
  if (cols != D) return sq_error_set(SQ_ERR_INTERNAL, "gate_up hook: cols %lld", (long long)cols);
  s->calls_in[i]++;
  s->rows_in[i] = rows;
  free(s->in[i]);
  s->in[i] = malloc((size_t)(rows * cols) * sizeof(float));
  memcpy(s->in[i], X, (size_t)(rows * cols) * sizeof(float));
  return SQ_OK;
}

static sq_status hook_down(void *user, int e, const float *X, int64_t rows, int64_t cols) {
  seen *s = user;
  int i = e == SQ_MOE_SHARED ? E : e;
  if (cols != (e == SQ_MOE_SHARED ? SFF : FF))
    return sq_error_set(SQ_ERR_INTERNAL, "down hook: cols %lld", (long long)cols);
  s->calls_down[i]++;
  s->rows_down[i] = rows;
  free(s->down[i]);
  s->down[i] = malloc((size_t)(rows * cols) * sizeof(float));
  memcpy(s->down[i], X, (size_t)(rows * cols) * sizeof(float));
  return SQ_OK;
}

static void seen_free(seen *s) {
  for (int i = 0; i <= E; i++) {
    free(s->in[i]);
    free(s->down[i]);
  }
  memset(s, 0, sizeof *s);
}

/* One configuration: route with cfg, run the block in routed and all-tokens
 * modes, compare with the naive loop and check the hooks. */
static void run_case(const char *what, const sq_moe_router_cfg *rc, const weights *W, int shared,
                     int gated, uint64_t seed) {
  const int k = rc->top_k;
  uint64_t s = seed;
  float *x = mn_alloc_rand((size_t)T * D, &s, 1.0);
  float *logits = malloc((size_t)T * E * sizeof(float));
  sq_fwd_linear(x, T, D, W->router, E, NULL, logits);
  for (int t = 0; t < T; t++) logits[t * E + (E - 1)] = -30.0f; /* nobody picks expert E-1 */
  int32_t *ids = malloc((size_t)T * k * sizeof(int32_t));
  float *rw = malloc((size_t)T * k * sizeof(float));
  SQ_EXPECT(sq_moe_route(rc, logits, T, ids, rw) == SQ_OK);

  sq_moe_dispatch dp = {0};
  SQ_EXPECT(sq_moe_dispatch_build(ids, rw, T, k, E, &dp) == SQ_OK);
  int64_t total = 0;
  for (int e = 0; e < E; e++) total += dp.counts[e];
  SQ_EXPECT_EQ_INT(total, (int64_t)T * k);
  SQ_EXPECT_EQ_INT(dp.counts[E - 1], 0);

  sq_moe_expert ex[E];
  for (int e = 0; e < E; e++) ex[e] = (sq_moe_expert){W->gate[e], W->up[e], W->down[e]};
  sq_moe_block blk = {.hidden = D,
                      .ff = FF,
                      .n_experts = E,
                      .experts = ex,
                      .scale_input = sq_moe_routing_scales_input(rc->kind)};
  if (shared) {
    blk.shared = (sq_moe_expert){W->sgate, W->sup, W->sdown};
    blk.shared_ff = SFF;
    blk.shared_gate = gated ? W->shared_gate : NULL;
  }
  void *ws = aligned_alloc(16, (sq_moe_workspace_bytes(&blk, T) + 15) & ~(size_t)15);
  float *y = malloc((size_t)T * D * sizeof(float)), *y_all = malloc((size_t)T * D * sizeof(float));
  seen sr = {0}, sa = {0};
  sq_moe_hooks hr = {hook_in, hook_down, &sr, 0}, ha = {hook_in, hook_down, &sa, 1};
  sq_status st = sq_moe_forward(&blk, x, &dp, &hr, ws, y);
  SQ_EXPECT_MSG(st == SQ_OK, "%s: forward: %s", what, sq_error_message());
  st = sq_moe_forward(&blk, x, &dp, &ha, ws, y_all);
  SQ_EXPECT_MSG(st == SQ_OK, "%s: forward all-tokens: %s", what, sq_error_message());

  /* Naive: per token, per selected slot; hooks' expected rows per expert. */
  double xd[D], xin[D], h[SFF], o[D], yn[D];
  int64_t nrow[E] = {0};
  double max_err = 0;
  for (int t = 0; t < T; t++) {
    for (int i = 0; i < D; i++) yn[i] = 0;
    for (int i = 0; i < D; i++) xd[i] = x[t * D + i];
    for (int j = 0; j < k; j++) {
      int e = ids[t * k + j];
      double wgt = rw[t * k + j];
      for (int i = 0; i < D; i++) xin[i] = blk.scale_input ? xd[i] * wgt : xd[i];
      mn_expert(xin, D, FF, W->gate[e], W->up[e], W->down[e], h, o);
      for (int i = 0; i < D; i++) yn[i] += blk.scale_input ? o[i] : wgt * o[i];
      /* Token t is the next routed row of expert e (ascending tokens). */
      int64_t r = nrow[e]++;
      if (sr.in[e] && r < sr.rows_in[e]) {
        for (int i = 0; i < D; i++) SQ_EXPECT_NEAR(sr.in[e][r * D + i], xin[i], 1e-6, 1e-6);
        for (int f = 0; f < FF; f++) SQ_EXPECT_NEAR(sr.down[e][r * FF + f], h[f], 1e-5, 1e-4);
      }
      if (sa.in[e]) { /* all-tokens: row t is token t */
        for (int i = 0; i < D; i++) SQ_EXPECT_NEAR(sa.in[e][t * D + i], xin[i], 1e-6, 1e-6);
        for (int f = 0; f < FF; f++) SQ_EXPECT_NEAR(sa.down[e][t * FF + f], h[f], 1e-5, 1e-4);
      }
    }
    if (shared) {
      mn_expert(xd, D, SFF, W->sgate, W->sup, W->sdown, h, o);
      double g = 1.0;
      if (gated) {
        double a = 0;
        for (int i = 0; i < D; i++) a += xd[i] * (double)W->shared_gate[i];
        g = mn_sigmoid(a);
      }
      for (int i = 0; i < D; i++) yn[i] += g * o[i];
      if (sr.down[E])
        for (int f = 0; f < SFF; f++) SQ_EXPECT_NEAR(sr.down[E][t * SFF + f], h[f], 1e-5, 1e-4);
    }
    for (int i = 0; i < D; i++) {
      double err = fabs(y[t * D + i] - yn[i]);
      max_err = err > max_err ? err : max_err;
      SQ_EXPECT_NEAR(y[t * D + i], yn[i], 1e-5, 1e-4);
      SQ_EXPECT_NEAR(y_all[t * D + i], y[t * D + i], 1e-6, 1e-5);
    }
  }
  /* Hook calls: routed mode once per expert with tokens, rows = counts. */
  for (int e = 0; e < E; e++) {
    int want = dp.counts[e] > 0;
    SQ_EXPECT_MSG(sr.calls_in[e] == want && sr.calls_down[e] == want,
                  "%s: expert %d hooks called %d/%d times, count %lld", what, e, sr.calls_in[e],
                  sr.calls_down[e], (long long)dp.counts[e]);
    if (want) SQ_EXPECT_EQ_INT(sr.rows_in[e], dp.counts[e]);
    SQ_EXPECT_EQ_INT(nrow[e], dp.counts[e]);
    SQ_EXPECT(sa.calls_in[e] == 1 && sa.calls_down[e] == 1 && sa.rows_in[e] == T);
  }
  /* All-tokens rows of unrouted tokens are the plain x rows. */
  for (int t = 0; t < T; t++)
    for (int i = 0; i < D; i++) SQ_EXPECT_NEAR(sa.in[E - 1][t * D + i], x[t * D + i], 0, 0);
  SQ_EXPECT_EQ_INT(sr.calls_in[E], shared ? 1 : 0);
  if (shared) {
    SQ_EXPECT_EQ_INT(sr.rows_in[E], T);
    for (int i = 0; i < T * D; i++) SQ_EXPECT_NEAR(sr.in[E][i], x[i], 0, 0);
  }
  printf("%-26s k=%d shared=%d gated=%d  max|y - naive| = %.3g\n", what, k, shared, gated, max_err);

  seen_free(&sr);
  seen_free(&sa);
  sq_moe_dispatch_free(&dp);
  free(ws);
  free(y);
  free(y_all);
  free(x);
  free(logits);
  free(ids);
  free(rw);
}

static sq_status hook_stop(void *user, int e, const float *X, int64_t rows, int64_t cols) {
  (void)user, (void)X, (void)rows, (void)cols;
  return e == 2 ? sq_error_set(SQ_ERR_STOPPED, "stop at expert 2") : SQ_OK;
}

static void test_dispatch_errors(const weights *W) {
  int32_t ids[6] = {0, 1, 2, 2, 3, 4};
  float w[6] = {1, 1, 1, 1, 1, 1};
  sq_moe_dispatch d = {0};
  sq_error_clear();
  SQ_EXPECT(sq_moe_dispatch_build(ids, w, 3, 2, E, &d) == SQ_ERR_ARG);
  SQ_EXPECT(strstr(sq_error_message(), "token 1") && strstr(sq_error_message(), "twice"));
  sq_error_clear();
  ids[3] = E;
  SQ_EXPECT(sq_moe_dispatch_build(ids, w, 3, 2, E, &d) == SQ_ERR_ARG);
  SQ_EXPECT(strstr(sq_error_message(), "out of range") != NULL);
  sq_error_clear();
  /* Lists are ascending in tokens whatever the slot order. */
  int32_t ids2[6] = {3, 1, 1, 3, 3, 0};
  SQ_EXPECT(sq_moe_dispatch_build(ids2, w, 3, 2, E, &d) == SQ_OK);
  SQ_EXPECT_EQ_INT(d.counts[3], 3);
  int64_t o = d.offsets[3];
  SQ_EXPECT(d.tokens[o] == 0 && d.tokens[o + 1] == 1 && d.tokens[o + 2] == 2);
  /* A failing hook stops the block with its status. */
  sq_moe_expert ex[E];
  for (int e = 0; e < E; e++) ex[e] = (sq_moe_expert){W->gate[e], W->up[e], W->down[e]};
  sq_moe_block blk = {.hidden = D, .ff = FF, .n_experts = E, .experts = ex};
  float x[3 * D] = {0}, y[3 * D];
  void *ws = aligned_alloc(16, (sq_moe_workspace_bytes(&blk, 3) + 15) & ~(size_t)15);
  sq_moe_hooks hk = {hook_stop, NULL, NULL, 1};
  SQ_EXPECT(sq_moe_forward(&blk, x, &d, &hk, ws, y) == SQ_ERR_STOPPED);
  sq_error_clear();
  free(ws);
  sq_moe_dispatch_free(&d);
}

int main(void) {
  uint64_t s = 0xb10c;
  weights W;
  for (int e = 0; e < E; e++) {
    W.gate[e] = mn_alloc_rand((size_t)FF * D, &s, 0.3);
    W.up[e] = mn_alloc_rand((size_t)FF * D, &s, 0.3);
    W.down[e] = mn_alloc_rand((size_t)D * FF, &s, 0.3);
  }
  W.sgate = mn_alloc_rand((size_t)SFF * D, &s, 0.3);
  W.sup = mn_alloc_rand((size_t)SFF * D, &s, 0.3);
  W.sdown = mn_alloc_rand((size_t)D * SFF, &s, 0.3);
  W.shared_gate = mn_alloc_rand(D, &s, 0.5);
  W.router = mn_alloc_rand((size_t)E * D, &s, 1.0);
  float bias[E] = {0.1f, -0.05f, 0.0f, 0.2f, -0.1f, -0.5f};

  sq_moe_router_cfg mixtral = {
      .kind = SQ_MOE_ROUTER_SOFTMAX, .n_experts = E, .top_k = 2, .norm_topk_prob = 1};
  sq_moe_router_cfg qwen = {.kind = SQ_MOE_ROUTER_SOFTMAX, .n_experts = E, .top_k = 3};
  sq_moe_router_cfg ds = {.kind = SQ_MOE_ROUTER_DEEPSEEK_V3,
                          .n_experts = E,
                          .top_k = 2,
                          .norm_topk_prob = 1,
                          .n_group = 3,
                          .topk_group = 2,
                          .routed_scaling_factor = 2.5f,
                          .e_score_correction_bias = bias};
  sq_moe_router_cfg l4 = {.kind = SQ_MOE_ROUTER_LLAMA4, .n_experts = E, .top_k = 1};
  sq_moe_router_cfg l4k2 = {.kind = SQ_MOE_ROUTER_LLAMA4, .n_experts = E, .top_k = 2};
  run_case("mixtral", &mixtral, &W, 0, 0, 1);
  run_case("qwen2-moe (gated shared)", &qwen, &W, 1, 1, 2);
  run_case("deepseek-v3 (shared)", &ds, &W, 1, 0, 3);
  run_case("llama4 (shared)", &l4, &W, 1, 0, 4);
  run_case("llama4 k=2 (scaled input)", &l4k2, &W, 0, 0, 5);
  test_dispatch_errors(&W);

  for (int e = 0; e < E; e++) {
    free(W.gate[e]);
    free(W.up[e]);
    free(W.down[e]);
  }
  free(W.sgate);
  free(W.sup);
  free(W.sdown);
  free(W.shared_gate);
  free(W.router);
  return sq_test_result("test_moe_block");
}
