/* Expert-parallel MoE calibration (worker/moe_calib.h) under mpirun, against
 * the single-process kernel (kernels/moe.h sq_moe_forward with Hessian hooks,
 * itself checked against a naive double loop in tests/kernels_moe) on the FULL
 * token set, recomputed on every rank. Tiny random layers (E = 8, d = 32,
 * ff = 48) for four routers: Mixtral (softmax top-2), Qwen2-MoE (softmax,
 * unnormalised, gated shared expert), DeepSeek-V3 (sigmoid, group-limited,
 * bias; a group biased out so that experts 6 and 7 get no tokens; shared
 * expert) and Llama-4 (top-1, weight on the input, shared expert). For each,
 * tokens split evenly and skewed (a rank with none), experts spread and all on
 * the last rank, all_tokens on and off:
 *   (a) y on every rank equals the reference rows, |Δ| <= 1e-5 + 1e-5·|ref|
 *       (the combine order is the kernel's; bit-identical rows are counted);
 *       and bit-identical to a reference whose router GEMM runs per rank's
 *       token range (as the ranks do) when there is no shared expert;
 *   (b) each expert's Hessians on its owner: count exact, sum BIT-exact
 *       (Llama-4 vs the full-batch reference: within 1e-5 of the largest
 *       entry, as its routing weight scales the input; bit-exact vs the
 *       per-range router reference);
 *       the shared expert's (reduced to its owner): count exact, sum within
 *       1e-5 of the largest entry (a sum of per-rank partial sums);
 *   (c) all_tokens: every expert's count is the total token count;
 *   routed: per-expert counts and RTN flags from the reference's dispatch;
 *   (d) a second run gives identical bits (y and Hessians).
 * With --failpoint it makes one call and reports like the layer driver (for
 * the fail-point tests registered in CMakeLists.txt). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/forward.h"
#include "kernels/hessian.h"
#include "kernels/moe.h"
#include "common/log.h"
#include "test_util.h"
#include "worker/comm.h"
#include "worker/moe_calib.h"

enum { E = 8, D = 32, FF = 48, T_ALL = 53 };

typedef struct layer {
  const char *name;
  sq_moe_router_cfg router;
  int64_t sff; /* 0: no shared expert */
  int shared_gated;
  float *router_w, *bias, *w[E][3], *sw[3], *sgate;
  sq_moe_expert ex[E], shared;
} layer;

static uint64_t rng_state;
static float urand(float a) { /* uniform in [-a, a), xorshift64 */
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return a * (2.0f * (float)((rng_state >> 40) * (1.0 / 16777216.0)) - 1.0f);
}
static float *rand_mat(int64_t n, float a) {
  float *m = malloc((size_t)n * sizeof(float));
  for (int64_t i = 0; i < n; i++) m[i] = urand(a);
  return m;
}

static void layer_make(layer *L, const char *name, sq_moe_router_kind kind, int k, int64_t sff,
                       int gated, uint64_t seed) {
  memset(L, 0, sizeof *L);
  rng_state = seed;
  L->name = name;
  L->router.kind = kind;
  L->router.n_experts = E;
  L->router.top_k = k;
  L->router.norm_topk_prob = kind != SQ_MOE_ROUTER_LLAMA4 && strcmp(name, "qwen2_moe") != 0;
  L->router_w = rand_mat((int64_t)E * D, 1.0f);
  if (kind == SQ_MOE_ROUTER_DEEPSEEK_V3) {
    L->router.n_group = 4;
    L->router.topk_group = 2;
    L->router.routed_scaling_factor = 2.5f;
    L->bias = rand_mat(E, 0.1f);
    L->bias[6] = L->bias[7] = -10.0f; /* group 3 never kept: experts 6, 7 get no tokens */
    L->router.e_score_correction_bias = L->bias;
  }
  float a = 1.0f / sqrtf((float)D), b = 1.0f / sqrtf((float)FF);
  for (int e = 0; e < E; e++) {
    L->w[e][0] = rand_mat(FF * D, a);
    L->w[e][1] = rand_mat(FF * D, a);
    L->w[e][2] = rand_mat(D * FF, b);
    L->ex[e] = (sq_moe_expert){L->w[e][0], L->w[e][1], L->w[e][2]};
  }
  L->sff = sff;
  if (sff) {
    L->sw[0] = rand_mat(sff * D, a);
    L->sw[1] = rand_mat(sff * D, a);
    L->sw[2] = rand_mat(D * sff, 1.0f / sqrtf((float)sff));
    L->shared = (sq_moe_expert){L->sw[0], L->sw[1], L->sw[2]};
  }
  if (gated) L->sgate = rand_mat(D, a);
}

