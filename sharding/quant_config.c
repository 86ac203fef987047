/* compressed-tensors `quantization_config`: building it, serializing it field
 * for field as compressed-tensors does (see sharding/compressed.h), parsing it
 * back with compressed-tensors' defaults, and matching modules to groups. */
#include <jansson.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/fsio.h"
#include "sharding/compressed.h"

static const char *const k_fmt_names[] = {"dense",          "pack-quantized",  "int-quantized",
                                          "float-quantized", "naive-quantized", "mixed-precision"};

const char *sq_ct_format_name(sq_ct_format f) {
  return (f >= SQ_CT_FMT_DENSE && f < SQ_CT_FMT_INVALID) ? k_fmt_names[f] : "invalid";
}

sq_ct_format sq_ct_format_from_name(const char *name) {
  for (int f = 0; f < SQ_CT_FMT_INVALID; ++f)
    if (name && strcmp(name, k_fmt_names[f]) == 0) return (sq_ct_format)f;
  return SQ_CT_FMT_INVALID;
}

static const char *const k_strat_names[] = {"tensor", "channel", "group", "block", "token"};

/* ---------------------------------------------------------------- strings */

static sq_status str_push(char ***list, size_t *n, const char *s) {
  char **grown = realloc(*list, (*n + 1) * sizeof **list);
  if (!grown) return sq_error_set(SQ_ERR_NOMEM, "out of memory adding '%s'", s);
  *list = grown;
  grown[*n] = strdup(s);
  if (!grown[*n]) return sq_error_set(SQ_ERR_NOMEM, "out of memory adding '%s'", s);
  ++*n;
  return SQ_OK;
}

static void str_free(char ***list, size_t *n) {
  for (size_t i = 0; i < *n; ++i) free((*list)[i]);
  free(*list);
  *list = NULL;
  *n = 0;
}

static void copy_str(char *dst, size_t cap, const char *src) { snprintf(dst, cap, "%s", src); }

/* ---------------------------------------------------------------- config */

void sq_ct_config_init(sq_ct_config *c) {
  memset(c, 0, sizeof *c);
  c->format = SQ_CT_FMT_DENSE;
  copy_str(c->status, sizeof c->status, "compressed");
  copy_str(c->version, sizeof c->version, SQ_CT_VERSION);
}

void sq_ct_scheme_free(sq_ct_scheme *s) { str_free(&s->targets, &s->n_targets); }

void sq_ct_config_free(sq_ct_config *c) {
  if (!c) return;
  for (size_t i = 0; i < c->n_groups; ++i) sq_ct_scheme_free(&c->groups[i]);
  free(c->groups);
  str_free(&c->ignore, &c->n_ignore);
  str_free(&c->sparsity.targets, &c->sparsity.n_targets);
  str_free(&c->sparsity.ignore, &c->sparsity.n_ignore);
  memset(c, 0, sizeof *c);
}

sq_status sq_ct_scheme_add_target(sq_ct_scheme *s, const char *target) {
  return str_push(&s->targets, &s->n_targets, target);
}

sq_status sq_ct_config_add_ignore(sq_ct_config *c, const char *module) {
  return str_push(&c->ignore, &c->n_ignore, module);
}

static sq_ct_args make_args(int bits, sq_qtype type, int sym, sq_qstrategy strat, int gs,
                            bool dynamic, sq_dtype sdt) {
  sq_ct_args a;
  memset(&a, 0, sizeof a);
  a.q.num_bits = bits;
  a.q.type = type;
  a.q.symmetric = sym;
  a.q.strategy = strat;
  a.q.group_size = gs;
  a.q.scale_dtype = sdt;
  a.dynamic = dynamic;
  /* compressed-tensors: static args default to the "minmax" observer, dynamic ones have none. */
  if (!dynamic) copy_str(a.observer, sizeof a.observer, "minmax");
  return a;
}

