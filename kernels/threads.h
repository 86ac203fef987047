/* Thread count of the CPU kernels (OpenBLAS). Results of sgemm/ssyrk depend on
 * how many threads split the work, so a job that must be byte-identical across
 * nodes and restarts fixes the count instead of inheriting the CPU affinity. */
#ifndef SQ_KERNELS_THREADS_H
#define SQ_KERNELS_THREADS_H

#ifdef __cplusplus
extern "C" {
#endif

/* Set the BLAS thread count for this process (n >= 1). */
void sq_kernels_set_threads(int n);
/* The BLAS thread count in effect. */
int sq_kernels_get_threads(void);

#ifdef __cplusplus
}
#endif

#endif