static void layer_free(layer *L) {
  free(L->router_w);
  free(L->bias);
  for (int e = 0; e < E; e++)
    for (int j = 0; j < 3; j++) free(L->w[e][j]);
  for (int j = 0; j < 3; j++) free(L->sw[j]);
  free(L->sgate);
}

/* Hessians: [0, E) routed experts, E the shared expert. */
typedef struct hess {
  sq_hessian gu[E + 1], dn[E + 1];
} hess;

static void hess_init(hess *H, int64_t sff) {
  for (int e = 0; e <= E; e++) {
    sq_hessian_init(&H->gu[e], D, 0, "test");
    sq_hessian_init(&H->dn[e], e < E ? FF : (sff ? sff : 1), 0, "test");
  }
}
static void hess_free(hess *H) {
  for (int e = 0; e <= E; e++) {
    sq_hessian_free(&H->gu[e]);
    sq_hessian_free(&H->dn[e]);
  }
}

static sq_status hook_gu(void *u, int e, const float *X, int64_t rows, int64_t cols) {
  hess *H = u;
  (void)cols;
  return sq_hessian_accumulate(&H->gu[e == SQ_MOE_SHARED ? E : e], X, rows, "ref");
}
static sq_status hook_dn(void *u, int e, const float *X, int64_t rows, int64_t cols) {
  hess *H = u;
  (void)cols;
  return sq_hessian_accumulate(&H->dn[e == SQ_MOE_SHARED ? E : e], X, rows, "ref");
}

static int64_t split_lo(int split, int P, int r);

/* The single-process reference on all tokens: y (T_ALL, D), Hessians, counts.
 * chunks = 0: router logits in one GEMM over all tokens; chunks = P: one GEMM
 * per rank's token range (split), as the ranks compute them. OpenBLAS's
 * result for a row can depend on the batch's row count in the last bit, and
 * Llama-4's routing weight scales the expert INPUT, so only the second form
 * can be bit-identical for it. */
static void reference(const layer *L, const float *x, int all, int chunks, int split, float *y,
                      hess *H, int64_t *cnt) {
  float logits[T_ALL * E], w[T_ALL * 2];
  int32_t ids[T_ALL * 2];
  if (!chunks) sq_fwd_linear(x, T_ALL, D, L->router_w, E, NULL, logits);
  for (int r = 0; r < chunks; r++) {
    int64_t lo = split_lo(split, chunks, r),
            hi = r + 1 < chunks ? split_lo(split, chunks, r + 1) : T_ALL;
    sq_fwd_linear(x + lo * D, hi - lo, D, L->router_w, E, NULL, logits + lo * E);
  }
  SQ_EXPECT(sq_moe_route(&L->router, logits, T_ALL, ids, w) == SQ_OK);
  sq_moe_dispatch d;
  SQ_EXPECT(sq_moe_dispatch_build(ids, w, T_ALL, L->router.top_k, E, &d) == SQ_OK);
  sq_moe_block blk = {.hidden = D,
                      .ff = FF,
                      .n_experts = E,
                      .experts = L->ex,
                      .scale_input = sq_moe_routing_scales_input(L->router.kind),
                      .shared = L->shared,
                      .shared_ff = L->sff,
                      .shared_gate = L->sgate};
  sq_moe_hooks hk = {.gate_up_in = hook_gu, .down_in = hook_dn, .user = H, .all_tokens = all};
  void *ws = aligned_alloc(16, (sq_moe_workspace_bytes(&blk, T_ALL) + 15) / 16 * 16);
  SQ_EXPECT(sq_moe_forward(&blk, x, &d, &hk, ws, y) == SQ_OK);
  memcpy(cnt, d.counts, E * sizeof(int64_t));
  free(ws);
  sq_moe_dispatch_free(&d);
}

