/* Routers of kernels/moe.h against brute force: every expert (and group) is
 * sorted with qsort by (score descending, index ascending) -- the documented
 * tie rule -- and the first k taken; DeepSeek-V3 groups are scored explicitly.
 * Scores are computed in double. Logits are drawn from a coarse grid (ties on
 * purpose) and from a continuum; expert ids must match exactly, weights within
 * 1e-5 relative. Also: all-equal logits, bad configurations and NaN. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/forward.h"
#include "kernels/moe.h"
#include "moe_naive.h"
#include "test_util.h"

typedef struct scored {
  double v;
  int i;
} scored;

static int cmp_scored(const void *a, const void *b) {
  const scored *x = a, *y = b;
  if (x->v != y->v) return x->v > y->v ? -1 : 1;
  return x->i < y->i ? -1 : (x->i > y->i);
}

/* Brute-force top-k of v[i] over the listed candidates: sort all, take k. */
static void brute_topk(const double *v, const int *cand, int n, int k, int *out) {
  scored *s = malloc((size_t)n * sizeof *s);
  for (int j = 0; j < n; j++) s[j] = (scored){v[cand[j]], cand[j]};
  qsort(s, (size_t)n, sizeof *s, cmp_scored);
  for (int j = 0; j < k; j++) out[j] = s[j].i;
  free(s);
}

/* Naive router of one token: ids (k), weights (k). */
static void naive_route(const sq_moe_router_cfg *c, const float *lf, int *ids, double *w) {
  const int E = c->n_experts, k = c->top_k;
  double *l = malloc((size_t)E * sizeof(double)), *p = malloc((size_t)E * sizeof(double));
  int *all = malloc((size_t)E * sizeof(int));
  for (int e = 0; e < E; e++) {
    l[e] = lf[e];
    all[e] = e;
  }
  if (c->kind == SQ_MOE_ROUTER_SOFTMAX) {
    double m = l[0], z = 0;
    for (int e = 1; e < E; e++) m = l[e] > m ? l[e] : m;
    for (int e = 0; e < E; e++) z += exp(l[e] - m);
    for (int e = 0; e < E; e++) p[e] = exp(l[e] - m) / z;
    brute_topk(p, all, E, k, ids);
    double s = 0;
    for (int j = 0; j < k; j++) s += p[ids[j]];
    for (int j = 0; j < k; j++) w[j] = c->norm_topk_prob ? p[ids[j]] / s : p[ids[j]];
  } else if (c->kind == SQ_MOE_ROUTER_LLAMA4) {
    brute_topk(l, all, E, k, ids);
    for (int j = 0; j < k; j++) w[j] = mn_sigmoid(l[ids[j]]);
  } else {
    const int G = c->n_group, per = E / G;
    double *sc = malloc((size_t)E * sizeof(double)), *ch = malloc((size_t)E * sizeof(double));
    double *gs = malloc((size_t)G * sizeof(double));
    int *gidx = malloc((size_t)G * sizeof(int)), *kept = malloc((size_t)G * sizeof(int));
    int *cand = malloc((size_t)E * sizeof(int)), two[2];
    for (int e = 0; e < E; e++) {
      sc[e] = mn_sigmoid(l[e]);
      ch[e] = sc[e] + (c->e_score_correction_bias ? (double)c->e_score_correction_bias[e] : 0.0);
    }
    for (int g = 0; g < G; g++) { /* group score: the two best biased scores of the group */
      brute_topk(ch, all + g * per, per, 2, two);
      gs[g] = ch[two[0]] + ch[two[1]];
      gidx[g] = g;
    }
    brute_topk(gs, gidx, G, c->topk_group, kept);
    int nc = 0;
    for (int e = 0; e < E; e++)
      for (int j = 0; j < c->topk_group; j++)
        if (e / per == kept[j]) cand[nc++] = e;
    brute_topk(ch, cand, nc, k, ids);
    double s = 0;
    for (int j = 0; j < k; j++) s += sc[ids[j]];
    for (int j = 0; j < k; j++)
      w[j] = (c->norm_topk_prob ? sc[ids[j]] / (s + 1e-20) : sc[ids[j]]) *
             (double)c->routed_scaling_factor;
    free(sc);
    free(ch);
    free(gs);
    free(gidx);
    free(kept);
    free(cand);
  }
  free(l);
  free(p);
  free(all);
}

