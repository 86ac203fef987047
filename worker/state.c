/* Per-rank HDF5 state files for checkpoint-restart (see state.h): a whole new
 * file per generation, published atomically, validated on read. */
#include "worker/state.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/fsio.h"

#define SQ_STATE_NATTR 7

/* The attribute names, in the order of sq_state_attr_values. */
static const char *const sq_state_attr_names[SQ_STATE_NATTR] = {
    "format_version", "layer", "rank", "sample_start", "sample_count", "seq_len", "hidden"};

static void sq_state_attr_values(const sq_state_desc *d, long long v[SQ_STATE_NATTR]) {
  v[0] = SQ_STATE_FORMAT_VERSION;
  v[1] = d->layer;
  v[2] = d->rank;
  v[3] = d->sample_start;
  v[4] = d->n;
  v[5] = d->T;
  v[6] = d->hidden;
}

void sq_state_file_name(int rank, int layer, char *buf, size_t len) {
  snprintf(buf, len, "state-rank%05d-layer%04d.h5", rank, layer);
}

static char *sq_state_path(const char *dir, int rank, int layer) {
  char name[64];
  sq_state_file_name(rank, layer, name, sizeof name);
  return sq_fs_join(dir, name);
}

/* Write the dataset and the attributes into an open, new file. */
static sq_status sq_state_fill(hid_t f, const char *path, const sq_state_desc *d,
                               const sq_acts *acts, float *buf) {
  hsize_t dims[3] = {(hsize_t)d->n, (hsize_t)d->T, (hsize_t)d->hidden};
  hid_t space = H5Screate_simple(3, dims, NULL);
  hid_t ds = space < 0 ? -1
                       : H5Dcreate2(f, "hidden", H5T_IEEE_F32LE, space, H5P_DEFAULT, H5P_DEFAULT,
                                    H5P_DEFAULT);
  sq_status st = SQ_OK;
  if (ds < 0) st = sq_error_set(SQ_ERR_IO, "%s: cannot create dataset /hidden", path);
  /* One sample (T, hidden) per write: memory stays one sample whatever n is. */
  hsize_t count[3] = {1, (hsize_t)d->T, (hsize_t)d->hidden};
  hid_t ms = H5Screate_simple(3, count, NULL);
  for (int64_t s = 0; st == SQ_OK && s < d->n; s++) {
    st = sq_acts_read(acts, s, 1, buf);
    if (st != SQ_OK) break;
    hsize_t start[3] = {(hsize_t)s, 0, 0};
    if (H5Sselect_hyperslab(space, H5S_SELECT_SET, start, NULL, count, NULL) < 0 ||
        H5Dwrite(ds, H5T_NATIVE_FLOAT, ms, space, H5P_DEFAULT, buf) < 0)
      st = sq_error_set(SQ_ERR_IO, "%s: HDF5 write of sample %lld of /hidden failed", path,
                        (long long)s);
  }
  if (ms >= 0) H5Sclose(ms);
  if (ds >= 0) H5Dclose(ds);
  if (space >= 0) H5Sclose(space);
  long long v[SQ_STATE_NATTR];
  sq_state_attr_values(d, v);
  for (int i = 0; st == SQ_OK && i < SQ_STATE_NATTR; i++) {
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t at = H5Acreate2(f, sq_state_attr_names[i], H5T_STD_I64LE, sp, H5P_DEFAULT, H5P_DEFAULT);
    herr_t e = at >= 0 ? H5Awrite(at, H5T_NATIVE_LLONG, &v[i]) : -1;
    if (at >= 0) H5Aclose(at);
    H5Sclose(sp);
    if (e < 0)
      st = sq_error_set(SQ_ERR_IO, "%s: cannot write attribute '%s'", path, sq_state_attr_names[i]);
  }
  return st;
}

