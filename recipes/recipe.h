/* Recipes: llm-compressor's YAML recipe format, read with libyaml and
 * validated so that every error names file:line:column.
 *
 * Accepted layout (what llm-compressor's Recipe.from_dict reads, and what it
 * writes as recipe.yaml next to a quantized model):
 *
 *   <name>_stage:                  any number of top-level keys ending "_stage"
 *     run_type: oneshot            (optional, ignored)
 *     <name>_modifiers:            any number of keys ending "_modifiers"
 *       GPTQModifier: {args}       modifier name -> its arguments, in order
 *       ...
 *
 * plus the older flat form, a top-level `<name>_modifiers:` (or `modifiers:`)
 * mapping. Modifiers keep their file order across stages. Supported modifiers:
 *
 *   QuantizationModifier  targets, ignore, scheme, config_groups, kv_cache_scheme
 *   GPTQModifier          the above + block_size (128), dampening_frac (0.01),
 *                         actorder (default "static" = weight, applied to
 *                         group-strategy weights that set none), offload_hessians,
 *                         sequential_targets
 *   SparseGPTModifier     sparsity in [0,1), mask_structure "N:M" ("0:0" =
 *                         unstructured), targets (["Linear"]), ignore, block_size,
 *                         dampening_frac, sequential_targets, sparsity_profile,
 *                         owl_m, owl_lmbda, preserve_sparsity_mask, offload_hessians
 *   SmoothQuantModifier   smoothing_strength in (0,1] (0.5), mappings (list of
 *                         [[balance targets...], smooth target]), ignore,
 *                         num_calibration_steps
 * Every modifier also accepts the base keys group, start, end, update, index.
 *
 * `scheme:` is a preset name (compressed-tensors PRESET_SCHEMES: W4A16,
 * W4A16_ASYM, W8A16, W8A8/INT8, W4A8, FP8, FP8_DYNAMIC, UNQUANTIZED; case-
 * insensitive), a mapping preset -> targets (`{W4A16: [Linear]}`), or a mapping
 * of QuantizationScheme fields (weights/input_activations/output_activations).
 * QuantizationArgs follow compressed-tensors' validation (strategy inferred
 * from group_size; group needs group_size > 0; actorder needs group; dynamic
 * needs token or tensor; observer defaults to "minmax" unless dynamic).
 *
 * Targets and ignore entries: an exact module name, a class name ("Linear"),
 * or "re:<regex>" matched with Python's re.match semantics (anchored at the
 * start only). Regexes are POSIX ERE (regcomp) after translating Python's
 * \d \w \s \D \W \S (outside brackets; inside brackets \d \w \s only);
 * lookarounds, non-greedy quantifiers, (?...) groups, back-references, \b, \A,
 * \Z are rejected with an error rather than silently mismatched.
 * Priority within one modifier follows compressed-tensors: exact name, then
 * regex, then class name; ignore always wins.
 *
 * Hostile input: one document only; anchors, aliases and tags are rejected;
 * nesting depth <= SQ_RECIPE_MAX_DEPTH; duplicate keys are rejected; unknown
 * keys are rejected with a "did you mean" hint; the file is at most
 * SQ_RECIPE_MAX_BYTES. No input makes the parser abort. */
#ifndef SQ_RECIPES_RECIPE_H
#define SQ_RECIPES_RECIPE_H

#include <stddef.h>
#include <stdio.h>

#include "common/status.h"
#include "kernels/quant_math.h"

#define SQ_RECIPE_MAX_BYTES (1u << 20)
#define SQ_RECIPE_MAX_DEPTH 16

/* compressed-tensors QuantizationArgs after validation and inference. */
typedef struct sq_recipe_qargs {
  int present;             /* 0: not quantized (the other fields are unset) */
  int num_bits;            /* int: 2,3,4,8; float: 8 (e4m3) */
  sq_qtype type;
  int symmetric;
  sq_qstrategy strategy;   /* inferred when omitted */
  int group_size;          /* > 0 for GROUP; 0 when unset (-1 in YAML = channel) */
  int block_structure[2];  /* (rows, cols) for BLOCK, else {0, 0} */
  int dynamic;             /* 1: scales computed at run time */
  sq_actorder actorder;    /* weights only */
  char observer[32];       /* "minmax", "mse", ...; "" when dynamic */
  int line, col;           /* where it was written (0 for presets) */
} sq_recipe_qargs;

/* A module target or ignore entry. */
typedef struct sq_recipe_target {
  const char *text;  /* as written, with "re:" when a regex */
  void *regex;       /* compiled regex_t for "re:" entries, else NULL */
  int line, col;
} sq_recipe_target;

typedef struct sq_recipe_targets {
  sq_recipe_target *v;
  int n;
} sq_recipe_targets;

/* One QuantizationScheme (a config group, or a preset applied to targets). */
typedef struct sq_recipe_scheme {
  const char *name;    /* config group name ("group_0") or preset ("W4A16") */
  const char *preset;  /* preset name if it came from one, else NULL */
  sq_recipe_targets targets;
  sq_recipe_qargs weights, input_activations, output_activations;
  int line, col;
} sq_recipe_scheme;