sq_status sq_ct_scheme_preset(const char *preset, sq_dtype sdt, sq_ct_scheme *out) {
  memset(out, 0, sizeof *out);
  out->format = SQ_CT_FMT_INVALID;
  copy_str(out->name, sizeof out->name, preset);
  out->has_weights = true;
  sq_ct_args tok8i = make_args(8, SQ_QTYPE_INT, 1, SQ_QSTRAT_TOKEN, 0, true, sdt);
  sq_ct_args tok8f = make_args(8, SQ_QTYPE_FLOAT, 1, SQ_QSTRAT_TOKEN, 0, true, sdt);
  if (!strcasecmp(preset, "W4A16")) {
    out->weights = make_args(4, SQ_QTYPE_INT, 1, SQ_QSTRAT_GROUP, 128, false, sdt);
  } else if (!strcasecmp(preset, "W4A16_ASYM")) {
    out->weights = make_args(4, SQ_QTYPE_INT, 0, SQ_QSTRAT_GROUP, 128, false, sdt);
  } else if (!strcasecmp(preset, "W8A16")) {
    out->weights = make_args(8, SQ_QTYPE_INT, 1, SQ_QSTRAT_GROUP, 128, false, sdt);
  } else if (!strcasecmp(preset, "W8A8") || !strcasecmp(preset, "INT8")) {
    out->weights = make_args(8, SQ_QTYPE_INT, 1, SQ_QSTRAT_CHANNEL, 0, false, sdt);
    out->has_input = true;
    out->input = tok8i;
  } else if (!strcasecmp(preset, "W4A8")) {
    out->weights = make_args(4, SQ_QTYPE_INT, 1, SQ_QSTRAT_GROUP, 128, false, sdt);
    out->has_input = true;
    out->input = tok8i;
  } else if (!strcasecmp(preset, "FP8")) {
    out->weights = make_args(8, SQ_QTYPE_FLOAT, 1, SQ_QSTRAT_TENSOR, 0, false, sdt);
    out->has_input = true;
    out->input = make_args(8, SQ_QTYPE_FLOAT, 1, SQ_QSTRAT_TENSOR, 0, false, sdt);
  } else if (!strcasecmp(preset, "FP8_DYNAMIC")) {
    out->weights = make_args(8, SQ_QTYPE_FLOAT, 1, SQ_QSTRAT_CHANNEL, 0, false, sdt);
    out->has_input = true;
    out->input = tok8f;
  } else {
    return sq_error_set(SQ_ERR_ARG,
                        "unknown quantization scheme '%s' -- hint: use one of W4A16, W4A16_ASYM, "
                        "W8A16, W8A8, INT8, W4A8, FP8, FP8_DYNAMIC",
                        preset);
  }
  return sq_ct_scheme_add_target(out, "Linear");
}

sq_ct_format sq_ct_scheme_infer_format(const sq_ct_scheme *s) {
  if (!s->has_weights) return SQ_CT_FMT_DENSE;
  if (s->weights.q.type == SQ_QTYPE_FLOAT) return SQ_CT_FMT_FLOAT;
  if (s->has_input) return s->weights.q.num_bits == 8 ? SQ_CT_FMT_INT : SQ_CT_FMT_PACK;
  return SQ_CT_FMT_PACK;
}

static sq_status scheme_copy(sq_ct_scheme *dst, const sq_ct_scheme *src) {
  *dst = *src;
  dst->targets = NULL;
  dst->n_targets = 0;
  for (size_t i = 0; i < src->n_targets; ++i)
    SQ_CHECK(str_push(&dst->targets, &dst->n_targets, src->targets[i]));
  return SQ_OK;
}

/* One format for all groups, or mixed-precision with each group keeping its own. */
static void recompute_format(sq_ct_config *c) {
  sq_ct_format f = SQ_CT_FMT_DENSE;
  for (size_t i = 0; i < c->n_groups; ++i) {
    sq_ct_format g = c->groups[i].format;
    if (i == 0) f = g;
    else if (g != f) f = SQ_CT_FMT_MIXED;
  }
  c->format = f;
}

sq_status sq_ct_config_add_group(sq_ct_config *c, const sq_ct_scheme *s) {
  sq_ct_scheme *grown = realloc(c->groups, (c->n_groups + 1) * sizeof *grown);
  if (!grown) return sq_error_set(SQ_ERR_NOMEM, "out of memory adding a config group");
  c->groups = grown;
  sq_ct_scheme *g = &grown[c->n_groups];
  memset(g, 0, sizeof *g);
  sq_status st = scheme_copy(g, s);
  ++c->n_groups; /* counted even on failure so that free releases it */
  if (st != SQ_OK) return st;
  snprintf(g->name, sizeof g->name, "group_%zu", c->n_groups - 1);
  if (g->format == SQ_CT_FMT_INVALID || g->format == SQ_CT_FMT_MIXED)
    g->format = sq_ct_scheme_infer_format(g);
  recompute_format(c);
  return SQ_OK;
}

