/* Naive double-precision references for the forward-op tests: explicit loops,
 * formulas written from the HF definitions (not from kernels/forward_math.h),
 * double accumulation everywhere. Header-only (static), shared by the tests. */
#ifndef SQ_TESTS_KERNELS_FORWARD_NAIVE_H
#define SQ_TESTS_KERNELS_FORWARD_NAIVE_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>

/* Deterministic uniform in [-a, a) (xorshift). */
static inline float nv_rand(uint64_t *s, float a) {
  *s ^= *s << 13;
  *s ^= *s >> 7;
  *s ^= *s << 17;
  return (float)((double)(*s >> 11) / 9007199254740992.0 * 2.0 - 1.0) * a;
}

static inline float *nv_alloc_rand(size_t n, uint64_t *s, float a) {
  float *p = malloc(n * sizeof(float));
  for (size_t i = 0; i < n; i++) p[i] = nv_rand(s, a);
  return p;
}

/* y = X Wᵀ + b */
static void nv_linear(const double *X, int64_t rows, int64_t din, const float *W, int64_t dout,
                      const float *b, double *Y) {
  for (int64_t r = 0; r < rows; r++)
    for (int64_t o = 0; o < dout; o++) {
      double acc = b ? b[o] : 0.0;
      for (int64_t i = 0; i < din; i++) acc += X[r * din + i] * W[o * din + i];
      Y[r * dout + o] = acc;
    }
}

static void nv_rmsnorm(const double *x, const float *w, int64_t rows, int64_t d, double eps,
                       double *y) {
  for (int64_t r = 0; r < rows; r++) {
    double ms = 0;
    for (int64_t i = 0; i < d; i++) ms += x[r * d + i] * x[r * d + i];
    ms /= (double)d;
    for (int64_t i = 0; i < d; i++) y[r * d + i] = x[r * d + i] / sqrt(ms + eps) * w[i];
  }
}

static inline double nv_silu(double g) {
  return g * (1.0 / (1.0 + exp(-g)));
}

/* RoPE from the formula: pairs (i, i + hd/2) of each head rotated by pos * inv[i],
 * inv given in double (the caller supplies the scaling), pos = row % T. */
static void nv_rope(double *x, int64_t rows, int64_t T, int64_t heads, int64_t hd,
                    const double *inv) {
  int64_t half = hd / 2;
  for (int64_t r = 0; r < rows; r++)
    for (int64_t h = 0; h < heads; h++)
      for (int64_t i = 0; i < half; i++) {
        double a = (double)(r % T) * inv[i];
        double *p = x + r * heads * hd + h * hd;
        double x0 = p[i], x1 = p[i + half];
        p[i] = x0 * cos(a) - x1 * sin(a);
        p[i + half] = x1 * cos(a) + x0 * sin(a);
      }
}

/* Causal GQA attention with explicit loops; head h uses kv head h / (H / KV). */
static void nv_attention(const double *q, const double *k, const double *v, int64_t B, int64_t T,
                         int64_t H, int64_t KV, int64_t hd, double *out) {
  double *p = malloc((size_t)T * sizeof(double));
  for (int64_t b = 0; b < B; b++)
    for (int64_t h = 0; h < H; h++) {
      int64_t g = h / (H / KV);
      for (int64_t i = 0; i < T; i++) {
        const double *qi = q + (b * T + i) * H * hd + h * hd;
        double mx = -INFINITY, sum = 0;
        for (int64_t j = 0; j <= i; j++) {
          const double *kj = k + (b * T + j) * KV * hd + g * hd;
          double s = 0;
          for (int64_t e = 0; e < hd; e++) s += qi[e] * kj[e];
          p[j] = s / sqrt((double)hd);
          if (p[j] > mx) mx = p[j];
        }
        for (int64_t j = 0; j <= i; j++) sum += (p[j] = exp(p[j] - mx));
        double *oi = out + (b * T + i) * H * hd + h * hd;
        for (int64_t e = 0; e < hd; e++) {
          double acc = 0;
          for (int64_t j = 0; j <= i; j++)
            acc += p[j] / sum * v[(b * T + j) * KV * hd + g * hd + e];
          oi[e] = acc;
        }
      }
    }
  free(p);
}

static inline double *nv_to_double(const float *x, size_t n) {
  double *d = malloc(n * sizeof(double));
  for (size_t i = 0; i < n; i++) d[i] = x[i];
  return d;
}

static inline float *nv_to_float(const double *x, size_t n) {
  float *f = malloc(n * sizeof(float));
  for (size_t i = 0; i < n; i++) f[i] = (float)x[i];
  return f;
}

#endif