typedef enum sq_modifier_kind {
  SQ_MOD_QUANTIZATION = 0, /* round-to-nearest / observer calibration */
  SQ_MOD_GPTQ,
  SQ_MOD_SPARSEGPT,
  SQ_MOD_SMOOTHQUANT
} sq_modifier_kind;

typedef struct sq_recipe_smooth_mapping {
  sq_recipe_targets balance; /* layers whose input is smoothed, e.g. q/k/v_proj */
  sq_recipe_target smooth;   /* the layer that absorbs the scales (a norm) */
} sq_recipe_smooth_mapping;

typedef struct sq_recipe_modifier {
  sq_modifier_kind kind;
  const char *stage;     /* "quant" for quant_stage; "" in the flat form */
  int line, col;
  sq_recipe_targets targets;  /* modifier-level targets (default ["Linear"]) */
  sq_recipe_targets ignore;
  /* Quantization / GPTQ */
  sq_recipe_scheme *schemes;  /* config groups and scheme, in file order */
  int n_schemes;
  sq_recipe_qargs kv_cache;   /* present = 0 when no kv_cache_scheme */
  /* GPTQ and SparseGPT */
  int block_size;
  double dampening_frac;
  sq_actorder actorder;       /* GPTQ */
  int actorder_set;           /* 0: default sentinel ("static" for unset) */
  int offload_hessians;
  /* SparseGPT */
  double sparsity;
  int mask_n, mask_m;         /* 2:4 -> (2, 4); unstructured -> (0, 0) */
  /* SmoothQuant */
  double smoothing_strength;
  sq_recipe_smooth_mapping *mappings;
  int n_mappings;             /* 0: the model's default mappings */
} sq_recipe_modifier;

typedef struct sq_recipe {
  const char *path;           /* as given to the loader */
  sq_recipe_modifier *mods;   /* in application order */
  int n_mods;
  void *arena_;               /* owns every string and array above */
} sq_recipe;

typedef enum sq_recipe_method {
  SQ_METHOD_NONE = 0, /* not quantized */
  SQ_METHOD_RTN,      /* QuantizationModifier: observer + round to nearest */
  SQ_METHOD_GPTQ
} sq_recipe_method;

/* What the recipe does to one module. */
typedef struct sq_recipe_resolution {
  sq_recipe_method method;
  const sq_recipe_modifier *quant_mod; /* the modifier whose scheme applies */
  const sq_recipe_scheme *scheme;      /* NULL when not quantized */
  sq_recipe_qargs weights, input_activations, output_activations; /* resolved
                                          (GPTQ actorder applied) */
  const sq_recipe_modifier *sparse_mod;/* SparseGPT that prunes it, or NULL */
  const sq_recipe_modifier *smooth_mod;/* SmoothQuant that balances its input */
  int ignored;  /* some modifier targeted it but its ignore list excluded it,
                   and no modifier applies */
} sq_recipe_resolution;

/* Parse and validate a recipe file. On error *out is NULL and the message is
 * "<path>:<line>:<col>: <what> [-- hint: ...]". */
sq_status sq_recipe_load(const char *path, sq_recipe **out);

/* The same from memory; name is used in messages. len <= SQ_RECIPE_MAX_BYTES. */
sq_status sq_recipe_parse(const char *name, const char *buf, size_t len, sq_recipe **out);

void sq_recipe_free(sq_recipe *r);

/* Which modifier/scheme/method applies to the module `module_name` of class
 * `class_name` (e.g. "model.layers.3.mlp.down_proj", "Linear"). Later
 * quantization modifiers override earlier ones, as in llm-compressor; a GPTQ
 * modifier without a scheme runs GPTQ on modules an earlier modifier gave
 * weight quantization. SparseGPT applies only inside decoder layers (names
 * containing ".layers.<N>."), as its sequential targets do. */
sq_status sq_recipe_resolve(const sq_recipe *r, const char *module_name,
                            const char *class_name, sq_recipe_resolution *out);

/* The last kv_cache_scheme in the recipe, or NULL. */
const sq_recipe_qargs *sq_recipe_kv_cache(const sq_recipe *r);

/* Does `name`/`class_name` match one target (exact, class or re:)? */
int sq_recipe_target_match(const sq_recipe_target *t, const char *name, const char *class_name);

/* Fill *out with a compressed-tensors preset (name case-insensitive). */
sq_status sq_recipe_preset(const char *name, sq_recipe_scheme *out);

/* "int4 sym group(128) actorder=weight observer=minmax" into buf. */
char *sq_recipe_qargs_format(const sq_recipe_qargs *q, char *buf, size_t len);

const char *sq_recipe_modifier_name(sq_modifier_kind k);
const char *sq_recipe_method_name(sq_recipe_method m);

/* Human-readable dump: modifiers in order with their schemes. */
void sq_recipe_print(const sq_recipe *r, FILE *f);

#endif