/* ---------------------------------------------------------------- to JSON */

static json_t *str_array(char *const *list, size_t n) {
  json_t *a = json_array();
  for (size_t i = 0; i < n; ++i) json_array_append_new(a, json_string(list[i]));
  return a;
}

static json_t *args_to_json(const sq_ct_args *a) {
  json_t *o = json_object();
  static const char *const actorder[] = {NULL, "group", "weight"};
  json_object_set_new(o, "actorder",
                      a->actorder ? json_string(actorder[a->actorder]) : json_null());
  if (a->block_structure[0] > 0)
    json_object_set_new(o, "block_structure",
                        json_pack("[ii]", a->block_structure[0], a->block_structure[1]));
  else
    json_object_set_new(o, "block_structure", json_null());
  json_object_set_new(o, "dynamic", json_boolean(a->dynamic));
  json_object_set_new(o, "group_size", a->q.strategy == SQ_QSTRAT_GROUP
                                           ? json_integer(a->q.group_size)
                                           : json_null());
  json_object_set_new(o, "num_bits", json_integer(a->q.num_bits));
  json_object_set_new(o, "observer", a->observer[0] ? json_string(a->observer) : json_null());
  json_object_set_new(o, "observer_kwargs", json_object());
  json_object_set_new(o, "strategy", json_string(k_strat_names[a->q.strategy]));
  json_object_set_new(o, "symmetric", json_boolean(a->q.symmetric));
  json_object_set_new(o, "type", json_string(a->q.type == SQ_QTYPE_FLOAT ? "float" : "int"));
  return o;
}

sq_status sq_ct_config_to_json(const sq_ct_config *c, json_t **out) {
  json_t *qc = json_object(), *groups = json_object();
  if (!qc || !groups) {
    json_decref(qc);
    json_decref(groups);
    return sq_error_set(SQ_ERR_NOMEM, "out of memory building quantization_config");
  }
  for (size_t i = 0; i < c->n_groups; ++i) {
    const sq_ct_scheme *s = &c->groups[i];
    json_t *g = json_object();
    if (c->format == SQ_CT_FMT_MIXED) json_object_set_new(g, "format", json_string(sq_ct_format_name(s->format)));
    json_object_set_new(g, "input_activations", s->has_input ? args_to_json(&s->input) : json_null());
    json_object_set_new(g, "output_activations", json_null());
    json_object_set_new(g, "targets", str_array(s->targets, s->n_targets));
    json_object_set_new(g, "weights", s->has_weights ? args_to_json(&s->weights) : json_null());
    json_object_set_new(groups, s->name, g);
  }
  json_object_set_new(qc, "config_groups", groups);
  json_object_set_new(qc, "format", json_string(sq_ct_format_name(c->format)));
  json_object_set_new(qc, "global_compression_ratio", json_null());
  json_object_set_new(qc, "ignore", str_array(c->ignore, c->n_ignore));
  json_object_set_new(qc, "kv_cache_scheme", c->has_kv_cache ? args_to_json(&c->kv_cache) : json_null());
  json_object_set_new(qc, "quant_method", json_string("compressed-tensors"));
  json_object_set_new(qc, "quantization_status", json_string(c->status));
  json_t *sp = json_object();
  if (c->sparsity.present) {
    const sq_ct_sparsity *s = &c->sparsity;
    json_object_set_new(sp, "format", json_string(s->format));
    json_object_set_new(sp, "global_sparsity", json_real(s->global_sparsity));
    json_object_set_new(sp, "ignore", str_array(s->ignore, s->n_ignore));
    json_object_set_new(sp, "sparsity_structure", json_string(s->structure));
    json_object_set_new(sp, "targets", str_array(s->targets, s->n_targets));
  }
  json_object_set_new(qc, "sparsity_config", sp);
  json_object_set_new(qc, "transform_config", json_object());
  json_object_set_new(qc, "version", json_string(c->version));
  *out = qc;
  return SQ_OK;
}

