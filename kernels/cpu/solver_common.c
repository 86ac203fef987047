/* Shared pieces of the CPU GPTQ / SparseGPT solvers: input checks, the damped
 * inverse-Hessian Cholesky factor with x10 retries, up-front quantization
 * parameters and workspace carving. */
#include "kernels/cpu/solver_common.h"

#include <lapacke.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"

sq_status sq_solver_check_finite(const char *name, const char *what, const float *a,
                                 int64_t rows, int64_t cols) {
  for (int64_t i = 0; i < rows * cols; ++i) {
    if (!isfinite(a[i]))
      return sq_error_set(SQ_ERR_NUMERIC,
                          "%s: %s has %s at [%lld, %lld] -- hint: the checkpoint or the "
                          "calibration activations hold non-finite values",
                          name, what, isnan(a[i]) ? "NaN" : "Inf", (long long)(i / cols),
                          (long long)(i % cols));
  }
  return SQ_OK;
}

sq_status sq_solver_check_qargs(const char *name, const sq_qargs *q) {
  if (q->type != SQ_QTYPE_INT)
    return sq_error_set(SQ_ERR_UNSUPPORTED,
                        "%s: GPTQ/SparseGPT quantize to integers only -- hint: use RTN for fp8",
                        name);
  if (q->num_bits < 2 || q->num_bits > 8)
    return sq_error_set(SQ_ERR_ARG, "%s: num_bits %d not in 2..8", name, q->num_bits);
  if (q->strategy != SQ_QSTRAT_TENSOR && q->strategy != SQ_QSTRAT_CHANNEL &&
      q->strategy != SQ_QSTRAT_GROUP)
    return sq_error_set(SQ_ERR_UNSUPPORTED,
                        "%s: weight strategy must be tensor, channel or group for GPTQ", name);
  if (q->strategy == SQ_QSTRAT_GROUP && q->group_size <= 0)
    return sq_error_set(SQ_ERR_ARG, "%s: group_size %d must be positive", name, q->group_size);
  return SQ_OK;
}

int64_t sq_solver_groups(const sq_qargs *q, int64_t d_in) {
  if (q->strategy != SQ_QSTRAT_GROUP) return 1;
  return (d_in + q->group_size - 1) / q->group_size;
}

static void minmax(const float *a, int64_t n, float *lo, float *hi) {
  float l = a[0], h = a[0];
  for (int64_t i = 1; i < n; ++i) {
    l = fminf(l, a[i]);
    h = fmaxf(h, a[i]);
  }
  *lo = l;
  *hi = h;
}

void sq_solver_static_params(const sq_qargs *q, const float *W, int64_t d_out, int64_t d_in,
                             float *scales, int32_t *zps) {
  float s;
  int z;
  if (q->strategy == SQ_QSTRAT_TENSOR) {
    float lo, hi;
    minmax(W, d_out * d_in, &lo, &hi);
    sq_q_int_params(lo, hi, q->num_bits, q->symmetric, q->scale_dtype, &s, &z);
    scales[0] = s;
    zps[0] = z;
    return;
  }
  int64_t gs = q->strategy == SQ_QSTRAT_GROUP ? q->group_size : d_in;
  int64_t ng = sq_solver_groups(q, d_in);
  for (int64_t r = 0; r < d_out; ++r) {
    for (int64_t g = 0; g < ng; ++g) {
      int64_t c0 = g * gs, n = (c0 + gs <= d_in ? gs : d_in - c0);
      float lo, hi;
      minmax(W + r * d_in + c0, n, &lo, &hi);
      sq_q_int_params(lo, hi, q->num_bits, q->symmetric, q->scale_dtype, &s, &z);
      scales[r * ng + g] = s;
      zps[r * ng + g] = z;
    }
  }
}

void *sq_ws_take(sq_ws_carver *c, size_t n) {
  size_t at = (c->used + 63) & ~(size_t)63;
  c->used = at + n;
  return c->base ? c->base + at : NULL;
}

/* Load A = J H' J into A, where H' = H[perm][perm] + damp on the diagonal
 * (dead diag -> 1) and J reverses the order of rows and columns. */
static void load_damped_reversed(const float *H, const int64_t *perm, int64_t d, float damp,
                                 float *A) {
  for (int64_t i = 0; i < d; ++i) {
    const int64_t ri = d - 1 - i;
    const float *src = H + (perm ? perm[ri] : ri) * d;
    float *dst = A + i * d;
    for (int64_t j = 0; j < d; ++j) dst[j] = src[perm ? perm[d - 1 - j] : d - 1 - j];
    if (dst[i] == 0.0f) dst[i] = 1.0f;
    dst[i] += damp;
  }
}