static int64_t split_lo(int split, int P, int r) {
  if (split == 0 || P == 1) return (int64_t)T_ALL * r / P;
  /* skewed: rank 0 gets 30 tokens, rank 1 none (P >= 3), the rest evenly */
  if (r == 0) return 0;
  if (P >= 3 && r == 1) return 30;
  int first = P >= 3 ? 2 : 1, n = P - first;
  return 30 + (int64_t)(T_ALL - 30) * (r - first) / n;
}

static sq_status run_calib(const sq_comm *c, const layer *L, int all, int owners_mode,
                           const float *h, int64_t n, float *y, hess *H, int *flags, int64_t *tok,
                           sq_moe_calib_stats *stats) {
  const int P = sq_comm_size(c);
  int owner[E];
  for (int e = 0; e < E; e++) owner[e] = owners_mode == 0 ? (3 * e + 1) % P : P - 1;
  sq_moe_calib_cfg cfg = sq_moe_calib_cfg_default();
  cfg.router = L->router;
  cfg.hidden = D;
  cfg.ff = FF;
  cfg.router_w = L->router_w;
  sq_moe_expert mine[E];
  for (int e = 0; e < E; e++) /* only owned experts' weights are present */
    mine[e] = owner[e] == sq_comm_rank(c) ? L->ex[e] : (sq_moe_expert){NULL, NULL, NULL};
  cfg.experts = mine;
  cfg.expert_owner = owner;
  cfg.shared = L->shared;
  cfg.shared_ff = L->sff;
  cfg.shared_gate = L->sgate;
  cfg.shared_owner = P > 1 ? 1 : 0;
  cfg.all_tokens = all;
  cfg.min_tokens = 12;
  sq_moe_calib_out out = {.y = y,
                          .gate_up = H->gu,
                          .down = H->dn,
                          .shared_gate_up = L->sff ? &H->gu[E] : NULL,
                          .shared_down = L->sff ? &H->dn[E] : NULL,
                          .rtn_fallback = flags,
                          .expert_tokens = tok};
  sq_status st = sq_moe_calib(c, &cfg, h, n, &out);
  if (stats) *stats = out.stats;
  return st;
}

static int64_t n_bitdiff_total;