sq_status sq_ct_config_insert(json_t *doc, const sq_ct_config *c) {
  if (!json_is_object(doc))
    return sq_error_set(SQ_ERR_ARG, "config.json: top level is not an object");
  json_t *qc = NULL;
  SQ_CHECK(sq_ct_config_to_json(c, &qc));
  if (json_object_set_new(doc, "quantization_config", qc) != 0)
    return sq_error_set(SQ_ERR_NOMEM, "out of memory inserting quantization_config");
  return SQ_OK;
}

sq_status sq_ct_config_write(const char *dir, const sq_ct_config *c) {
  char *path = sq_fs_join(dir, "config.json"), *text = NULL, *out = NULL;
  size_t len = 0;
  json_t *doc = NULL;
  sq_status st = SQ_OK;
  if (!path) return sq_error_set(SQ_ERR_NOMEM, "out of memory");
  SQ_CHECK_GOTO(sq_fs_read_small_file(path, 64u << 20, &text, &len), st, done);
  json_error_t err;
  doc = json_loadb(text, len, 0, &err);
  if (!doc) {
    st = sq_error_set(SQ_ERR_FORMAT, "%s:%d: %s", path, err.line, err.text);
    goto done;
  }
  SQ_CHECK_GOTO(sq_ct_config_insert(doc, c), st, done);
  out = json_dumps(doc, JSON_INDENT(2));
  if (!out) {
    st = sq_error_set(SQ_ERR_NOMEM, "%s: cannot serialize", path);
    goto done;
  }
  size_t olen = strlen(out);
  out[olen] = '\0';
  char *nl = realloc(out, olen + 2); /* end the file with a newline */
  if (nl) {
    out = nl;
    out[olen++] = '\n';
    out[olen] = '\0';
  }
  SQ_CHECK_GOTO(sq_fs_write_file_atomic(path, out, olen), st, done);
done:
  json_decref(doc);
  free(text);
  free(out);
  free(path);
  return st;
}

/* ---------------------------------------------------------------- from JSON */

typedef struct parse_ctx {
  const char *label;
  const char *where; /* "config_groups.group_0.weights" */
} parse_ctx;

static sq_status bad(const parse_ctx *p, const char *key, const char *what) {
  return sq_error_set(SQ_ERR_FORMAT, "%s: quantization_config.%s.%s %s", p->label, p->where, key,
                      what);
}

static sq_status get_bool(const parse_ctx *p, const json_t *o, const char *key, bool dflt,
                          bool *out) {
  const json_t *v = json_object_get(o, key);
  if (!v || json_is_null(v)) {
    *out = dflt;
    return SQ_OK;
  }
  if (!json_is_boolean(v)) return bad(p, key, "must be true or false");
  *out = json_is_true(v);
  return SQ_OK;
}

static sq_status get_str(const parse_ctx *p, const json_t *o, const char *key, char *dst,
                         size_t cap) {
  const json_t *v = json_object_get(o, key);
  dst[0] = '\0';
  if (!v || json_is_null(v)) return SQ_OK;
  if (!json_is_string(v)) return bad(p, key, "must be a string or null");
  if (strlen(json_string_value(v)) >= cap) return bad(p, key, "is too long");
  copy_str(dst, cap, json_string_value(v));
  return SQ_OK;
}

static sq_status str_list_from(const parse_ctx *p, const char *key, const json_t *v,
                               char ***list, size_t *n) {
  if (!v || json_is_null(v)) return SQ_OK;
  if (!json_is_array(v)) return bad(p, key, "must be a list of strings");
  for (size_t i = 0; i < json_array_size(v); ++i) {
    const json_t *e = json_array_get(v, i);
    if (!json_is_string(e)) return bad(p, key, "must be a list of strings");
    SQ_CHECK(str_push(list, n, json_string_value(e)));
  }
  return SQ_OK;
}

static sq_status get_str_list(const parse_ctx *p, const json_t *o, const char *key, char ***list,
                              size_t *n) {
  return str_list_from(p, key, json_object_get(o, key), list, n);
}

/* QuantizationArgs with pydantic's defaults and validators (strategy inferred
 * from group_size; actorder true -> "group"; "dynamic"/"static" aliases). */
