/* CUDA twins vs the CPU reference (label gpu): RTN codes, scales, zero points
 * and dequantized weights, per-token fake quantization and packed words must
 * match bit for bit over int 2/3/4/8 sym/asym, fp8, tensor/channel/group
 * (incl. a partial last group). Exits 77 (skipped) without a CUDA device. */
#include <cuda_runtime_api.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/quant.h"
#include "kernels/quant_cuda.h"
#include "test_util.h"

#define CU(call)                                                                     \
  do {                                                                               \
    cudaError_t e_ = (call);                                                         \
    if (e_ != cudaSuccess) {                                                         \
      fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString(e_)); \
      exit(1);                                                                       \
    }                                                                                \
  } while (0)

static uint32_t rng = 777u;
static float frand(void) {
  rng = rng * 1664525u + 1013904223u;
  return ((float)(rng >> 8) / 16777216.0f - 0.5f) * 4.0f;
}

static void *dev_copy(const void *h, size_t n) {
  void *d = NULL;
  CU(cudaMalloc(&d, n ? n : 1));
  if (h && n) CU(cudaMemcpy(d, h, n, cudaMemcpyHostToDevice));
  return d;
}

static void same(const void *h, const void *d, size_t n, const char *what, const char *cfg) {
  void *b = malloc(n ? n : 1);
  CU(cudaMemcpy(b, d, n, cudaMemcpyDeviceToHost));
  SQ_EXPECT_MSG(memcmp(h, b, n) == 0, "%s differ CPU vs CUDA (%s)", what, cfg);
  free(b);
}

static void run(sq_qargs qa, int64_t d_out, int64_t d_in) {
  char cfg[96];
  snprintf(cfg, sizeof cfg, "type %d bits %d sym %d strat %d gs %d dt %s %lldx%lld", (int)qa.type,
           qa.num_bits, qa.symmetric, (int)qa.strategy, qa.group_size, sq_dtype_name(qa.scale_dtype),
           (long long)d_out, (long long)d_in);
  int64_t n = d_out * d_in, ns = sq_quant_scale_rows(&qa, d_out) * sq_quant_num_groups(&qa, d_in);
  float *W = malloc(sizeof(float) * n), *D = malloc(sizeof(float) * n), *S = malloc(sizeof(float) * ns);
  int8_t *Q = malloc((size_t)n);
  int32_t *Z = calloc((size_t)ns, sizeof(int32_t));
  for (int64_t i = 0; i < n; ++i) W[i] = i < d_in ? 0.0f : frand() * (float)(1 + i % 7);
  SQ_EXPECT(sq_quant_rtn(&qa, "w", W, d_out, d_in, Q, S, Z, D) == SQ_OK);
  float *dW = dev_copy(W, sizeof(float) * n), *dD = dev_copy(NULL, sizeof(float) * n);
  float *dS = dev_copy(NULL, sizeof(float) * ns);
  int8_t *dQ = dev_copy(NULL, (size_t)n);
  int32_t *dZ = dev_copy(Z, sizeof(int32_t) * ns);
  sq_status st = sq_quant_rtn_cuda(&qa, "w", dW, d_out, d_in, dQ, dS, dZ, dD, 0);
  SQ_EXPECT_MSG(st == SQ_OK, "%s: %s", cfg, sq_error_message());
  same(Q, dQ, (size_t)n, "codes", cfg);
  same(S, dS, sizeof(float) * ns, "scales", cfg);
  same(Z, dZ, sizeof(int32_t) * ns, "zero points", cfg);
  same(D, dD, sizeof(float) * n, "dequantized weights", cfg);
  if (qa.type == SQ_QTYPE_INT) {
    int64_t w = sq_quant_packed_cols(d_in, qa.num_bits);
    int32_t *P = malloc(sizeof(int32_t) * d_out * w), *dP = dev_copy(NULL, sizeof(int32_t) * d_out * w);
    SQ_EXPECT(sq_quant_pack_rows(qa.num_bits, "w", Q, d_out, d_in, P) == SQ_OK);
    SQ_EXPECT(sq_quant_pack_rows_cuda(qa.num_bits, "w", dQ, d_out, d_in, dP, 0) == SQ_OK);
    CU(cudaDeviceSynchronize());
    same(P, dP, sizeof(int32_t) * d_out * w, "packed rows", cfg);
    free(P);
    CU(cudaFree(dP));
  }
  /* per-token fake quantization of the same matrix as activations */
  float *Y = malloc(sizeof(float) * n);
  if (qa.num_bits == 8) {
    SQ_EXPECT(sq_quant_act_fake_per_token(&qa, "x", W, d_out, d_in, Y) == SQ_OK);
    SQ_EXPECT(sq_quant_act_fake_per_token_cuda(&qa, "x", dW, d_out, d_in, dD, 0) == SQ_OK);
    same(Y, dD, sizeof(float) * n, "fake-quantized activations", cfg);
  }
  free(W), free(D), free(S), free(Q), free(Z), free(Y);
  CU(cudaFree(dW)); CU(cudaFree(dD)); CU(cudaFree(dS)); CU(cudaFree(dQ)); CU(cudaFree(dZ));
}

