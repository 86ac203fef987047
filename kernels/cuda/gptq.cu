/* CUDA twin of kernels/cpu/gptq.c. Same steps: act-order permutation (sorted
 * on the host from diag(H)), dead inputs, damped cuSOLVER potrf / potri /
 * potrf with x10 retries, then per block one kernel where each thread sweeps
 * one row through the block (rows are independent there) and one cublasSgemm
 * for the lazy update of the rest. Per-element math is quant_math.h. */
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cusolverDn.h>

#include <algorithm>
#include <vector>

extern "C" {
#include "common/log.h"
#include "common/status.h"
#include "kernels/gptq.h"
}

#define CU_TRY(call, what)                                                                    \
  do {                                                                                        \
    cudaError_t e_ = (call);                                                                  \
    if (e_ != cudaSuccess) {                                                                  \
      st = sq_error_set(SQ_ERR_CUDA, "%s: %s: %s", name, what, cudaGetErrorString(e_));       \
      goto fail;                                                                              \
    }                                                                                         \
  } while (0)

__global__ void k_count_nonfinite(const float *a, int64_t n, int *bad) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    if (!isfinite(a[i])) atomicAdd(bad, 1);
}

/* Hp = H[perm][perm] with dead diag -> 1 and + damp; also flags dead columns. */
__global__ void k_load_h(const float *H, const int64_t *perm, int64_t d, float damp, float *A) {
  int64_t n = d * d;
  for (int64_t t = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; t < n; t += (int64_t)gridDim.x * blockDim.x) {
    int64_t i = t / d, j = t % d;
    float v = H[perm[i] * d + perm[j]];
    if (i == j) v = (v == 0.0f ? 1.0f : v) + damp;
    A[t] = v;
  }
}

__global__ void k_permute_w(const float *W, const int64_t *perm, const float *H, int64_t d_out,
                            int64_t d, float *Wp) {
  int64_t n = d_out * d;
  for (int64_t t = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; t < n; t += (int64_t)gridDim.x * blockDim.x) {
    int64_t r = t / d, k = t % d, c = perm[k];
    Wp[t] = W[r * d + c];
    (void)H;
  }
}

__global__ void k_zero_dead(const float *H, const int64_t *perm, int64_t d_out, int64_t d, float *Wp) {
  int64_t n = d_out * d;
  for (int64_t t = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; t < n; t += (int64_t)gridDim.x * blockDim.x) {
    int64_t k = t % d, c = perm[k];
    if (H[c * d + c] == 0.0f) Wp[t] = 0.0f;
  }
}

/* Row-major lower triangle (col-major strict upper) still holds H: clear it. */
__global__ void k_zero_lower(float *U, int64_t d) {
  int64_t n = d * d;
  for (int64_t t = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; t < n; t += (int64_t)gridDim.x * blockDim.x)
    if (t / d > t % d) U[t] = 0.0f;
}

/* Static parameters, one thread per cell; src (d_out, d) row-major. */
__global__ void k_static_params(sq_qargs q, const float *src, int64_t d_out, int64_t d,
                                float *scales, int32_t *zps) {
  int64_t gs = q.strategy == SQ_QSTRAT_GROUP ? q.group_size : d;
  int64_t ng = (d + gs - 1) / gs;
  int64_t cells = q.strategy == SQ_QSTRAT_TENSOR ? 1 : d_out * ng;
  for (int64_t t = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; t < cells; t += (int64_t)gridDim.x * blockDim.x) {
    float lo = INFINITY, hi = -INFINITY;
    if (q.strategy == SQ_QSTRAT_TENSOR) {
      for (int64_t i = 0; i < d_out * d; ++i) lo = fminf(lo, src[i]), hi = fmaxf(hi, src[i]);
    } else {
      int64_t r = t / ng, c0 = (t % ng) * gs, c1 = c0 + gs < d ? c0 + gs : d;
      for (int64_t j = c0; j < c1; ++j) lo = fminf(lo, src[r * d + j]), hi = fmaxf(hi, src[r * d + j]);
    }
    float s;
    int z;
    sq_q_int_params(lo, hi, q.num_bits, q.symmetric, q.scale_dtype, &s, &z);
    scales[t] = s;
    zps[t] = z;
  }
}

