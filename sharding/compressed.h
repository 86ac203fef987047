/* The compressed-tensors checkpoint format (what vLLM loads): the
 * `quantization_config` block of config.json, the tensors each quantized
 * Linear module is stored as, and a reader that decompresses a directory back
 * to dense fp32 weights (for `shardq eval` and the round-trip tests).
 *
 * Checked against vllm-project/compressed-tensors (quant_args.py,
 * quant_scheme.py, quant_config.py, model_compressor.update_config,
 * compressors/quantized_compressors/{pack_quantized,naive_quantized}.py).
 *
 * config.json "quantization_config" (keys as compressed-tensors writes them,
 * sorted; every QuantizationArgs field present):
 *   {"config_groups": {"group_0": {"input_activations": null | ARGS,
 *                                  "output_activations": null,
 *                                  "targets": ["Linear"], "weights": ARGS
 *                                  [, "format": F  only under mixed-precision]}},
 *    "format": "pack-quantized" | "int-quantized" | "float-quantized" |
 *              "naive-quantized" | "dense" | "mixed-precision",
 *    "global_compression_ratio": null, "ignore": ["lm_head", ...],
 *    "kv_cache_scheme": null | ARGS, "quant_method": "compressed-tensors",
 *    "quantization_status": "compressed",
 *    "sparsity_config": {} | {"format": "sparse-24-bitmask" | "dense",
 *        "global_sparsity": 0.5, "ignore": [..], "sparsity_structure": "2:4",
 *        "targets": [..]},
 *    "transform_config": {}, "version": SQ_CT_VERSION}
 *   ARGS = {"actorder": null|"group"|"weight", "block_structure": null|[r,c],
 *           "dynamic": bool, "group_size": null|int, "num_bits": int,
 *           "observer": null|str, "observer_kwargs": {}, "strategy":
 *           "tensor"|"channel"|"group"|"block"|"token", "symmetric": bool,
 *           "type": "int"|"float"}
 * scale_dtype / zp_dtype (compressed-tensors >= 0.12) are not written: older
 * readers forbid unknown QuantizationArgs fields and newer ones default them.
 *
 * Tensors of a quantized module <m> with a (d_out, d_in) weight; scale shape S
 * is [1] (tensor), (d_out, 1) (channel) or (d_out, ceil(d_in / group_size))
 * (group), stored in the checkpoint's dtype (bf16/f16/f32):
 *   pack-quantized (int, 2..8 bits):
 *     <m>.weight_packed      I32 (d_out, ceil(d_in / (32 / bits)))  see kernels/pack_math.h
 *     <m>.weight_scale       S
 *     <m>.weight_shape       I64 [2] = {d_out, d_in}
 *     <m>.weight_zero_point  asymmetric only: group/channel I32 packed along d_out,
 *                            (ceil(d_out / (32 / bits)), S[1]); tensor I8 [1]
 *     <m>.weight_g_idx       I32 (d_in), actorder "group" only: column -> group
 *   int-quantized / naive-quantized (int):
 *     <m>.weight I8 (d_out, d_in), <m>.weight_scale S, <m>.weight_zero_point I8 S (asym)
 *   float-quantized (fp8 e4m3):
 *     <m>.weight F8_E4M3 (d_out, d_in), <m>.weight_scale S
 * Biases, norms, embeddings and ignored modules are stored dense under their
 * own names. Dequantization: w = round_to_scale_dtype((q - zp) * scale)
 * (kernels/quant_math.h), group of column j = g_idx[j] or j / group_size. */
#ifndef SQ_SHARDING_COMPRESSED_H
#define SQ_SHARDING_COMPRESSED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/status.h"
#include "kernels/quant_math.h"
#include "sharding/checkpoint.h"
#include "sharding/safetensors.h"

struct json_t; /* jansson */

/* compressed-tensors version we write ("version" key); its serialization is what we follow. */
#define SQ_CT_VERSION "0.11.0"

typedef enum sq_ct_format {
  SQ_CT_FMT_DENSE = 0,
  SQ_CT_FMT_PACK,   /* "pack-quantized" */
  SQ_CT_FMT_INT,    /* "int-quantized" */
  SQ_CT_FMT_FLOAT,  /* "float-quantized" */
  SQ_CT_FMT_NAIVE,  /* "naive-quantized" */
  SQ_CT_FMT_MIXED,  /* "mixed-precision" (top level only: each group names its own) */
  SQ_CT_FMT_INVALID
} sq_ct_format;

