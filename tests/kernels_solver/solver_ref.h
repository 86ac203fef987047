/* Independent references for the solver tests: data generators, a naive
 * double-precision Hessian, a naive double Cholesky / inverse / upper factor
 * of the inverse, and plain RTN. Written from the papers' equations with
 * plain loops; they share nothing with kernels/cpu/ but quant_math.h. */
#ifndef SQ_TESTS_SOLVER_REF_H
#define SQ_TESTS_SOLVER_REF_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/quant_math.h"

static uint64_t ref_rng = 0x9E3779B97F4A7C15ULL;
static inline double ref_unif(void) { /* splitmix64 -> [0, 1) */
  uint64_t z = (ref_rng += 0x9E3779B97F4A7C15ULL);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  z ^= z >> 31;
  return (double)(z >> 11) / 9007199254740992.0;
}
static inline double ref_gauss(void) {
  double u = ref_unif() + 1e-12, v = ref_unif();
  return sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v);
}

/* X (T, d): correlated (a shared low-rank part) with a few outlier channels. */
static inline void ref_make_x(float *X, int64_t T, int64_t d) {
  const int rank = 4;
  double *mix = malloc(sizeof(double) * (size_t)(rank * d));
  for (int64_t i = 0; i < rank * d; ++i) mix[i] = ref_gauss();
  for (int64_t t = 0; t < T; ++t) {
    double z[4];
    for (int k = 0; k < rank; ++k) z[k] = ref_gauss();
    for (int64_t j = 0; j < d; ++j) {
      double v = 0.3 * ref_gauss();
      for (int k = 0; k < rank; ++k) v += z[k] * mix[k * d + j];
      if (j % 17 == 3) v *= 8.0; /* outlier channels */
      X[t * d + j] = (float)v;
    }
  }
  free(mix);
}

static inline void ref_make_w(float *W, int64_t n) {
  for (int64_t i = 0; i < n; ++i) W[i] = (float)(0.05 * ref_gauss());
}

/* H = 2/T X^T X in double, returned as float (d, d). */
static inline void ref_hessian(const float *X, int64_t T, int64_t d, float *H) {
  for (int64_t i = 0; i < d; ++i)
    for (int64_t j = 0; j < d; ++j) {
      double s = 0;
      for (int64_t t = 0; t < T; ++t) s += (double)X[t * d + i] * (double)X[t * d + j];
      H[i * d + j] = (float)(2.0 * s / (double)T);
    }
}

/* In place: A (n, n) SPD -> lower L with A = L L^T (upper part untouched). */
static inline int ref_cholesky(double *A, int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    double s = A[j * n + j];
    for (int64_t k = 0; k < j; ++k) s -= A[j * n + k] * A[j * n + k];
    if (!(s > 0)) return -1;
    double l = sqrt(s);
    A[j * n + j] = l;
    for (int64_t i = j + 1; i < n; ++i) {
      double t = A[i * n + j];
      for (int64_t k = 0; k < j; ++k) t -= A[i * n + k] * A[j * n + k];
      A[i * n + j] = t / l;
    }
  }
  return 0;
}

/* U (n, n) upper with (Hd)^-1 = U^T U, Hd = H (dead diag -> 1) + damp I, H
 * given in the order perm (NULL: identity). Returns 0, or -1 if not SPD. */
