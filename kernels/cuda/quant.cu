/* CUDA twins of the tensor quantizers (kernels/quant_cuda.h): one small
 * kernel per step (cell ranges, cell params, element quantize; per-token
 * fake quant; packing), all using the static inline per-element math of
 * kernels/quant_math.h and kernels/pack_math.h that the CPU tests cover.
 * min/max reductions are exact in any order, so results match the CPU. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include <cuda_runtime.h>

/* common/ headers have no extern "C" guards of their own. */
extern "C" {
#include "common/dtype.h"
#include "common/status.h"
}
#include "kernels/quant_cuda.h"

#define SQ_CU_THREADS 256
#define SQ_NO_BAD 0xffffffffffffffffull

static const char *nm(const char *name) { return name ? name : "(unnamed tensor)"; }

static sq_status cuda_fail(cudaError_t e, const char *name, const char *what) {
  int nodev = e == cudaErrorNoDevice || e == cudaErrorInsufficientDriver;
  return sq_error_set(nodev ? SQ_ERR_NO_DEVICE : SQ_ERR_CUDA, "%s: CUDA %s failed: %s -- hint: %s",
                      name, what, cudaGetErrorString(e),
                      nodev ? "no usable GPU; run with the CPU backend" : "check the GPU and driver");
}

#define CU_GOTO(call, what)                          \
  do {                                               \
    cudaError_t cu_e_ = (call);                      \
    if (cu_e_ != cudaSuccess) {                      \
      st = cuda_fail(cu_e_, name, what);             \
      goto done;                                     \
    }                                                \
  } while (0)

/* Same acceptance as the CPU's sq_quant_check_args (kept here so that the
 * CUDA library does not depend back on the CPU one at link time). */
static sq_status check_args(const sq_qargs *qa, const char *name, int64_t d_out, int64_t d_in,
                            int weight) {
  if (!qa) return sq_error_set(SQ_ERR_ARG, "%s: no quantization arguments", name);
  if (d_out < 1 || d_in < 1)
    return sq_error_set(SQ_ERR_ARG, "%s: shape (%lld, %lld) is empty", name, (long long)d_out,
                        (long long)d_in);
  int int_ok = qa->type == SQ_QTYPE_INT &&
               (qa->num_bits == 2 || qa->num_bits == 3 || qa->num_bits == 4 || qa->num_bits == 8);
  int fp_ok = qa->type == SQ_QTYPE_FLOAT && qa->num_bits == 8 && qa->symmetric;
  if (!int_ok && !fp_ok)
    return sq_error_set(SQ_ERR_UNSUPPORTED,
                        "%s: %s quantization with %d bits%s is not supported -- hint: int 2/3/4/8 "
                        "or symmetric fp8",
                        name, qa->type == SQ_QTYPE_FLOAT ? "float" : "int", qa->num_bits,
                        qa->symmetric ? "" : " (asymmetric)");
  if (qa->scale_dtype != SQ_DTYPE_F32 && qa->scale_dtype != SQ_DTYPE_F16 &&
      qa->scale_dtype != SQ_DTYPE_BF16)
    return sq_error_set(SQ_ERR_UNSUPPORTED, "%s: scale dtype %s is not supported", name,
                        sq_dtype_name(qa->scale_dtype));
  if (!weight) return SQ_OK;
  if (qa->strategy == SQ_QSTRAT_GROUP && qa->group_size < 1)
    return sq_error_set(SQ_ERR_ARG, "%s: group strategy needs group_size >= 1 (got %d)", name,
                        qa->group_size);
  if (qa->strategy != SQ_QSTRAT_TENSOR && qa->strategy != SQ_QSTRAT_CHANNEL &&
      qa->strategy != SQ_QSTRAT_GROUP)
    return sq_error_set(SQ_ERR_UNSUPPORTED,
                        "%s: strategy %d is not supported for weights -- hint: tensor, channel "
                        "or group",
                        name, (int)qa->strategy);
  return SQ_OK;
}

/* Block reduction of (lo, hi) in shared memory; result in lo_s[0], hi_s[0]. */
static __device__ void block_minmax(float lo, float hi, float *lo_s, float *hi_s) {
  lo_s[threadIdx.x] = lo;
  hi_s[threadIdx.x] = hi;
  __syncthreads();
  for (int k = blockDim.x / 2; k > 0; k /= 2) {
    if ((int)threadIdx.x < k) {
      lo_s[threadIdx.x] = fminf(lo_s[threadIdx.x], lo_s[threadIdx.x + k]);
      hi_s[threadIdx.x] = fmaxf(hi_s[threadIdx.x], hi_s[threadIdx.x + k]);
    }
    __syncthreads();
  }
}