/* One thread per row: sweep columns [i1, i2) of the block. */
__global__ void k_gptq_block(sq_qargs q, int dynamic, const float *U, float *Wp, int8_t *Cp,
                             float *E, const int32_t *grp, float *scales, int32_t *zps,
                             double *rloss, int64_t d_out, int64_t d, int64_t B, int64_t i1,
                             int64_t i2) {
  int64_t r = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (r >= d_out) return;
  int64_t gs = q.strategy == SQ_QSTRAT_GROUP ? q.group_size : d;
  int64_t ng = (d + gs - 1) / gs;
  float *row = Wp + r * d;
  float *er = E + r * B;
  double loss = 0.0;
  for (int64_t k = i1; k < i2; ++k) {
    int64_t sc = q.strategy == SQ_QSTRAT_TENSOR ? 0 : r * ng + grp[k];
    if (dynamic && k % gs == 0) {
      int64_t e = k + gs < d ? k + gs : d;
      float lo = INFINITY, hi = -INFINITY;
      for (int64_t j = k; j < e; ++j) {
        float v = row[j];
        if (j >= i2)
          for (int64_t t = 0; t < k - i1; ++t) v -= er[t] * U[(i1 + t) * d + j];
        lo = fminf(lo, v);
        hi = fmaxf(hi, v);
      }
      float s;
      int z;
      sq_q_int_params(lo, hi, q.num_bits, q.symmetric, q.scale_dtype, &s, &z);
      scales[sc] = s;
      zps[sc] = z;
    }
    const float s = scales[sc];
    const int z = zps[sc];
    const float x = row[k], dk = U[k * d + k];
    const int code = sq_q_int_quantize(x, s, z, q.num_bits);
    const float qv = sq_q_int_dequantize(code, s, z, q.scale_dtype);
    const float err = (x - qv) / dk;
    loss += (double)err * (double)err;
    Cp[r * d + k] = (int8_t)code;
    row[k] = qv;
    er[k - i1] = err;
    for (int64_t j = k + 1; j < i2; ++j) row[j] -= err * U[k * d + j];
  }
  rloss[r] += loss;
}

__global__ void k_unpermute(const float *Wp, const int8_t *Cp, const int64_t *perm, int64_t d_out,
                            int64_t d, float *deq, int8_t *codes) {
  int64_t n = d_out * d;
  for (int64_t t = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; t < n; t += (int64_t)gridDim.x * blockDim.x) {
    int64_t r = t / d, k = t % d;
    deq[r * d + perm[k]] = Wp[t];
    codes[r * d + perm[k]] = Cp[t];
  }
}

static int grid(int64_t n) { return (int)std::min<int64_t>((n + 255) / 256, 4096); }

/* Shared with sparsegpt.cu: U (d, d) device, from H (device) permuted by
 * d_perm; zeroes dead columns of Wp. h_diag holds diag(H) on the host. */
sq_status sq_cuda_prepare_hinv(const char *name, const float *H, const int64_t *d_perm,
                                          const std::vector<float> &h_diag, float *Wp,
                                          int64_t d_out, int64_t d, float damp_frac, int retries,
                                          float *U, float *damp_out, cudaStream_t stream);
