/* Hidden states of this rank's calibration / evaluation samples at the input
 * of the current decoder layer: (n, T, hidden) fp32, held in memory or
 * spilled to an HDF5 file, and the loop that runs one decoder layer over all
 * of them in batches of samples (bounded workspace).
 *
 * HDF5 spill layout (one file per rank): dataset "/hidden", H5T_IEEE_F32LE,
 * dims (n, T, hidden), chunked one sample per chunk; attribute "layer" (int64)
 * on the dataset = index of the layer whose INPUT the states are (0 = the
 * embeddings), updated by sq_acts_set_layer. A restarted job can reopen it. */
#ifndef SQ_WORKER_ACTIVATIONS_H
#define SQ_WORKER_ACTIVATIONS_H

#include <stdint.h>

#include "common/status.h"
#include "kernels/forward.h"

typedef struct sq_acts {
  int64_t n, T, d;
  float *mem;      /* (n, T, d) in memory mode, else NULL */
  int64_t h5file;  /* hid_t, spill mode (-1 otherwise) */
  int64_t h5dset;
  char *path;      /* spill file */
} sq_acts;

/* spill_path NULL: in memory; else create (truncate) that HDF5 file. */
sq_status sq_acts_init(sq_acts *a, int64_t n, int64_t T, int64_t d, const char *spill_path);
/* Close (and, in spill mode, delete the file unless keep). */
void sq_acts_free(sq_acts *a, int keep);

/* Copy samples [s0, s0+ns) out of / into the store. buf (ns, T, d). */
sq_status sq_acts_read(const sq_acts *a, int64_t s0, int64_t ns, float *buf);
sq_status sq_acts_write(sq_acts *a, int64_t s0, int64_t ns, const float *buf);
/* Record which layer's input the store holds (spill: the "layer" attribute). */
sq_status sq_acts_set_layer(sq_acts *a, int64_t layer);

/* Fill the store with the embeddings of ids (n, T); table (vocab, d). */
sq_status sq_acts_embed(sq_acts *a, const int32_t *ids, const float *table, int64_t vocab);

/* Scratch for sq_acts_forward: batch buffers and the layer workspace. */
typedef struct sq_acts_runner {
  int64_t batch;    /* samples per batch */
  float *x, *y;     /* (batch, T, d) each */
  void *ws;         /* sq_fwd_layer_workspace_bytes */
  size_t ws_bytes;
} sq_acts_runner;

sq_status sq_acts_runner_init(sq_acts_runner *r, const sq_fwd_layer_cfg *cfg, int64_t batch,
                              int64_t T);
void sq_acts_runner_free(sq_acts_runner *r);

/* Run one decoder layer over every sample, in batches of r->batch samples in
 * sample order (a fixed order, so hooks see the same sequence every run).
 * update = 1 replaces the stored states by the layer's outputs; 0 only calls
 * the hooks (the calibration pass). */
sq_status sq_acts_forward(sq_acts *a, sq_acts_runner *r, const sq_fwd_layer_cfg *cfg,
                          const sq_fwd_layer_weights *w, const sq_fwd_hooks *hooks, int update);

#endif
