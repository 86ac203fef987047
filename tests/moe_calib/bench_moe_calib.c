/* Benchmark of sq_moe_calib (worker/moe_calib.h): one MoE layer's FFN,
 * Mixtral router, random weights, tokens split evenly, experts round-robin.
 * Prints per-rank time (max over ranks) and all-to-all bytes per rank, and
 * checks while it runs: every expert's Hessian count (routed: the allreduced
 * token count; all_tokens: T), Σ counts = T·k, y finite.
 *   mpirun -np 4 --oversubscribe bench_moe_calib [--routed] [--tokens T]
 *          [--experts E] [--hidden d] [--ff f] [--topk k] */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "worker/comm.h"
#include "worker/moe_calib.h"

static uint64_t rs = 88172645463325252ull;
static float urand(float a) {
  rs ^= rs << 13;
  rs ^= rs >> 7;
  rs ^= rs << 17;
  return a * (2.0f * (float)((rs >> 40) * (1.0 / 16777216.0)) - 1.0f);
}

int main(int argc, char **argv) {
  sq_comm *c = NULL;
  if (sq_comm_init_mpi(&argc, &argv, &c) != SQ_OK) {
    fprintf(stderr, "bench_moe_calib: %s\n", sq_error_message());
    return 1;
  }
  int64_t T = 4096, E = 64, D = 512, F = 256, k = 2;
  int all = 1;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--routed"))
      all = 0;
    else if (i + 1 < argc && !strcmp(argv[i], "--tokens"))
      T = atoll(argv[++i]);
    else if (i + 1 < argc && !strcmp(argv[i], "--experts"))
      E = atoll(argv[++i]);
    else if (i + 1 < argc && !strcmp(argv[i], "--hidden"))
      D = atoll(argv[++i]);
    else if (i + 1 < argc && !strcmp(argv[i], "--ff"))
      F = atoll(argv[++i]);
    else if (i + 1 < argc && !strcmp(argv[i], "--topk"))
      k = atoll(argv[++i]);
  }
  const int P = sq_comm_size(c), me = sq_comm_rank(c);
  sq_log_set_level(SQ_LOG_ERROR);
  const int64_t lo = T * me / P, hi = T * (me + 1) / P, n = hi - lo;
  /* Same weights on every rank (same seed); each rank keeps all for brevity
   * but the call reads only the owned ones. */
  float *router = malloc((size_t)E * D * sizeof(float));
  float *w = malloc((size_t)E * 3 * F * D * sizeof(float));
  float *x = malloc((size_t)T * D * sizeof(float));
  float *y = malloc((size_t)(n ? n : 1) * D * sizeof(float));
  int *owner = malloc((size_t)E * sizeof(int));
  sq_moe_expert *ex = calloc((size_t)E, sizeof(sq_moe_expert));
  sq_hessian *gu = calloc((size_t)E, sizeof(sq_hessian)),
             *dn = calloc((size_t)E, sizeof(sq_hessian));
  int64_t *tok = malloc((size_t)E * sizeof(int64_t));
  for (int64_t i = 0; i < E * D; i++) router[i] = urand(1.0f);
  for (int64_t i = 0; i < E * 3 * F * D; i++) w[i] = urand(0.05f);
  for (int64_t i = 0; i < T * D; i++) x[i] = urand(1.0f);
  for (int e = 0; e < E; e++) {
    owner[e] = e % P;
    if (owner[e] != me) continue;
    float *b = w + (size_t)e * 3 * F * D;
    ex[e] = (sq_moe_expert){b, b + F * D, b + 2 * F * D};
    sq_hessian_init(&gu[e], D, 0, "bench");
    sq_hessian_init(&dn[e], F, 0, "bench");
  }
  sq_moe_calib_cfg cfg = sq_moe_calib_cfg_default();
  cfg.router = (sq_moe_router_cfg){
      .kind = SQ_MOE_ROUTER_SOFTMAX, .n_experts = (int)E, .top_k = (int)k, .norm_topk_prob = 1};
  cfg.hidden = D;
  cfg.ff = F;
  cfg.router_w = router;
  cfg.experts = ex;
  cfg.expert_owner = owner;
  cfg.all_tokens = all;
  sq_moe_calib_out out = {.y = y, .gate_up = gu, .down = dn, .expert_tokens = tok};
  sq_status st = sq_moe_calib(c, &cfg, x + lo * D, n, &out);
  if (st != SQ_OK) {
    fprintf(stderr, "bench_moe_calib[%d]: %s\n", me, sq_error_message());
    sq_comm_abort(c, 1);
  }
  int64_t bad = 0, sum = 0;
  for (int e = 0; e < E; e++) {
    sum += tok[e];
    if (owner[e] == me && gu[e].count != (all ? T : tok[e])) bad++;
  }
  for (int64_t i = 0; i < n * D; i++) bad += !isfinite(y[i]);
  if (sum != T * k) bad++;
  float t[1] = {(float)out.stats.seconds};
  double b[3] = {(double)out.stats.bytes_sent, (double)out.stats.bytes_recv, (double)bad};
  if (sq_comm_allreduce_max_f32(c, t, 1, "bench time") != SQ_OK ||
      sq_comm_allreduce_sum_f64(c, b, 3, "bench bytes") != SQ_OK)
    sq_comm_abort(c, 1);
  if (me == 0) {
    char line[256];
    sq_moe_calib_describe(&out.stats, (int)E, line, sizeof line);
    printf(
        "np=%d E=%lld d=%lld ff=%lld k=%lld T=%lld all_tokens=%d: %.3f s per layer (max "
        "over ranks); a2a per rank (mean) sent %.2f MiB recv %.2f MiB; checks %s\n  rank 0: "
        "%s\n",
        P, (long long)E, (long long)D, (long long)F, (long long)k, (long long)T, all, t[0],
        b[0] / P / 1048576.0, b[1] / P / 1048576.0, b[2] == 0 ? "ok" : "FAILED", line);
  }
  for (int e = 0; e < E; e++) {
    sq_hessian_free(&gu[e]);
    sq_hessian_free(&dn[e]);
  }
  free(gu);
  free(dn);
  free(tok);
  free(ex);
  free(owner);
  free(y);
  free(x);
  free(w);
  free(router);
  int rc = b[2] == 0 ? 0 : 1;
  sq_comm_free(c);
  return rc;
}