/* One block per (row, group): range of W[r, c0:c1) into lo/hi (d_out, ng);
 * the flat index of the first non-finite element goes to *bad. */
static __global__ void k_row_group_range(const float *W, int64_t d_in, int64_t ng, int64_t gs,
                                         float *lo, float *hi, unsigned long long *bad) {
  __shared__ float lo_s[SQ_CU_THREADS], hi_s[SQ_CU_THREADS];
  int64_t r = blockIdx.x / ng, g = blockIdx.x % ng;
  int64_t c0 = g * gs, c1 = c0 + gs < d_in ? c0 + gs : d_in;
  float l = INFINITY, h = -INFINITY;
  for (int64_t j = c0 + threadIdx.x; j < c1; j += blockDim.x) {
    float x = W[r * d_in + j];
    if (!isfinite(x)) atomicMin(bad, (unsigned long long)(r * d_in + j));
    l = fminf(l, x);
    h = fmaxf(h, x);
  }
  block_minmax(l, h, lo_s, hi_s);
  if (threadIdx.x == 0) lo[blockIdx.x] = lo_s[0], hi[blockIdx.x] = hi_s[0];
}

/* One thread per scale cell. Tensor strategy: cell 0 folds all d_out rows. */
static __global__ void k_cell_params(sq_qargs qa, int64_t n_cells, int64_t fold, const float *lo,
                                     const float *hi, float *scales, int32_t *zp) {
  int64_t c = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (c >= n_cells) return;
  float l = lo[c * fold], h = hi[c * fold];
  for (int64_t k = 1; k < fold; ++k) l = fminf(l, lo[c * fold + k]), h = fmaxf(h, hi[c * fold + k]);
  float s;
  int z;
  sq_q_params(qa, l, h, &s, &z);
  scales[c] = s;
  if (zp) zp[c] = z;
}

static __global__ void k_quantize(sq_qargs qa, const float *W, int64_t d_out, int64_t d_in,
                                  int64_t ng, int64_t gs, int tensor, const float *scales,
                                  const int32_t *zp, int8_t *codes, float *W_deq) {
  int64_t n = d_out * d_in;
  for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < n;
       e += (int64_t)gridDim.x * blockDim.x) {
    int64_t i = e / d_in, j = e % d_in;
    int64_t k = (tensor ? 0 : i * ng) + (tensor ? 0 : j / gs);
    float s = scales[k];
    int z = zp ? zp[k] : 0;
    int8_t q = sq_q_quantize(qa, W[e], s, z);
    codes[e] = q;
    if (W_deq) W_deq[e] = sq_q_dequantize(qa, q, s, z);
  }
}

static __global__ void k_dequant(sq_qargs qa, const int8_t *codes, int64_t d_out, int64_t d_in,
                                 int64_t ng, int64_t gs, int tensor, const float *scales,
                                 const int32_t *zp, float *W_deq) {
  int64_t n = d_out * d_in;
  for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < n;
       e += (int64_t)gridDim.x * blockDim.x) {
    int64_t i = e / d_in, j = e % d_in;
    int64_t k = tensor ? 0 : i * ng + j / gs;
    W_deq[e] = sq_q_dequantize(qa, codes[e], scales[k], zp ? zp[k] : 0);
  }
}

/* One block per token: range, params, fake quantization of the row. */
static __global__ void k_act_token(sq_qargs qa, const float *X, int64_t d, float *Y,
                                   unsigned long long *bad) {
  __shared__ float lo_s[SQ_CU_THREADS], hi_s[SQ_CU_THREADS];
  int64_t t = blockIdx.x;
  float l = INFINITY, h = -INFINITY;
  for (int64_t j = threadIdx.x; j < d; j += blockDim.x) {
    float x = X[t * d + j];
    if (!isfinite(x)) atomicMin(bad, (unsigned long long)(t * d + j));
    l = fminf(l, x);
    h = fmaxf(h, x);
  }
  block_minmax(l, h, lo_s, hi_s);
  float s;
  int z;
  sq_q_params(qa, lo_s[0], hi_s[0], &s, &z);
  __syncthreads(); /* everyone has read lo_s[0] before Y (maybe == X) changes */
  for (int64_t j = threadIdx.x; j < d; j += blockDim.x)
    Y[t * d + j] = sq_q_dequantize(qa, sq_q_quantize(qa, X[t * d + j], s, z), s, z);
}

/* One thread per packed word: rows (rows, cols) -> (rows, words). */
static __global__ void k_pack_rows(int bits, const int8_t *codes, int64_t rows, int64_t cols,
                                   int64_t words, int32_t *packed) {
  int64_t n = rows * words;
  int pf = sq_pack_factor(bits);
  for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < n;
       e += (int64_t)gridDim.x * blockDim.x) {
    int64_t i = e / words, k = e % words;
    uint32_t w = 0;
    for (int s = 0; s < pf && k * pf + s < cols; ++s) w |= sq_pack_slot(codes[i * cols + k * pf + s], s, bits);
    packed[e] = (int32_t)w;
  }
}

