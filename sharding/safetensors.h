/* safetensors files: validated reading (pread at each tensor's offset, never
 * whole files, never mmap) and atomic writing.
 *
 * File format (https://huggingface.co/docs/safetensors): 8-byte little-endian
 * header length N, N bytes of UTF-8 JSON {"name": {"dtype": "BF16", "shape":
 * [..], "data_offsets": [begin, end]}, ..., "__metadata__": {str: str}}, then
 * the data; offsets are relative to the end of the header. Validation is that
 * of the reference implementation and stricter: header length >= 2 and at most
 * SQ_ST_MAX_HEADER and inside the file; the header starts with '{', is strict
 * UTF-8 and JSON without duplicate keys; names are non-empty without NUL;
 * __metadata__ is an object of strings; every tensor entry has exactly dtype
 * (a known name), shape (<= 8 non-negative integers) and data_offsets (two
 * non-negative integers, begin <= end); shape x dtype size (overflow-checked)
 * equals end - begin; and the sorted ranges tile the data section exactly (no
 * gap, no overlap, no trailing bytes). Rejections are SQ_ERR_FORMAT (SQ_ERR_IO
 * when the file cannot be opened) with one line like
 *   "<path>: tensor 'w': data_offsets [0, 10] hold 10 bytes but shape [4, 4] x BF16 needs 32". */
#ifndef SQ_SHARDING_SAFETENSORS_H
#define SQ_SHARDING_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "common/dtype.h"
#include "common/status.h"

#define SQ_ST_MAX_DIMS 8
#define SQ_ST_MAX_HEADER (100u * 1024u * 1024u) /* as the reference: 100 MB */

typedef struct sq_st_tensor {
  const char *name;
  sq_dtype dtype;
  int ndim;
  int64_t shape[SQ_ST_MAX_DIMS];
  uint64_t nelem; /* product of shape (1 for a scalar) */
  uint64_t begin; /* byte offsets relative to the start of the data */
  uint64_t end;
} sq_st_tensor;

/* An open, validated safetensors file (opaque). */
typedef struct sq_st_file sq_st_file;

/* Open and validate path. Every rejection is one line naming the file (and the
 * tensor); nothing but the header is read. */
sq_status sq_st_open(const char *path, sq_st_file **out);
void sq_st_close(sq_st_file *f);

/* Validate a header held in memory, as if it came from a file named label
 * whose data section has data_bytes bytes. The fuzz target's entry point.
 * On success *out holds the tensor table (no file attached) unless out is NULL. */
sq_status sq_st_parse_header(const char *label, const char *json, size_t len, uint64_t data_bytes,
                             sq_st_file **out);

const char *sq_st_path(const sq_st_file *f);
size_t sq_st_count(const sq_st_file *f);
/* Tensors in data order (ascending offsets). */
const sq_st_tensor *sq_st_at(const sq_st_file *f, size_t i);
const sq_st_tensor *sq_st_find(const sq_st_file *f, const char *name);
/* A __metadata__ value, or NULL. */
const char *sq_st_metadata(const sq_st_file *f, const char *key);
/* Number of __metadata__ entries, and the i-th key (value in *value), in file order. */
size_t sq_st_metadata_count(const sq_st_file *f);
const char *sq_st_metadata_at(const sq_st_file *f, size_t i, const char **value);
/* File offset of the data section (8 + header length); tensor t's bytes are at
 * data_start + t->begin. */
uint64_t sq_st_data_start(const sq_st_file *f);
/* Byte size of the whole file. */
uint64_t sq_st_file_bytes(const sq_st_file *f);

/* Reads take a tensor from this file (sq_st_at/sq_st_find) and fail with
 * SQ_ERR_ARG on a foreign handle or an out-of-range request; they use pread and
 * may run concurrently from several threads. */
/* Read len raw bytes of tensor t starting offset bytes into it. */
sq_status sq_st_read_raw(const sq_st_file *f, const sq_st_tensor *t, uint64_t offset, void *dst,
                         uint64_t len);
/* Read all of t converted to fp32 (F32, F16, BF16, F8_E4M3); nelem must equal t->nelem. */
sq_status sq_st_read_f32(const sq_st_file *f, const sq_st_tensor *t, float *dst, uint64_t nelem);
/* Read rows [row0, row0+nrows) of a tensor whose rows are its first dimension,
 * as fp32: dst gets (nrows, nelem / shape[0]) values. Other dtypes than the
 * four above are SQ_ERR_UNSUPPORTED. */
sq_status sq_st_read_rows_f32(const sq_st_file *f, const sq_st_tensor *t, int64_t row0,
                              int64_t nrows, float *dst);

/* Writing: declare every tensor (name, dtype, shape), then write each tensor's
 * bytes once (any order; the first write freezes the layout and writes the
 * header, so declare and set_metadata must come before it), then commit. The
 * file appears at final_path only on commit (temp file "<dir>/.<base>.tmp.<pid>",
 * fsync, rename, fsync dir); commit fails if a declared tensor was never
 * written; sq_st_writer_free without commit removes the temporary file. The
 * header is compact JSON with __metadata__ first ({"format": "pt"} unless
 * changed) and tensors in declaration order, padded with spaces so that the
 * data starts 8-byte aligned; the data follows in declaration order with no
 * gaps (so tensors are aligned only as far as their sizes allow). A final_path
 * that is a directory is refused; an existing file is replaced atomically. */
typedef struct sq_st_writer sq_st_writer;

sq_status sq_st_writer_create(const char *final_path, sq_st_writer **out);
sq_status sq_st_writer_set_metadata(sq_st_writer *w, const char *key, const char *value);
sq_status sq_st_writer_declare(sq_st_writer *w, const char *name, sq_dtype dtype, int ndim,
                               const int64_t *shape);
sq_status sq_st_writer_write(sq_st_writer *w, const char *name, const void *data);
/* Convenience: write fp32 values converted to the declared dtype (F32/F16/BF16/F8_E4M3). */
sq_status sq_st_writer_write_f32(sq_st_writer *w, const char *name, const float *data);
sq_status sq_st_writer_commit(sq_st_writer *w);
void sq_st_writer_free(sq_st_writer *w);
/* Bytes the committed file will have (exact once all tensors are declared). */
uint64_t sq_st_writer_total_bytes(const sq_st_writer *w);

#endif
