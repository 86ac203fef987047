/* The checkpoint-restart journal: which decoder layers a job has committed.
 *
 * After every rank has written layer l's output-shard pieces and the hidden
 * states for layer l+1, rank 0 commits layer l here. A restarted job opens the
 * journal, checks that its inputs did not change (the fingerprint), re-checks
 * the files the journal lists, and continues at sq_journal_next_layer().
 *
 * On disk: a directory CKPT/ holding
 *   journal.json       the current generation (layers 0..n-1 committed)
 *   journal.prev.json  the previous generation (layers 0..n-2), a fallback for
 *                      a journal.json that was damaged after it was published
 * Both are published atomically (temp file, fsync, rename, fsync of CKPT/),
 * prev first, so a crash at any instant leaves two readable generations.
 *
 * journal.json (format version 1):
 *   {
 *     "format": "shardq-journal", "version": 1, "hash": "fnv1a64",
 *     "fingerprint": {
 *       "shardq_version": "0.1.0",        the shardq that started the job
 *       "checkpoint": "<16 hex>",         hash of the input shards' headers
 *       "recipe": "<16 hex>",             hash of the recipe / scheme text
 *       "calibration": "<16 hex>",        hash of the calibration file
 *       "ranks": 8,                       MPI rank count (output depends on it)
 *       "options": "<16 hex>"             hash of the other output-relevant flags
 *     },
 *     "total_layers": 61,
 *     "created": 1790000000.25,           unix seconds (real)
 *     "runs": [ {"started": t, "first_layer": 0}, ... ]   one per (re)start
 *     "layers": [ {"layer": 0, "time": t,
 *                  "files": [ {"path": "out/rank0.l0.safetensors",
 *                              "bytes": 123, "checksum": "<16 hex>"} ]} ],
 *     "journal_checksum": "<16 hex>"
 *   }
 * Layers are committed in order, so "layers"[i].layer == i. A relative file
 * path is relative to CKPT/. journal_checksum is FNV-1a 64 over the compact,
 * key-sorted JSON dump of the object without that key: it catches damage that
 * still parses (a flipped digit). Do not hand-edit the journal; to go back one
 * layer use sq_journal_fall_back().
 *
 * Hashes: every digest here is FNV-1a 64 (offset basis 0xcbf29ce484222325,
 * prime 0x100000001b3), printed as 16 lower-case hex digits. It detects
 * changes and accidental damage; it is NOT a security checksum. */
#ifndef SQ_COORDINATOR_JOURNAL_H
#define SQ_COORDINATOR_JOURNAL_H

#include <stddef.h>
#include <stdint.h>

#include "common/status.h"

#define SQ_JOURNAL_VERSION 1
#define SQ_JOURNAL_FILE "journal.json"
#define SQ_JOURNAL_PREV_FILE "journal.prev.json"
#define SQ_HASH_HEX_LEN 16 /* hex digits of a 64-bit digest (plus a NUL in buffers) */
#define SQ_FNV1A64_INIT 0xcbf29ce484222325ULL

/* FNV-1a 64 of len bytes, continuing from h (start with SQ_FNV1A64_INIT). */
uint64_t sq_hash_fnv1a64(uint64_t h, const void *data, size_t len);
/* 16 lower-case hex digits of h into out[17]. */
void sq_hash_hex(uint64_t h, char out[SQ_HASH_HEX_LEN + 1]);
/* FNV-1a 64 of a whole file (read in 1 MiB preads), as hex; bytes gets its size
 * if not NULL. Speed is about 1 GB/s per core: verifying terabytes is minutes. */
sq_status sq_file_checksum(const char *path, char hex[SQ_HASH_HEX_LEN + 1], uint64_t *bytes);

/* What a resumed job must share with the job that wrote the journal. Hash
 * fields are hex digests (sq_hash_hex); fill them with sq_hash_fnv1a64. */