static sq_status args_from_json(const parse_ctx *p, const json_t *o, sq_ct_args *a) {
  memset(a, 0, sizeof *a);
  if (!json_is_object(o))
    return sq_error_set(SQ_ERR_FORMAT, "%s: quantization_config.%s must be an object or null",
                        p->label, p->where);
  const json_t *v = json_object_get(o, "num_bits");
  a->q.num_bits = 8;
  if (v && !json_is_null(v)) {
    if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > 8)
      return bad(p, "num_bits", "must be an integer in 1..8 (shardq handles up to 8 bits)");
    a->q.num_bits = (int)json_integer_value(v);
  }
  char buf[32];
  SQ_CHECK(get_str(p, o, "type", buf, sizeof buf));
  if (!buf[0] || !strcasecmp(buf, "int")) a->q.type = SQ_QTYPE_INT;
  else if (!strcasecmp(buf, "float")) a->q.type = SQ_QTYPE_FLOAT;
  else return bad(p, "type", "must be \"int\" or \"float\"");
  bool sym = true;
  SQ_CHECK(get_bool(p, o, "symmetric", true, &sym));
  a->q.symmetric = sym;
  SQ_CHECK(get_bool(p, o, "dynamic", false, &a->dynamic));
  v = json_object_get(o, "group_size");
  long long gs = 0;
  bool has_gs = v && !json_is_null(v);
  if (has_gs) {
    if (!json_is_integer(v)) return bad(p, "group_size", "must be an integer or null");
    gs = json_integer_value(v);
  }
  SQ_CHECK(get_str(p, o, "strategy", buf, sizeof buf));
  if (!buf[0]) {
    if (!has_gs) a->q.strategy = SQ_QSTRAT_TENSOR;
    else if (gs > 0) a->q.strategy = SQ_QSTRAT_GROUP;
    else if (gs == -1) a->q.strategy = SQ_QSTRAT_CHANNEL;
    else return bad(p, "group_size", "must be > 0 (group) or -1 (channel)");
  } else {
    int found = -1;
    for (int i = 0; i < 5; ++i)
      if (!strcasecmp(buf, k_strat_names[i])) found = i;
    if (found < 0)
      return bad(p, "strategy", "must be tensor, channel, group, block or token "
                                "(tensor_group/attn_head are not handled by shardq)");
    a->q.strategy = (sq_qstrategy)found;
  }
  if (a->q.strategy == SQ_QSTRAT_GROUP) {
    if (gs <= 0) return bad(p, "group_size", "must be a positive integer with strategy \"group\"");
    if (gs > (1 << 30)) return bad(p, "group_size", "is too large");
    a->q.group_size = (int)gs;
  }
  v = json_object_get(o, "block_structure");
  if (v && !json_is_null(v)) {
    if (json_is_array(v) && json_array_size(v) == 2 && json_is_integer(json_array_get(v, 0)) &&
        json_is_integer(json_array_get(v, 1))) {
      a->block_structure[0] = (int)json_integer_value(json_array_get(v, 0));
      a->block_structure[1] = (int)json_integer_value(json_array_get(v, 1));
    } else if (json_is_string(v) &&
               sscanf(json_string_value(v), "%dx%d", &a->block_structure[0],
                      &a->block_structure[1]) == 2) {
    } else {
      return bad(p, "block_structure", "must be [rows, cols]");
    }
  }
  v = json_object_get(o, "actorder");
  if (json_is_true(v)) a->actorder = SQ_CT_ACTORDER_GROUP;
  else if (json_is_string(v)) {
    const char *s = json_string_value(v);
    if (!strcasecmp(s, "group") || !strcasecmp(s, "dynamic")) a->actorder = SQ_CT_ACTORDER_GROUP;
    else if (!strcasecmp(s, "weight") || !strcasecmp(s, "static")) a->actorder = SQ_CT_ACTORDER_WEIGHT;
    else return bad(p, "actorder", "must be null, \"group\" or \"weight\"");
  } else if (v && !json_is_null(v) && !json_is_false(v)) {
    return bad(p, "actorder", "must be null, \"group\" or \"weight\"");
  }
  SQ_CHECK(get_str(p, o, "observer", a->observer, sizeof a->observer));
  a->q.scale_dtype = SQ_DTYPE_INVALID; /* known only from the checkpoint's tensors */
  return SQ_OK;
}

