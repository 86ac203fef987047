/* CUDA twins of the elementwise Llama forward ops (RMSNorm, RoPE, SwiGLU,
 * row softmax with an optional causal mask) and the Linear on cuBLAS. Same
 * contracts as the CPU reference in kernels/cpu/forward.c; the per-element
 * arithmetic is kernels/forward_math.h, shared with the CPU. Reductions here
 * are fp32 trees (the CPU sums in double), so results agree within a stated
 * tolerance, not bit for bit. All calls are asynchronous on the given stream;
 * launch errors become SQ_ERR_CUDA. */
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <math.h>

#include "kernels/forward.h"
#include "kernels/forward_math.h"

#define SQ_FWD_THREADS 256

static sq_status launch_status(const char *what) {
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess)
    return sq_error_set(SQ_ERR_CUDA, "%s: kernel launch failed: %s", what, cudaGetErrorString(e));
  return SQ_OK;
}

/* Block-wide reduction of v (sum or max) over SQ_FWD_THREADS threads; every
 * thread gets the result. */
template <bool IsMax>
static __device__ float block_reduce(float v) {
  __shared__ float part[SQ_FWD_THREADS / 32];
  for (int o = 16; o > 0; o >>= 1) {
    float w = __shfl_xor_sync(0xffffffffu, v, o);
    v = IsMax ? fmaxf(v, w) : v + w;
  }
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) part[warp] = v;
  __syncthreads();
  float r = IsMax ? -INFINITY : 0.0f;
  for (int i = 0; i < SQ_FWD_THREADS / 32; i++) r = IsMax ? fmaxf(r, part[i]) : r + part[i];
  __syncthreads(); /* part is reused by the next reduction */
  return r;
}

/* One block per row: y = w * (x * rsqrt(mean(x^2) + eps)). */
static __global__ void rmsnorm_kernel(const float *x, const float *w, int64_t d, float eps,
                                      float *y) {
  const float *xr = x + (size_t)blockIdx.x * d;
  float *yr = y + (size_t)blockIdx.x * d;
  float ss = 0.0f;
  for (int64_t i = threadIdx.x; i < d; i += blockDim.x) ss += xr[i] * xr[i];
  ss = block_reduce<false>(ss);
  float inv = sq_fm_rms_inv(ss, d, eps);
  for (int64_t i = threadIdx.x; i < d; i += blockDim.x) yr[i] = sq_fm_rms_elem(xr[i], inv, w[i]);
}

/* One thread per rotate_half pair: x (B*T, n_heads*hd), tables (T, hd/2). */
static __global__ void rope_kernel(const float *cos_t, const float *sin_t, int head_dim, float *x,
                                   int64_t rows, int64_t T, int64_t n_heads) {
  int64_t half = head_dim / 2;
  int64_t n = rows * n_heads * half;
  for (int64_t id = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; id < n;
       id += (int64_t)gridDim.x * blockDim.x) {
    int64_t i = id % half, h = (id / half) % n_heads, row = id / (half * n_heads);
    int64_t t = row % T;
    float *xh = x + (size_t)row * n_heads * head_dim + h * head_dim;
    sq_fm_rope_pair(&xh[i], &xh[i + half], cos_t[t * half + i], sin_t[t * half + i]);
  }
}

static __global__ void silu_mul_kernel(float *g, const float *u, int64_t n) {
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x)
    g[i] = sq_fm_silu_mul(g[i], u[i]);
}

/* One block per row; causal rows keep columns 0..row % T and zero the rest. */
static __global__ void softmax_kernel(float *S, int64_t n, int causal, int64_t T) {
  float *r = S + (size_t)blockIdx.x * n;
  int64_t valid = causal ? (int64_t)(blockIdx.x % T) + 1 : n;
  if (valid > n) valid = n;
  float m = -INFINITY;
  for (int64_t i = threadIdx.x; i < valid; i += blockDim.x) m = fmaxf(m, r[i]);
  m = block_reduce<true>(m);
  float s = 0.0f;
  for (int64_t i = threadIdx.x; i < valid; i += blockDim.x) {
    float e = expf(r[i] - m);
    r[i] = e;
    s += e;
  }
  s = block_reduce<false>(s);
  float inv = 1.0f / s;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) r[i] = i < valid ? r[i] * inv : 0.0f;
}

/* Y (rows, d_out) = broadcast bias. */
static __global__ void bias_kernel(const float *bias, int64_t rows, int64_t d_out, float *Y) {
  int64_t n = rows * d_out;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x)
    Y[i] = bias[i % d_out];
}

