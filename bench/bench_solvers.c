/* bench_solvers: Hessian accumulation (ssyrk), GPTQ and SparseGPT solve
 * times on the CPU, each set against this machine's OpenBLAS sgemm speed
 * measured in the same run. Checks while it runs: the Hessian is finite and
 * symmetric, GPTQ codes are in range and its loss finite, SparseGPT's 2:4
 * pattern holds. Any failed check gives exit 1.
 *   GPTQ ceiling:      (2 d_out d_in^2 + d_in^3) FLOP at sgemm speed (target: within 2x)
 *   Hessian ceiling:   d_in^2 tokens FLOP (syrk) at sgemm speed (target: >= 70%)
 * usage: bench_solvers [--small] [--shape D_IN,D_OUT,TOKENS]... [--skip-sparsegpt] */
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "kernels/gptq.h"
#include "kernels/hessian.h"
#include "kernels/sparsegpt.h"

static float frand(uint64_t *s) {
  *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
  return (float)((double)(*s >> 11) / 9007199254740992.0 - 0.5);
}

static double sgemm_gflops(int64_t n) {
  float *a = malloc(sizeof(float) * (size_t)(n * n)), *b = malloc(sizeof(float) * (size_t)(n * n)),
        *c = calloc((size_t)(n * n), sizeof(float));
  uint64_t s = 1;
  for (int64_t i = 0; i < n * n; ++i) a[i] = frand(&s), b[i] = frand(&s);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)n, (int)n, (int)n, 1.0f, a, (int)n,
              b, (int)n, 0.0f, c, (int)n); /* warm-up */
  double best = 0;
  for (int rep = 0; rep < 3; ++rep) {
    double t0 = sq_time_now();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)n, (int)n, (int)n, 1.0f, a,
                (int)n, b, (int)n, 0.0f, c, (int)n);
    double g = 2.0 * (double)n * n * n / (sq_time_now() - t0) / 1e9;
    if (g > best) best = g;
  }
  free(a);
  free(b);
  free(c);
  return best;
}

static int run_shape(int64_t d_in, int64_t d_out, int64_t T, double peak, int do_sgpt) {
  int fails = 0;
  char buf[32];
  printf("shape d_in=%lld d_out=%lld tokens=%lld\n", (long long)d_in, (long long)d_out,
         (long long)T);
  float *X = malloc(sizeof(float) * (size_t)(T * d_in));
  float *W = malloc(sizeof(float) * (size_t)(d_out * d_in));
  float *H = malloc(sizeof(float) * (size_t)(d_in * d_in));
  if (!X || !W || !H) {
    fprintf(stderr, "bench_solvers: out of memory\n");
    return 1;
  }
  uint64_t s = 7;
  /* correlated activations: a shared component per token */
  for (int64_t t = 0; t < T; ++t) {
    float z = frand(&s);
    for (int64_t j = 0; j < d_in; ++j) X[t * d_in + j] = frand(&s) + z * (j % 5 == 0 ? 4.0f : 1.0f);
  }
  for (int64_t i = 0; i < d_out * d_in; ++i) W[i] = 0.05f * frand(&s);

  sq_hessian h;
  if (sq_hessian_init(&h, d_in, 0, "bench") != SQ_OK) return 1;
  const int64_t tile = 2048;
  double t0 = sq_time_now();
  for (int64_t t = 0; t < T; t += tile)
    sq_hessian_accumulate(&h, X + t * d_in, T - t < tile ? T - t : tile, "bench");
  double th = sq_time_now() - t0;
  sq_hessian_finalize(&h, H, "bench");
  sq_hessian_free(&h);
  for (int64_t i = 0; i < d_in; i += 97)
    for (int64_t j = 0; j < d_in; j += 89)
      if (!isfinite(H[i * d_in + j]) || H[i * d_in + j] != H[j * d_in + i]) ++fails;
  double hflop = (double)d_in * (double)d_in * (double)T; /* syrk: half of 2 d^2 T */
  printf("  hessian  %8.3f s  %7.1f GFLOP/s  = %.0f%% of sgemm (target >= 70%%)\n", th,
         hflop / th / 1e9, 100.0 * hflop / th / 1e9 / peak);

  sq_gptq_opts o = sq_gptq_opts_default();
  o.q.strategy = SQ_QSTRAT_GROUP;
  o.q.group_size = 128;
  o.actorder = SQ_ACTORDER_GROUP;
  int64_t nsc = sq_gptq_scale_count(&o.q, d_out, d_in);
  int8_t *codes = malloc((size_t)(d_out * d_in));
  float *deq = malloc(sizeof(float) * (size_t)(d_out * d_in));
  float *scales = malloc(sizeof(float) * (size_t)nsc);
  int32_t *zps = malloc(sizeof(int32_t) * (size_t)nsc), *gidx = malloc(sizeof(int32_t) * (size_t)d_in);
  size_t wsb = sq_gptq_workspace_bytes(d_out, d_in, &o);
  void *ws = malloc(wsb);
  sq_gptq_out out = {codes, scales, zps, gidx, deq, 0, 0, 0};
  t0 = sq_time_now();
  sq_status st = sq_gptq_quantize("bench.gptq", W, H, d_out, d_in, &o, ws, wsb, &out);
  double tg = sq_time_now() - t0;
  if (st != SQ_OK) {
    fprintf(stderr, "bench_solvers: GPTQ failed: %s\n", sq_error_message());
    ++fails;
  }
  int64_t bad = 0;
  for (int64_t i = 0; i < d_out * d_in; ++i) bad += codes[i] < -8 || codes[i] > 7;
  if (bad || !isfinite(out.loss)) ++fails;
  double gflop = (2.0 * d_out * (double)d_in * d_in + (double)d_in * d_in * d_in) / 1e9;
  double ideal = gflop / peak;
  printf("  gptq     %8.3f s  (ceiling %.3f s at sgemm speed: %.2fx, target <= 2x)  loss %.4g  "
         "workspace %s\n",
         tg, ideal, tg / ideal, out.loss, sq_format_bytes(wsb, buf, sizeof(buf)));
  free(ws);
  if (do_sgpt) {
    sq_sparsegpt_opts so = sq_sparsegpt_opts_default();
    so.prune_n = 2;
    so.prune_m = 4;
    uint8_t *mask = malloc((size_t)(d_out * d_in));
    sq_sparsegpt_out sout = {deq, mask, NULL, NULL, NULL, 0, 0};
    t0 = sq_time_now();
    st = sq_sparsegpt_prune("bench.sparsegpt", W, H, d_out, d_in, &so, NULL, 0, &sout);
    double ts = sq_time_now() - t0;
    if (st != SQ_OK) {
      fprintf(stderr, "bench_solvers: SparseGPT failed: %s\n", sq_error_message());
      ++fails;
    }
    bad = 0;
    for (int64_t i = 0; i < d_out * d_in; i += 4)
      bad += (mask[i] + mask[i + 1] + mask[i + 2] + mask[i + 3]) != 2;
    if (bad || !isfinite(sout.loss)) ++fails;
    printf("  sparsegpt%8.3f s  (ceiling %.3f s: %.2fx)  2:4 loss %.4g\n", ts, ideal, ts / ideal,
           sout.loss);
    free(mask);
  }
  free(codes);
  free(deq);
  free(scales);
  free(zps);
  free(gidx);
  free(X);
  free(W);
  free(H);
  return fails;
}

