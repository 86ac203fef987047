/* CPU reference of kernels/hessian.h: S += 2 x^T x with OpenBLAS syrk on the
 * upper triangle (row-major), kept apart from the count so that partial sums
 * merge exactly; fp64 mode converts the tile in chunks and uses dsyrk. */
#include "kernels/hessian.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/status.h"

sq_status sq_hessian_init(sq_hessian *h, int64_t d, int fp64, const char *name) {
  memset(h, 0, sizeof(*h));
  if (d <= 0)
    return sq_error_set(SQ_ERR_ARG, "hessian of %s: d_in must be positive, got %lld",
                        name ? name : "?", (long long)d);
  size_t n = (size_t)d * (size_t)d;
  if (fp64) {
    h->sum64 = calloc(n, sizeof(double));
    h->chunk = malloc((size_t)SQ_HESSIAN_CHUNK * (size_t)d * sizeof(double));
    if (!h->sum64 || !h->chunk) goto nomem;
  } else {
    h->sum = calloc(n, sizeof(float));
    if (!h->sum) goto nomem;
  }
  h->d = d;
  h->fp64 = fp64 ? 1 : 0;
  return SQ_OK;
nomem:
  sq_hessian_free(h);
  return sq_error_set(SQ_ERR_NOMEM, "hessian of %s: cannot allocate %lld x %lld %s",
                      name ? name : "?", (long long)d, (long long)d, fp64 ? "fp64" : "fp32");
}

void sq_hessian_free(sq_hessian *h) {
  if (!h) return;
  free(h->sum);
  free(h->sum64);
  free(h->chunk);
  memset(h, 0, sizeof(*h));
}

void sq_hessian_reset(sq_hessian *h) {
  size_t n = (size_t)h->d * (size_t)h->d;
  if (h->sum) memset(h->sum, 0, n * sizeof(float));
  if (h->sum64) memset(h->sum64, 0, n * sizeof(double));
  h->count = 0;
}

sq_status sq_hessian_accumulate(sq_hessian *h, const float *x, int64_t T, const char *name) {
  if (!h || h->d <= 0)
    return sq_error_set(SQ_ERR_ARG, "hessian of %s: not initialised", name ? name : "?");
  if (T < 0 || (T > 0 && !x))
    return sq_error_set(SQ_ERR_ARG, "hessian of %s: bad tile (T=%lld)", name ? name : "?",
                        (long long)T);
  if (T == 0) return SQ_OK;
  const int64_t d = h->d;
  if (!h->fp64) {
    /* Row-major, Trans: C(d,d) += alpha * A^T A with A (T, d). */
    cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, (blasint)d, (blasint)T, 2.0f, x,
                (blasint)d, 1.0f, h->sum, (blasint)d);
  } else {
    for (int64_t t0 = 0; t0 < T; t0 += SQ_HESSIAN_CHUNK) {
      int64_t rows = T - t0 < SQ_HESSIAN_CHUNK ? T - t0 : SQ_HESSIAN_CHUNK;
      const float *src = x + t0 * d;
      for (int64_t i = 0; i < rows * d; ++i) h->chunk[i] = (double)src[i];
      cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, (blasint)d, (blasint)rows, 2.0,
                  h->chunk, (blasint)d, 1.0, h->sum64, (blasint)d);
    }
  }
  h->count += T;
  return SQ_OK;
}

sq_status sq_hessian_merge(sq_hessian *dst, const sq_hessian *src, const char *name) {
  if (!dst || !src || dst->d != src->d || dst->fp64 != src->fp64 || dst->d <= 0)
    return sq_error_set(SQ_ERR_ARG,
                        "hessian of %s: cannot merge d=%lld %s into d=%lld %s -- hint: both "
                        "partial Hessians must come from the same module and precision",
                        name ? name : "?", src ? (long long)src->d : -1LL,
                        src && src->fp64 ? "fp64" : "fp32", dst ? (long long)dst->d : -1LL,
                        dst && dst->fp64 ? "fp64" : "fp32");
  size_t n = (size_t)dst->d * (size_t)dst->d;
  if (dst->fp64)
    for (size_t i = 0; i < n; ++i) dst->sum64[i] += src->sum64[i];
  else
    for (size_t i = 0; i < n; ++i) dst->sum[i] += src->sum[i];
  dst->count += src->count;
  return SQ_OK;
}

sq_status sq_hessian_finalize(const sq_hessian *h, float *out, const char *name) {
  if (!h || h->d <= 0 || !out)
    return sq_error_set(SQ_ERR_ARG, "hessian of %s: not initialised", name ? name : "?");
  if (h->count <= 0)
    return sq_error_set(SQ_ERR_ARG,
                        "hessian of %s: no calibration tokens were accumulated -- hint: the "
                        "module saw no input (an MoE expert no token was routed to?)",
                        name ? name : "?");
  const int64_t d = h->d;
  for (int64_t i = 0; i < d; ++i) {
    for (int64_t j = i; j < d; ++j) {
      float v = h->fp64 ? (float)(h->sum64[i * d + j] / (double)h->count)
                        : h->sum[i * d + j] / (float)h->count;
      out[i * d + j] = v;
      out[j * d + i] = v;
    }
  }
  return SQ_OK;
}