sq_status sq_state_write(const char *dir, const sq_state_desc *desc, const sq_acts *acts,
                         sq_state_checksum_fn hash, char hex[SQ_STATE_HEX_LEN + 1],
                         uint64_t *bytes) {
  if (desc->n != acts->n || desc->T != acts->T || desc->hidden != acts->d || desc->n < 0)
    return sq_error_set(SQ_ERR_INTERNAL,
                        "state of rank %d layer %d: description (%lld, %lld, %lld) does not match "
                        "the activations (%lld, %lld, %lld)",
                        desc->rank, desc->layer, (long long)desc->n, (long long)desc->T,
                        (long long)desc->hidden, (long long)acts->n, (long long)acts->T,
                        (long long)acts->d);
  char *path = sq_state_path(dir, desc->rank, desc->layer);
  char *tmp = path ? sq_fs_temp_name(path) : NULL;
  float *buf = malloc((size_t)desc->T * (size_t)desc->hidden * sizeof(float) + 1);
  sq_status st = SQ_OK;
  if (!path || !tmp || !buf) {
    st = sq_error_set(SQ_ERR_NOMEM, "%s: out of memory writing a state file", dir);
    goto done;
  }
  H5Eset_auto2(H5E_DEFAULT, NULL, NULL); /* errors become sq_status */
  hid_t f = H5Fcreate(tmp, H5F_ACC_EXCL, H5P_DEFAULT, H5P_DEFAULT);
  if (f < 0) {
    st = sq_error_set(SQ_ERR_IO, "%s: cannot create the HDF5 state file -- hint: is %s writable?",
                      tmp, dir);
    goto done;
  }
  st = sq_state_fill(f, tmp, desc, acts, buf);
  /* H5Fclose writes the metadata: only then is the file whole. */
  if (H5Fclose(f) < 0 && st == SQ_OK) st = sq_error_set(SQ_ERR_IO, "%s: HDF5 close failed", tmp);
  if (st != SQ_OK) goto done;
  int fd = open(tmp, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    st = sq_error_errno(tmp, "cannot reopen to fsync");
    goto done;
  }
  st = sq_fs_publish(fd, tmp, path);
  if (st == SQ_OK && hash) {
    char h[SQ_STATE_HEX_LEN + 1];
    uint64_t b = 0;
    st = hash(path, h, &b);
    if (st == SQ_OK && hex) memcpy(hex, h, sizeof h);
    if (st == SQ_OK && bytes) *bytes = b;
  }
done:
  if (st != SQ_OK && tmp) unlink(tmp); /* after a failed rename the temp is still there */
  free(buf);
  free(tmp);
  free(path);
  return st;
}

/* Read one scalar int64 attribute of the root group. */
static int sq_state_get_attr(hid_t f, const char *name, long long *v) {
  if (H5Aexists(f, name) <= 0) return 0;
  hid_t at = H5Aopen(f, name, H5P_DEFAULT);
  if (at < 0) return 0;
  hid_t sp = H5Aget_space(at);
  int ok =
      sp >= 0 && H5Sget_simple_extent_npoints(sp) == 1 && H5Aread(at, H5T_NATIVE_LLONG, v) >= 0;
  if (sp >= 0) H5Sclose(sp);
  H5Aclose(at);
  return ok;
}

static sq_status sq_state_check(hid_t f, const char *path, const sq_state_desc *d) {
  static const char *hint =
      " -- hint: the checkpoint directory belongs to a different job or "
      "was damaged; resume falls back one generation, else start a new one";
  long long want[SQ_STATE_NATTR];
  sq_state_attr_values(d, want);
  for (int i = 0; i < SQ_STATE_NATTR; i++) {
    long long got;
    if (!sq_state_get_attr(f, sq_state_attr_names[i], &got))
      return sq_error_set(SQ_ERR_FORMAT, "%s: attribute '%s' is missing or unreadable%s", path,
                          sq_state_attr_names[i], hint);
    if (got != want[i])
      return sq_error_set(SQ_ERR_FORMAT, "%s: attribute '%s' is %lld, expected %lld%s", path,
                          sq_state_attr_names[i], got, want[i], hint);
  }
  return SQ_OK;
}

/* Open /hidden and check its type and dims; *out is the dataset. */
static sq_status sq_state_open_dset(hid_t f, const char *path, const sq_state_desc *d, hid_t *out) {
  *out = -1;
  if (H5Lexists(f, "hidden", H5P_DEFAULT) <= 0)
    return sq_error_set(SQ_ERR_FORMAT, "%s: dataset /hidden is missing", path);
  hid_t ds = H5Dopen2(f, "hidden", H5P_DEFAULT);
  if (ds < 0) return sq_error_set(SQ_ERR_FORMAT, "%s: cannot open dataset /hidden", path);
  hid_t ty = H5Dget_type(ds), sp = H5Dget_space(ds);
  hsize_t dims[3] = {0, 0, 0};
  int ok_type = ty >= 0 && H5Tequal(ty, H5T_IEEE_F32LE) > 0;
  int rank = sp >= 0 ? H5Sget_simple_extent_ndims(sp) : -1;
  if (rank == 3) H5Sget_simple_extent_dims(sp, dims, NULL);
  if (ty >= 0) H5Tclose(ty);
  if (sp >= 0) H5Sclose(sp);
  sq_status st = SQ_OK;
  if (!ok_type)
    st = sq_error_set(SQ_ERR_FORMAT, "%s: /hidden is not little-endian float32", path);
  else if (rank != 3 || dims[0] != (hsize_t)d->n || dims[1] != (hsize_t)d->T ||
           dims[2] != (hsize_t)d->hidden)
    st = sq_error_set(SQ_ERR_FORMAT,
                      "%s: /hidden has shape (%llu, %llu, %llu) (rank %d), expected (%lld, %lld, "
                      "%lld)",
                      path, (unsigned long long)dims[0], (unsigned long long)dims[1],
                      (unsigned long long)dims[2], rank, (long long)d->n, (long long)d->T,
                      (long long)d->hidden);
  if (st != SQ_OK) {
    H5Dclose(ds);
    return st;
  }
  *out = ds;
  return SQ_OK;
}