sq_status sq_cuda_prepare_hinv(const char *name, const float *H, const int64_t *d_perm,
                                          const std::vector<float> &h_diag, float *Wp,
                                          int64_t d_out, int64_t d, float damp_frac, int retries,
                                          float *U, float *damp_out, cudaStream_t stream) {
  sq_status st = SQ_OK;
  cusolverDnHandle_t sh = NULL;
  float *work = NULL;
  int *dinfo = NULL;
  int lwork = 0, lw2 = 0;
  double mean = 0;
  for (int64_t i = 0; i < d; ++i) mean += h_diag[i] == 0.0f ? 1.0 : h_diag[i];
  mean /= (double)d;
  float damp = (float)(damp_frac * mean);
  k_zero_dead<<<grid(d_out * d), 256, 0, stream>>>(H, d_perm, d_out, d, Wp);
  if (cusolverDnCreate(&sh) != CUSOLVER_STATUS_SUCCESS) {
    return sq_error_set(SQ_ERR_CUDA, "%s: cusolverDnCreate failed", name);
  }
  cusolverDnSetStream(sh, stream);
  cusolverDnSpotrf_bufferSize(sh, CUBLAS_FILL_MODE_LOWER, (int)d, U, (int)d, &lwork);
  cusolverDnSpotri_bufferSize(sh, CUBLAS_FILL_MODE_LOWER, (int)d, U, (int)d, &lw2);
  lwork = std::max(lwork, lw2);
  CU_TRY(cudaMalloc(&work, sizeof(float) * (size_t)std::max(lwork, 1)), "cudaMalloc potrf workspace");
  CU_TRY(cudaMalloc(&dinfo, sizeof(int)), "cudaMalloc info");
  for (int attempt = 0;; ++attempt) {
    int info = 0;
    const char *step = "cholesky";
    k_load_h<<<grid(d * d), 256, 0, stream>>>(H, d_perm, d, damp, U);
    cusolverDnSpotrf(sh, CUBLAS_FILL_MODE_LOWER, (int)d, U, (int)d, work, lwork, dinfo);
    CU_TRY(cudaMemcpyAsync(&info, dinfo, sizeof(int), cudaMemcpyDeviceToHost, stream), "info");
    CU_TRY(cudaStreamSynchronize(stream), "potrf");
    if (info == 0) {
      step = "inverse";
      cusolverDnSpotri(sh, CUBLAS_FILL_MODE_LOWER, (int)d, U, (int)d, work, lwork, dinfo);
      CU_TRY(cudaMemcpyAsync(&info, dinfo, sizeof(int), cudaMemcpyDeviceToHost, stream), "info");
      CU_TRY(cudaStreamSynchronize(stream), "potri");
    }
    if (info == 0) {
      step = "cholesky of the inverse";
      cusolverDnSpotrf(sh, CUBLAS_FILL_MODE_LOWER, (int)d, U, (int)d, work, lwork, dinfo);
      CU_TRY(cudaMemcpyAsync(&info, dinfo, sizeof(int), cudaMemcpyDeviceToHost, stream), "info");
      CU_TRY(cudaStreamSynchronize(stream), "potrf");
    }
    if (info == 0) {
      k_zero_lower<<<grid(d * d), 256, 0, stream>>>(U, d);
      *damp_out = damp;
      break;
    }
    if (attempt >= retries) {
      st = sq_error_set(SQ_ERR_NUMERIC,
                        "%s: Hessian is not positive definite (%s failed at column %d) even with "
                        "damping %g after %d retries -- hint: raise dampening_frac or use more "
                        "calibration samples",
                        name, step, info, (double)damp, retries);
      goto fail;
    }
    float next = damp != 0.0f ? damp * 10.0f : (float)(mean != 0.0 ? 0.01 * fabs(mean) : 1e-6);
    sq_log_warn("%s: %s failed at column %d with damping %g; retrying with %g (%d/%d)", name,
                step, info, (double)damp, (double)next, attempt + 1, retries);
    damp = next;
  }
fail:
  cudaFree(work);
  cudaFree(dinfo);
  cusolverDnDestroy(sh);
  return st;
}

static sq_status check_finite(const char *name, const char *what, const float *a, int64_t n,
                              int *dbad, cudaStream_t stream) {
  sq_status st = SQ_OK;
  int bad = 0;
  CU_TRY(cudaMemsetAsync(dbad, 0, sizeof(int), stream), "memset");
  k_count_nonfinite<<<grid(n), 256, 0, stream>>>(a, n, dbad);
  CU_TRY(cudaMemcpyAsync(&bad, dbad, sizeof(int), cudaMemcpyDeviceToHost, stream), "copy");
  CU_TRY(cudaStreamSynchronize(stream), "finiteness check");
  if (bad)
    return sq_error_set(SQ_ERR_NUMERIC, "%s: %s has %d NaN/Inf values -- hint: check the checkpoint and activations", name, what, bad);
fail:
  return st;
}

