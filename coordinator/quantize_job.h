/* The state of one `shardq quantize` job (dense models) and the per-layer
 * steps that act on it: cmd_quantize.c is the driver (set-up, the layer loop,
 * checkpoint commits, publication, summary), quantize_layer_step.c runs one
 * decoder layer (load, share, SmoothQuant, calibration, Hessian reduce, write,
 * solve, share, forward) and declares/writes this rank's tensors of it. The
 * agreement rules between the steps (SQ_Q_STEP, SQ_Q_COLL) are here so that
 * both files end their steps the same way. Internal to the coordinator. */
#ifndef SQ_COORDINATOR_QUANTIZE_JOB_H
#define SQ_COORDINATOR_QUANTIZE_JOB_H

#include <stdint.h>

#include "common/status.h"
#include "coordinator/quantize_ckpt.h"
#include "coordinator/quantize_cli.h"
#include "coordinator/quantize_plan.h"
#include "sharding/safetensors.h"
#include "worker/activations.h"
#include "worker/calib.h"
#include "worker/comm.h"
#include "worker/layer_quant.h"
#include "worker/model.h"
#include "worker/smoothquant.h"

/* Per module-kind totals for the summary table. */
typedef struct {
  double loss, seconds;
  uint64_t bytes_in, bytes_out;
  int count, has_loss;
} sq_qsum;

/* The whole job state, freed in one place. */
typedef struct {
  sq_qplan_args a;
  sq_qcli_flags flags;
  sq_qckpt ck;    /* checkpoint-restart (ck.dir NULL: off) */
  const sq_comm *comm;
  int rank, ranks;
  int broken;     /* a collective failed: the communicator is unusable */
  sq_model model;
  sq_qplan plan;
  sq_calib calib;
  int64_t s0, s1; /* this rank's calibration samples [s0, s1) */
  int *owner;     /* (n_layers, SQ_MOD_COUNT) owner rank of each module */
  sq_acts acts;
  sq_acts_runner runner;
  sq_layer_buf buf;
  sq_lq lq;
  sq_smooth smooth;
  int smoothing;
  float *svec;  /* (hidden) SmoothQuant scales */
  sq_rope rope;
  sq_st_writer *w, *dump;
  char **files;   /* [n_files] parts this rank writes (NULL: none) */
  int n_files;
  float *embed;
  double *layer_s; /* [n_layers] this rank's seconds per layer */
  sq_qsum sum[SQ_MOD_COUNT];
} sq_qjob;

#define SQ_Q_OWNER(j, l, m) ((j)->owner[(size_t)(l) * SQ_MOD_COUNT + (size_t)(m)])

/* End a step: every rank learns whether any rank failed in it; a failure
 * anywhere becomes the same error on every rank, "rank R (host): cause". One
 * rank: the local status as it is. */
sq_status sq_qjob_agree(sq_qjob *j, sq_status local);

/* A collective: its failure (timeout, dead peer) leaves no usable communicator. */
#define SQ_Q_COLL(j, call)        \
  do {                            \
    sq_status st_ = (call);       \
    if (st_ != SQ_OK) {           \
      (j)->broken = 1;            \
      return st_;                 \
    }                             \
  } while (0)
/* A local step followed by its agreement. */
#define SQ_Q_STEP(j, call) SQ_CHECK(sq_qjob_agree((j), (call)))

/* Does this rank write any tensor of layers [first, last]? */
int sq_qjob_writes_group(const sq_qjob *j, int first, int last);

/* Open layer group k's shard writer j->w (this rank's part; nothing when
 * j->files[k] is NULL) and declare every tensor of layers [first, last] this
 * rank writes, plus the calibrated scales. */
sq_status sq_qjob_open_layer_shard(sq_qjob *j, int first, int last, int k);

/* Decoder layer l on every rank, steps agreed (or collectives failed, with
 * j->broken set); on return the activations hold layer l+1's inputs. t_start
 * (sq_time_now at the job's start) feeds the progress lines' ETA. */
sq_status sq_qjob_layer(sq_qjob *j, int l, double t_start);

#endif