sq_status sq_state_read(const char *dir, const sq_state_desc *desc, sq_state_checksum_fn hash,
                        const char *expect_hex, sq_acts *acts) {
  if (desc->n != acts->n || desc->T != acts->T || desc->hidden != acts->d)
    return sq_error_set(SQ_ERR_INTERNAL, "state read: activations are not shaped as described");
  char *path = sq_state_path(dir, desc->rank, desc->layer);
  float *buf = malloc((size_t)desc->T * (size_t)desc->hidden * sizeof(float) + 1);
  sq_status st = SQ_OK;
  hid_t f = -1, ds = -1, fs = -1, ms = -1;
  if (!path || !buf) {
    st = sq_error_set(SQ_ERR_NOMEM, "%s: out of memory reading a state file", dir);
    goto done;
  }
  if (access(path, F_OK) != 0) {
    st = sq_error_errno(path, "state file missing");
    goto done;
  }
  if (hash && expect_hex) {
    char got[SQ_STATE_HEX_LEN + 1];
    uint64_t b;
    SQ_CHECK_GOTO(hash(path, got, &b), st, done);
    if (strcmp(got, expect_hex) != 0) {
      st = sq_error_set(SQ_ERR_FORMAT,
                        "%s: checksum %s does not match the journal's %s (%llu bytes on disk): the "
                        "state file is truncated or damaged",
                        path, got, expect_hex, (unsigned long long)b);
      goto done;
    }
  }
  H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
  f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
  if (f < 0) {
    st = sq_error_set(SQ_ERR_FORMAT, "%s: HDF5 cannot open it (truncated or not an HDF5 file)",
                      path);
    goto done;
  }
  SQ_CHECK_GOTO(sq_state_check(f, path, desc), st, done);
  SQ_CHECK_GOTO(sq_state_open_dset(f, path, desc, &ds), st, done);
  fs = H5Dget_space(ds);
  hsize_t count[3] = {1, (hsize_t)desc->T, (hsize_t)desc->hidden};
  ms = H5Screate_simple(3, count, NULL);
  for (int64_t s = 0; s < desc->n; s++) {
    hsize_t start[3] = {(hsize_t)s, 0, 0};
    if (H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, count, NULL) < 0 ||
        H5Dread(ds, H5T_NATIVE_FLOAT, ms, fs, H5P_DEFAULT, buf) < 0) {
      st =
          sq_error_set(SQ_ERR_FORMAT, "%s: HDF5 read of sample %lld of /hidden failed (truncated?)",
                       path, (long long)s);
      goto done;
    }
    SQ_CHECK_GOTO(sq_acts_write(acts, s, 1, buf), st, done);
  }
  SQ_CHECK_GOTO(sq_acts_set_layer(acts, desc->layer), st, done);
done:
  if (ms >= 0) H5Sclose(ms);
  if (fs >= 0) H5Sclose(fs);
  if (ds >= 0) H5Dclose(ds);
  if (f >= 0) H5Fclose(f);
  free(buf);
  free(path);
  return st;
}

sq_status sq_state_prune(const char *dir, int rank, int keep_from) {
  DIR *dp = opendir(dir);
  if (!dp) return sq_error_errno(dir, "cannot list the checkpoint directory");
  char prefix[32], tmp_prefix[32];
  snprintf(prefix, sizeof prefix, "state-rank%05d-layer", rank);
  snprintf(tmp_prefix, sizeof tmp_prefix, ".state-rank%05d-layer", rank);
  size_t plen = strlen(prefix), tlen = strlen(tmp_prefix);
  sq_status st = SQ_OK;
  struct dirent *e;
  while (st == SQ_OK && (e = readdir(dp)) != NULL) {
    const char *n = e->d_name;
    int drop = 0;
    if (!strncmp(n, prefix, plen)) {
      char *end = NULL;
      long layer = strtol(n + plen, &end, 10);
      drop = end && !strcmp(end, ".h5") && layer < keep_from;
    } else if (!strncmp(n, tmp_prefix, tlen)) {
      drop = strstr(n, ".h5.tmp.") != NULL;
    }
    if (!drop) continue;
    char *p = sq_fs_join(dir, n);
    if (!p)
      st = sq_error_set(SQ_ERR_NOMEM, "out of memory");
    else if (unlink(p) != 0 && errno != ENOENT)
      st = sq_error_errno(p, "cannot delete an old state file");
    free(p);
  }
  closedir(dp);
  return st;
}
