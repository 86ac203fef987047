/* Shared helpers of the MoE/MLA tests: a deterministic generator and naive
 * double-precision building blocks written from the HF definitions (explicit
 * loops, not the kernels' code). Header-only (static). */
#ifndef SQ_TESTS_KERNELS_MOE_NAIVE_H
#define SQ_TESTS_KERNELS_MOE_NAIVE_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>

/* Deterministic uniform in [-a, a) (xorshift64). */
static inline double mn_rand(uint64_t *s, double a) {
  *s ^= *s << 13;
  *s ^= *s >> 7;
  *s ^= *s << 17;
  return ((double)(*s >> 11) / 9007199254740992.0 * 2.0 - 1.0) * a;
}

/* Uniform integer in [0, n). */
static inline int mn_randint(uint64_t *s, int n) {
  int v = (int)((mn_rand(s, 1.0) + 1.0) * 0.5 * n);
  return v >= n ? n - 1 : v;
}

static inline float *mn_alloc_rand(size_t n, uint64_t *s, double a) {
  float *p = malloc(n * sizeof(float));
  for (size_t i = 0; i < n; i++) p[i] = (float)mn_rand(s, a);
  return p;
}

/* Y (rows, dout) = X (rows, din) · Wᵀ + b, W (dout, din) float, in double. */
static inline void mn_linear(const double *X, int64_t rows, int64_t din, const float *W,
                             int64_t dout, const float *b, double *Y) {
  for (int64_t r = 0; r < rows; r++)
    for (int64_t o = 0; o < dout; o++) {
      double acc = b ? b[o] : 0.0;
      for (int64_t i = 0; i < din; i++) acc += X[r * din + i] * (double)W[o * din + i];
      Y[r * dout + o] = acc;
    }
}

/* y = w * x / sqrt(mean(x^2) + eps), one row per call. */
static inline void mn_rmsnorm_row(const double *x, const float *w, int64_t d, double eps,
                                  double *y) {
  double ms = 0;
  for (int64_t i = 0; i < d; i++) ms += x[i] * x[i];
  double inv = 1.0 / sqrt(ms / (double)d + eps);
  for (int64_t i = 0; i < d; i++) y[i] = (double)w[i] * (x[i] * inv);
}

static inline double mn_sigmoid(double x) {
  return 1.0 / (1.0 + exp(-x));
}

static inline double mn_silu(double g) {
  return g * mn_sigmoid(g);
}

/* One SwiGLU expert on one row: h (ff) = silu(gate·x) * (up·x), out (d) = down·h. */
static inline void mn_expert(const double *x, int64_t d, int64_t ff, const float *gate,
                             const float *up, const float *down, double *h, double *out) {
  for (int64_t f = 0; f < ff; f++) {
    double g = 0, u = 0;
    for (int64_t i = 0; i < d; i++) {
      g += (double)gate[f * d + i] * x[i];
      u += (double)up[f * d + i] * x[i];
    }
    h[f] = mn_silu(g) * u;
  }
  for (int64_t o = 0; o < d; o++) {
    double acc = 0;
    for (int64_t f = 0; f < ff; f++) acc += (double)down[o * ff + f] * h[f];
    out[o] = acc;
  }
}

#endif