static inline int ref_hinv_upper(const float *H, const int64_t *perm, int64_t n, double damp_frac,
                                 double *U) {
  double *A = calloc((size_t)(n * n), sizeof(double));
  double *Inv = calloc((size_t)(n * n), sizeof(double));
  double mean = 0;
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j) {
      int64_t pi = perm ? perm[i] : i, pj = perm ? perm[j] : j;
      A[i * n + j] = H[pi * n + pj];
    }
  for (int64_t i = 0; i < n; ++i) {
    if (A[i * n + i] == 0) A[i * n + i] = 1;
    mean += A[i * n + i];
  }
  mean /= (double)n;
  for (int64_t i = 0; i < n; ++i) A[i * n + i] += (double)(float)(damp_frac * mean);
  int rc = ref_cholesky(A, n);
  if (rc == 0) {
    /* Inverse column by column: solve L y = e_c, then L^T x = y. */
    double *y = malloc(sizeof(double) * (size_t)n);
    for (int64_t c = 0; c < n; ++c) {
      for (int64_t i = 0; i < n; ++i) {
        double s = (i == c);
        for (int64_t k = 0; k < i; ++k) s -= A[i * n + k] * y[k];
        y[i] = s / A[i * n + i];
      }
      for (int64_t i = n - 1; i >= 0; --i) {
        double s = y[i];
        for (int64_t k = i + 1; k < n; ++k) s -= A[k * n + i] * Inv[k * n + c];
        Inv[i * n + c] = s / A[i * n + i];
      }
    }
    free(y);
    /* Upper factor of the inverse: Inv = U^T U. */
    memset(U, 0, sizeof(double) * (size_t)(n * n));
    for (int64_t i = 0; i < n && rc == 0; ++i) {
      double s = Inv[i * n + i];
      for (int64_t k = 0; k < i; ++k) s -= U[k * n + i] * U[k * n + i];
      if (!(s > 0)) {
        rc = -1;
        break;
      }
      U[i * n + i] = sqrt(s);
      for (int64_t j = i + 1; j < n; ++j) {
        double t = Inv[i * n + j];
        for (int64_t k = 0; k < i; ++k) t -= U[k * n + i] * U[k * n + j];
        U[i * n + j] = t / U[i * n + i];
      }
    }
  }
  free(A);
  free(Inv);
  return rc;
}

/* Plain RTN of W (d_out, d_in) with contiguous groups: codes and dequant. */
static inline void ref_rtn(const sq_qargs *q, const float *W, int64_t d_out, int64_t d_in,
                           int8_t *codes, float *deq) {
  float tlo = W[0], thi = W[0];
  for (int64_t i = 0; i < d_out * d_in; ++i) {
    tlo = fminf(tlo, W[i]);
    thi = fmaxf(thi, W[i]);
  }
  int64_t gs = q->strategy == SQ_QSTRAT_GROUP ? q->group_size : d_in;
  for (int64_t r = 0; r < d_out; ++r)
    for (int64_t c0 = 0; c0 < d_in; c0 += gs) {
      int64_t e = c0 + gs < d_in ? c0 + gs : d_in;
      float lo = W[r * d_in + c0], hi = lo;
      for (int64_t j = c0; j < e; ++j) {
        lo = fminf(lo, W[r * d_in + j]);
        hi = fmaxf(hi, W[r * d_in + j]);
      }
      if (q->strategy == SQ_QSTRAT_TENSOR) {
        lo = tlo;
        hi = thi;
      }
      float s;
      int z;
      sq_q_int_params(lo, hi, q->num_bits, q->symmetric, q->scale_dtype, &s, &z);
      for (int64_t j = c0; j < e; ++j) {
        int c = sq_q_int_quantize(W[r * d_in + j], s, z, q->num_bits);
        codes[r * d_in + j] = (int8_t)c;
        deq[r * d_in + j] = sq_q_int_dequantize(c, s, z, q->scale_dtype);
      }
    }
}

/* ||X (W - Q)^T||_F in double: X (T, d_in), W, Q (d_out, d_in). */
static inline double ref_out_err(const float *X, int64_t T, const float *W, const float *Q,
                                 int64_t d_out, int64_t d_in) {
  double s = 0;
  for (int64_t t = 0; t < T; ++t)
    for (int64_t r = 0; r < d_out; ++r) {
      double v = 0;
      for (int64_t j = 0; j < d_in; ++j)
        v += (double)X[t * d_in + j] * ((double)W[r * d_in + j] - (double)Q[r * d_in + j]);
      s += v * v;
    }
  return sqrt(s);
}

#endif