static unsigned grid_for(int64_t n) {
  int64_t g = (n + SQ_FWD_THREADS - 1) / SQ_FWD_THREADS;
  if (g < 1) g = 1;
  return (unsigned)(g > 65535 * 16 ? 65535 * 16 : g);
}

extern "C" sq_status sq_fwd_cuda_rmsnorm(const float *x, const float *w, int64_t rows, int64_t d,
                                         float eps, float *y, struct CUstream_st *stream) {
  if (rows <= 0 || d <= 0 || rows > 2147483647)
    return sq_error_set(SQ_ERR_ARG, "cuda rmsnorm: bad shape (%lld, %lld)", (long long)rows,
                        (long long)d);
  rmsnorm_kernel<<<(unsigned)rows, SQ_FWD_THREADS, 0, stream>>>(x, w, d, eps, y);
  return launch_status("cuda rmsnorm");
}

extern "C" sq_status sq_fwd_cuda_rope_apply(const float *cos, const float *sin, int head_dim,
                                            float *x, int64_t B, int64_t T, int64_t n_heads,
                                            struct CUstream_st *stream) {
  if (head_dim <= 0 || head_dim % 2 || B <= 0 || T <= 0 || n_heads <= 0)
    return sq_error_set(SQ_ERR_ARG, "cuda rope: bad shape (B %lld, T %lld, heads %lld, hd %d)",
                        (long long)B, (long long)T, (long long)n_heads, head_dim);
  int64_t n = B * T * n_heads * (head_dim / 2);
  rope_kernel<<<grid_for(n), SQ_FWD_THREADS, 0, stream>>>(cos, sin, head_dim, x, B * T, T, n_heads);
  return launch_status("cuda rope");
}

extern "C" sq_status sq_fwd_cuda_silu_mul(float *g, const float *u, int64_t n,
                                          struct CUstream_st *stream) {
  if (n <= 0) return SQ_OK;
  silu_mul_kernel<<<grid_for(n), SQ_FWD_THREADS, 0, stream>>>(g, u, n);
  return launch_status("cuda silu_mul");
}

extern "C" sq_status sq_fwd_cuda_softmax(float *S, int64_t rows, int64_t n, int causal, int64_t T,
                                         struct CUstream_st *stream) {
  if (rows <= 0 || n <= 0 || rows > 2147483647 || (causal && T <= 0))
    return sq_error_set(SQ_ERR_ARG, "cuda softmax: bad shape (%lld, %lld), T %lld", (long long)rows,
                        (long long)n, (long long)T);
  softmax_kernel<<<(unsigned)rows, SQ_FWD_THREADS, 0, stream>>>(S, n, causal, T);
  return launch_status("cuda softmax");
}

extern "C" sq_status sq_fwd_cuda_linear(struct cublasContext *handle, const float *X, int64_t rows,
                                        int64_t d_in, const float *W, int64_t d_out,
                                        const float *bias, float *Y) {
  if (rows <= 0 || d_in <= 0 || d_out <= 0 || rows > 2147483647 || d_in > 2147483647 ||
      d_out > 2147483647)
    return sq_error_set(SQ_ERR_ARG, "cuda linear: bad shape (%lld, %lld) -> %lld", (long long)rows,
                        (long long)d_in, (long long)d_out);
  float beta = 0.0f, alpha = 1.0f;
  if (bias) {
    cudaStream_t stream = NULL;
    if (cublasGetStream(handle, &stream) != CUBLAS_STATUS_SUCCESS)
      return sq_error_set(SQ_ERR_CUDA, "cuda linear: cublasGetStream failed");
    bias_kernel<<<grid_for(rows * d_out), SQ_FWD_THREADS, 0, stream>>>(bias, rows, d_out, Y);
    SQ_CHECK(launch_status("cuda linear bias"));
    beta = 1.0f;
  }
  /* Row-major Y (rows, d_out) is column-major Yᵀ (d_out, rows) = W · Xᵀ, where the
   * row-major W (d_out, d_in) buffer read column-major is Wᵀ (ld d_in), hence OP_T. */
  cublasStatus_t cs =
      cublasSgemm(handle, CUBLAS_OP_T, CUBLAS_OP_N, (int)d_out, (int)rows, (int)d_in, &alpha, W,
                  (int)d_in, X, (int)d_in, &beta, Y, (int)d_out);
  if (cs != CUBLAS_STATUS_SUCCESS)
    return sq_error_set(SQ_ERR_CUDA, "cuda linear: cublasSgemm failed (status %d)", (int)cs);
  return SQ_OK;
}
