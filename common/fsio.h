/* Whole-buffer positional I/O and durable publishing of files.
 *
 * Checkpoint bytes are read with pread at a tensor's offset (never whole files,
 * never mmap), and every output file is published atomically: it is written
 * under a temporary name in the target directory, fsynced, renamed over the
 * final name and the directory is fsynced. A crash leaves either the old file
 * or the new one, never a torn one. */
#ifndef SQ_COMMON_FSIO_H
#define SQ_COMMON_FSIO_H

#include <stddef.h>
#include <stdint.h>

#include "common/status.h"

/* Read exactly len bytes at offset; a short file is SQ_ERR_FORMAT naming path. */
sq_status sq_fs_pread_full(int fd, void *buf, size_t len, uint64_t offset, const char *path);
/* Write exactly len bytes at offset. */
sq_status sq_fs_pwrite_full(int fd, const void *buf, size_t len, uint64_t offset, const char *path);
/* fsync the directory that holds path (or path itself if it is a directory). */
sq_status sq_fs_fsync_dir_of(const char *path);
/* Temporary name for a file that will be published as final_path:
 * "<dir>/.<base>.tmp.<pid>.<n>". Caller frees. */
char *sq_fs_temp_name(const char *final_path);
/* fsync fd, close it, rename tmp_path to final_path, fsync the directory. The
 * fd is closed in every case. */
sq_status sq_fs_publish(int fd, const char *tmp_path, const char *final_path);
/* Write a whole small file (config.json, index, journal) atomically. */
sq_status sq_fs_write_file_atomic(const char *final_path, const void *data, size_t len);
/* Read a whole small file (config.json, index, at most max_len bytes) into a
 * NUL-terminated malloc'd buffer. */
sq_status sq_fs_read_small_file(const char *path, size_t max_len, char **out, size_t *out_len);
/* Create a directory (and parents) if missing. */
sq_status sq_fs_mkdirs(const char *path);
/* Join dir and name into a malloc'd path. */
char *sq_fs_join(const char *dir, const char *name);

#endif

#ifdef __cplusplus
extern "C" {
#ifdef __cplusplus
}
#endif

#endif