/* One thread per packed word: zp (d_out, ng) -> (words, ng) along d_out. */
static __global__ void k_pack_zp(int bits, const int32_t *zp, int64_t d_out, int64_t ng,
                                 int64_t words, int32_t *packed) {
  int64_t n = words * ng;
  int pf = sq_pack_factor(bits);
  for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < n;
       e += (int64_t)gridDim.x * blockDim.x) {
    int64_t k = e / ng, g = e % ng;
    uint32_t w = 0;
    for (int s = 0; s < pf && k * pf + s < d_out; ++s) w |= sq_pack_slot(zp[(k * pf + s) * ng + g], s, bits);
    packed[e] = (int32_t)w;
  }
}

static unsigned grid_for(int64_t n) {
  int64_t b = (n + SQ_CU_THREADS - 1) / SQ_CU_THREADS;
  return (unsigned)(b < 1 ? 1 : b > 65535 ? 65535 : b);
}

extern "C" sq_status sq_quant_rtn_cuda(const sq_qargs *qa, const char *name, const float *W,
                                       int64_t d_out, int64_t d_in, int8_t *codes, float *scales,
                                       int32_t *zero_points, float *W_deq, cudaStream_t stream) {
  name = nm(name);
  SQ_CHECK(check_args(qa, name, d_out, d_in, 1));
  if (!W || !codes || !scales)
    return sq_error_set(SQ_ERR_ARG, "%s: sq_quant_rtn_cuda needs W, codes and scales", name);
  int asym_int = qa->type == SQ_QTYPE_INT && !qa->symmetric;
  if (asym_int && !zero_points)
    return sq_error_set(SQ_ERR_ARG, "%s: asymmetric quantization needs a zero_points buffer", name);
  sq_status st = SQ_OK;
  int tensor = qa->strategy == SQ_QSTRAT_TENSOR;
  int64_t gs = qa->strategy == SQ_QSTRAT_GROUP ? qa->group_size : d_in;
  int64_t ng = (d_in + gs - 1) / gs; /* 1 unless group */
  int64_t n_part = d_out * ng, n_cells = tensor ? 1 : n_part, fold = tensor ? d_out : 1;
  float *lo = NULL, *hi = NULL;
  unsigned long long *bad = NULL, bad_h = SQ_NO_BAD;
  CU_GOTO(cudaMalloc((void **)&lo, sizeof(float) * 2 * n_part), "cudaMalloc(range workspace)");
  hi = lo + n_part;
  CU_GOTO(cudaMalloc((void **)&bad, sizeof *bad), "cudaMalloc");
  CU_GOTO(cudaMemsetAsync(bad, 0xff, sizeof *bad, stream), "cudaMemsetAsync");
  k_row_group_range<<<(unsigned)n_part, SQ_CU_THREADS, 0, stream>>>(W, d_in, ng, gs, lo, hi, bad);
  CU_GOTO(cudaGetLastError(), "range kernel launch");
  k_cell_params<<<grid_for(n_cells), SQ_CU_THREADS, 0, stream>>>(*qa, n_cells, fold, lo, hi, scales,
                                                                asym_int ? zero_points : NULL);
  CU_GOTO(cudaGetLastError(), "params kernel launch");
  k_quantize<<<grid_for(d_out * d_in), SQ_CU_THREADS, 0, stream>>>(
      *qa, W, d_out, d_in, ng, gs, tensor, scales, asym_int ? zero_points : NULL, codes, W_deq);
  CU_GOTO(cudaGetLastError(), "quantize kernel launch");
  CU_GOTO(cudaMemcpyAsync(&bad_h, bad, sizeof bad_h, cudaMemcpyDeviceToHost, stream), "cudaMemcpyAsync");
  CU_GOTO(cudaStreamSynchronize(stream), "quantize kernels");
  if (bad_h != SQ_NO_BAD)
    st = sq_error_set(SQ_ERR_NUMERIC,
                      "%s: weight element (%lld, %lld) is NaN or Inf -- hint: the checkpoint or an "
                      "earlier layer's update is corrupt",
                      name, (long long)(bad_h / (unsigned long long)d_in),
                      (long long)(bad_h % (unsigned long long)d_in));
done:
  cudaFree(lo);
  cudaFree(bad);
  return st;
}