static sq_status scheme_from_json(const parse_ctx *pc, const char *name, const json_t *g,
                                  sq_ct_scheme *s) {
  char where[160];
  parse_ctx p = {pc->label, where};
  memset(s, 0, sizeof *s);
  s->format = SQ_CT_FMT_INVALID;
  copy_str(s->name, sizeof s->name, name);
  if (json_is_array(g)) { /* "W4A16": ["Linear"]: a preset name with its targets */
    SQ_CHECK(sq_ct_scheme_preset(name, SQ_DTYPE_INVALID, s));
    str_free(&s->targets, &s->n_targets);
    snprintf(where, sizeof where, "config_groups");
    SQ_CHECK(str_list_from(&p, name, g, &s->targets, &s->n_targets));
    return SQ_OK;
  }
  if (!json_is_object(g))
    return sq_error_set(SQ_ERR_FORMAT, "%s: quantization_config.config_groups.%s must be an object",
                        pc->label, name);
  snprintf(where, sizeof where, "config_groups.%s", name);
  SQ_CHECK(get_str_list(&p, g, "targets", &s->targets, &s->n_targets));
  char fmt[32];
  SQ_CHECK(get_str(&p, g, "format", fmt, sizeof fmt));
  if (fmt[0]) {
    s->format = sq_ct_format_from_name(fmt);
    if (s->format == SQ_CT_FMT_INVALID || s->format == SQ_CT_FMT_MIXED)
      return bad(&p, "format", "is not a per-group compressed-tensors format shardq reads");
  }
  const json_t *w = json_object_get(g, "weights");
  if (w && !json_is_null(w)) {
    snprintf(where, sizeof where, "config_groups.%s.weights", name);
    SQ_CHECK(args_from_json(&p, w, &s->weights));
    s->has_weights = true;
  }
  const json_t *in = json_object_get(g, "input_activations");
  if (in && !json_is_null(in)) {
    snprintf(where, sizeof where, "config_groups.%s.input_activations", name);
    SQ_CHECK(args_from_json(&p, in, &s->input));
    s->has_input = true;
  }
  const json_t *outa = json_object_get(g, "output_activations");
  if (outa && !json_is_null(outa))
    return sq_error_set(SQ_ERR_UNSUPPORTED,
                        "%s: quantization_config.config_groups.%s.output_activations is set; "
                        "shardq does not handle output activation quantization",
                        pc->label, name);
  return SQ_OK;
}

