/* Activation store (memory or HDF5 spill) and the batched layer loop (see
 * activations.h). */
#include "worker/activations.h"

#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

sq_status sq_acts_init(sq_acts *a, int64_t n, int64_t T, int64_t d, const char *spill_path) {
  memset(a, 0, sizeof *a);
  a->n = n;
  a->T = T;
  a->d = d;
  a->h5file = a->h5dset = -1;
  if (!spill_path) {
    a->mem = malloc((size_t)n * (size_t)T * (size_t)d * sizeof(float));
    if (!a->mem)
      return sq_error_set(SQ_ERR_NOMEM,
                          "out of memory for the hidden states of %lld samples x %lld tokens x "
                          "%lld -- hint: use fewer --calib-samples or spill to HDF5",
                          (long long)n, (long long)T, (long long)d);
    return SQ_OK;
  }
  a->path = strdup(spill_path);
  H5Eset_auto2(H5E_DEFAULT, NULL, NULL); /* errors become sq_status below */
  hid_t f = H5Fcreate(spill_path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  if (f < 0) return sq_error_set(SQ_ERR_IO, "%s: cannot create the HDF5 activation file", spill_path);
  a->h5file = f;
  hsize_t dims[3] = {(hsize_t)n, (hsize_t)T, (hsize_t)d}, chunk[3] = {1, (hsize_t)T, (hsize_t)d};
  hid_t space = H5Screate_simple(3, dims, NULL);
  hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
  H5Pset_chunk(dcpl, 3, chunk);
  hid_t ds = H5Dcreate2(f, "hidden", H5T_IEEE_F32LE, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
  H5Pclose(dcpl);
  H5Sclose(space);
  if (ds < 0) return sq_error_set(SQ_ERR_IO, "%s: cannot create dataset /hidden", spill_path);
  a->h5dset = ds;
  return sq_acts_set_layer(a, 0);
}

void sq_acts_free(sq_acts *a, int keep) {
  free(a->mem);
  if (a->path && a->h5dset >= 0) H5Dclose((hid_t)a->h5dset);
  if (a->path && a->h5file >= 0) H5Fclose((hid_t)a->h5file);
  if (a->path && !keep) unlink(a->path);
  free(a->path);
  memset(a, 0, sizeof *a);
  a->h5file = a->h5dset = -1;
}

static sq_status sq_acts_h5_io(const sq_acts *a, int64_t s0, int64_t ns, float *buf, int write) {
  hid_t fs = H5Dget_space((hid_t)a->h5dset);
  hsize_t start[3] = {(hsize_t)s0, 0, 0}, count[3] = {(hsize_t)ns, (hsize_t)a->T, (hsize_t)a->d};
  herr_t e = H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, count, NULL);
  hid_t ms = H5Screate_simple(3, count, NULL);
  if (e >= 0)
    e = write ? H5Dwrite((hid_t)a->h5dset, H5T_NATIVE_FLOAT, ms, fs, H5P_DEFAULT, buf)
              : H5Dread((hid_t)a->h5dset, H5T_NATIVE_FLOAT, ms, fs, H5P_DEFAULT, buf);
  H5Sclose(ms);
  H5Sclose(fs);
  if (e < 0)
    return sq_error_set(SQ_ERR_IO, "%s: HDF5 %s of samples [%lld, %lld) of /hidden failed",
                        a->path, write ? "write" : "read", (long long)s0, (long long)(s0 + ns));
  return SQ_OK;
}

sq_status sq_acts_read(const sq_acts *a, int64_t s0, int64_t ns, float *buf) {
  if (s0 < 0 || ns < 0 || s0 + ns > a->n)
    return sq_error_set(SQ_ERR_INTERNAL, "activation read [%lld, +%lld) outside %lld samples",
                        (long long)s0, (long long)ns, (long long)a->n);
  size_t per = (size_t)a->T * (size_t)a->d;
  if (a->mem) {
    memcpy(buf, a->mem + (size_t)s0 * per, (size_t)ns * per * sizeof(float));
    return SQ_OK;
  }
  return sq_acts_h5_io(a, s0, ns, buf, 0);
}

sq_status sq_acts_write(sq_acts *a, int64_t s0, int64_t ns, const float *buf) {
  if (s0 < 0 || ns < 0 || s0 + ns > a->n)
    return sq_error_set(SQ_ERR_INTERNAL, "activation write [%lld, +%lld) outside %lld samples",
                        (long long)s0, (long long)ns, (long long)a->n);
  size_t per = (size_t)a->T * (size_t)a->d;
  if (a->mem) {
    memcpy(a->mem + (size_t)s0 * per, buf, (size_t)ns * per * sizeof(float));
    return SQ_OK;
  }
  return sq_acts_h5_io(a, s0, ns, (float *)buf, 1);
}

sq_status sq_acts_set_layer(sq_acts *a, int64_t layer) {
  if (a->h5dset < 0) return SQ_OK;
  hid_t ds = (hid_t)a->h5dset;
  long long v = layer;
  hid_t at;
  if (H5Aexists(ds, "layer") > 0) {
    at = H5Aopen(ds, "layer", H5P_DEFAULT);
  } else {
    hid_t sp = H5Screate(H5S_SCALAR);
    at = H5Acreate2(ds, "layer", H5T_STD_I64LE, sp, H5P_DEFAULT, H5P_DEFAULT);
    H5Sclose(sp);
  }
  herr_t e = at >= 0 ? H5Awrite(at, H5T_NATIVE_LLONG, &v) : -1;
  if (at >= 0) H5Aclose(at);
  if (e < 0 || H5Fflush((hid_t)a->h5file, H5F_SCOPE_LOCAL) < 0)
    return sq_error_set(SQ_ERR_IO, "%s: cannot write attribute 'layer' of /hidden", a->path);
  return SQ_OK;
}

sq_status sq_acts_embed(sq_acts *a, const int32_t *ids, const float *table, int64_t vocab) {
  size_t per = (size_t)a->T * (size_t)a->d;
  float *buf = a->mem ? NULL : malloc(per * sizeof(float));
  if (!a->mem && !buf) return sq_error_set(SQ_ERR_NOMEM, "out of memory embedding one sample");
  sq_status st = SQ_OK;
  for (int64_t s = 0; s < a->n && st == SQ_OK; s++) {
    float *dst = a->mem ? a->mem + (size_t)s * per : buf;
    st = sq_fwd_embed(table, vocab, a->d, ids + (size_t)s * (size_t)a->T, a->T, dst);
    if (st == SQ_OK && !a->mem) st = sq_acts_write(a, s, 1, buf);
  }
  free(buf);
  return st;
}

sq_status sq_acts_runner_init(sq_acts_runner *r, const sq_fwd_layer_cfg *cfg, int64_t batch,
                              int64_t T) {
  memset(r, 0, sizeof *r);
  r->batch = batch;
  size_t n = (size_t)batch * (size_t)T * (size_t)cfg->hidden;
  r->ws_bytes = sq_fwd_layer_workspace_bytes(cfg, batch, T);
  r->x = malloc(n * sizeof(float));
  r->y = malloc(n * sizeof(float));
  r->ws = aligned_alloc(64, (r->ws_bytes + 63) / 64 * 64);
  if (!r->x || !r->y || !r->ws) {
    sq_acts_runner_free(r);
    return sq_error_set(SQ_ERR_NOMEM,
                        "out of memory for a batch of %lld samples x %lld tokens -- hint: lower "
                        "--batch",
                        (long long)batch, (long long)T);
  }
  return SQ_OK;
}

void sq_acts_runner_free(sq_acts_runner *r) {
  free(r->x);
  free(r->y);
  free(r->ws);
  memset(r, 0, sizeof *r);
}

sq_status sq_acts_forward(sq_acts *a, sq_acts_runner *r, const sq_fwd_layer_cfg *cfg,
                          const sq_fwd_layer_weights *w, const sq_fwd_hooks *hooks, int update) {
  for (int64_t s0 = 0; s0 < a->n; s0 += r->batch) {
    int64_t nb = a->n - s0 < r->batch ? a->n - s0 : r->batch;
    SQ_CHECK(sq_acts_read(a, s0, nb, r->x));
    SQ_CHECK(sq_fwd_layer(cfg, w, r->x, nb, a->T, hooks, r->ws, r->y));
    if (update) SQ_CHECK(sq_acts_write(a, s0, nb, r->y));
  }
  return SQ_OK;
}
