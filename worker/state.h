/* Per-rank state files for checkpoint-restart: the hidden states of this
 * rank's calibration samples at the INPUT of a decoder layer, written after
 * the previous layer is quantized so that a restarted job can continue at
 * that layer without recomputing the layers before it.
 *
 * One HDF5 file per rank, not one parallel file: independent files need no
 * collective HDF5 I/O (no MPI-IO, no rank waits for another to write its
 * part), and each rank publishes its own file atomically by itself (write a
 * whole new file under a temporary name, H5Fclose, fsync, rename, fsync the
 * directory). HDF5 does not survive a crash mid-write, so a file is never
 * updated in place: a crash leaves the previous file or the new one.
 *
 * Name: <dir>/state-rank<RRRRR>-layer<LLLL>.h5, LLLL = the layer whose input
 * the states are (rank and layer zero-padded to 5 and 4 digits).
 *
 * Layout (format version 1):
 *   dataset "/hidden"  H5T_IEEE_F32LE, dims (n, T, hidden), contiguous: the
 *                      states of samples [sample_start, sample_start + n)
 *   attributes of the root group, each a scalar H5T_STD_I64LE:
 *     format_version (1), layer, rank, sample_start, sample_count (= n),
 *     seq_len (= T), hidden
 * Integrity: the caller records the whole file's FNV-1a 64 (returned by
 * sq_state_write) in the journal and passes it back to sq_state_read, which
 * checks it before HDF5 opens the file; HDF5 itself detects a truncated file
 * but not flipped data bytes.
 *
 * Generations: after layer l is committed the files for inputs l+1 (new) and
 * l (the previous generation, for a fall back one layer) are kept and older
 * ones are deleted (sq_state_prune). Until the commit, l and l-1 stay.
 *
 * worker/ does not depend on coordinator/, where the journal's file checksum
 * lives, so the checksum function is passed in (sq_file_checksum). */
#ifndef SQ_WORKER_STATE_H
#define SQ_WORKER_STATE_H

#include <stdint.h>

#include "common/status.h"
#include "worker/activations.h"

#define SQ_STATE_FORMAT_VERSION 1
#define SQ_STATE_HEX_LEN 16 /* hex digits of the 64-bit checksum */

/* Checksum of a whole file as SQ_STATE_HEX_LEN hex digits (sq_file_checksum
 * in coordinator/journal.h); bytes gets the file size. */
typedef sq_status (*sq_state_checksum_fn)(const char *path, char hex[SQ_STATE_HEX_LEN + 1],
                                          uint64_t *bytes);

/* What a state file holds: the states of samples [sample_start,
 * sample_start + n) with (T, hidden) each, at the input of `layer`. */
typedef struct sq_state_desc {
  int layer, rank;
  int64_t sample_start, n, T, hidden;
} sq_state_desc;

/* The file name for (rank, layer), without the directory, into buf. */
void sq_state_file_name(int rank, int layer, char *buf, size_t len);

/* Write acts (n, T, hidden, one sample at a time: bounded memory) with the
 * attributes of desc as <dir>/<sq_state_file_name> and publish it durably.
 * desc's n/T/hidden must equal acts'. On success hex gets the file's checksum
 * and *bytes its size (either may be NULL; hash may be NULL to skip it). No
 * temporary file is left behind on failure. */
sq_status sq_state_write(const char *dir, const sq_state_desc *desc, const sq_acts *acts,
                         sq_state_checksum_fn hash, char hex[SQ_STATE_HEX_LEN + 1],
                         uint64_t *bytes);

/* Read <dir>/<sq_state_file_name(desc->rank, desc->layer)> into acts (already
 * initialised with desc's n, T, hidden) after checking, in order: the
 * checksum against expect_hex (skipped if expect_hex or hash is NULL), that
 * HDF5 can open it, format_version and every attribute against desc, and the
 * dataset's type and dims. Any mismatch is SQ_ERR_FORMAT naming the file and
 * what differs, with a hint; a missing file is SQ_ERR_IO. */
sq_status sq_state_read(const char *dir, const sq_state_desc *desc, sq_state_checksum_fn hash,
                        const char *expect_hex, sq_acts *acts);

/* Delete this rank's state files for layers < keep_from, and temporary files
 * of this rank's state files left by a crashed writer (any layer). Files of
 * other ranks are not touched. */
sq_status sq_state_prune(const char *dir, int rank, int keep_from);

#endif
