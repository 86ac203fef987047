/* CUDA twin of kernels/cpu/sparsegpt.c for N:M patterns (optionally with
 * quantization): one thread per row sweeps a block, choosing the N smallest
 * w^2 / U_kk^2 of every M columns, then one cublasSgemm per block. */
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <vector>

extern "C" {
#include "common/status.h"
#include "kernels/gptq.h"
#include "kernels/sparsegpt.h"
}

sq_status sq_cuda_prepare_hinv(const char *name, const float *H, const int64_t *d_perm,
                               const std::vector<float> &h_diag, float *Wp, int64_t d_out,
                               int64_t d, float damp_frac, int retries, float *U,
                               float *damp_out, cudaStream_t stream);

__global__ void k_sgpt_block(int N, int M, int quant, sq_qargs q, const float *U, float *Wt,
                             uint8_t *mask, int8_t *codes, const float *scales,
                             const int32_t *zps, float *E, double *rloss, int64_t d_out,
                             int64_t d, int64_t B, int64_t i1, int64_t i2) {
  int64_t r = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (r >= d_out) return;
  int64_t gs = q.strategy == SQ_QSTRAT_GROUP ? q.group_size : d, ng = (d + gs - 1) / gs;
  float *row = Wt + r * d;
  double loss = 0;
  uint64_t pruned = 0; /* bit j: column k0 + j of the current M group (M <= 64) */
  for (int64_t k = i1; k < i2; ++k) {
    int64_t i = k - i1;
    if (i % M == 0) {
      pruned = 0;
      for (int t = 0; t < N; ++t) {
        int best = -1;
        float bs = 0;
        for (int j = 0; j < M; ++j) {
          if (pruned >> j & 1) continue;
          float dd = U[(k + j) * d + k + j], s = row[k + j] * row[k + j] / (dd * dd);
          if (best < 0 || s < bs) best = j, bs = s;
        }
        pruned |= 1ull << best;
      }
    }
    int p = (int)(pruned >> (i % M) & 1);
    const float x = row[k], dk = U[k * d + k];
    float qv = p ? 0.0f : x;
    if (quant) {
      int64_t sc = q.strategy == SQ_QSTRAT_TENSOR ? 0 : r * ng + k / gs;
      int c = sq_q_int_quantize(qv, scales[sc], zps[sc], q.num_bits);
      codes[r * d + k] = (int8_t)c;
      qv = sq_q_int_dequantize(c, scales[sc], zps[sc], q.scale_dtype);
    }
    const float err = (x - qv) / dk;
    loss += (double)err * err;
    row[k] = qv;
    E[r * B + i] = err;
    if (mask) mask[r * d + k] = (uint8_t)!p;
    for (int64_t j = k + 1; j < i2; ++j) row[j] -= err * U[k * d + j];
  }
  rloss[r] += loss;
}

