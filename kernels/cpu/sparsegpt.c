/* CPU reference of kernels/sparsegpt.h: SparseGPT with the adaptive mask per
 * block (unstructured) or per M columns (N:M), optional joint quantization,
 * error propagation inside the block row by row and one cblas_sgemm per block
 * for the rest of the matrix. */
#include "kernels/sparsegpt.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu/solver_common.h"
#include "kernels/gptq.h"

sq_sparsegpt_opts sq_sparsegpt_opts_default(void) {
  sq_sparsegpt_opts o;
  memset(&o, 0, sizeof(o));
  o.sparsity = 0.5f;
  o.block_size = 128;
  o.damp_frac = 0.01f;
  o.damp_retries = 4;
  o.q.num_bits = 4;
  o.q.type = SQ_QTYPE_INT;
  o.q.symmetric = 1;
  o.q.strategy = SQ_QSTRAT_CHANNEL;
  o.q.group_size = 128;
  o.q.scale_dtype = SQ_DTYPE_F32;
  return o;
}

typedef struct sgpt_ws {
  float *U;       /* (d_in, d_in) upper Cholesky factor of H^-1 */
  float *E;       /* (d_out, B) scaled errors of the block */
  uint8_t *prune; /* (d_out, B) 1 = pruned, for the current block */
  uint64_t *keys; /* (d_out, B) selection keys (unstructured) */
} sgpt_ws;

static size_t carve(sq_ws_carver *c, sgpt_ws *w, int64_t d_out, int64_t d_in, int64_t B) {
  w->U = sq_ws_take(c, (size_t)(d_in * d_in) * sizeof(float));
  w->E = sq_ws_take(c, (size_t)(d_out * B) * sizeof(float));
  w->prune = sq_ws_take(c, (size_t)(d_out * B));
  w->keys = sq_ws_take(c, (size_t)(d_out * B) * sizeof(uint64_t));
  return c->used + 64;
}

size_t sq_sparsegpt_workspace_bytes(int64_t d_out, int64_t d_in, const sq_sparsegpt_opts *opts) {
  sq_ws_carver c = {NULL, 0};
  sgpt_ws w;
  int64_t B = opts && opts->block_size > 0 ? opts->block_size : 128;
  return carve(&c, &w, d_out, d_in, B);
}

/* Score w^2 / d^2 as an order-preserving key: non-negative floats compare like
 * their bit patterns; the low half makes keys unique (ties by position). */
static uint64_t score_key(float x, float d, uint64_t pos) {
  float s = (x * x) / (d * d);
  uint32_t bits;
  memcpy(&bits, &s, sizeof(bits));
  return ((uint64_t)bits << 32) | pos;
}

static void swap64(uint64_t *a, uint64_t *b) {
  uint64_t t = *a;
  *a = *b;
  *b = t;
}

/* The k-th smallest (0-based) of n distinct keys; reorders a. */
static uint64_t select_kth(uint64_t *a, int64_t n, int64_t k) {
  int64_t lo = 0, hi = n - 1;
  while (hi > lo) {
    int64_t mid = lo + (hi - lo) / 2;
    if (a[mid] < a[lo]) swap64(&a[mid], &a[lo]);
    if (a[hi] < a[lo]) swap64(&a[hi], &a[lo]);
    if (a[hi] < a[mid]) swap64(&a[hi], &a[mid]);
    uint64_t pivot = a[mid];
    int64_t i = lo, j = hi;
    while (i <= j) {
      while (a[i] < pivot) ++i;
      while (a[j] > pivot) --j;
      if (i <= j) {
        swap64(&a[i], &a[j]);
        ++i;
        --j;
      }
    }
    if (k <= j)
      hi = j;
    else if (k >= i)
      lo = i;
    else
      return a[k];
  }
  return a[k];
}

static sq_status check_args(const char *name, const float *W, const float *H, int64_t d_out,
                            int64_t d_in, const sq_sparsegpt_opts *o,
                            const sq_sparsegpt_out *out) {
  if (!W || !H || !o || !out || !out->weight)
    return sq_error_set(SQ_ERR_ARG, "%s: SparseGPT needs W, H, options and out->weight", name);
  if (d_out <= 0 || d_in <= 0 || o->block_size <= 0)
    return sq_error_set(SQ_ERR_ARG, "%s: bad shape (%lld, %lld) or block_size %lld", name,
                        (long long)d_out, (long long)d_in, (long long)o->block_size);
  if (o->prune_n < 0 || (o->prune_n > 0 && (o->prune_m <= o->prune_n || o->prune_m > 64)))
    return sq_error_set(SQ_ERR_ARG, "%s: bad N:M pattern %d:%d", name, o->prune_n, o->prune_m);
  if (o->prune_n > 0 && (o->block_size % o->prune_m || d_in % o->prune_m))
    return sq_error_set(SQ_ERR_ARG,
                        "%s: N:M %d:%d needs d_in (%lld) and block_size (%lld) to be "
                        "multiples of M",
                        name, o->prune_n, o->prune_m, (long long)d_in, (long long)o->block_size);
  if (o->prune_n == 0 && !(o->sparsity >= 0.0f && o->sparsity < 1.0f))
    return sq_error_set(SQ_ERR_ARG, "%s: sparsity %g not in [0, 1)", name, (double)o->sparsity);
  if (!(o->damp_frac >= 0.0f) || o->damp_retries < 0)
    return sq_error_set(SQ_ERR_ARG, "%s: bad damping (frac %g, retries %d)", name,
                        (double)o->damp_frac, o->damp_retries);
  if (o->quantize) {
    SQ_CHECK(sq_solver_check_qargs(name, &o->q));
    if (!out->codes || !out->scales || !out->zero_points)
      return sq_error_set(SQ_ERR_ARG, "%s: joint quantization needs codes/scales/zero_points",
                          name);
  }
  SQ_CHECK(sq_solver_check_finite(name, "weight", W, d_out, d_in));
  SQ_CHECK(sq_solver_check_finite(name, "Hessian", H, d_in, d_in));
  return SQ_OK;
}

