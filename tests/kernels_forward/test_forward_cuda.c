/* CUDA twins of the forward ops (kernels/cuda/forward.cu) against the CPU
 * reference (kernels/cpu/forward.c), which test_forward_ops checks against
 * naive loops. Tolerances: |gpu - cpu| <= atol + rtol * |cpu| with fp32
 * reductions on the GPU (tree) vs double sums on the CPU. Exits 77 without a
 * CUDA device. */
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/forward.h"
#include "naive.h"
#include "test_util.h"

static float *to_dev(const float *h, size_t n) {
  float *d = NULL;
  if (cudaMalloc((void **)&d, n * sizeof(float)) != cudaSuccess) return NULL;
  cudaMemcpy(d, h, n * sizeof(float), cudaMemcpyHostToDevice);
  return d;
}

static void compare(const char *what, float *dev, const float *ref, size_t n, double atol,
                    double rtol) {
  float *h = malloc(n * sizeof(float));
  cudaMemcpy(h, dev, n * sizeof(float), cudaMemcpyDeviceToHost);
  size_t bad = 0;
  double worst = 0;
  for (size_t i = 0; i < n; i++) {
    double d = fabs((double)h[i] - ref[i]);
    if (!(d <= atol + rtol * fabs(ref[i]))) bad++;
    if (d > worst || d != d) worst = d;
  }
  SQ_EXPECT_MSG(bad == 0, "%s: %zu of %zu off, worst %g", what, bad, n, worst);
  free(h);
}

int main(void) {
  int ndev = 0;
  if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev == 0) sq_test_skip("no CUDA device");
  uint64_t s = 7;
  const int64_t B = 2, T = 33, H = 4, hd = 32, d = 96, dout = 72, n = B * T * H * hd;
  cudaStream_t stream;
  cublasHandle_t cb;
  cudaStreamCreate(&stream);
  cublasCreate(&cb);
  cublasSetStream(cb, stream);

  /* RMSNorm */
  float *x = nv_alloc_rand((size_t)(B * T * d), &s, 2.0f), *w = nv_alloc_rand((size_t)d, &s, 1.0f);
  float *y = malloc((size_t)(B * T * d) * sizeof(float));
  sq_fwd_rmsnorm(x, w, B * T, d, 1e-5f, y);
  float *dx = to_dev(x, (size_t)(B * T * d)), *dw = to_dev(w, (size_t)d);
  SQ_EXPECT_EQ_INT(sq_fwd_cuda_rmsnorm(dx, dw, B * T, d, 1e-5f, dx, stream), SQ_OK);
  cudaStreamSynchronize(stream);
  compare("rmsnorm", dx, y, (size_t)(B * T * d), 1e-6, 1e-5);

  /* Linear with bias */
  float *W = nv_alloc_rand((size_t)(dout * d), &s, 0.5f),
        *bias = nv_alloc_rand((size_t)dout, &s, 1.0f);
  float *Y = malloc((size_t)(B * T * dout) * sizeof(float));
  sq_fwd_linear(x, B * T, d, W, dout, bias, Y);
  float *dx2 = to_dev(x, (size_t)(B * T * d)), *dW = to_dev(W, (size_t)(dout * d));
  float *db = to_dev(bias, (size_t)dout), *dY = NULL;
  cudaMalloc((void **)&dY, (size_t)(B * T * dout) * sizeof(float));
  SQ_EXPECT_EQ_INT(sq_fwd_cuda_linear(cb, dx2, B * T, d, dW, dout, db, dY), SQ_OK);
  cudaStreamSynchronize(stream);
  compare("linear", dY, Y, (size_t)(B * T * dout), 1e-4, 1e-5);

  /* RoPE (llama3 tables) */
  sq_rope_cfg rc = {.type = SQ_FWD_ROPE_LLAMA3,
                    .head_dim = (int)hd,
                    .theta = 500000.0,
                    .factor = 8.0,
                    .low_freq_factor = 1.0,
                    .high_freq_factor = 4.0,
                    .original_max_position = 8192};
  sq_rope r = {0};
  SQ_EXPECT_EQ_INT(sq_fwd_rope_init(&r, &rc, T), SQ_OK);
  float *q = nv_alloc_rand((size_t)n, &s, 2.0f);
  float *dq = to_dev(q, (size_t)n), *dcos = to_dev(r.cos, (size_t)(T * hd / 2));
  float *dsin = to_dev(r.sin, (size_t)(T * hd / 2));
  sq_fwd_rope_apply(&r, q, B, T, H);
  SQ_EXPECT_EQ_INT(sq_fwd_cuda_rope_apply(dcos, dsin, (int)hd, dq, B, T, H, stream), SQ_OK);
  cudaStreamSynchronize(stream);
  compare("rope", dq, q, (size_t)n, 1e-6, 1e-6); /* nvcc may fuse into FMA */

  /* SwiGLU */
  float *g = nv_alloc_rand((size_t)n, &s, 6.0f), *u = nv_alloc_rand((size_t)n, &s, 2.0f);
  float *dg = to_dev(g, (size_t)n), *du = to_dev(u, (size_t)n);
  sq_fwd_silu_mul(g, u, n);
  SQ_EXPECT_EQ_INT(sq_fwd_cuda_silu_mul(dg, du, n, stream), SQ_OK);
  cudaStreamSynchronize(stream);
  compare("silu_mul", dg, g, (size_t)n, 1e-6, 1e-5);

  /* causal softmax over (B*T, T) score rows */
  float *S = nv_alloc_rand((size_t)(B * T * T), &s, 8.0f);
  float *dS = to_dev(S, (size_t)(B * T * T));
  for (int64_t row = 0; row < B * T; row++) {
    int64_t valid = row % T + 1;
    sq_fwd_softmax_row(S + row * T, valid);
    for (int64_t j = valid; j < T; j++) S[row * T + j] = 0.0f;
  }
  SQ_EXPECT_EQ_INT(sq_fwd_cuda_softmax(dS, B * T, T, 1, T, stream), SQ_OK);
  cudaStreamSynchronize(stream);
  compare("softmax", dS, S, (size_t)(B * T * T), 1e-7, 1e-5);

  float *devs[] = {dx, dw, dx2, dW, db, dY, dq, dcos, dsin, dg, du, dS};
  for (size_t i = 0; i < sizeof devs / sizeof devs[0]; i++) cudaFree(devs[i]);
  free(x), free(w), free(y), free(W), free(bias), free(Y), free(q), free(g), free(u), free(S);
  sq_fwd_rope_free(&r);
  cublasDestroy(cb);
  cudaStreamDestroy(stream);
  return sq_test_result("test_forward_cuda");
}
