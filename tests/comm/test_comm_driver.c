/* A miniature multi-rank job for the fault-injection tests: the same control
 * flow the layer driver uses. Step "load" may fail locally (fail point) and
 * the failure is agreed: rank 0 prints the failing rank's message and every
 * rank exits 1. Step "reduce hessian" is a collective: a rank that hangs or
 * dies there (SHARDQ_FAILPOINT_MODE=hang|exit) makes the others time out
 * (SHARDQ_COMM_TIMEOUT), print the timeout and sq_comm_abort() the job.
 * Exit 0 and "driver: ok" when nothing failed. */
#include "worker/comm.h"

#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
  sq_comm *c = NULL;
  if (sq_comm_init_mpi(&argc, &argv, &c) != SQ_OK) {
    fprintf(stderr, "shardq: error: %s\n", sq_error_message());
    return 1;
  }
  const int me = sq_comm_rank(c);
  char msg[1024];
  sq_status global = SQ_OK;
  sq_status local = sq_comm_failpoint(c, "load");
  if (sq_comm_agree_status(c, local, sq_error_message(), &global, msg, sizeof msg) != SQ_OK) {
    fprintf(stderr, "shardq[%d]: error: %s\n", me, sq_error_message());
    sq_comm_abort(c, 1);
  }
  if (global != SQ_OK) {
    if (me == 0) fprintf(stderr, "shardq: error: %s\n", msg);
    sq_comm_free(c);
    return 1;
  }
  float h[4096];
  for (int i = 0; i < 4096; ++i) h[i] = (float)(me + i);
  sq_status st = sq_comm_failpoint(c, "reduce");
  if (st == SQ_OK) st = sq_comm_reduce_sum_f32(c, h, 4096, 0, "reduce hessian");
  if (st != SQ_OK) {
    fprintf(stderr, "shardq[%d]: error: %s\n", me, sq_error_message());
    sq_comm_abort(c, 1);
  }
  if (me == 0) printf("driver: ok on %d ranks\n", sq_comm_size(c));
  sq_comm_free(c);
  return 0;
}
