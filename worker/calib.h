/* Calibration and evaluation token files: a safetensors file with an int32
 * `input_ids` tensor (samples, seq_len). Rows are selected (optionally after a
 * seeded shuffle), truncated to a sequence length and read with pread, row by
 * row (never the whole file). */
#ifndef SQ_WORKER_CALIB_H
#define SQ_WORKER_CALIB_H

#include <stdint.h>

#include "common/status.h"

typedef struct sq_calib {
  int64_t n, T;      /* samples kept, tokens per sample */
  int64_t file_rows; /* rows in the file */
  int32_t *ids;      /* (n, T) */
} sq_calib;

/* Load up to max_samples rows (<= 0: all) of path's input_ids, each cut to
 * seq_len tokens (<= 0: the file's length; more than it is an error).
 * shuffle_seed 0 takes the first rows in order; otherwise rows are chosen by
 * a Fisher-Yates shuffle driven by splitmix64(seed), deterministic. */
sq_status sq_calib_load(const char *path, int64_t max_samples, int64_t seq_len,
                        uint64_t shuffle_seed, sq_calib *out);
void sq_calib_free(sq_calib *c);

#endif
