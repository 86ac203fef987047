/* CUDA twin of sq_hessian_accumulate: cublasSsyrk on a device tile. Row-major
 * x (T, d) is column-major x^T (d, T), so S += 2 x^T x is syrk with N on that
 * view; the column-major lower triangle is the row-major upper one. */
#include <cublas_v2.h>
#include <cuda_runtime.h>

extern "C" {
#include "common/status.h"
#include "kernels/hessian.h"
}

extern "C" sq_status sq_hessian_accumulate_cuda(float *d_sum, int64_t d, const float *d_x,
                                                int64_t T, cudaStream_t stream,
                                                const char *name) {
  if (!d_sum || d <= 0 || T < 0 || (T > 0 && !d_x))
    return sq_error_set(SQ_ERR_ARG, "hessian of %s: bad device tile", name ? name : "?");
  if (T == 0) return SQ_OK;
  cublasHandle_t h;
  if (cublasCreate(&h) != CUBLAS_STATUS_SUCCESS)
    return sq_error_set(SQ_ERR_CUDA, "hessian of %s: cublasCreate failed", name ? name : "?");
  cublasSetStream(h, stream);
  const float alpha = 2.0f, beta = 1.0f;
  cublasStatus_t cs = cublasSsyrk(h, CUBLAS_FILL_MODE_LOWER, CUBLAS_OP_N, (int)d, (int)T, &alpha,
                                  d_x, (int)d, &beta, d_sum, (int)d);
  cublasDestroy(h);
  if (cs != CUBLAS_STATUS_SUCCESS)
    return sq_error_set(SQ_ERR_CUDA, "hessian of %s: cublasSsyrk failed (%d)", name ? name : "?",
                        (int)cs);
  return SQ_OK;
}