const char *sq_ct_format_name(sq_ct_format f);
/* SQ_CT_FMT_INVALID for an unknown name. */
sq_ct_format sq_ct_format_from_name(const char *name);

typedef enum sq_ct_actorder {
  SQ_CT_ACTORDER_NONE = 0,
  SQ_CT_ACTORDER_GROUP,  /* columns permuted, saved with weight_g_idx */
  SQ_CT_ACTORDER_WEIGHT  /* calibration order only; format unchanged */
} sq_ct_actorder;

/* One QuantizationArgs (weights, input activations or the kv cache).
 * q.group_size is 0 unless q.strategy is SQ_QSTRAT_GROUP; q.scale_dtype is
 * not serialized (it is the checkpoint dtype of the scales). */
typedef struct sq_ct_args {
  sq_qargs q;
  sq_ct_actorder actorder;
  bool dynamic;
  char observer[32];      /* "" serializes as null */
  int block_structure[2]; /* {0, 0} serializes as null */
} sq_ct_args;

/* One config group (a QuantizationScheme). Strings are owned (malloc'd). */
typedef struct sq_ct_scheme {
  char name[64];  /* "group_0" */
  char **targets; /* "Linear", exact module names or "re:<regex>" */
  size_t n_targets;
  bool has_weights, has_input;
  sq_ct_args weights, input;
  sq_ct_format format; /* the group's "format"; SQ_CT_FMT_INVALID when absent */
} sq_ct_scheme;

typedef struct sq_ct_sparsity {
  bool present;          /* false serializes as {} */
  char format[32];       /* "sparse-24-bitmask", "dense" */
  char structure[16];    /* "2:4", "unstructured" */
  double global_sparsity;
  char **targets;
  size_t n_targets;
  char **ignore;
  size_t n_ignore;
} sq_ct_sparsity;

typedef struct sq_ct_config {
  sq_ct_scheme *groups;
  size_t n_groups;
  sq_ct_format format; /* top level; SQ_CT_FMT_MIXED when groups differ */
  char **ignore;
  size_t n_ignore;
  bool has_kv_cache;
  sq_ct_args kv_cache;
  sq_ct_sparsity sparsity;
  char status[16];  /* "compressed" */
  char version[32]; /* SQ_CT_VERSION when built here */
} sq_ct_config;

/* ---- building and (de)serializing the config (quant_config.c) ---- */

/* Empty config: no groups, status "compressed", version SQ_CT_VERSION. */
void sq_ct_config_init(sq_ct_config *c);
void sq_ct_config_free(sq_ct_config *c);

/* A compressed-tensors preset scheme (W4A16, W4A16_ASYM, W8A16, W8A8/INT8,
 * W4A8, FP8, FP8_DYNAMIC; case-insensitive) targeting ["Linear"], with scales
 * in scale_dtype. *out is initialised (free with sq_ct_scheme_free). */
sq_status sq_ct_scheme_preset(const char *preset, sq_dtype scale_dtype, sq_ct_scheme *out);
void sq_ct_scheme_free(sq_ct_scheme *s);
/* Append a copy of target to s->targets. */
sq_status sq_ct_scheme_add_target(sq_ct_scheme *s, const char *target);

/* The on-disk format a scheme's modules take, as llm-compressor infers it:
 * int weights without activation quantization -> pack-quantized; int weights
 * with activations -> int-quantized; float weights -> float-quantized. */
sq_ct_format sq_ct_scheme_infer_format(const sq_ct_scheme *s);

/* Append a deep copy of s as group "group_<n>" (s->name ignored) and recompute
 * c->format (one format, or mixed-precision with per-group formats). */
sq_status sq_ct_config_add_group(sq_ct_config *c, const sq_ct_scheme *s);
sq_status sq_ct_config_add_ignore(sq_ct_config *c, const char *module);

/* Serialize to a new jansson object (caller json_decref's). */
sq_status sq_ct_config_to_json(const sq_ct_config *c, struct json_t **out);
/* Parse a "quantization_config" object; label names the file in errors
 * ("out/config.json"). Missing fields take compressed-tensors' defaults; a
 * group given as a preset name with a target list is expanded. */
