/* Recipe schema: walks the YAML tree (yaml_node.c) and builds an sq_recipe,
 * validating every key, type and range with the node's file:line:column.
 * The rules mirror llm-compressor's Recipe.from_dict and compressed-tensors'
 * QuantizationArgs validators (see recipe.h); where llm-compressor silently
 * ignores an unknown key, we reject it, because a typo in a stranger's recipe
 * would otherwise quantize with defaults nobody asked for. */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "recipes/recipe.h"
#include "recipes/yaml_node.h"

typedef struct ctx {
  const char *name;
  sq_arena *a;
} ctx;

static sq_status err_at(const ctx *c, const sq_ynode *n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static sq_status err_at(const ctx *c, const sq_ynode *n, const char *fmt, ...) {
  char msg[768];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  return sq_error_set(SQ_ERR_FORMAT, "%s:%d:%d: %s", c->name, n->line, n->col, msg);
}

static sq_status nomem(void) { return sq_error_set(SQ_ERR_NOMEM, "out of memory parsing a recipe"); }

/* Closest candidate within a small edit distance, or NULL. */
static const char *suggest(const char *word, const char *const *cands) {
  const char *best = NULL;
  int bestd = 1 << 30;
  for (int i = 0; cands[i]; i++) {
    int d = sq_edit_distance(word, cands[i]);
    if (d < bestd) bestd = d, best = cands[i];
  }
  int limit = (int)strlen(word) / 3;
  if (limit < 2) limit = 2;
  return bestd <= limit ? best : NULL;
}

static sq_status unknown(const ctx *c, const sq_ynode *key, const char *what, const char *where,
                         const char *const *cands) {
  const char *s = suggest(key->str, cands);
  if (s) return err_at(c, key, "unknown %s '%s' in %s (did you mean '%s'?)", what, key->str, where, s);
  char list[512] = "";
  for (int i = 0; cands[i]; i++) {
    size_t l = strlen(list);
    snprintf(list + l, sizeof list - l, "%s%s", i ? ", " : "", cands[i]);
  }
  return err_at(c, key, "unknown %s '%s' in %s -- hint: expected one of: %s", what, key->str, where, list);
}

static sq_status check_keys(const ctx *c, const sq_ynode *map, const char *where, const char *const *allowed) {
  for (int i = 0; i < map->n; i += 2) {
    int ok = 0;
    for (int j = 0; allowed[j] && !ok; j++) ok = !strcmp(map->kids[i]->str, allowed[j]);
    if (!ok) return unknown(c, map->kids[i], "key", where, allowed);
  }
  return SQ_OK;
}

static const sq_ynode *get(const sq_ynode *map, const char *key) {
  for (int i = 0; i < map->n; i += 2)
    if (!strcmp(map->kids[i]->str, key)) return map->kids[i + 1];
  return NULL;
}

static const sq_ynode *get_key(const sq_ynode *map, const char *key) {
  for (int i = 0; i < map->n; i += 2)
    if (!strcmp(map->kids[i]->str, key)) return map->kids[i];
  return NULL;
}

static sq_status need_map(const ctx *c, const sq_ynode *n, const char *what) {
  if (n->kind != SQ_Y_MAP) return err_at(c, n, "%s must be a mapping, not %s", what, sq_yaml_kind_name(n));
  return SQ_OK;
}

static sq_status as_int(const ctx *c, const sq_ynode *n, const char *key, long lo, long hi, int *out) {
  if (n->kind != SQ_Y_SCALAR || sq_yaml_is_null(n))
    return err_at(c, n, "%s must be an integer, not %s", key, sq_yaml_kind_name(n));
  char *end;
  errno = 0;
  long v = strtol(n->str, &end, 10);
  if (end == n->str || *end || errno)
    return err_at(c, n, "%s must be an integer, not '%s'", key, n->str);
  if (v < lo || v > hi) return err_at(c, n, "%s = %ld is out of range [%ld, %ld]", key, v, lo, hi);
  *out = (int)v;
  return SQ_OK;
}

static sq_status as_double(const ctx *c, const sq_ynode *n, const char *key, double *out) {
  if (n->kind != SQ_Y_SCALAR || sq_yaml_is_null(n))
    return err_at(c, n, "%s must be a number, not %s", key, sq_yaml_kind_name(n));
  char *end;
  double v = strtod(n->str, &end);
  if (end == n->str || *end || !isfinite(v)) return err_at(c, n, "%s must be a number, not '%s'", key, n->str);
  *out = v;
  return SQ_OK;
}

/* YAML 1.1 booleans as PyYAML's safe_load reads them. */
static int bool_word(const char *s, int *v) {
  static const char *const t[] = {"true", "True", "TRUE", "yes", "Yes", "YES", "on", "On", "ON", NULL};
  static const char *const f[] = {"false", "False", "FALSE", "no", "No", "NO", "off", "Off", "OFF", NULL};
  for (int i = 0; t[i]; i++) {
    if (!strcmp(s, t[i])) return *v = 1, 1;
    if (!strcmp(s, f[i])) return *v = 0, 1;
  }
  return 0;
}

static sq_status as_bool(const ctx *c, const sq_ynode *n, const char *key, int *out) {
  if (n->kind != SQ_Y_SCALAR || !bool_word(n->str, out))
    return err_at(c, n, "%s must be true or false, not %s%s%s", key, n->kind == SQ_Y_SCALAR ? "'" : "",
                  n->kind == SQ_Y_SCALAR ? n->str : sq_yaml_kind_name(n), n->kind == SQ_Y_SCALAR ? "'" : "");
  return SQ_OK;
}

static sq_status as_str(const ctx *c, const sq_ynode *n, const char *key, const char **out) {
  if (n->kind != SQ_Y_SCALAR || sq_yaml_is_null(n))
    return err_at(c, n, "%s must be a string, not %s", key, sq_yaml_kind_name(n));
  *out = n->str;
  return SQ_OK;
}

/* A string or a list of strings (llm-compressor: Union[str, List[str]]). */
static sq_status parse_targets(const ctx *c, const sq_ynode *n, const char *key, sq_recipe_targets *out) {
  const sq_ynode *one = n;
  int count = n->kind == SQ_Y_SEQ ? n->n : 1;
  if (n->kind == SQ_Y_MAP) return err_at(c, n, "%s must be a string or a list of strings, not a mapping", key);
  if (n->kind == SQ_Y_SCALAR && sq_yaml_is_null(n)) count = 0;
  out->n = count;
  out->v = sq_arena_alloc(c->a, sizeof(sq_recipe_target) * (size_t)(count ? count : 1));
  if (!out->v) return nomem();
  for (int i = 0; i < count; i++) {
    if (n->kind == SQ_Y_SEQ) one = n->kids[i];
    const char *s = NULL;
    SQ_CHECK(as_str(c, one, key, &s));
    if (!s[0]) return err_at(c, one, "empty string in %s", key);
    SQ_CHECK(sq_recipe_target_init(c->name, c->a, s, one->line, one->col, &out->v[i]));
  }
  return SQ_OK;
}

static sq_status default_linear(const ctx *c, sq_recipe_targets *out) {
  out->n = 1;
  out->v = sq_arena_alloc(c->a, sizeof(sq_recipe_target));
  if (!out->v) return nomem();
  return sq_recipe_target_init(c->name, c->a, "Linear", 0, 0, &out->v[0]);
}

/* ---- QuantizationArgs ---- */

static const char *const k_qargs_keys[] = {"num_bits", "type",     "symmetric", "group_size", "strategy",
                                           "block_structure", "dynamic", "actorder", "observer", NULL};

static sq_status parse_actorder(const ctx *c, const sq_ynode *n, sq_actorder *out) {
  int b;
  if (sq_yaml_is_null(n)) return *out = SQ_ACTORDER_NONE, SQ_OK;
  if (n->kind == SQ_Y_SCALAR && !n->quoted && bool_word(n->str, &b))
    return *out = b ? SQ_ACTORDER_GROUP : SQ_ACTORDER_NONE, SQ_OK;
  const char *s = NULL;
  SQ_CHECK(as_str(c, n, "actorder", &s));
  if (!strcasecmp(s, "group") || !strcasecmp(s, "dynamic")) return *out = SQ_ACTORDER_GROUP, SQ_OK;
  if (!strcasecmp(s, "weight") || !strcasecmp(s, "static")) return *out = SQ_ACTORDER_WEIGHT, SQ_OK;
  return err_at(c, n, "actorder '%s' is not one of group, weight, dynamic (= group), static (= weight), "
                "true, false, null", s);
}

static sq_status parse_block_structure(const ctx *c, const sq_ynode *n, int bs[2]) {
  if (n->kind == SQ_Y_SEQ && n->n == 2) {
    SQ_CHECK(as_int(c, n->kids[0], "block_structure[0]", 1, 1 << 20, &bs[0]));
    return as_int(c, n->kids[1], "block_structure[1]", 1, 1 << 20, &bs[1]);
  }
  if (n->kind == SQ_Y_SCALAR) { /* older "RxC" string */
    int r, k, used = 0;
    if (sscanf(n->str, "%dx%d%n", &r, &k, &used) == 2 && !n->str[used] && r > 0 && k > 0 && r <= (1 << 20) &&
        k <= (1 << 20)) {
      bs[0] = r, bs[1] = k;
      return SQ_OK;
    }
  }
  return err_at(c, n, "block_structure must be [rows, cols] (e.g. [128, 128]) or \"RxC\"");
}

/* which: "weights", "input_activations", "output_activations", "kv_cache_scheme" */
static sq_status parse_qargs(const ctx *c, const sq_ynode *n, const char *which, int is_weights,
                             sq_recipe_qargs *q) {
  memset(q, 0, sizeof *q);
  if (sq_yaml_is_null(n)) return SQ_OK;
  SQ_CHECK(need_map(c, n, which));
  SQ_CHECK(check_keys(c, n, which, k_qargs_keys));
  q->present = 1;
  q->line = n->line, q->col = n->col;
  q->num_bits = 8, q->type = SQ_QTYPE_INT, q->symmetric = 1;
  const sq_ynode *v;
  if ((v = get(n, "type"))) {
    const char *s = NULL;
    SQ_CHECK(as_str(c, v, "type", &s));
    if (!strcasecmp(s, "int")) q->type = SQ_QTYPE_INT;
    else if (!strcasecmp(s, "float")) q->type = SQ_QTYPE_FLOAT;
    else return err_at(c, v, "type '%s' is not 'int' or 'float'", s);
  }
  const sq_ynode *nb = get(n, "num_bits");
  if (nb) SQ_CHECK(as_int(c, nb, "num_bits", 1, 64, &q->num_bits));
  if (q->type == SQ_QTYPE_INT && !(q->num_bits == 2 || q->num_bits == 3 || q->num_bits == 4 || q->num_bits == 8))
    return err_at(c, nb, "num_bits %d is not supported for type int -- hint: use 2, 3, 4 or 8", q->num_bits);
  if (q->type == SQ_QTYPE_FLOAT && q->num_bits != 8)
    return err_at(c, nb ? nb : n, "num_bits %d is not supported for type float -- hint: shardq writes fp8 "
                  "(e4m3, num_bits 8); NVFP4 is not supported", q->num_bits);
  if ((v = get(n, "symmetric"))) SQ_CHECK(as_bool(c, v, "symmetric", &q->symmetric));

  const sq_ynode *gs = get(n, "group_size");
  int group = 0, has_group = gs && !sq_yaml_is_null(gs);
  if (has_group) {
    SQ_CHECK(as_int(c, gs, "group_size", -1, 1 << 20, &group));
    if (group == 0)
      return err_at(c, gs, "group_size must be > 0 (or -1 for channel), not 0");
  }
  const sq_ynode *sn = get(n, "strategy");
  int has_strat = sn && !sq_yaml_is_null(sn);
  if (has_strat) {
    const char *s = NULL;
    static const char *const names[] = {"tensor", "channel", "group", "block", "token", "tensor_group", NULL};
    SQ_CHECK(as_str(c, sn, "strategy", &s));
    int k = -1;
    for (int i = 0; names[i]; i++)
      if (!strcasecmp(s, names[i])) k = i;
    if (k < 0) return err_at(c, sn, "strategy '%s' is not one of tensor, channel, group, block, token", s);
    if (k == 5) return err_at(c, sn, "strategy tensor_group (NVFP4) is not supported by shardq");
    static const sq_qstrategy map[] = {SQ_QSTRAT_TENSOR, SQ_QSTRAT_CHANNEL, SQ_QSTRAT_GROUP, SQ_QSTRAT_BLOCK,
                                       SQ_QSTRAT_TOKEN};
    q->strategy = map[k];
  } else if (!has_group) {
    q->strategy = SQ_QSTRAT_TENSOR;
  } else {
    q->strategy = group > 0 ? SQ_QSTRAT_GROUP : SQ_QSTRAT_CHANNEL;
  }
  if (q->strategy == SQ_QSTRAT_GROUP && group <= 0)
    return err_at(c, has_group ? gs : sn, "strategy group needs group_size > 0 -- hint: e.g. group_size: 128");
  if (group > 0 && q->strategy != SQ_QSTRAT_GROUP)
    return err_at(c, gs, "group_size %d needs strategy group, not %s", group, sn ? sn->str : "?");
  q->group_size = group > 0 ? group : 0;

  if ((v = get(n, "block_structure")) && !sq_yaml_is_null(v))
    SQ_CHECK(parse_block_structure(c, v, q->block_structure));
  if (q->strategy == SQ_QSTRAT_BLOCK && !q->block_structure[0])
    return err_at(c, sn, "strategy block needs block_structure -- hint: e.g. block_structure: [128, 128]");
  if (is_weights && q->strategy == SQ_QSTRAT_TOKEN)
    return err_at(c, sn, "strategy token applies to activations, not to %s", which);

  if ((v = get(n, "dynamic")) && !sq_yaml_is_null(v)) {
    if (v->kind == SQ_Y_SCALAR && !strcasecmp(v->str, "local"))
      return err_at(c, v, "dynamic: local (NVFP4) is not supported by shardq");
    SQ_CHECK(as_bool(c, v, "dynamic", &q->dynamic));
    if (q->dynamic && q->strategy != SQ_QSTRAT_TOKEN && q->strategy != SQ_QSTRAT_TENSOR)
      return err_at(c, v, "dynamic quantization needs strategy token or tensor");
    if (q->dynamic && is_weights)
      return err_at(c, v, "dynamic weights are not supported -- hint: weights are quantized once, offline");
  }
  if ((v = get(n, "actorder"))) {
    SQ_CHECK(parse_actorder(c, v, &q->actorder));
    if (q->actorder != SQ_ACTORDER_NONE && !is_weights)
      return err_at(c, v, "actorder applies to weights only, not to %s", which);
    if (q->actorder != SQ_ACTORDER_NONE && q->strategy != SQ_QSTRAT_GROUP)
      return err_at(c, v, "actorder needs strategy group");
  }
  if ((v = get(n, "observer")) && !sq_yaml_is_null(v)) {
    const char *s = NULL;
    SQ_CHECK(as_str(c, v, "observer", &s));
    if (strlen(s) >= sizeof q->observer) return err_at(c, v, "observer name is too long");
    snprintf(q->observer, sizeof q->observer, "%s", s);
  }
  if (q->dynamic) q->observer[0] = 0;           /* compressed-tensors drops it */
  else if (!q->observer[0]) snprintf(q->observer, sizeof q->observer, "minmax");
  return SQ_OK;
}

/* ---- schemes ---- */

static const char *const k_scheme_fields[] = {"weights", "input_activations", "output_activations", "format",
                                              NULL};

static sq_status parse_scheme_fields(const ctx *c, const sq_ynode *n, sq_recipe_scheme *s) {
  const sq_ynode *v;
  if ((v = get(n, "weights"))) SQ_CHECK(parse_qargs(c, v, "weights", 1, &s->weights));
  if ((v = get(n, "input_activations")))
    SQ_CHECK(parse_qargs(c, v, "input_activations", 0, &s->input_activations));
  if ((v = get(n, "output_activations")))
    SQ_CHECK(parse_qargs(c, v, "output_activations", 0, &s->output_activations));
  if ((v = get(n, "format")) && !sq_yaml_is_null(v)) {
    const char *f = NULL;
    SQ_CHECK(as_str(c, v, "format", &f));
  }
  return SQ_OK;
}

static sq_status preset_at(const ctx *c, const sq_ynode *at, const char *preset, sq_recipe_scheme *s) {
  sq_status st = sq_recipe_preset(preset, s);
  if (st != SQ_OK) {
    sq_error_clear();
    static const char *const names[] = {"W4A16", "W4A16_ASYM", "W8A16", "W8A8", "INT8", "W4A8",
                                        "FP8",   "FP8_DYNAMIC", "UNQUANTIZED", NULL};
    char up[64];
    snprintf(up, sizeof up, "%s", preset);
    for (char *p = up; *p; p++) *p = (char)(*p >= 'a' && *p <= 'z' ? *p - 32 : *p);
    if (!strcmp(up, "NVFP4") || !strcmp(up, "NVFP4A16") || !strcmp(up, "FP8_BLOCK"))
      return err_at(c, at, "preset scheme '%s' is not supported by shardq", preset);
    const char *sug = suggest(up, names);
    if (sug) return err_at(c, at, "unknown preset scheme '%s' (did you mean '%s'?)", preset, sug);
    return err_at(c, at, "unknown preset scheme '%s' -- hint: W4A16, W4A16_ASYM, W8A16, W8A8, W4A8, FP8, "
                  "FP8_DYNAMIC", preset);
  }
  s->line = at->line, s->col = at->col;
  s->name = s->preset = sq_arena_strdup(c->a, s->preset);
  return s->name ? SQ_OK : nomem();
}

/* scheme: PRESET | {PRESET: targets, ...} | {weights: ..., input_activations: ...} */
static sq_status parse_scheme(const ctx *c, const sq_ynode *n, sq_recipe_modifier *m) {
  if (n->kind == SQ_Y_SEQ) return err_at(c, n, "scheme must be a preset name or a mapping, not a list");
  if (n->kind == SQ_Y_SCALAR) {
    m->n_schemes = 1;
    m->schemes = sq_arena_alloc(c->a, sizeof *m->schemes);
    if (!m->schemes) return nomem();
    SQ_CHECK(preset_at(c, n, n->str, &m->schemes[0]));
    m->schemes[0].targets = m->targets;
    return SQ_OK;
  }
  int fields = 0;
  for (int i = 0; i < n->n; i += 2)
    for (int j = 0; k_scheme_fields[j]; j++) fields += !strcmp(n->kids[i]->str, k_scheme_fields[j]);
  if (fields) { /* one QuantizationScheme applied to the modifier's targets */
    SQ_CHECK(check_keys(c, n, "scheme", k_scheme_fields));
    m->n_schemes = 1;
    m->schemes = sq_arena_alloc(c->a, sizeof *m->schemes);
    if (!m->schemes) return nomem();
    m->schemes[0].name = "scheme";
    m->schemes[0].line = n->line, m->schemes[0].col = n->col;
    m->schemes[0].targets = m->targets;
    return parse_scheme_fields(c, n, &m->schemes[0]);
  }
  m->n_schemes = n->n / 2;
  m->schemes = sq_arena_alloc(c->a, sizeof *m->schemes * (size_t)(m->n_schemes ? m->n_schemes : 1));
  if (!m->schemes) return nomem();
  for (int i = 0; i < m->n_schemes; i++) {
    SQ_CHECK(preset_at(c, n->kids[2 * i], n->kids[2 * i]->str, &m->schemes[i]));
    SQ_CHECK(parse_targets(c, n->kids[2 * i + 1], "targets", &m->schemes[i].targets));
  }
  return SQ_OK;
}

static sq_status parse_config_groups(const ctx *c, const sq_ynode *n, sq_recipe_modifier *m) {
  static const char *const keys[] = {"targets", "weights", "input_activations", "output_activations", "format",
                                     NULL};
  SQ_CHECK(need_map(c, n, "config_groups"));
  if (n->n == 0) return err_at(c, n, "config_groups is empty");
  m->n_schemes = n->n / 2;
  m->schemes = sq_arena_alloc(c->a, sizeof *m->schemes * (size_t)m->n_schemes);
  if (!m->schemes) return nomem();
  for (int i = 0; i < m->n_schemes; i++) {
    const sq_ynode *k = n->kids[2 * i], *g = n->kids[2 * i + 1];
    sq_recipe_scheme *s = &m->schemes[i];
    char where[96];
    snprintf(where, sizeof where, "config group '%.60s'", k->str);
    SQ_CHECK(need_map(c, g, where));
    SQ_CHECK(check_keys(c, g, where, keys));
    s->name = sq_arena_strdup(c->a, k->str);
    if (!s->name) return nomem();
    s->line = k->line, s->col = k->col;
    const sq_ynode *t = get(g, "targets");
    if (!t) return err_at(c, k, "%s has no targets -- hint: e.g. targets: [\"Linear\"]", where);
    SQ_CHECK(parse_targets(c, t, "targets", &s->targets));
    SQ_CHECK(parse_scheme_fields(c, g, s));
  }
  return SQ_OK;
}


/* ---- modifiers ---- */

#define SQ_BASE_KEYS "group", "start", "end", "update", "index"
static const char *const k_quant_keys[] = {"targets", "ignore", "scheme", "config_groups", "kv_cache_scheme",
                                           SQ_BASE_KEYS, NULL};
static const char *const k_gptq_keys[] = {"targets", "ignore", "scheme", "config_groups", "kv_cache_scheme",
                                          "block_size", "dampening_frac", "actorder", "offload_hessians",
                                          "sequential_targets", SQ_BASE_KEYS, NULL};
static const char *const k_sgpt_keys[] = {"sparsity", "mask_structure", "targets", "ignore", "block_size",
                                          "dampening_frac", "sequential_targets", "sparsity_profile", "owl_m",
                                          "owl_lmbda", "preserve_sparsity_mask", "offload_hessians",
                                          SQ_BASE_KEYS, NULL};
static const char *const k_sq_keys[] = {"smoothing_strength", "mappings", "ignore", "num_calibration_steps",
                                        SQ_BASE_KEYS, NULL};

static sq_status parse_base(const ctx *c, const sq_ynode *args) {
  static const char *const base[] = {SQ_BASE_KEYS, NULL};
  for (int i = 0; base[i]; i++) {
    const sq_ynode *v = get(args, base[i]);
    if (v && v->kind != SQ_Y_SCALAR) return err_at(c, v, "%s must be a scalar, not %s", base[i], sq_yaml_kind_name(v));
  }
  return SQ_OK;
}

static sq_status parse_solver_common(const ctx *c, const sq_ynode *args, sq_recipe_modifier *m) {
  const sq_ynode *v;
  m->block_size = 128;
  m->dampening_frac = 0.01;
  if ((v = get(args, "block_size"))) SQ_CHECK(as_int(c, v, "block_size", 1, 1 << 20, &m->block_size));
  if ((v = get(args, "dampening_frac"))) {
    SQ_CHECK(as_double(c, v, "dampening_frac", &m->dampening_frac));
    if (!(m->dampening_frac >= 0 && m->dampening_frac < 1))
      return err_at(c, v, "dampening_frac %g is not in [0, 1) -- hint: 0.01 is the default; a positive "
                    "dampening keeps the Hessian's Cholesky factorisation stable", m->dampening_frac);
  }
  if ((v = get(args, "offload_hessians"))) SQ_CHECK(as_bool(c, v, "offload_hessians", &m->offload_hessians));
  if ((v = get(args, "sequential_targets")) && !sq_yaml_is_null(v)) {
    /* validated only: shardq always works one decoder layer at a time */
    if (v->kind == SQ_Y_MAP) return err_at(c, v, "sequential_targets must be a string or a list of strings");
    for (int i = 0; v->kind == SQ_Y_SEQ && i < v->n; i++) {
      const char *s = NULL;
      SQ_CHECK(as_str(c, v->kids[i], "sequential_targets", &s));
    }
  }
  return SQ_OK;
}

static sq_status parse_quant(const ctx *c, const sq_ynode *args, sq_recipe_modifier *m) {
  const sq_ynode *v;
  if ((v = get(args, "targets"))) SQ_CHECK(parse_targets(c, v, "targets", &m->targets));
  else SQ_CHECK(default_linear(c, &m->targets));
  if ((v = get(args, "ignore"))) SQ_CHECK(parse_targets(c, v, "ignore", &m->ignore));
  const sq_ynode *sch = get(args, "scheme"), *cg = get(args, "config_groups");
  if (sch && sq_yaml_is_null(sch)) sch = NULL;
  if (cg && sq_yaml_is_null(cg)) cg = NULL;
  if (sch && cg)
    return err_at(c, get_key(args, "config_groups"), "%s has both scheme and config_groups -- hint: use one of them",
                  sq_recipe_modifier_name(m->kind));
  if (sch) SQ_CHECK(parse_scheme(c, sch, m));
  if (cg) SQ_CHECK(parse_config_groups(c, cg, m));
  if ((v = get(args, "kv_cache_scheme"))) SQ_CHECK(parse_qargs(c, v, "kv_cache_scheme", 0, &m->kv_cache));
  if (m->kv_cache.present && m->kv_cache.strategy != SQ_QSTRAT_TENSOR && m->kv_cache.strategy != SQ_QSTRAT_CHANNEL)
    return err_at(c, v, "kv_cache_scheme strategy must be tensor (or channel)");
  if (m->kind == SQ_MOD_QUANTIZATION && !m->n_schemes && !m->kv_cache.present)
    return err_at(c, args, "QuantizationModifier needs scheme, config_groups or kv_cache_scheme -- hint: "
                  "e.g. scheme: W4A16");
  if (m->kind == SQ_MOD_GPTQ) {
    SQ_CHECK(parse_solver_common(c, args, m));
    if ((v = get(args, "actorder"))) {
      SQ_CHECK(parse_actorder(c, v, &m->actorder));
      m->actorder_set = 1;
    }
    /* llm-compressor: the modifier's actorder must agree with any a scheme sets */
    for (int i = 0; m->actorder_set && i < m->n_schemes; i++) {
      const sq_recipe_qargs *w = &m->schemes[i].weights;
      if (w->present && w->strategy == SQ_QSTRAT_GROUP && w->actorder != SQ_ACTORDER_NONE &&
          w->actorder != m->actorder)
        return err_at(c, v, "GPTQModifier actorder conflicts with the actorder of config group '%s' (line %d) "
                      "-- hint: set it in one place", m->schemes[i].name, w->line);
    }
  }
  return SQ_OK;
}

static sq_status parse_sparsegpt(const ctx *c, const sq_ynode *args, sq_recipe_modifier *m) {
  const sq_ynode *v;
  if ((v = get(args, "targets"))) SQ_CHECK(parse_targets(c, v, "targets", &m->targets));
  else SQ_CHECK(default_linear(c, &m->targets));
  if ((v = get(args, "ignore"))) SQ_CHECK(parse_targets(c, v, "ignore", &m->ignore));
  SQ_CHECK(parse_solver_common(c, args, m));
  v = get(args, "sparsity");
  if (!v) return err_at(c, args, "SparseGPTModifier needs sparsity -- hint: e.g. sparsity: 0.5");
  if (v->kind == SQ_Y_SEQ || v->kind == SQ_Y_MAP)
    return err_at(c, v, "per-layer sparsity lists are not supported -- hint: give one number");
  SQ_CHECK(as_double(c, v, "sparsity", &m->sparsity));
  if (!(m->sparsity >= 0 && m->sparsity < 1)) return err_at(c, v, "sparsity %g is not in [0, 1)", m->sparsity);
  if ((v = get(args, "mask_structure")) && !sq_yaml_is_null(v)) {
    const char *s = NULL;
    int a, b, used = 0;
    SQ_CHECK(as_str(c, v, "mask_structure", &s));
    if (sscanf(s, "%d:%d%n", &a, &b, &used) != 2 || s[used] || a < 0 || b < 0 || b > 64 || a >= (b ? b : 1) ||
        (a == 0) != (b == 0))
      return err_at(c, v, "mask_structure '%s' is not \"N:M\" with 0 < N < M <= 64, or \"0:0\" (unstructured)", s);
    m->mask_n = a, m->mask_m = b;
    if (b && fabs(m->sparsity - (double)a / b) > 1e-9 && get(args, "sparsity"))
      return err_at(c, get(args, "sparsity"), "sparsity %g disagrees with mask_structure %d:%d (= %g)",
                    m->sparsity, a, b, (double)a / b);
  }
  if ((v = get(args, "sparsity_profile")) && !sq_yaml_is_null(v))
    return err_at(c, v, "sparsity_profile (OWL) is not supported -- hint: remove it for uniform sparsity");
  static const char *const nums[] = {"owl_m", "owl_lmbda", NULL};
  for (int i = 0; nums[i]; i++) {
    double d;
    if ((v = get(args, nums[i])) && !sq_yaml_is_null(v)) SQ_CHECK(as_double(c, v, nums[i], &d));
  }
  int b;
  if ((v = get(args, "preserve_sparsity_mask"))) SQ_CHECK(as_bool(c, v, "preserve_sparsity_mask", &b));
  return SQ_OK;
}

static sq_status parse_smoothquant(const ctx *c, const sq_ynode *args, sq_recipe_modifier *m) {
  const sq_ynode *v;
  m->smoothing_strength = 0.5;
  if ((v = get(args, "smoothing_strength"))) {
    SQ_CHECK(as_double(c, v, "smoothing_strength", &m->smoothing_strength));
    if (!(m->smoothing_strength > 0 && m->smoothing_strength <= 1))
      return err_at(c, v, "smoothing_strength %g is not in (0, 1]", m->smoothing_strength);
  }
  if ((v = get(args, "ignore"))) SQ_CHECK(parse_targets(c, v, "ignore", &m->ignore));
  if ((v = get(args, "num_calibration_steps")) && !sq_yaml_is_null(v)) {
    int k;
    SQ_CHECK(as_int(c, v, "num_calibration_steps", 1, 1 << 30, &k));
  }
  if ((v = get(args, "mappings")) && !sq_yaml_is_null(v)) {
    if (v->kind != SQ_Y_SEQ)
      return err_at(c, v, "mappings must be a list of [[balance layers...], smooth layer] pairs");
    m->n_mappings = v->n;
    m->mappings = sq_arena_alloc(c->a, sizeof *m->mappings * (size_t)(v->n ? v->n : 1));
    if (!m->mappings) return nomem();
    for (int i = 0; i < v->n; i++) {
      const sq_ynode *p = v->kids[i];
      if (p->kind != SQ_Y_SEQ || p->n != 2)
        return err_at(c, p, "each mapping must be a pair [[balance layers...], smooth layer] -- hint: "
                      "[[\"re:.*q_proj\", \"re:.*k_proj\", \"re:.*v_proj\"], \"re:.*input_layernorm\"]");
      SQ_CHECK(parse_targets(c, p->kids[0], "mappings balance layers", &m->mappings[i].balance));
      if (m->mappings[i].balance.n == 0) return err_at(c, p->kids[0], "mapping has no balance layers");
      const char *s = NULL;
      SQ_CHECK(as_str(c, p->kids[1], "mappings smooth layer", &s));
      SQ_CHECK(sq_recipe_target_init(c->name, c->a, s, p->kids[1]->line, p->kids[1]->col, &m->mappings[i].smooth));
    }
  }
  return SQ_OK;
}

static const char *const k_modifiers[] = {"QuantizationModifier", "GPTQModifier", "SparseGPTModifier",
                                          "SmoothQuantModifier", NULL};
static const char *const k_other_modifiers[] = {"AWQModifier", "ConstantPruningModifier", "WandaPruningModifier",
                                                "MagnitudePruningModifier", "LogarithmicEqualizationModifier",
                                                "QuIPModifier", "SpinQuantModifier", "AutoRoundModifier",
                                                "OutputDistillationModifier", NULL};

static sq_status parse_modifier(const ctx *c, const sq_ynode *key, const sq_ynode *args, const char *stage,
                                sq_recipe_modifier *m) {
  int kind = -1;
  for (int i = 0; k_modifiers[i]; i++)
    if (!strcmp(key->str, k_modifiers[i])) kind = i;
  if (kind < 0) {
    for (int i = 0; k_other_modifiers[i]; i++)
      if (!strcmp(key->str, k_other_modifiers[i]))
        return err_at(c, key, "modifier %s is not supported by shardq -- hint: supported are "
                      "QuantizationModifier, GPTQModifier, SparseGPTModifier, SmoothQuantModifier", key->str);
    return unknown(c, key, "modifier", "the modifiers", k_modifiers);
  }
  memset(m, 0, sizeof *m);
  m->kind = (sq_modifier_kind)kind;
  m->stage = stage;
  m->line = key->line, m->col = key->col;
  if (sq_yaml_is_null(args)) return err_at(c, args, "%s has no arguments", key->str);
  SQ_CHECK(need_map(c, args, key->str));
  const char *const *keys = kind == SQ_MOD_QUANTIZATION ? k_quant_keys
                            : kind == SQ_MOD_GPTQ       ? k_gptq_keys
                            : kind == SQ_MOD_SPARSEGPT  ? k_sgpt_keys
                                                        : k_sq_keys;
  SQ_CHECK(check_keys(c, args, key->str, keys));
  SQ_CHECK(parse_base(c, args));
  if (kind == SQ_MOD_QUANTIZATION || kind == SQ_MOD_GPTQ) return parse_quant(c, args, m);
  if (kind == SQ_MOD_SPARSEGPT) return parse_sparsegpt(c, args, m);
  return parse_smoothquant(c, args, m);
}

static int ends_with(const char *s, const char *suffix) {
  size_t a = strlen(s), b = strlen(suffix);
  return a >= b && !strcmp(s + a - b, suffix);
}

/* Count modifiers first so that one array holds them all. */
static int count_group(const sq_ynode *g) { return g->kind == SQ_Y_MAP ? g->n / 2 : 0; }

static sq_status parse_group(const ctx *c, const sq_ynode *key, const sq_ynode *g, const char *stage,
                             sq_recipe *r) {
  if (g->kind != SQ_Y_MAP)
    return err_at(c, g, "'%s' must be a mapping of modifier names to their arguments, not %s", key->str,
                  sq_yaml_kind_name(g));
  for (int i = 0; i < g->n; i += 2)
    SQ_CHECK(parse_modifier(c, g->kids[i], g->kids[i + 1], stage, &r->mods[r->n_mods++]));
  return SQ_OK;
}

static const char *const k_top_hint[] = {"quant_stage", "sparsity_stage", "default_stage", "quant_modifiers",
                                         "modifiers", "args", NULL};

static sq_status parse_root(const ctx *c, const sq_ynode *root, sq_recipe *r) {
  if (root->kind != SQ_Y_MAP)
    return err_at(c, root, "a recipe must be a mapping (e.g. 'quant_stage:'), not %s", sq_yaml_kind_name(root));
  int total = 0;
  for (int i = 0; i < root->n; i += 2) {
    const sq_ynode *k = root->kids[i], *v = root->kids[i + 1];
    if (ends_with(k->str, "_stage")) {
      if (v->kind != SQ_Y_MAP) return err_at(c, v, "stage '%s' must be a mapping, not %s", k->str, sq_yaml_kind_name(v));
      for (int j = 0; j < v->n; j += 2)
        if (ends_with(v->kids[j]->str, "_modifiers")) total += count_group(v->kids[j + 1]);
    } else if (ends_with(k->str, "_modifiers") || !strcmp(k->str, "modifiers")) {
      total += count_group(v);
    } else if (!strcmp(k->str, "args")) {
      if (!sq_yaml_is_null(v) && !(v->kind == SQ_Y_MAP && v->n == 0))
        return err_at(c, k, "recipe args (variables) are not supported -- hint: write the values in place");
    } else if (!strcmp(k->str, "version")) {
      if (v->kind != SQ_Y_SCALAR) return err_at(c, v, "version must be a scalar");
    } else {
      return unknown(c, k, "top-level key", "the recipe (keys end in _stage or _modifiers)", k_top_hint);
    }
  }
  if (total == 0)
    return err_at(c, root, "the recipe has no modifiers -- hint: quant_stage: {quant_modifiers: {GPTQModifier: "
                  "{scheme: W4A16, targets: [Linear], ignore: [lm_head]}}}");
  r->mods = sq_arena_alloc(c->a, sizeof *r->mods * (size_t)total);
  if (!r->mods) return nomem();
  for (int i = 0; i < root->n; i += 2) {
    const sq_ynode *k = root->kids[i], *v = root->kids[i + 1];
    if (ends_with(k->str, "_stage")) {
      char *stage = sq_arena_strdup(c->a, k->str);
      if (!stage) return nomem();
      stage[strlen(stage) - 6] = 0;
      for (int j = 0; j < v->n; j += 2) {
        const sq_ynode *gk = v->kids[j], *gv = v->kids[j + 1];
        if (ends_with(gk->str, "_modifiers")) {
          SQ_CHECK(parse_group(c, gk, gv, stage, r));
        } else if (!strcmp(gk->str, "run_type")) {
          const char *s = NULL;
          SQ_CHECK(as_str(c, gv, "run_type", &s));
          if (strcmp(s, "oneshot"))
            return err_at(c, gv, "run_type '%s' is not supported -- hint: shardq runs oneshot", s);
        } else {
          static const char *const stage_keys[] = {"quant_modifiers", "pruning_modifiers", "default_modifiers",
                                                   "run_type", NULL};
          return unknown(c, gk, "key", "a stage (keys end in _modifiers)", stage_keys);
        }
      }
    } else if (ends_with(k->str, "_modifiers") || !strcmp(k->str, "modifiers")) {
      SQ_CHECK(parse_group(c, k, v, "", r));
    }
  }
  return SQ_OK;
}

sq_status sq_recipe_parse(const char *name, const char *buf, size_t len, sq_recipe **out) {
  *out = NULL;
  sq_ynode *root = NULL;
  SQ_CHECK(sq_yaml_build(name, buf, len, &root));
  sq_arena *a = sq_arena_new();
  sq_recipe *r = a ? sq_arena_alloc(a, sizeof *r) : NULL;
  if (!r) {
    sq_arena_free(a);
    sq_yaml_free(root);
    return nomem();
  }
  r->arena_ = a;
  r->path = sq_arena_strdup(a, name);
  ctx c = {name, a};
  sq_status st = r->path ? parse_root(&c, root, r) : nomem();
  sq_yaml_free(root);
  if (st != SQ_OK) {
    sq_recipe_free(r);
    return st;
  }
  *out = r;
  return SQ_OK;
}

sq_status sq_recipe_load(const char *path, sq_recipe **out) {
  *out = NULL;
  FILE *f = fopen(path, "rb");
  if (!f) return sq_error_errno(path, "open recipe");
  char *buf = malloc(SQ_RECIPE_MAX_BYTES + 1);
  if (!buf) {
    fclose(f);
    return nomem();
  }
  size_t n = fread(buf, 1, SQ_RECIPE_MAX_BYTES + 1, f);
  int bad = ferror(f);
  fclose(f);
  sq_status st;
  if (bad) st = sq_error_errno(path, "read recipe");
  else if (n > SQ_RECIPE_MAX_BYTES)
    st = sq_error_set(SQ_ERR_FORMAT, "%s:1:1: recipe is larger than %u bytes -- hint: recipes are small; is "
                      "this the right file?", path, (unsigned)SQ_RECIPE_MAX_BYTES);
  else st = sq_recipe_parse(path, buf, n, out);
  free(buf);
  return st;
}
