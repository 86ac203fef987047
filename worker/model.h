/* One model as the layer-sequential pipeline sees it: its config (model_meta.h),
 * a weight source, and fp32 buffers for ONE decoder layer's weights that are
 * refilled layer by layer (so memory is flat in depth).
 *
 * Weight sources: a plain Hugging Face checkpoint read through sharding/
 * checkpoint.h (pread of exactly the tensors a layer needs), or any directory
 * read through sharding/compressed.h's reader, which decompresses
 * compressed-tensors modules to dense fp32 (and reads dense checkpoints too).
 *
 * The seven Linear modules of a layer are indexed 0..6 in the order q, k, v,
 * o, gate, up, down (SQ_MOD_*), each with the Hessian group its input belongs
 * to: q/k/v share the input norm1(x), gate/up share norm2(h). */
#ifndef SQ_WORKER_MODEL_H
#define SQ_WORKER_MODEL_H

#include <stdint.h>

#include "common/status.h"
#include "kernels/forward.h"
#include "worker/model_meta.h"

struct sq_ckpt;
struct sq_ct_reader;

enum { SQ_MOD_Q = 0, SQ_MOD_K, SQ_MOD_V, SQ_MOD_O, SQ_MOD_GATE, SQ_MOD_UP, SQ_MOD_DOWN,
       SQ_MOD_COUNT };
/* Hessian groups: inputs shared by modules. */
enum { SQ_HG_QKV = 0, SQ_HG_O, SQ_HG_GATE_UP, SQ_HG_DOWN, SQ_HG_COUNT };

typedef struct sq_model {
  sq_model_info info;
  struct sq_ckpt *ckpt;        /* source when opened dense */
  struct sq_ct_reader *ct;     /* source when opened through the compressed reader */
} sq_model;

/* Open dir. compressed = 0: sq_ckpt (dense input checkpoints, the quantize
 * path); 1: sq_ct reader (quantized or dense directories, the eval path). */
sq_status sq_model_open(const char *dir, int compressed, sq_model *out);
void sq_model_close(sq_model *m);

/* Read a whole tensor as fp32 (n must be its element count). */
sq_status sq_model_read_f32(const sq_model *m, const char *name, float *dst, uint64_t n);
/* Checkpoint dtype of a stored tensor (SQ_DTYPE_INVALID if absent or not dense). */
sq_dtype sq_model_tensor_dtype(const sq_model *m, const char *name);

/* Module i's suffix ("self_attn.q_proj"), Hessian group, shape. */
const char *sq_model_module_suffix(int mod);
int sq_model_module_group(int mod);
void sq_model_module_shape(const sq_model_info *info, int mod, int64_t *d_out, int64_t *d_in);
/* d_in of Hessian group g. */
int64_t sq_model_group_dim(const sq_model_info *info, int g);

/* fp32 weights of one decoder layer (one allocation). */
typedef struct sq_layer_buf {
  int layer;                       /* loaded layer, -1 none */
  float *mod[SQ_MOD_COUNT];        /* (d_out, d_in) each */
  float *bias[SQ_MOD_COUNT];       /* (d_out) or NULL */
  float *attn_norm, *mlp_norm;     /* (hidden) */
  float *base_;
} sq_layer_buf;

sq_status sq_layer_buf_init(sq_layer_buf *b, const sq_model_info *info);
void sq_layer_buf_free(sq_layer_buf *b);
/* Read layer l's tensors from m into b. */
sq_status sq_layer_buf_load(sq_layer_buf *b, const sq_model *m, int layer);
/* Read layer l's norms and biases, and the weights of the modules i with
 * load_mod[i] != 0 only (a rank reads the modules it owns; the others arrive
 * by broadcast). The other b->mod[i] are left as they are. */
sq_status sq_layer_buf_load_parts(sq_layer_buf *b, const sq_model *m, int layer,
                                  const int load_mod[SQ_MOD_COUNT]);

/* Checkpoint bytes this process has read through sq_model_read_f32 (dense
 * sources), plus what callers report with sq_model_count_read (raw copies):
 * the "bytes read per rank" of the distributed job. */
uint64_t sq_model_bytes_read(void);
void sq_model_count_read(uint64_t bytes);
/* View b as the forward's weight struct. */
sq_fwd_layer_weights sq_layer_buf_weights(const sq_layer_buf *b);

/* RoPE tables for max_t positions and the forward's layer config (rope points
 * into *rope, which must outlive cfg). */
sq_status sq_model_rope_init(const sq_model_info *info, int64_t max_t, sq_rope *rope);
sq_fwd_layer_cfg sq_model_fwd_cfg(const sq_model_info *info, const sq_rope *rope);

#endif