/* In place: A[i][j] <-> A[d-1-j][d-1-i] (transpose about the anti-diagonal). */
static void anti_transpose(float *A, int64_t d) {
  for (int64_t i = 0; i < d; ++i)
    for (int64_t j = 0; j + i < d - 1; ++j) {
      float *a = A + i * d + j, *b = A + (d - 1 - j) * d + (d - 1 - i);
      float t = *a;
      *a = *b;
      *b = t;
    }
}

sq_status sq_solver_prepare_hinv(const char *name, const float *H, const int64_t *perm,
                                 float *W, int64_t d_out, int64_t d, float damp_frac,
                                 int retries, float *Hinv, float *damp_out) {
  /* Dead inputs (never active in calibration) carry no information. */
  double mean = 0.0;
  for (int64_t i = 0; i < d; ++i) {
    int64_t pi = perm ? perm[i] : i;
    float h = H[pi * d + pi];
    if (h == 0.0f) {
      for (int64_t r = 0; r < d_out; ++r) W[r * d + i] = 0.0f;
      h = 1.0f;
    }
    mean += h;
  }
  mean /= (double)d;
  float damp = (float)(damp_frac * mean);
  for (int attempt = 0;; ++attempt) {
    load_damped_reversed(H, perm, d, damp, Hinv);
    /* The sweep wants the upper factor U of (H')^-1 = U^T U. With J the
     * reversal and J H' J = L L^T, U = J L^-1 J: one Cholesky and one
     * triangular inverse (2d^3/3 flops) instead of Cholesky, inverse and a
     * second Cholesky (4d^3/3). A is symmetric, so its row-major storage is its
     * column-major self; the column-major lower L^-1 sits in the row-major
     * upper triangle, and transposing about the anti-diagonal turns it into
     * J L^-1 J, read row-major. */
    const char *step = "cholesky";
    lapack_int info = LAPACKE_spotrf(LAPACK_COL_MAJOR, 'L', (lapack_int)d, Hinv, (lapack_int)d);
    if (info == 0) {
      step = "triangular inverse";
      info = LAPACKE_strtri(LAPACK_COL_MAJOR, 'L', 'N', (lapack_int)d, Hinv, (lapack_int)d);
    }
    if (info == 0) anti_transpose(Hinv, d);
    if (info == 0) {
      for (int64_t i = 1; i < d; ++i) memset(Hinv + i * d, 0, (size_t)i * sizeof(float));
      for (int64_t i = 0; i < d; ++i)
        if (!isfinite(Hinv[i * d + i]) || Hinv[i * d + i] <= 0.0f) info = (lapack_int)(i + 1);
      if (info == 0) {
        *damp_out = damp;
        return SQ_OK;
      }
      step = "finiteness of the inverse factor";
    }
    if (info < 0)
      return sq_error_set(SQ_ERR_INTERNAL, "%s: LAPACK %s: bad argument %d", name, step,
                          (int)-info);
    if (attempt >= retries)
      return sq_error_set(SQ_ERR_NUMERIC,
                          "%s: Hessian is not positive definite (%s failed at column %d) even "
                          "with damping %g after %d retries -- hint: raise dampening_frac, use "
                          "more calibration samples, or check the module's inputs",
                          name, step, (int)info, (double)damp, retries);
    /* x10 keeps the sign, as raising dampening_frac would; zero damping
     * (damp_frac 0) starts from 1% of |mean diag|. */
    float next = damp != 0.0f ? damp * 10.0f : (float)(mean != 0.0 ? 0.01 * fabs(mean) : 1e-6);
    sq_log_warn("%s: %s failed at column %d with damping %g; retrying with %g (%d/%d)", name,
                step, (int)info, (double)damp, (double)next, attempt + 1, retries);
    damp = next;
  }
}

sq_status sq_solver_workspace(const char *name, const char *what, void *ws, size_t ws_bytes,
                              size_t need, void **owned, sq_ws_carver *c) {
  *owned = NULL;
  if (!ws) {
    *owned = malloc(need);
    if (!*owned)
      return sq_error_set(SQ_ERR_NOMEM, "%s: cannot allocate the %s workspace (%zu bytes)", name,
                          what, need);
    ws = *owned;
  } else if (ws_bytes < need) {
    return sq_error_set(SQ_ERR_ARG, "%s: %s workspace of %zu bytes, %zu needed", name, what,
                        ws_bytes, need);
  }
  c->base = (char *)(((uintptr_t)ws + 63) & ~(uintptr_t)63);
  c->used = 0;
  return SQ_OK;
}
