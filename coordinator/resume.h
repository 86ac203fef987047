/* Whether and where a quantize job resumes: the fingerprint of its inputs and
 * the resume decision over the journal in --checkpoint-dir (journal.h).
 *
 * Fingerprint (sq_journal_fingerprint, every hash FNV-1a 64):
 *   checkpoint   the input checkpoint as sharding/checkpoint.h sees it: for
 *                each shard in name order its file name, file size (8 bytes
 *                LE) and header bytes [0, data start), then config.json's
 *                bytes. Tensor data is NOT hashed (re-reading hundreds of GB
 *                at every restart is minutes); re-sharding, re-converting or
 *                editing the config changes the headers, sizes or config.
 *   recipe       the recipe file's bytes, else the scheme+flags text
 *   calibration  the calibration file's bytes (whole file)
 *   ranks        the MPI rank count (the output depends on it)
 *   options      the text of the other output-relevant flags
 *   shardq_version  SHARDQ_VERSION
 *
 * Decision (sq_resume_open), on rank 0 only:
 *   no journal in the dir             start fresh (create one)
 *   journal and no --resume           refuse: SQ_ERR_ARG, pass --resume or
 *                                     choose another directory
 *   journal and --resume              open it (journal.prev.json if
 *                                     journal.json is damaged), check the
 *                                     fingerprint: any change is SQ_ERR_ARG
 *                                     naming what changed and the current
 *                                     input paths, and NOTHING in the dir is
 *                                     written; else verify the files, fall
 *                                     back one generation if the last
 *                                     committed layer's files are damaged,
 *                                     record the run, continue at the first
 *                                     uncommitted layer.
 * Verification: every file of every committed layer (size, then checksum),
 * except state files (name "state-...") of all but the last committed layer,
 * which are deleted by design once two newer generations exist
 * (worker/state.h). Damage anywhere else is SQ_ERR_FORMAT naming the file:
 * only one generation back is kept, so the job stops with a clear message. */
#ifndef SQ_COORDINATOR_RESUME_H
#define SQ_COORDINATOR_RESUME_H

#include "common/status.h"
#include "coordinator/journal.h"

typedef struct sq_resume_inputs {
  const char *model_dir;    /* input checkpoint directory */
  const char *recipe_path;  /* recipe file, or NULL ... */
  const char *scheme_text;  /* ... then this scheme+flags text is hashed */
  const char *calib_path;   /* calibration safetensors file */
  int ranks;                /* MPI rank count */
  const char *options_text; /* other output-relevant flags, as text ("" if none) */
} sq_resume_inputs;

/* Compute the fingerprint of in. Unreadable inputs are errors naming them. */
sq_status sq_resume_fingerprint(const sq_resume_inputs *in, sq_journal_fingerprint *fp);

typedef struct sq_resume {
  sq_journal *journal; /* open; the caller commits layers and closes it */
  int first_layer;     /* the first uncommitted layer (total_layers: done) */
  int resumed;         /* 1: continued an existing journal */
  int fell_back;       /* 1: the last committed layer was damaged and dropped */
} sq_resume;

/* The decision above for ckpt_dir (created if missing). in names the inputs
 * in a refusal message (may be NULL). On error out->journal is NULL. */
sq_status sq_resume_open(const char *ckpt_dir, int want_resume, const sq_journal_fingerprint *fp,
                         const sq_resume_inputs *in, int total_layers, sq_resume *out);

/* Verify j's files as described above. *bad_layer gets the layer of the first
 * damaged file, or -1 when all verify (SQ_OK). */
sq_status sq_resume_verify(const sq_journal *j, int *bad_layer);

/* 1 if a journal-listed path names a state file (its base name starts with
 * "state-"). */
int sq_resume_is_state_file(const char *path);

#endif