sq_status sq_ct_config_from_json(const json_t *qc, const char *label, sq_ct_config *out) {
  sq_ct_config_init(out);
  out->version[0] = '\0';
  parse_ctx p = {label, "top"};
  sq_status st = SQ_OK;
  if (!json_is_object(qc)) {
    st = sq_error_set(SQ_ERR_FORMAT, "%s: quantization_config must be an object", label);
    goto fail;
  }
  char buf[64];
  const json_t *qm = json_object_get(qc, "quant_method");
  if (json_is_string(qm) && strcmp(json_string_value(qm), "compressed-tensors") != 0) {
    st = sq_error_set(SQ_ERR_UNSUPPORTED,
                      "%s: quantization_config.quant_method is \"%s\"; shardq reads only "
                      "\"compressed-tensors\"",
                      label, json_string_value(qm));
    goto fail;
  }
  p.where = "format";
  SQ_CHECK_GOTO(get_str(&p, qc, "format", buf, sizeof buf), st, fail);
  out->format = buf[0] ? sq_ct_format_from_name(buf) : SQ_CT_FMT_DENSE;
  if (out->format == SQ_CT_FMT_INVALID) {
    st = sq_error_set(SQ_ERR_UNSUPPORTED,
                      "%s: quantization_config.format \"%s\" is not one shardq reads "
                      "(pack-quantized, int-quantized, float-quantized, naive-quantized, dense, "
                      "mixed-precision)",
                      label, buf);
    goto fail;
  }
  p.where = "top";
  SQ_CHECK_GOTO(get_str(&p, qc, "quantization_status", out->status, sizeof out->status), st, fail);
  SQ_CHECK_GOTO(get_str(&p, qc, "version", out->version, sizeof out->version), st, fail);
  SQ_CHECK_GOTO(get_str_list(&p, qc, "ignore", &out->ignore, &out->n_ignore), st, fail);
  const json_t *groups = json_object_get(qc, "config_groups");
  if (groups && !json_is_object(groups)) {
    st = sq_error_set(SQ_ERR_FORMAT, "%s: quantization_config.config_groups must be an object",
                      label);
    goto fail;
  }
  const char *gname;
  const json_t *g;
  json_object_foreach((json_t *)groups, gname, g) {
    sq_ct_scheme *grown = realloc(out->groups, (out->n_groups + 1) * sizeof *grown);
    if (!grown) {
      st = sq_error_set(SQ_ERR_NOMEM, "out of memory parsing %s", label);
      goto fail;
    }
    out->groups = grown;
    ++out->n_groups;
    SQ_CHECK_GOTO(scheme_from_json(&p, gname, g, &grown[out->n_groups - 1]), st, fail);
  }
  const json_t *kv = json_object_get(qc, "kv_cache_scheme");
  if (kv && !json_is_null(kv)) {
    p.where = "kv_cache_scheme";
    SQ_CHECK_GOTO(args_from_json(&p, kv, &out->kv_cache), st, fail);
    out->has_kv_cache = true;
  }
  const json_t *sp = json_object_get(qc, "sparsity_config");
  if (sp && !json_is_null(sp)) {
    p.where = "sparsity_config";
    if (!json_is_object(sp)) {
      st = sq_error_set(SQ_ERR_FORMAT, "%s: quantization_config.sparsity_config must be an object",
                        label);
      goto fail;
    }
    if (json_object_size(sp) > 0) {
      sq_ct_sparsity *s = &out->sparsity;
      s->present = true;
      SQ_CHECK_GOTO(get_str(&p, sp, "format", s->format, sizeof s->format), st, fail);
      SQ_CHECK_GOTO(get_str(&p, sp, "sparsity_structure", s->structure, sizeof s->structure), st,
                    fail);
      if (!s->structure[0]) copy_str(s->structure, sizeof s->structure, "unstructured");
      const json_t *gsp = json_object_get(sp, "global_sparsity");
      if (json_is_number(gsp)) s->global_sparsity = json_number_value(gsp);
      SQ_CHECK_GOTO(get_str_list(&p, sp, "targets", &s->targets, &s->n_targets), st, fail);
      SQ_CHECK_GOTO(get_str_list(&p, sp, "ignore", &s->ignore, &s->n_ignore), st, fail);
    }
  }
  return SQ_OK;
fail:
  sq_ct_config_free(out);
  return st;
}

/* ---------------------------------------------------------------- matching */

/* Python re.match semantics: anchored at the start, not at the end. POSIX
 * ERE covers the patterns llm-compressor writes (".*", alternation, classes). */
static bool re_match_start(const char *pattern, const char *s) {
  size_t n = strlen(pattern);
  char *anchored = malloc(n + 4);
  if (!anchored) return false;
  snprintf(anchored, n + 4, "^(%s)", pattern);
  regex_t re;
  bool hit = false;
  if (regcomp(&re, anchored, REG_EXTENDED | REG_NOSUB) == 0) {
    hit = regexec(&re, s, 0, NULL, 0) == 0;
    regfree(&re);
  }
  free(anchored);
  return hit;
}

/* 3 exact name, 2 regex, 1 class name "Linear" (every module we store is a Linear), 0 none. */
static int target_rank(const char *target, const char *module) {
  if (strcmp(target, module) == 0) return 3;
  if (strncmp(target, "re:", 3) == 0) return re_match_start(target + 3, module) ? 2 : 0;
  if (strcmp(target, "Linear") == 0) return 1;
  return 0;
}

const sq_ct_scheme *sq_ct_config_match(const sq_ct_config *c, const char *module) {
  for (size_t i = 0; i < c->n_ignore; ++i)
    if (target_rank(c->ignore[i], module) >= 2) return NULL;
  const sq_ct_scheme *best = NULL;
  int best_rank = 0;
  for (size_t g = 0; g < c->n_groups; ++g)
    for (size_t t = 0; t < c->groups[g].n_targets; ++t) {
      int r = target_rank(c->groups[g].targets[t], module);
      if (r > best_rank) {
        best_rank = r;
        best = &c->groups[g];
      }
    }
  return best;
}

sq_ct_format sq_ct_config_module_format(const sq_ct_config *c, const sq_ct_scheme *s) {
  if (s && s->format != SQ_CT_FMT_INVALID) return s->format;
  if (c->format == SQ_CT_FMT_MIXED) return s ? sq_ct_scheme_infer_format(s) : SQ_CT_FMT_DENSE;
  return c->format;
}