static void check_case(const sq_comm *c, const layer *L, int all, int split, int owners_mode,
                       const float *x) {
  const int P = sq_comm_size(c), me = sq_comm_rank(c);
  float yref[T_ALL * D], ychunk[T_ALL * D];
  hess R, RC; /* full-batch and per-rank-chunk router logits */
  int64_t cref[E], cchunk[E];
  hess_init(&R, L->sff);
  hess_init(&RC, L->sff);
  reference(L, x, all, 0, split, yref, &R, cref);
  reference(L, x, all, P, split, ychunk, &RC, cchunk);
  const int64_t lo = split_lo(split, P, me), hi = me + 1 < P ? split_lo(split, P, me + 1) : T_ALL;
  const int64_t n = hi - lo;
  float *y[2] = {malloc((size_t)(n ? n : 1) * D * sizeof(float)),
                 malloc((size_t)(n ? n : 1) * D * sizeof(float))};
  hess H[2];
  int flags[E];
  int64_t tok[E];
  sq_moe_calib_stats stats;
  for (int run = 0; run < 2; run++) {
    hess_init(&H[run], L->sff);
    sq_status st =
        run_calib(c, L, all, owners_mode, x + lo * D, n, y[run], &H[run], flags, tok, &stats);
    SQ_EXPECT_MSG(st == SQ_OK, "%s: sq_moe_calib failed: %s", L->name, sq_error_message());
    if (st != SQ_OK) sq_comm_abort(c, 1);
  }
  char what[96];
  snprintf(what, sizeof what, "%s all=%d split=%d owners=%d np=%d rank %d", L->name, all, split,
           owners_mode, P, me);
  /* (a) layer output */
  int64_t bad = 0, bitdiff = 0;
  for (int64_t i = 0; i < n * D; i++) {
    float a = y[0][i], b = yref[lo * D + i];
    if (!(fabsf(a - b) <= 1e-5f + 1e-5f * fabsf(b))) bad++;
    if (memcmp(&a, &b, sizeof a) != 0) bitdiff++;
  }
  n_bitdiff_total += bitdiff;
  if (!L->sff) /* no shared expert: nothing else depends on the batch size */
    SQ_EXPECT_MSG(memcmp(y[0], ychunk + lo * D, (size_t)n * D * sizeof(float)) == 0,
                  "%s: y not bit-identical to the chunked-router reference", what);
  SQ_EXPECT_MSG(bad == 0, "%s: %lld of %lld outputs differ from the reference beyond tolerance",
                what, (long long)bad, (long long)(n * D));
  /* (d) determinism */
  SQ_EXPECT_MSG(memcmp(y[0], y[1], (size_t)n * D * sizeof(float)) == 0, "%s: y not reproducible",
                what);
  int owner[E];
  for (int e = 0; e < E; e++) owner[e] = owners_mode == 0 ? (3 * e + 1) % P : P - 1;
  for (int e = 0; e < E; e++) {
    SQ_EXPECT_MSG(tok[e] == cref[e], "%s: expert %d counted %lld tokens, reference %lld", what, e,
                  (long long)tok[e], (long long)cref[e]);
    int64_t seen = all ? T_ALL : cref[e];
    SQ_EXPECT_MSG(flags[e] == (seen < 12), "%s: expert %d RTN flag %d with %lld tokens", what, e,
                  flags[e], (long long)seen);
    if (owner[e] != me) continue;
    /* (b), (c) */
    for (int which = 0; which < 2; which++) {
      const sq_hessian *g = which ? &H[0].dn[e] : &H[0].gu[e], *r = which ? &R.dn[e] : &R.gu[e];
      const sq_hessian *rc = which ? &RC.dn[e] : &RC.gu[e];
      const sq_hessian *g2 = which ? &H[1].dn[e] : &H[1].gu[e];
      SQ_EXPECT_MSG(g->count == r->count, "%s: expert %d %s count %lld, reference %lld", what, e,
                    which ? "down" : "gate/up", (long long)g->count, (long long)r->count);
      if (all) SQ_EXPECT_EQ_INT(g->count, T_ALL);
      size_t bytes = (size_t)g->d * g->d * sizeof(float);
      SQ_EXPECT_MSG(memcmp(g->sum, rc->sum, bytes) == 0, "%s: expert %d %s Hessian not bit-exact",
                    what, e, which ? "down" : "gate/up");
      /* Against the full-batch reference: bit-exact unless the routing
       * weight scales the input (Llama-4), then within 1e-5 of the largest. */
      float mx = 0.0f;
      int64_t off = 0;
      for (int64_t i = 0; i < r->d * r->d; i++) mx = fmaxf(mx, fabsf(r->sum[i]));
      for (int64_t i = 0; i < r->d * r->d; i++)
        off += L->router.kind == SQ_MOE_ROUTER_LLAMA4
                   ? !(fabsf(g->sum[i] - r->sum[i]) <= 1e-5f * mx)
                   : g->sum[i] != r->sum[i];
      SQ_EXPECT_MSG(off == 0,
                    "%s: expert %d %s Hessian: %lld entries differ from the full-batch "
                    "reference",
                    what, e, which ? "down" : "gate/up", (long long)off);
      SQ_EXPECT_MSG(memcmp(g->sum, g2->sum, bytes) == 0, "%s: expert %d Hessian not reproducible",
                    what, e);
    }
  }
  if (L->sff && me == (P > 1 ? 1 : 0))
    for (int which = 0; which < 2; which++) {
      const sq_hessian *g = which ? &H[0].dn[E] : &H[0].gu[E], *r = which ? &R.dn[E] : &R.gu[E];
      SQ_EXPECT_EQ_INT(g->count, T_ALL);
      SQ_EXPECT_EQ_INT(r->count, T_ALL);
      float mx = 0.0f;
      for (int64_t i = 0; i < r->d * r->d; i++) mx = fmaxf(mx, fabsf(r->sum[i]));
      int64_t off = 0;
      for (int64_t i = 0; i < r->d * r->d; i++)
        off += !(fabsf(g->sum[i] - r->sum[i]) <= 1e-5f * mx);
      SQ_EXPECT_MSG(off == 0, "%s: shared %s Hessian: %lld entries off", what,
                    which ? "down" : "gate/up", (long long)off);
      const sq_hessian *g2 = which ? &H[1].dn[E] : &H[1].gu[E];
      SQ_EXPECT_MSG(memcmp(g->sum, g2->sum, (size_t)g->d * g->d * sizeof(float)) == 0,
                    "%s: shared Hessian not reproducible", what);
    }
  if (me == 0 && split == 0 && owners_mode == 0) {
    char line[256];
    sq_moe_calib_describe(&stats, E, line, sizeof line);
    printf("%-12s all=%d np=%d: %s\n", L->name, all, P, line);
  }
  hess_free(&R);
  hess_free(&RC);
  hess_free(&H[0]);
  hess_free(&H[1]);
  free(y[0]);
  free(y[1]);
}