extern "C" sq_status sq_quant_dequant_cuda(const sq_qargs *qa, const char *name,
                                           const int8_t *codes, const float *scales,
                                           const int32_t *zero_points, int64_t d_out, int64_t d_in,
                                           float *W_deq, cudaStream_t stream) {
  name = nm(name);
  SQ_CHECK(check_args(qa, name, d_out, d_in, 1));
  int asym_int = qa->type == SQ_QTYPE_INT && !qa->symmetric;
  if (!codes || !scales || !W_deq || (asym_int && !zero_points))
    return sq_error_set(SQ_ERR_ARG, "%s: sq_quant_dequant_cuda is missing a buffer", name);
  sq_status st = SQ_OK;
  int64_t gs = qa->strategy == SQ_QSTRAT_GROUP ? qa->group_size : d_in;
  k_dequant<<<grid_for(d_out * d_in), SQ_CU_THREADS, 0, stream>>>(
      *qa, codes, d_out, d_in, (d_in + gs - 1) / gs, gs, qa->strategy == SQ_QSTRAT_TENSOR, scales,
      asym_int ? zero_points : NULL, W_deq);
  CU_GOTO(cudaGetLastError(), "dequantize kernel launch");
done:
  return st;
}

extern "C" sq_status sq_quant_act_fake_per_token_cuda(const sq_qargs *qa, const char *name,
                                                      const float *X, int64_t T, int64_t d,
                                                      float *Y, cudaStream_t stream) {
  name = nm(name);
  if (T == 0) return SQ_OK;
  SQ_CHECK(check_args(qa, name, T, d, 0));
  if (!X || !Y) return sq_error_set(SQ_ERR_ARG, "%s: fake quantization needs X and Y", name);
  sq_status st = SQ_OK;
  unsigned long long *bad = NULL, bad_h = SQ_NO_BAD;
  CU_GOTO(cudaMalloc((void **)&bad, sizeof *bad), "cudaMalloc");
  CU_GOTO(cudaMemsetAsync(bad, 0xff, sizeof *bad, stream), "cudaMemsetAsync");
  k_act_token<<<(unsigned)T, SQ_CU_THREADS, 0, stream>>>(*qa, X, d, Y, bad);
  CU_GOTO(cudaGetLastError(), "fake-quant kernel launch");
  CU_GOTO(cudaMemcpyAsync(&bad_h, bad, sizeof bad_h, cudaMemcpyDeviceToHost, stream), "cudaMemcpyAsync");
  CU_GOTO(cudaStreamSynchronize(stream), "fake-quant kernel");
  if (bad_h != SQ_NO_BAD)
    st = sq_error_set(SQ_ERR_NUMERIC,
                      "%s: activation (token %lld, channel %lld) is NaN or Inf -- hint: the layer "
                      "input overflowed; check the previous layer",
                      name, (long long)(bad_h / (unsigned long long)d),
                      (long long)(bad_h % (unsigned long long)d));
done:
  cudaFree(bad);
  return st;
}

extern "C" sq_status sq_quant_pack_rows_cuda(int bits, const char *name, const int8_t *codes,
                                             int64_t rows, int64_t cols, int32_t *packed,
                                             cudaStream_t stream) {
  name = nm(name);
  if (bits < 1 || bits > 8 || !codes || !packed || rows < 0 || cols < 0)
    return sq_error_set(SQ_ERR_ARG, "%s: bad packing arguments (%d bits, shape (%lld, %lld))", name,
                        bits, (long long)rows, (long long)cols);
  sq_status st = SQ_OK;
  int64_t words = sq_pack_words(cols, bits);
  if (rows * words == 0) return SQ_OK;
  k_pack_rows<<<grid_for(rows * words), SQ_CU_THREADS, 0, stream>>>(bits, codes, rows, cols, words,
                                                                   packed);
  CU_GOTO(cudaGetLastError(), "pack kernel launch");
done:
  return st;
}

extern "C" sq_status sq_quant_pack_zero_points_cuda(int bits, const char *name, const int32_t *zp,
                                                    int64_t d_out, int64_t n_groups,
                                                    int32_t *packed, cudaStream_t stream) {
  name = nm(name);
  if (bits < 1 || bits > 8 || !zp || !packed || d_out < 0 || n_groups < 0)
    return sq_error_set(SQ_ERR_ARG, "%s: bad zero-point packing arguments (%d bits)", name, bits);
  sq_status st = SQ_OK;
  int64_t words = sq_pack_words(d_out, bits);
  if (words * n_groups == 0) return SQ_OK;
  k_pack_zp<<<grid_for(words * n_groups), SQ_CU_THREADS, 0, stream>>>(bits, zp, d_out, n_groups,
                                                                      words, packed);
  CU_GOTO(cudaGetLastError(), "zero-point pack kernel launch");
done:
  return st;
}