extern "C" sq_status sq_sparsegpt_prune_cuda(const char *name, const float *W, const float *H,
                                             int64_t d_out, int64_t d_in,
                                             const sq_sparsegpt_opts *o, sq_sparsegpt_out *out,
                                             cudaStream_t stream) {
  if (!name) name = "?";
  if (!W || !H || !o || !out || !out->weight || d_out <= 0 || d_in <= 0 || o->block_size <= 0)
    return sq_error_set(SQ_ERR_ARG, "%s: bad arguments to SparseGPT (CUDA)", name);
  if (o->prune_n <= 0 || o->prune_m <= o->prune_n || o->prune_m > 64 || d_in % o->prune_m ||
      o->block_size % o->prune_m)
    return sq_error_set(SQ_ERR_UNSUPPORTED,
                        "%s: SparseGPT on CUDA supports N:M patterns only -- hint: run "
                        "unstructured sparsity on the CPU path",
                        name);
  if (o->quantize)
    return sq_error_set(SQ_ERR_UNSUPPORTED,
                        "%s: joint quantization in SparseGPT (CUDA) needs scales computed on "
                        "the CPU path -- hint: use sq_sparsegpt_prune", name);
  const int64_t d = d_in, B = o->block_size;
  sq_status st = SQ_OK;
  float *U = NULL, *E = NULL;
  int64_t *dperm = NULL;
  double *rloss = NULL;
  cublasHandle_t bh = NULL;
  std::vector<float> diag(d);
  std::vector<int64_t> perm(d);
  std::vector<double> hl(d_out);
  const float minus1 = -1.0f, one = 1.0f;
  double loss = 0;
  for (int64_t i = 0; i < d; ++i) perm[i] = i;
  if (cudaMalloc(&U, sizeof(float) * (size_t)(d * d)) != cudaSuccess ||
      cudaMalloc(&E, sizeof(float) * (size_t)(d_out * B)) != cudaSuccess ||
      cudaMalloc(&dperm, sizeof(int64_t) * (size_t)d) != cudaSuccess ||
      cudaMalloc(&rloss, sizeof(double) * (size_t)d_out) != cudaSuccess) {
    st = sq_error_set(SQ_ERR_CUDA, "%s: cudaMalloc of the SparseGPT workspace failed", name);
    goto fail;
  }
  cudaMemsetAsync(rloss, 0, sizeof(double) * (size_t)d_out, stream);
  cudaMemcpyAsync(dperm, perm.data(), sizeof(int64_t) * (size_t)d, cudaMemcpyHostToDevice, stream);
  cudaMemcpyAsync(out->weight, W, sizeof(float) * (size_t)(d_out * d), cudaMemcpyDeviceToDevice, stream);
  cudaMemcpy2DAsync(diag.data(), sizeof(float), H, sizeof(float) * (size_t)(d + 1), sizeof(float),
                    (size_t)d, cudaMemcpyDeviceToHost, stream);
  if (cudaStreamSynchronize(stream) != cudaSuccess) {
    st = sq_error_set(SQ_ERR_CUDA, "%s: copying the SparseGPT inputs failed", name);
    goto fail;
  }
  SQ_CHECK_GOTO(sq_cuda_prepare_hinv(name, H, dperm, diag, out->weight, d_out, d, o->damp_frac,
                                     o->damp_retries, U, &out->damp, stream), st, fail);
  if (cublasCreate(&bh) != CUBLAS_STATUS_SUCCESS) {
    st = sq_error_set(SQ_ERR_CUDA, "%s: cublasCreate failed", name);
    goto fail;
  }
  cublasSetStream(bh, stream);
  for (int64_t i1 = 0; i1 < d; i1 += B) {
    int64_t i2 = i1 + B < d ? i1 + B : d, cnt = i2 - i1;
    k_sgpt_block<<<(unsigned)((d_out + 127) / 128), 128, 0, stream>>>(
        o->prune_n, o->prune_m, 0, o->q, U, out->weight, out->mask, out->codes, out->scales,
        out->zero_points, E, rloss, d_out, d, B, i1, i2);
    if (i2 < d && cublasSgemm(bh, CUBLAS_OP_N, CUBLAS_OP_N, (int)(d - i2), (int)d_out, (int)cnt,
                              &minus1, U + i1 * d + i2, (int)d, E, (int)B, &one,
                              out->weight + i2, (int)d) != CUBLAS_STATUS_SUCCESS) {
      st = sq_error_set(SQ_ERR_CUDA, "%s: cublasSgemm (lazy update) failed", name);
      goto fail;
    }
  }
  cudaMemcpyAsync(hl.data(), rloss, sizeof(double) * (size_t)d_out, cudaMemcpyDeviceToHost, stream);
  if (cudaStreamSynchronize(stream) != cudaSuccess || cudaGetLastError() != cudaSuccess) {
    st = sq_error_set(SQ_ERR_CUDA, "%s: SparseGPT kernels failed", name);
    goto fail;
  }
  for (int64_t r = 0; r < d_out; ++r) loss += hl[r];
  out->loss = loss / 2.0;
fail:
  if (bh) cublasDestroy(bh);
  cudaFree(U);
  cudaFree(E);
  cudaFree(dperm);
  cudaFree(rloss);
  return st;
}
