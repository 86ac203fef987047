/* NCCL backend smoke test (label gpu). Without a CUDA build or without a GPU,
 * sq_comm_init_nccl must fail cleanly with SQ_ERR_NO_DEVICE and a message that
 * names the rank (then the test is skipped, exit 77); with GPUs it checks that
 * a device-buffer reduce gives the same bits as the rank-order host sum. */
#include <mpi.h>

#include "worker/comm.h"

#include <stdio.h>
#include <string.h>

#ifdef SHARDQ_HAVE_CUDA
#include <cuda_runtime.h>
#endif

int main(int argc, char **argv) {
  sq_comm *c = NULL;
  sq_status st = sq_comm_init_nccl(&argc, &argv, -1, &c);
  if (st == SQ_ERR_NO_DEVICE) {
    const char *m = sq_error_message();
    printf("nccl backend unavailable (as expected without a GPU): %s\n", m);
    int ok = strstr(m, "CUDA") != NULL;
    /* The documented fallback: MPI is still usable after the NCCL failure. */
    sq_comm *mpi = NULL;
    ok = ok && sq_comm_init_mpi(&argc, &argv, &mpi) == SQ_OK &&
         sq_comm_barrier(mpi, "fallback barrier") == SQ_OK;
    if (!ok) fprintf(stderr, "fallback to MPI failed: %s\n", sq_error_message());
    sq_comm_free(mpi);
    return ok ? 77 : 1;
  }
  if (st != SQ_OK) {
    fprintf(stderr, "nccl init failed: %s\n", sq_error_message());
    return 1;
  }
  int fails = 0;
#ifdef SHARDQ_HAVE_CUDA
  const int P = sq_comm_size(c), me = sq_comm_rank(c);
  enum { N = 1 << 16 };
  static float host[N], ref[N];
  for (int i = 0; i < N; ++i) {
    host[i] = (float)((i * 7 + me * 13) % 97) * (i % 2 ? -1e-3f : 1e3f);
    ref[i] = 0;
    for (int r = 0; r < P; ++r) {
      float v = (float)((i * 7 + r * 13) % 97) * (i % 2 ? -1e-3f : 1e3f);
      ref[i] = r == 0 ? v : ref[i] + v;
    }
  }
  float *d = NULL;
  if (cudaMalloc((void **)&d, sizeof host) != cudaSuccess) return 1;
  cudaMemcpy(d, host, sizeof host, cudaMemcpyHostToDevice);
  st = sq_comm_allreduce_sum_f32(c, d, N, "nccl allreduce");
  if (st != SQ_OK) fprintf(stderr, "%s\n", sq_error_message()), ++fails;
  cudaMemcpy(host, d, sizeof host, cudaMemcpyDeviceToHost);
  if (memcmp(host, ref, sizeof ref) != 0) fprintf(stderr, "rank %d: sums differ\n", me), ++fails;
  cudaFree(d);
#endif
  sq_comm_free(c);
  return fails ? 1 : 0;
}
