/* Checkpoint-restart of `shardq quantize` (--checkpoint-dir DIR [--resume]):
 * the pieces the layer loop calls at the start and after each layer. The
 * collectives and the agreements between the steps live in quantize_job.h and quantize_layer_step.c;
 * every function here is local to one rank.
 *
 * Protocol, per layer l (layers_per_shard = 1, so that layer l's output is
 * exactly the shard parts of group l, complete when the layer ends):
 *   1. every rank commits its shard part of layer l (if it writes one) and
 *      writes its state file for layer l+1 (worker/state.h), both published
 *      durably; sq_qckpt_layer_files lists them as "path\tbytes\tchecksum"
 *      lines (output parts by absolute path, state files relative to DIR)
 *   2. the lists are gathered to rank 0 (names and checksums only)
 *   3. fail point "before-journal"; rank 0 appends `layer l committed` with
 *      every rank's files to the journal (atomic publish); "after-journal"
 *   4. every rank deletes its state files older than layer l (two generations
 *      stay: l for a fall back, l+1 for the resume)
 *   5. the stop flags (coordinator/stop_signal.h) are summed over ranks: if
 *      any rank got SIGTERM/SIGUSR1, every rank stops here, exit 75.
 * Resume (rank 0 decides, coordinator/resume.h; the first uncommitted layer F
 * is broadcast): F = 0 starts from the embeddings; else every rank reads its
 * state file for F (checksum from the journal) and the loop starts at F.
 * Output parts of layers < F stay as they are; the index and config.json are
 * written at the end over all parts, so the output is byte-identical to an
 * uninterrupted run with the same rank count.
 *
 * Test-only knobs (read here; see also SHARDQ_FAILPOINT in worker/comm.h):
 *   SHARDQ_FAILPOINT_LAYER=L  fail points are armed only from layer L on (so
 *                             a test can fail after some layers committed)
 *   SHARDQ_TEST_LAYER_SLEEP=S sleep S seconds after each commit (so a test
 *                             can signal a job mid-run) */
#ifndef SQ_COORDINATOR_QUANTIZE_CKPT_H
#define SQ_COORDINATOR_QUANTIZE_CKPT_H

#include <stddef.h>
#include <stdint.h>

#include "common/status.h"
#include "coordinator/journal.h"
#include "coordinator/resume.h"
#include "worker/activations.h"

typedef struct sq_qckpt {
  const char *dir; /* NULL: checkpoint-restart is off */
  int want_resume;
  int rank, ranks;
  sq_journal *journal; /* rank 0 */
  int first_layer;     /* first uncommitted layer (broadcast from rank 0) */
  int fell_back;
  char *out_abs;      /* absolute --out, for the journal's paths */
  char *failpoint;    /* saved SHARDQ_FAILPOINT (layer gating) */
  int failpoint_from; /* SHARDQ_FAILPOINT_LAYER, -1 if unset */
  double sleep_s;     /* SHARDQ_TEST_LAYER_SLEEP */
} sq_qckpt;

/* Fill k (dir NULL: off) and read the test knobs. */
void sq_qckpt_init(sq_qckpt *k, const char *dir, int want_resume, int rank, int ranks);
void sq_qckpt_free(sq_qckpt *k);

/* Rank 0, before anything is written: with no journal in the dir, check the
 * output directory (sq_qout_prepare with force) and create the journal; with
 * one, resume it (refusals leave the dir untouched) and allow the non-empty
 * output directory. Sets k->first_layer. Off: sq_qout_prepare alone. */
sq_status sq_qckpt_decide(sq_qckpt *k, const sq_resume_inputs *in, int total_layers,
                          const char *out_dir, int force);

/* Every rank, after the broadcast of first_layer: resolve out_dir for the
 * journal's paths and delete what a killed run of this rank left unlisted:
 * temporary files of its state files in DIR and of its output parts
 * parts[0..nparts) (names in out_dir; NULL skipped) in out_dir. */
sq_status sq_qckpt_start(sq_qckpt *k, const char *out_dir, const char *const *parts, int nparts);

/* Every rank, resuming at layer F = k->first_layer (0 < F < total): read this
 * rank's state file for layer F into acts (samples [s0, s0 + acts->n)),
 * checking it against the checksum the journal lists. */
sq_status sq_qckpt_load_state(sq_qckpt *k, int64_t s0, sq_acts *acts);

/* Step 1 above for this rank: write the state file for layer l+1 (when
 * l + 1 < total) and list it with the committed output parts named in
 * parts[0..nparts) (file names in out_dir; NULL entries skipped). *list is
 * malloc'd text, *len its length. */
sq_status sq_qckpt_layer_files(sq_qckpt *k, int l, int total, const sq_acts *acts, int64_t s0,
                               const char *const *parts, int nparts, char **list, size_t *len);

/* Step 3, rank 0: commit layer l with the files in the gathered lists. */
sq_status sq_qckpt_commit(sq_qckpt *k, int l, const char *all, size_t len);

/* Step 4: delete this rank's state files older than layer l. */
sq_status sq_qckpt_prune(sq_qckpt *k, int l);

/* Arm or disarm the fail points for layer l (SHARDQ_FAILPOINT_LAYER). */
void sq_qckpt_gate_failpoints(sq_qckpt *k, int l);

/* The test pause after a commit (SHARDQ_TEST_LAYER_SLEEP). */
void sq_qckpt_test_pause(const sq_qckpt *k);

#endif