/* Unstructured: prune exactly floor(n * sparsity) entries of the block with
 * the smallest w^2 / U_kk^2 (current, error-updated weights). */
static void block_mask_unstructured(const sgpt_ws *w, const float *Wt, int64_t d_out,
                                    int64_t d_in, int64_t B, int64_t i1, int64_t cnt,
                                    float sparsity) {
  int64_t n = d_out * cnt;
  int64_t k = (int64_t)((double)n * (double)sparsity);
  for (int64_t r = 0; r < d_out; ++r)
    for (int64_t i = 0; i < cnt; ++i)
      w->keys[r * cnt + i] = score_key(Wt[r * d_in + i1 + i], w->U[(i1 + i) * (d_in + 1)],
                                       (uint64_t)(r * cnt + i));
  uint64_t thr = k < n ? select_kth(w->keys, n, k) : UINT64_MAX;
  for (int64_t r = 0; r < d_out; ++r)
    for (int64_t i = 0; i < cnt; ++i)
      w->prune[r * B + i] = k > 0 && score_key(Wt[r * d_in + i1 + i], w->U[(i1 + i) * (d_in + 1)],
                                               (uint64_t)(r * cnt + i)) < thr;
}

sq_status sq_sparsegpt_prune(const char *name, const float *W, const float *H, int64_t d_out,
                             int64_t d_in, const sq_sparsegpt_opts *opts, void *ws,
                             size_t ws_bytes, sq_sparsegpt_out *out) {
  if (!name) name = "?";
  SQ_CHECK(check_args(name, W, H, d_out, d_in, opts, out));
  const int64_t B = opts->block_size;
  const sq_qargs *q = &opts->q;
  const int64_t ng = sq_solver_groups(q, d_in);
  const int64_t gs = q->strategy == SQ_QSTRAT_GROUP ? q->group_size : d_in;
  const int N = opts->prune_n, M = opts->prune_m;

  size_t need = sq_sparsegpt_workspace_bytes(d_out, d_in, opts);
  void *owned = NULL;
  sq_ws_carver c;
  SQ_CHECK(sq_solver_workspace(name, "SparseGPT", ws, ws_bytes, need, &owned, &c));
  sq_status st = SQ_OK;
  sgpt_ws w;
  carve(&c, &w, d_out, d_in, B);

  float *Wt = out->weight; /* worked on in place: (d_out, d_in) */
  memcpy(Wt, W, (size_t)(d_out * d_in) * sizeof(float));
  if (opts->quantize) sq_solver_static_params(q, W, d_out, d_in, out->scales, out->zero_points);
  SQ_CHECK_GOTO(sq_solver_prepare_hinv(name, H, NULL, Wt, d_out, d_in, opts->damp_frac,
                                       opts->damp_retries, w.U, &out->damp),
                st, done);

  double loss = 0.0;
  for (int64_t i1 = 0; i1 < d_in; i1 += B) {
    const int64_t i2 = i1 + B < d_in ? i1 + B : d_in, cnt = i2 - i1;
    if (N == 0)
      block_mask_unstructured(&w, Wt, d_out, d_in, B, i1, cnt, opts->sparsity);
    for (int64_t r = 0; r < d_out; ++r) {
      float *row = Wt + r * d_in;
      uint8_t *pr = w.prune + r * B;
      float *er = w.E + r * B;
      double rloss = 0.0;
      for (int64_t i = 0; i < cnt; ++i) {
        const int64_t k = i1 + i;
        const float *urow = w.U + k * d_in;
        if (N > 0 && i % M == 0) {
          /* N smallest w^2/d^2 of columns k..k+M-1, ties to the lower column. */
          uint64_t key[64]; /* M <= 64 (checked) */
          const int mm = M;
          for (int j = 0; j < mm; ++j) {
            key[j] = score_key(row[k + j], w.U[(k + j) * (d_in + 1)], (uint64_t)j);
            pr[i + j] = 0;
          }
          for (int t = 0; t < N; ++t) {
            int best = -1;
            for (int j = 0; j < mm; ++j)
              if (!pr[i + j] && (best < 0 || key[j] < key[best])) best = j;
            pr[i + best] = 1;
          }
        }
        const float x = row[k], d = urow[k];
        float qv = pr[i] ? 0.0f : x;
        if (opts->quantize) {
          int64_t sc = q->strategy == SQ_QSTRAT_TENSOR ? 0 : r * ng + k / gs;
          int code = sq_q_int_quantize(qv, out->scales[sc], out->zero_points[sc], q->num_bits);
          out->codes[r * d_in + k] = (int8_t)code;
          qv = sq_q_int_dequantize(code, out->scales[sc], out->zero_points[sc], q->scale_dtype);
        }
        const float err = (x - qv) / d;
        rloss += (double)err * (double)err;
        row[k] = qv;
        er[i] = err;
        if (out->mask) out->mask[r * d_in + k] = !pr[i];
        for (int64_t j = k + 1; j < i2; ++j) row[j] -= err * urow[j];
      }
      loss += rloss;
    }
    if (i2 < d_in)
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (blasint)d_out,
                  (blasint)(d_in - i2), (blasint)cnt, -1.0f, w.E, (blasint)B,
                  w.U + i1 * d_in + i2, (blasint)d_in, 1.0f, Wt + i2, (blasint)d_in);
  }
  out->loss = loss / 2.0;

done:
  free(owned);
  return st;
}