/* grid: logits on multiples of 0.25 in [-2, 2] (many ties), else continuous. */
static void check_router(const char *what, const sq_moe_router_cfg *c, int64_t T, int grid,
                         uint64_t seed) {
  const int E = c->n_experts, k = c->top_k;
  uint64_t s = seed;
  float *logits = malloc((size_t)T * E * sizeof(float));
  for (int64_t i = 0; i < T * E; i++)
    logits[i] = grid ? (float)(mn_randint(&s, 17) - 8) * 0.25f : (float)mn_rand(&s, 3.0);
  int32_t *ids = malloc((size_t)T * k * sizeof(int32_t));
  float *w = malloc((size_t)T * k * sizeof(float));
  sq_status st = sq_moe_route(c, logits, T, ids, w);
  SQ_EXPECT_MSG(st == SQ_OK, "%s: route failed: %s", what, sq_error_message());
  int nid[64];
  double nw[64];
  int bad = 0;
  for (int64_t t = 0; t < T && st == SQ_OK && bad < 5; t++) {
    naive_route(c, logits + t * E, nid, nw);
    for (int j = 0; j < k; j++) {
      if (ids[t * k + j] != nid[j]) {
        sq_test_fail(__FILE__, __LINE__, "%s: token %lld slot %d: expert %d, brute force %d", what,
                     (long long)t, j, ids[t * k + j], nid[j]);
        bad++;
        break;
      }
      if (!(fabs(w[t * k + j] - nw[j]) <= 1e-7 + 1e-5 * fabs(nw[j]))) {
        sq_test_fail(__FILE__, __LINE__, "%s: token %lld slot %d: weight %.9g, brute force %.9g",
                     what, (long long)t, j, (double)w[t * k + j], nw[j]);
        bad++;
        break;
      }
    }
  }
  free(logits);
  free(ids);
  free(w);
}

static void test_all_equal(void) {
  /* All logits equal: lowest indices win, groups too. */
  float logits[16] = {0};
  int32_t ids[4];
  float w[4];
  sq_moe_router_cfg sm = {
      .kind = SQ_MOE_ROUTER_SOFTMAX, .n_experts = 16, .top_k = 4, .norm_topk_prob = 1};
  SQ_EXPECT(sq_moe_route(&sm, logits, 1, ids, w) == SQ_OK);
  for (int j = 0; j < 4; j++) {
    SQ_EXPECT_EQ_INT(ids[j], j);
    SQ_EXPECT_NEAR(w[j], 0.25, 1e-7, 0);
  }
  sq_moe_router_cfg ds = {.kind = SQ_MOE_ROUTER_DEEPSEEK_V3,
                          .n_experts = 16,
                          .top_k = 4,
                          .norm_topk_prob = 1,
                          .n_group = 4,
                          .topk_group = 2,
                          .routed_scaling_factor = 2.5f};
  /* Raise expert 13 (group 3): groups 3 and 0 are kept; 13 first, then 0, 1, 2. */
  logits[13] = 1.0f;
  SQ_EXPECT(sq_moe_route(&ds, logits, 1, ids, w) == SQ_OK);
  int want[4] = {13, 0, 1, 2};
  for (int j = 0; j < 4; j++) SQ_EXPECT_EQ_INT(ids[j], want[j]);
  double s13 = mn_sigmoid(1.0), s0 = 0.5, sum = s13 + 3 * s0;
  SQ_EXPECT_NEAR(w[0], s13 / sum * 2.5, 1e-6, 1e-6);
  SQ_EXPECT_NEAR(w[1], s0 / sum * 2.5, 1e-6, 1e-6);
}

