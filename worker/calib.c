/* Calibration token files (see calib.h). */
#include "worker/calib.h"

#include <stdlib.h>
#include <string.h>

#include "sharding/safetensors.h"

static uint64_t sq_calib_splitmix(uint64_t *s) {
  uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

sq_status sq_calib_load(const char *path, int64_t max_samples, int64_t seq_len,
                        uint64_t shuffle_seed, sq_calib *out) {
  memset(out, 0, sizeof *out);
  sq_st_file *f = NULL;
  int64_t *order = NULL;
  sq_status st;
  SQ_CHECK(sq_st_open(path, &f));
  const sq_st_tensor *t = sq_st_find(f, "input_ids");
  if (!t) {
    st = sq_error_set(SQ_ERR_FORMAT,
                      "%s: no tensor 'input_ids' -- hint: a calibration file holds int32 "
                      "input_ids [samples, seq_len] (shardq synth writes one)",
                      path);
    goto fail;
  }
  if (t->dtype != SQ_DTYPE_I32 || t->ndim != 2 || t->shape[0] < 1 || t->shape[1] < 2) {
    st = sq_error_set(SQ_ERR_FORMAT,
                      "%s: tensor 'input_ids' must be I32 [samples >= 1, seq_len >= 2] (got %s "
                      "with %d dims)",
                      path, sq_dtype_name(t->dtype), t->ndim);
    goto fail;
  }
  int64_t rows = t->shape[0], T0 = t->shape[1];
  int64_t T = seq_len > 0 ? seq_len : T0;
  if (T > T0 || T < 2) {
    st = sq_error_set(SQ_ERR_ARG, "%s: --seq-len %lld is outside [2, %lld] (the file's length)",
                      path, (long long)seq_len, (long long)T0);
    goto fail;
  }
  int64_t n = max_samples > 0 && max_samples < rows ? max_samples : rows;
  order = malloc((size_t)rows * sizeof *order);
  out->ids = malloc((size_t)n * (size_t)T * sizeof *out->ids);
  if (!order || !out->ids) {
    st = sq_error_set(SQ_ERR_NOMEM, "%s: out of memory for %lld x %lld token ids", path,
                      (long long)n, (long long)T);
    goto fail;
  }
  for (int64_t i = 0; i < rows; i++) order[i] = i;
  if (shuffle_seed) {
    uint64_t s = shuffle_seed;
    for (int64_t i = rows - 1; i > 0; i--) {
      int64_t j = (int64_t)(sq_calib_splitmix(&s) % (uint64_t)(i + 1));
      int64_t tmp = order[i];
      order[i] = order[j];
      order[j] = tmp;
    }
  }
  for (int64_t i = 0; i < n; i++)
    SQ_CHECK_GOTO(sq_st_read_raw(f, t, (uint64_t)order[i] * (uint64_t)T0 * 4u,
                                 out->ids + (size_t)i * (size_t)T, (uint64_t)T * 4u),
                  st, fail);
  out->n = n;
  out->T = T;
  out->file_rows = rows;
  free(order);
  sq_st_close(f);
  return SQ_OK;
fail:
  free(order);
  sq_st_close(f);
  sq_calib_free(out);
  return st;
}

void sq_calib_free(sq_calib *c) {
  free(c->ids);
  memset(c, 0, sizeof *c);
}