int main(int argc, char **argv) {
  int64_t shapes[8][3] = {{4096, 4096, 8192}, {4096, 14336, 8192}, {14336, 4096, 8192}};
  int n = 3, custom = 0, do_sgpt = 1;
  for (int i = 1; i < argc; ++i) {
    if (!strcmp(argv[i], "--small")) {
      int64_t sm[3][3] = {{512, 512, 2048}, {512, 1024, 2048}, {1024, 512, 2048}};
      memcpy(shapes, sm, sizeof(sm));
      n = 3;
    } else if (!strcmp(argv[i], "--shape") && i + 1 < argc) {
      long long a, b, c;
      if (sscanf(argv[++i], "%lld,%lld,%lld", &a, &b, &c) != 3 || custom >= 8) {
        fprintf(stderr, "bench_solvers: --shape wants D_IN,D_OUT,TOKENS\n");
        return 1;
      }
      shapes[custom][0] = a, shapes[custom][1] = b, shapes[custom][2] = c;
      n = ++custom;
    } else if (!strcmp(argv[i], "--skip-sparsegpt")) {
      do_sgpt = 0;
    } else {
      printf("usage: bench_solvers [--small] [--shape D_IN,D_OUT,TOKENS]... [--skip-sparsegpt]\n"
             "  Times Hessian accumulation, GPTQ (4-bit, group 128, act-order) and SparseGPT\n"
             "  (2:4) on the CPU against OpenBLAS sgemm measured in the same run.\n"
             "  Default shapes: 4096,4096,8192 4096,14336,8192 14336,4096,8192.\n");
      return strcmp(argv[i], "--help") && strcmp(argv[i], "-h") ? 1 : 0;
    }
  }
  double peak = sgemm_gflops(n && shapes[0][0] <= 1024 ? 1024 : 2048);
  printf("OpenBLAS sgemm: %.1f GFLOP/s (ceiling for the ratios below)\n", peak);
  int fails = 0;
  for (int i = 0; i < n; ++i) fails += run_shape(shapes[i][0], shapes[i][1], shapes[i][2], peak, do_sgpt);
  printf("%s\n", fails ? "CHECKS FAILED" : "all checks passed");
  return fails ? 1 : 0;
}