static void test_errors(void) {
  float logits[8] = {0, 1, 2, 3, NAN, 5, 6, 7};
  int32_t ids[2];
  float w[2];
  sq_moe_router_cfg c = {.kind = SQ_MOE_ROUTER_LLAMA4, .n_experts = 8, .top_k = 2};
  sq_error_clear();
  SQ_EXPECT(sq_moe_route(&c, logits, 1, ids, w) == SQ_ERR_NUMERIC);
  SQ_EXPECT(strstr(sq_error_message(), "token 0") != NULL);
  sq_error_clear();
  sq_moe_router_cfg d = {.kind = SQ_MOE_ROUTER_DEEPSEEK_V3,
                         .n_experts = 8,
                         .top_k = 2,
                         .n_group = 3,
                         .topk_group = 1,
                         .routed_scaling_factor = 1};
  SQ_EXPECT(sq_moe_router_check(&d) == SQ_ERR_ARG);
  SQ_EXPECT(strstr(sq_error_message(), "n_group 3") != NULL);
  sq_error_clear();
  d.n_group = 4;
  d.top_k = 3; /* 1 group of 2 experts cannot hold 3 */
  SQ_EXPECT(sq_moe_router_check(&d) == SQ_ERR_ARG);
  sq_error_clear();
  c.top_k = 9;
  SQ_EXPECT(sq_moe_router_check(&c) == SQ_ERR_ARG);
  sq_error_clear();
}

int main(void) {
  uint64_t s = 0x5eed;
  float bias64[64], bias_grid[32];
  for (int e = 0; e < 64; e++) bias64[e] = (float)mn_rand(&s, 0.3);
  for (int e = 0; e < 32; e++) bias_grid[e] = (float)(mn_randint(&s, 5) - 2) * 0.0625f;

  sq_moe_router_cfg mixtral = {
      .kind = SQ_MOE_ROUTER_SOFTMAX, .n_experts = 8, .top_k = 2, .norm_topk_prob = 1};
  sq_moe_router_cfg qwen = {
      .kind = SQ_MOE_ROUTER_SOFTMAX, .n_experts = 60, .top_k = 4, .norm_topk_prob = 0};
  sq_moe_router_cfg llama4 = {.kind = SQ_MOE_ROUTER_LLAMA4, .n_experts = 16, .top_k = 1};
  sq_moe_router_cfg llama4k = {.kind = SQ_MOE_ROUTER_LLAMA4, .n_experts = 16, .top_k = 3};
  /* DeepSeek-V3 shape scaled down: 256/8 groups/4 kept/top 8 -> 64/8/3/6 */
  sq_moe_router_cfg ds = {.kind = SQ_MOE_ROUTER_DEEPSEEK_V3,
                          .n_experts = 64,
                          .top_k = 6,
                          .norm_topk_prob = 1,
                          .n_group = 8,
                          .topk_group = 3,
                          .routed_scaling_factor = 2.5f,
                          .e_score_correction_bias = bias64};
  sq_moe_router_cfg ds_grid = {.kind = SQ_MOE_ROUTER_DEEPSEEK_V3,
                               .n_experts = 32,
                               .top_k = 4,
                               .norm_topk_prob = 0,
                               .n_group = 4,
                               .topk_group = 2,
                               .routed_scaling_factor = 1.0f,
                               .e_score_correction_bias = bias_grid};
  sq_moe_router_cfg ds_nobias = {.kind = SQ_MOE_ROUTER_DEEPSEEK_V3,
                                 .n_experts = 16,
                                 .top_k = 2,
                                 .norm_topk_prob = 1,
                                 .n_group = 1,
                                 .topk_group = 1,
                                 .routed_scaling_factor = 1.0f};
  for (int grid = 0; grid < 2; grid++) {
    check_router("mixtral", &mixtral, 300, grid, 11 + grid);
    check_router("qwen2-moe", &qwen, 300, grid, 21 + grid);
    check_router("llama4 k=1", &llama4, 300, grid, 31 + grid);
    check_router("llama4 k=3", &llama4k, 300, grid, 41 + grid);
    check_router("deepseek-v3", &ds, 300, grid, 51 + grid);
    check_router("deepseek-v3 grid bias", &ds_grid, 300, grid, 61 + grid);
    check_router("deepseek-v3 one group", &ds_nobias, 300, grid, 71 + grid);
  }
  test_all_equal();
  test_errors();
  return sq_test_result("test_moe_router");
}
