/* kernels/threads.h on OpenBLAS. */
#include "kernels/threads.h"

#include <cblas.h>

void sq_kernels_set_threads(int n) { openblas_set_num_threads(n < 1 ? 1 : n); }

int sq_kernels_get_threads(void) { return openblas_get_num_threads(); }
