/* Graceful stop on SIGTERM / SIGUSR1: Slurm's warning before a time limit or
 * a preemption (--signal=B:USR1@margin, forwarded by the batch script) and
 * `scancel -s USR1`. The handler only sets a flag; the layer loop checks it at
 * each layer boundary (after the layer is committed), all ranks agree on it
 * (allreduce of the flag, so every rank stops after the same layer) and the
 * job exits with SQ_EXIT_REQUEUE (75, coordinator/cli.h): "stopped at a safe
 * point, requeue me". The batch script (slurm/shardq.sbatch.in) requeues on
 * 75 and the next run resumes from the journal.
 *
 * Under mpirun, send SIGUSR1 to mpirun (it forwards SIGUSR1 to every rank;
 * SIGTERM to mpirun kills the job instead) or to the ranks themselves. */
#ifndef SQ_COORDINATOR_STOP_SIGNAL_H
#define SQ_COORDINATOR_STOP_SIGNAL_H

#include "common/status.h"

/* Install the SIGTERM and SIGUSR1 handlers (sigaction, SA_RESTART so that
 * system calls in progress are resumed, not failed with EINTR). */
sq_status sq_stop_install(void);

/* Put back the dispositions that were in place before sq_stop_install. */
void sq_stop_uninstall(void);

/* 1 once SIGTERM or SIGUSR1 arrived since install (or the last reset). */
int sq_stop_requested(void);

/* The first signal that asked to stop (SIGTERM or SIGUSR1), 0 if none. */
int sq_stop_signal(void);

/* Forget a request (tests; a job never un-stops). */
void sq_stop_reset(void);

#endif