static int failpoint_main(sq_comm *c) {
  layer L;
  layer_make(&L, "mixtral", SQ_MOE_ROUTER_SOFTMAX, 2, 0, 0, 7);
  float *x = rand_mat((int64_t)T_ALL * D, 1.0f);
  const int P = sq_comm_size(c), me = sq_comm_rank(c);
  const int64_t lo = split_lo(0, P, me), hi = me + 1 < P ? split_lo(0, P, me + 1) : T_ALL;
  float *y = malloc((size_t)T_ALL * D * sizeof(float));
  hess H;
  hess_init(&H, 0);
  int flags[E];
  int64_t tok[E];
  sq_status st = run_calib(c, &L, 1, 0, x + lo * D, hi - lo, y, &H, flags, tok, NULL);
  int rc = 0;
  if (st == SQ_ERR_MPI) {
    fprintf(stderr, "shardq[%d]: error: %s\n", me, sq_error_message());
    sq_comm_abort(c, 1);
  } else if (st != SQ_OK) {
    if (me == 0) fprintf(stderr, "shardq: error: %s\n", sq_error_message());
    rc = 1;
  } else if (me == 0) {
    printf("moe calib: ok on %d ranks\n", P);
  }
  hess_free(&H);
  free(y);
  free(x);
  layer_free(&L);
  return rc;
}

int main(int argc, char **argv) {
  sq_comm *c = NULL;
  if (sq_comm_init_mpi(&argc, &argv, &c) != SQ_OK) {
    fprintf(stderr, "test_moe_calib: %s\n", sq_error_message());
    return 1;
  }
  sq_log_set_level(SQ_LOG_ERROR); /* the RTN-fallback warnings are expected here */
  if (argc > 1 && strcmp(argv[1], "--failpoint") == 0) {
    int rc = failpoint_main(c);
    sq_comm_free(c);
    return rc;
  }
  layer Ls[4];
  layer_make(&Ls[0], "mixtral", SQ_MOE_ROUTER_SOFTMAX, 2, 0, 0, 11);
  layer_make(&Ls[1], "qwen2_moe", SQ_MOE_ROUTER_SOFTMAX, 2, 40, 1, 12);
  layer_make(&Ls[2], "deepseek_v3", SQ_MOE_ROUTER_DEEPSEEK_V3, 2, 2 * FF, 0, 13);
  layer_make(&Ls[3], "llama4", SQ_MOE_ROUTER_LLAMA4, 1, FF, 0, 14);
  rng_state = 99;
  float *x = rand_mat((int64_t)T_ALL * D, 1.0f);
  for (int l = 0; l < 4; l++)
    for (int all = 0; all < 2; all++)
      for (int split = 0; split < 2; split++)
        for (int own = 0; own < 2; own++) check_case(c, &Ls[l], all, split, own, x);
  /* Failures of every rank decide the exit code of every rank. */
  int64_t v[2] = {sq_test_failures, n_bitdiff_total};
  if (sq_comm_allreduce_sum_i64(c, v, 2, "test failures") != SQ_OK) sq_comm_abort(c, 1);
  if (sq_comm_rank(c) == 0)
    printf(
        "np=%d: %lld output values not bit-identical to the single-process kernel "
        "(within tolerance); %lld failed checks over all ranks\n",
        sq_comm_size(c), (long long)v[1], (long long)v[0]);
  if (v[0] && !sq_test_failures) sq_test_failures = 1;
  for (int l = 0; l < 4; l++) layer_free(&Ls[l]);
  free(x);
  sq_comm_free(c);
  return sq_test_result("test_moe_calib");
}
