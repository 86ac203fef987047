/* gpu: the CUDA GPTQ and SparseGPT (2:4) twins against the CPU reference on
 * the same inputs: codes identical except rounding ties, weights within fp32
 * tolerance. Exits 77 without a device. */
#include <cuda_runtime_api.h>
#include <stdio.h>

#include "kernels/gptq.h"
#include "kernels/sparsegpt.h"
#include "solver_ref.h"
#include "test_util.h"

int main(void) {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) sq_test_skip("no CUDA device");
  const int64_t d_out = 64, d_in = 256, T = 1024;
  size_t nw = (size_t)(d_out * d_in), nh = (size_t)(d_in * d_in);
  float *X = malloc(sizeof(float) * (size_t)(T * d_in)), *W = malloc(4 * nw), *H = malloc(4 * nh);
  ref_make_x(X, T, d_in);
  ref_make_w(W, (int64_t)nw);
  ref_hessian(X, T, d_in, H);
  sq_gptq_opts o = sq_gptq_opts_default();
  o.q.strategy = SQ_QSTRAT_GROUP;
  o.q.group_size = 64;
  o.actorder = SQ_ACTORDER_GROUP;
  int64_t ns = sq_gptq_scale_count(&o.q, d_out, d_in);
  int8_t *c1 = malloc(nw), *c2 = malloc(nw);
  float *q1 = malloc(4 * nw), *q2 = malloc(4 * nw), *s1 = malloc(4 * (size_t)ns);
  int32_t *z1 = malloc(4 * (size_t)ns), *g1 = malloc(4 * (size_t)d_in);
  sq_gptq_out cpu = {c1, s1, z1, g1, q1, 0, 0, 0};
  SQ_EXPECT(sq_gptq_quantize("cuda.cmp", W, H, d_out, d_in, &o, NULL, 0, &cpu) == SQ_OK);
  float *dW, *dH, *dq, *ds;
  int8_t *dc;
  int32_t *dz, *dg;
  cudaMalloc((void **)&dW, 4 * nw);
  cudaMalloc((void **)&dH, 4 * nh);
  cudaMalloc((void **)&dq, 4 * nw);
  cudaMalloc((void **)&dc, nw);
  cudaMalloc((void **)&ds, 4 * (size_t)ns);
  cudaMalloc((void **)&dz, 4 * (size_t)ns);
  cudaMalloc((void **)&dg, 4 * (size_t)d_in);
  cudaMemcpy(dW, W, 4 * nw, cudaMemcpyHostToDevice);
  cudaMemcpy(dH, H, 4 * nh, cudaMemcpyHostToDevice);
  sq_gptq_out gpu = {dc, ds, dz, dg, dq, 0, 0, 0};
  sq_status st = sq_gptq_quantize_cuda("cuda.cmp", dW, dH, d_out, d_in, &o, &gpu, NULL);
  SQ_EXPECT_MSG(st == SQ_OK, "%s", sq_error_message());
  cudaMemcpy(c2, dc, nw, cudaMemcpyDeviceToHost);
  cudaMemcpy(q2, dq, 4 * nw, cudaMemcpyDeviceToHost);
  int64_t dcnt = 0, dw = 0;
  for (size_t i = 0; i < nw; ++i) {
    dcnt += c1[i] != c2[i];
    dw += fabsf(q1[i] - q2[i]) > 1e-5f + 1e-4f * fabsf(q1[i]);
  }
  fprintf(stderr, "gptq cuda vs cpu: %lld codes, %lld weights differ; loss %.6g vs %.6g\n",
          (long long)dcnt, (long long)dw, gpu.loss, cpu.loss);
  SQ_EXPECT(dcnt <= 8);
  SQ_EXPECT_NEAR(gpu.loss, cpu.loss, 1e-6, 1e-2);
  sq_sparsegpt_opts so = sq_sparsegpt_opts_default();
  so.prune_n = 2;
  so.prune_m = 4;
  sq_sparsegpt_out sc = {q1, NULL, NULL, NULL, NULL, 0, 0}, sg = {dq, NULL, NULL, NULL, NULL, 0, 0};
  SQ_EXPECT(sq_sparsegpt_prune("cuda.sgpt", W, H, d_out, d_in, &so, NULL, 0, &sc) == SQ_OK);
  SQ_EXPECT(sq_sparsegpt_prune_cuda("cuda.sgpt", dW, dH, d_out, d_in, &so, &sg, NULL) == SQ_OK);
  cudaMemcpy(q2, dq, 4 * nw, cudaMemcpyDeviceToHost);
  dw = 0;
  for (size_t i = 0; i < nw; ++i) dw += fabsf(q1[i] - q2[i]) > 1e-4f + 1e-3f * fabsf(q1[i]);
  SQ_EXPECT(dw <= 8);
  cudaFree(dW), cudaFree(dH), cudaFree(dq), cudaFree(dc), cudaFree(ds), cudaFree(dz), cudaFree(dg);
  free(X), free(W), free(H), free(c1), free(c2), free(q1), free(q2), free(s1), free(z1), free(g1);
  return sq_test_result("test_solver_cuda");
}