typedef struct sq_journal_fingerprint {
  char shardq_version[32];
  char checkpoint[SQ_HASH_HEX_LEN + 1];
  char recipe[SQ_HASH_HEX_LEN + 1];
  char calibration[SQ_HASH_HEX_LEN + 1];
  int ranks;
  char options[SQ_HASH_HEX_LEN + 1];
} sq_journal_fingerprint;

/* One file written for a layer. On commit, an empty checksum ("") is computed
 * from the file (and bytes with it). */
typedef struct sq_journal_file {
  char *path;
  uint64_t bytes;
  char checksum[SQ_HASH_HEX_LEN + 1];
} sq_journal_file;

typedef struct sq_journal_layer {
  int layer;
  double time; /* unix seconds of the commit */
  int nfiles;
  sq_journal_file *files;
} sq_journal_layer;

typedef struct sq_journal_run {
  double started; /* unix seconds */
  int first_layer;
} sq_journal_run;

/* An open journal. Read its fields freely; change it only through the API. */
typedef struct sq_journal {
  char *dir;
  sq_journal_fingerprint fp;
  int total_layers;
  double created;
  int nruns;
  sq_journal_run *runs;
  int nlayers; /* committed layers: layers[i].layer == i */
  sq_journal_layer *layers;
  int from_prev; /* 1: opened from journal.prev.json (journal.json was damaged) */
} sq_journal;

/* Start a new journal in dir (created if missing) with no layers committed and
 * one run started now. A dir that already holds a journal is SQ_ERR_ARG (resume
 * it, or choose a new directory). */
sq_status sq_journal_create(const char *dir, const sq_journal_fingerprint *fp, int total_layers,
                            sq_journal **out);

/* Open dir/journal.json and validate it. No journal is SQ_ERR_IO; a damaged one
 * (truncated, bad JSON, wrong fields, checksum mismatch) is SQ_ERR_FORMAT naming
 * the file and what is wrong. */
sq_status sq_journal_open(const char *dir, sq_journal **out);

/* Like sq_journal_open, but when journal.json is damaged (SQ_ERR_FORMAT), open
 * journal.prev.json instead (warns, sets j->from_prev). The next commit
 * rewrites journal.json. Both damaged: the error names both files. */
sq_status sq_journal_open_or_prev(const char *dir, sq_journal **out);

/* Compare the journal's fingerprint with fp. Any difference is SQ_ERR_ARG whose
 * message names every changed field with both values, e.g. "calibration file
 * changed: journal has 9f3a..., now 12bc...". */
sq_status sq_journal_check_fingerprint(const sq_journal *j, const sq_journal_fingerprint *fp);

/* Record that a (re)started job begins at sq_journal_next_layer() now, and
 * publish. Used by `shardq status` to leave queue time out of layer times. */
sq_status sq_journal_begin_run(sq_journal *j);

/* Commit layer (must equal sq_journal_next_layer()) with its files, and
 * publish the new generation. Entries with an empty checksum are hashed here.
 * The journal keeps copies of the paths; files[] is not changed. */
sq_status sq_journal_commit_layer(sq_journal *j, int layer, const sq_journal_file *files, int nfiles);

/* The first uncommitted layer (== total_layers when the job is done). */
int sq_journal_next_layer(const sq_journal *j);

/* Re-check every listed file (size, then FNV-1a 64). The first mismatch or
 * missing file is SQ_ERR_FORMAT naming the file and layer; *bad_layer (if not
 * NULL) gets that layer, or -1 when all files verify. */
sq_status sq_journal_verify_files(const sq_journal *j, int *bad_layer);

/* Fall back one generation: forget the last committed layer and publish, so a
 * resumed job redoes it. SQ_ERR_ARG when nothing is committed. */
sq_status sq_journal_fall_back(sq_journal *j);

/* Close and free (NULL is fine). */
void sq_journal_close(sq_journal *j);

#endif