sq_status sq_ct_config_from_json(const struct json_t *qc, const char *label, sq_ct_config *out);
/* Set doc["quantization_config"] (doc is a parsed config.json, e.g. sq_model_config.json). */
sq_status sq_ct_config_insert(struct json_t *doc, const sq_ct_config *c);
/* Rewrite <dir>/config.json with c inserted (atomic; 2-space indent, keys in
 * their existing order). A missing config.json is an error naming it. */
sq_status sq_ct_config_write(const char *dir, const sq_ct_config *c);

/* The group whose targets select module (exact name > "re:" regex matched at
 * the start, as Python's re.match > "Linear"), unless module is in c->ignore
 * (exact or "re:"); NULL when none. */
const sq_ct_scheme *sq_ct_config_match(const sq_ct_config *c, const char *module);
/* Format module's tensors take under group s: s->format, else c->format. */
sq_ct_format sq_ct_config_module_format(const sq_ct_config *c, const sq_ct_scheme *s);

/* ---- writing one module's compressed tensors (compressed_write.c) ---- */

/* Declare <name>.weight_* in w for a (d_out, d_in) weight quantized with qa
 * (qa->scale_dtype is the dtype scales are stored in) in format fmt (PACK,
 * INT, NAIVE or FLOAT). has_gidx adds <name>.weight_g_idx (actorder group). */
sq_status sq_ct_declare_module(sq_st_writer *w, sq_ct_format fmt, const char *name,
                               const sq_qargs *qa, int64_t d_out, int64_t d_in, bool has_gidx);
/* Write the tensors declared above. codes (d_out, d_in): signed integers for
 * int, e4m3fn bit patterns for float; scales (sq_ct_scale_rows, sq_ct_scale_cols)
 * as fp32 values exactly representable in qa->scale_dtype (they are converted);
 * zero_points same shape, required iff int and asymmetric; g_idx (d_in) iff
 * declared with has_gidx. Out-of-range codes are errors naming the module. */
sq_status sq_ct_write_module(sq_st_writer *w, sq_ct_format fmt, const char *name,
                             const sq_qargs *qa, int64_t d_out, int64_t d_in, const int8_t *codes,
                             const float *scales, const int32_t *zero_points,
                             const int32_t *g_idx);
/* Data bytes the module's compressed tensors take (size reports, plans). */
uint64_t sq_ct_module_bytes(sq_ct_format fmt, const sq_qargs *qa, int64_t d_out, int64_t d_in,
                            bool has_gidx);
/* Scale shape: rows 1 (tensor) or d_out; cols 1 or ceil(d_in / group_size). */
int64_t sq_ct_scale_rows(const sq_qargs *qa, int64_t d_out);
int64_t sq_ct_scale_cols(const sq_qargs *qa, int64_t d_in);

/* ---- reading a directory back to dense weights (compressed_read.c) ---- */

typedef struct sq_ct_reader sq_ct_reader;

/* Open dir: config.json's quantization_config (absent: a dense checkpoint)
 * and the safetensors via sq_ckpt_open. */
sq_status sq_ct_open(const char *dir, sq_ct_reader **out);
void sq_ct_close(sq_ct_reader *r);
/* NULL for a dense checkpoint. */
const sq_ct_config *sq_ct_reader_config(const sq_ct_reader *r);
const sq_ckpt *sq_ct_reader_ckpt(const sq_ct_reader *r);

/* Dense tensors the directory represents, in checkpoint order: every stored
 * tensor except the quantization parameters, with <m>.weight_packed listed
 * as <m>.weight. */
size_t sq_ct_count(const sq_ct_reader *r);
const char *sq_ct_name_at(const sq_ct_reader *r, size_t i);
/* Dense shape of a listed tensor; SQ_ERR_ARG if not listed. */
sq_status sq_ct_shape(const sq_ct_reader *r, const char *name, int *ndim,
                      int64_t shape[SQ_ST_MAX_DIMS]);
/* The dense (dequantized) fp32 values of name; n must equal its element
 * count. Corrupt tensors (wrong shapes/dtypes, missing scales, weight_shape
 * disagreeing) are one-line errors naming the tensor and file. */
sq_status sq_ct_read_dense_f32(const sq_ct_reader *r, const char *name, float *dst, uint64_t n);

#endif