extern "C" sq_status sq_gptq_quantize_cuda(const char *name, const float *W, const float *H,
                                           int64_t d_out, int64_t d_in, const sq_gptq_opts *opts,
                                           sq_gptq_out *out, cudaStream_t stream) {
  if (!name) name = "?";
  if (!W || !H || !opts || !out || d_out <= 0 || d_in <= 0 || opts->block_size <= 0)
    return sq_error_set(SQ_ERR_ARG, "%s: bad arguments to GPTQ (CUDA)", name);
  if (opts->q.type != SQ_QTYPE_INT || opts->q.num_bits < 2 || opts->q.num_bits > 8 ||
      (opts->q.strategy == SQ_QSTRAT_GROUP && opts->q.group_size <= 0) ||
      (opts->q.strategy != SQ_QSTRAT_GROUP && opts->q.strategy != SQ_QSTRAT_CHANNEL &&
       opts->q.strategy != SQ_QSTRAT_TENSOR))
    return sq_error_set(SQ_ERR_UNSUPPORTED, "%s: GPTQ (CUDA) quantizes to int 2..8 bits, tensor/channel/group", name);
  const sq_qargs q = opts->q;
  const int64_t d = d_in, B = opts->block_size;
  const int is_group = q.strategy == SQ_QSTRAT_GROUP;
  const int64_t gs = is_group ? q.group_size : d;
  const sq_actorder ao = opts->actorder;
  const int dynamic = is_group && !opts->static_groups && ao != SQ_ACTORDER_WEIGHT;
  sq_status st = SQ_OK;
  float *U = NULL, *Wp = NULL, *E = NULL;
  int8_t *Cp = NULL;
  int64_t *dperm = NULL;
  int32_t *dgrp = NULL;
  double *rloss = NULL;
  int *dbad = NULL;
  cublasHandle_t bh = NULL;
  std::vector<float> diag(d);
  std::vector<int64_t> perm(d);
  std::vector<int32_t> grp(d), gidx(d);
  std::vector<double> hl(d_out);
  double loss = 0;
  const float minus1 = -1.0f, one = 1.0f;

  CU_TRY(cudaMalloc(&dbad, sizeof(int)), "cudaMalloc");
  SQ_CHECK_GOTO(check_finite(name, "weight", W, d_out * d, dbad, stream), st, fail);
  SQ_CHECK_GOTO(check_finite(name, "Hessian", H, d * d, dbad, stream), st, fail);
  CU_TRY(cudaMemcpy2DAsync(diag.data(), sizeof(float), H, sizeof(float) * (size_t)(d + 1),
                           sizeof(float), (size_t)d, cudaMemcpyDeviceToHost, stream), "copy diag(H)");
  CU_TRY(cudaStreamSynchronize(stream), "copy diag(H)");
  for (int64_t i = 0; i < d; ++i) perm[i] = i;
  if (ao != SQ_ACTORDER_NONE)
    std::stable_sort(perm.begin(), perm.end(), [&](int64_t a, int64_t b) { return diag[a] > diag[b]; });
  for (int64_t k = 0; k < d; ++k) grp[k] = !is_group ? 0 : (int32_t)((ao == SQ_ACTORDER_WEIGHT ? perm[k] : k) / gs);

  CU_TRY(cudaMalloc(&U, sizeof(float) * (size_t)(d * d)), "cudaMalloc U");
  CU_TRY(cudaMalloc(&Wp, sizeof(float) * (size_t)(d_out * d)), "cudaMalloc W");
  CU_TRY(cudaMalloc(&E, sizeof(float) * (size_t)(d_out * B)), "cudaMalloc E");
  CU_TRY(cudaMalloc(&Cp, (size_t)(d_out * d)), "cudaMalloc codes");
  CU_TRY(cudaMalloc(&dperm, sizeof(int64_t) * (size_t)d), "cudaMalloc perm");
  CU_TRY(cudaMalloc(&dgrp, sizeof(int32_t) * (size_t)d), "cudaMalloc grp");
  CU_TRY(cudaMalloc(&rloss, sizeof(double) * (size_t)d_out), "cudaMalloc loss");
  CU_TRY(cudaMemsetAsync(rloss, 0, sizeof(double) * (size_t)d_out, stream), "memset");
  CU_TRY(cudaMemcpyAsync(dperm, perm.data(), sizeof(int64_t) * (size_t)d, cudaMemcpyHostToDevice, stream), "perm");
  CU_TRY(cudaMemcpyAsync(dgrp, grp.data(), sizeof(int32_t) * (size_t)d, cudaMemcpyHostToDevice, stream), "grp");
  k_permute_w<<<grid(d_out * d), 256, 0, stream>>>(W, dperm, H, d_out, d, Wp);
  if (!dynamic)
    k_static_params<<<grid(d_out * d / gs + 1), 256, 0, stream>>>(q, ao == SQ_ACTORDER_WEIGHT ? W : Wp, d_out, d, out->scales, out->zero_points);
  SQ_CHECK_GOTO(sq_cuda_prepare_hinv(name, H, dperm, diag, Wp, d_out, d, opts->damp_frac,
                                     opts->damp_retries, U, &out->damp, stream), st, fail);
  if (cublasCreate(&bh) != CUBLAS_STATUS_SUCCESS) {
    st = sq_error_set(SQ_ERR_CUDA, "%s: cublasCreate failed", name);
    goto fail;
  }
  cublasSetStream(bh, stream);
  for (int64_t i1 = 0; i1 < d; i1 += B) {
    int64_t i2 = std::min(i1 + B, d), cnt = i2 - i1;
    k_gptq_block<<<(unsigned)((d_out + 127) / 128), 128, 0, stream>>>(q, dynamic, U, Wp, Cp, E, dgrp, out->scales, out->zero_points, rloss, d_out, d, B, i1, i2);
    if (i2 < d &&
        cublasSgemm(bh, CUBLAS_OP_N, CUBLAS_OP_N, (int)(d - i2), (int)d_out, (int)cnt, &minus1,
                    U + i1 * d + i2, (int)d, E, (int)B, &one, Wp + i2, (int)d) != CUBLAS_STATUS_SUCCESS) {
      st = sq_error_set(SQ_ERR_CUDA, "%s: cublasSgemm (lazy update) failed", name);
      goto fail;
    }
  }
  k_unpermute<<<grid(d_out * d), 256, 0, stream>>>(Wp, Cp, dperm, d_out, d, out->deq, out->codes);
  for (int64_t k = 0; k < d; ++k) gidx[perm[k]] = is_group && ao == SQ_ACTORDER_GROUP ? grp[k] : (is_group ? (int32_t)(perm[k] / gs) : 0);
  CU_TRY(cudaMemcpyAsync(out->g_idx, gidx.data(), sizeof(int32_t) * (size_t)d, cudaMemcpyHostToDevice, stream), "g_idx");
  CU_TRY(cudaMemcpyAsync(hl.data(), rloss, sizeof(double) * (size_t)d_out, cudaMemcpyDeviceToHost, stream), "loss");
  CU_TRY(cudaStreamSynchronize(stream), "GPTQ sweep");
  CU_TRY(cudaGetLastError(), "GPTQ kernels");
  for (int64_t r = 0; r < d_out; ++r) loss += hl[r];
  out->loss = loss / 2.0;
  out->has_g_idx = is_group && ao == SQ_ACTORDER_GROUP;
fail:
  if (bh) cublasDestroy(bh);
  cudaFree(U);
  cudaFree(Wp);
  cudaFree(E);
  cudaFree(Cp);
  cudaFree(dperm);
  cudaFree(dgrp);
  cudaFree(rloss);
  cudaFree(dbad);
  return st;
}