int main(void) {
  int count = 0;
  cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess || count < 1) {
    char why[160];
    snprintf(why, sizeof why, "no CUDA device (%s)", e != cudaSuccess ? cudaGetErrorString(e) : "count 0");
    sq_test_skip(why);
  }
  static const int bits[] = {2, 3, 4, 8};
  static const sq_dtype dts[] = {SQ_DTYPE_BF16, SQ_DTYPE_F16, SQ_DTYPE_F32};
  for (int b = 0; b < 4; ++b)
    for (int sym = 0; sym <= 1; ++sym)
      for (int d = 0; d < 3; ++d) {
        sq_qargs qa = {bits[b], SQ_QTYPE_INT, sym, SQ_QSTRAT_TENSOR, 0, dts[d]};
        run(qa, 7, 300);
        qa.strategy = SQ_QSTRAT_CHANNEL;
        run(qa, 7, 300);
        qa.strategy = SQ_QSTRAT_GROUP, qa.group_size = 32;
        run(qa, 9, 172);
        qa.group_size = 128;
        run(qa, 5, 1024);
      }
  for (int d = 0; d < 3; ++d) {
    sq_qargs qa = {8, SQ_QTYPE_FLOAT, 1, SQ_QSTRAT_TENSOR, 0, dts[d]};
    run(qa, 6, 500);
    qa.strategy = SQ_QSTRAT_CHANNEL;
    run(qa, 6, 500);
  }
  /* zero points packed along d_out */
  int32_t zp[37 * 3], P[5 * 3], *dzp = dev_copy(NULL, sizeof zp), *dP = dev_copy(NULL, sizeof P);
  for (int i = 0; i < 37 * 3; ++i) zp[i] = i % 16 - 8;
  CU(cudaMemcpy(dzp, zp, sizeof zp, cudaMemcpyHostToDevice));
  SQ_EXPECT(sq_quant_pack_zero_points(4, "zp", zp, 37, 3, P) == SQ_OK);
  SQ_EXPECT(sq_quant_pack_zero_points_cuda(4, "zp", dzp, 37, 3, dP, 0) == SQ_OK);
  CU(cudaDeviceSynchronize());
  same(P, dP, sizeof P, "packed zero points", "int4 37x3");
  /* NaN names the same element */
  float W[4 * 40] = {0}, *dW;
  W[2 * 40 + 9] = NAN;
  dW = dev_copy(W, sizeof W);
  int8_t *dQ = dev_copy(NULL, sizeof W / 4);
  float *dS = dev_copy(NULL, 4 * sizeof(float));
  sq_qargs qa = {4, SQ_QTYPE_INT, 1, SQ_QSTRAT_CHANNEL, 0, SQ_DTYPE_BF16};
  SQ_EXPECT(sq_quant_rtn_cuda(&qa, "m.w", dW, 4, 40, dQ, dS, NULL, NULL, 0) == SQ_ERR_NUMERIC);
  SQ_EXPECT_MSG(strstr(sq_error_message(), "(2, 9)") != NULL, "message: %s", sq_error_message());
  sq_error_clear();
  CU(cudaFree(dW)); CU(cudaFree(dQ)); CU(cudaFree(dS)); CU(cudaFree(dzp)); CU(cudaFree(dP));
  return sq_test_result("test_quant_cuda");
}
