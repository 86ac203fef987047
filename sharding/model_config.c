/* config.json parsing (jansson), the tensor lists of the known families, and
 * writing config.json back with unknown keys preserved. See model_config.h. */
#include "sharding/model_config.h"

#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/fsio.h"

#define SQ_CONFIG_MAX_BYTES (16u * 1024u * 1024u)

/* Where keys are looked up: the top level, or text_config for llama4. The
 * prefix ("text_config.") is shown in error messages. */
typedef struct {
  const char *label;
  json_t *obj;
  const char *prefix;
} sq_cfg_scope;

/* Short rendering of a JSON value for "(got ...)". */
static void sq_cfg_show(const json_t *v, char *buf, size_t len) {
  char *s = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
  if (!s) {
    snprintf(buf, len, "?");
    return;
  }
  if (strlen(s) > 40)
    snprintf(buf, len, "%.37s...", s);
  else
    snprintf(buf, len, "%s", s);
  free(s);
}

static sq_status sq_cfg_bad(const sq_cfg_scope *sc, const char *key, const char *what,
                            const json_t *v) {
  char got[64];
  sq_cfg_show(v, got, sizeof got);
  return sq_error_set(SQ_ERR_FORMAT, "%s: key '%s%s' must be %s (got %s)", sc->label, sc->prefix,
                      key, what, got);
}

static sq_status sq_cfg_missing(const sq_cfg_scope *sc, const char *key) {
  return sq_error_set(SQ_ERR_FORMAT,
                      "%s: missing key '%s%s' -- hint: is this a Hugging Face config.json of a "
                      "causal LM?",
                      sc->label, sc->prefix, key);
}

/* Integer key. min is the smallest accepted value (1 for sizes, 0 for counts).
 * Absent or null gives def unless required. */
static sq_status sq_cfg_int(const sq_cfg_scope *sc, const char *key, int required, int64_t def,
                            int64_t min, int64_t *out) {
  json_t *v = json_object_get(sc->obj, key);
  if (!v || json_is_null(v)) {
    if (required) return sq_cfg_missing(sc, key);
    *out = def;
    return SQ_OK;
  }
  if (!json_is_integer(v) || json_integer_value(v) < min)
    return sq_cfg_bad(sc, key, min > 0 ? "a positive integer" : "a non-negative integer", v);
  /* No real size or id comes near 2^31; the bound keeps products of two in int64. */
  if (json_integer_value(v) > INT32_MAX) return sq_cfg_bad(sc, key, "below 2^31", v);
  *out = (int64_t)json_integer_value(v);
  return SQ_OK;
}

/* Positive number (integer or real). */
static sq_status sq_cfg_num(const sq_cfg_scope *sc, const char *key, double def, double *out) {
  json_t *v = json_object_get(sc->obj, key);
  if (!v || json_is_null(v)) {
    *out = def;
    return SQ_OK;
  }
  if (!json_is_number(v) || !(json_number_value(v) > 0) || !isfinite(json_number_value(v)))
    return sq_cfg_bad(sc, key, "a positive number", v);
  *out = json_number_value(v);
  return SQ_OK;
}

static sq_status sq_cfg_bool(const sq_cfg_scope *sc, const char *key, bool def, bool *out) {
  json_t *v = json_object_get(sc->obj, key);
  if (!v || json_is_null(v)) {
    *out = def;
    return SQ_OK;
  }
  if (!json_is_boolean(v)) return sq_cfg_bad(sc, key, "true or false", v);
  *out = json_is_true(v);
  return SQ_OK;
}

/* String key copied into buf; absent gives "" unless required. */
static sq_status sq_cfg_str(const sq_cfg_scope *sc, const char *key, int required, char *buf,
                            size_t len) {
  json_t *v = json_object_get(sc->obj, key);
  buf[0] = '\0';
  if (!v || json_is_null(v)) return required ? sq_cfg_missing(sc, key) : SQ_OK;
  if (!json_is_string(v) || json_string_length(v) >= len)
    return sq_cfg_bad(sc, key, "a (short) string", v);
  memcpy(buf, json_string_value(v), json_string_length(v) + 1);
  return SQ_OK;
}

/* bos/eos: an integer, a list of integers, or null. */
static sq_status sq_cfg_token_ids(const sq_cfg_scope *sc, const char *key, int64_t *ids, int max,
                                  int *n) {
  json_t *v = json_object_get(sc->obj, key);
  *n = 0;
  if (!v || json_is_null(v)) return SQ_OK;
  if (json_is_integer(v) && json_integer_value(v) >= 0) {
    ids[(*n)++] = json_integer_value(v);
    return SQ_OK;
  }
  if (!json_is_array(v)) return sq_cfg_bad(sc, key, "a token id or a list of token ids", v);
  size_t i;
  json_t *e;
  json_array_foreach(v, i, e) {
    if (!json_is_integer(e) || json_integer_value(e) < 0)
      return sq_cfg_bad(sc, key, "a token id or a list of token ids", v);
    if (*n < max) ids[(*n)++] = json_integer_value(e);
  }
  return SQ_OK;
}

static sq_status sq_cfg_rope_scaling(const sq_cfg_scope *sc, sq_rope_scaling *rs) {
  memset(rs, 0, sizeof *rs);
  rs->factor = 1.0;
  json_t *v = json_object_get(sc->obj, "rope_scaling");
  if (!v || json_is_null(v)) return SQ_OK;
  if (!json_is_object(v)) return sq_cfg_bad(sc, "rope_scaling", "null or an object", v);
  char prefix[64];
  snprintf(prefix, sizeof prefix, "%srope_scaling.", sc->prefix);
  sq_cfg_scope in = {sc->label, v, prefix};
  const char *tkey = json_object_get(v, "rope_type") ? "rope_type" : "type";
  SQ_CHECK(sq_cfg_str(&in, tkey, 1, rs->type, sizeof rs->type));
  SQ_CHECK(sq_cfg_num(&in, "factor", 1.0, &rs->factor));
  SQ_CHECK(sq_cfg_int(&in, "original_max_position_embeddings", 0, 0, 1,
                      &rs->original_max_position_embeddings));
  if (strcmp(rs->type, "default") == 0) {
    rs->kind = SQ_ROPE_DEFAULT;
  } else if (strcmp(rs->type, "linear") == 0) {
    rs->kind = SQ_ROPE_LINEAR;
    if (!json_object_get(v, "factor")) return sq_cfg_missing(&in, "factor");
  } else if (strcmp(rs->type, "llama3") == 0) {
    rs->kind = SQ_ROPE_LLAMA3;
    static const char *const need[] = {"factor", "low_freq_factor", "high_freq_factor",
                                       "original_max_position_embeddings"};
    for (size_t i = 0; i < sizeof need / sizeof need[0]; ++i)
      if (!json_object_get(v, need[i])) return sq_cfg_missing(&in, need[i]);
    SQ_CHECK(sq_cfg_num(&in, "low_freq_factor", 1.0, &rs->low_freq_factor));
    SQ_CHECK(sq_cfg_num(&in, "high_freq_factor", 4.0, &rs->high_freq_factor));
    if (!(rs->high_freq_factor > rs->low_freq_factor))
      return sq_error_set(SQ_ERR_FORMAT,
                          "%s: key '%shigh_freq_factor' must exceed low_freq_factor (%g <= %g)",
                          sc->label, prefix, rs->high_freq_factor, rs->low_freq_factor);
  } else {
    rs->kind = SQ_ROPE_OTHER; /* yarn, dynamic, longrope...: reported when the forward needs it */
  }
  return SQ_OK;
}

static sq_model_family sq_family_of(const char *model_type) {
  static const struct {
    const char *type;
    sq_model_family family;
  } map[] = {{"llama", SQ_FAMILY_LLAMA},
             {"mistral", SQ_FAMILY_MISTRAL},
             {"qwen2", SQ_FAMILY_QWEN2},
             {"mixtral", SQ_FAMILY_MIXTRAL},
             {"qwen2_moe", SQ_FAMILY_QWEN_MOE},
             {"qwen3_moe", SQ_FAMILY_QWEN_MOE},
             {"deepseek_v2", SQ_FAMILY_DEEPSEEK_V3},
             {"deepseek_v3", SQ_FAMILY_DEEPSEEK_V3},
             {"llama4", SQ_FAMILY_LLAMA4}};
  for (size_t i = 0; i < sizeof map / sizeof map[0]; ++i)
    if (strcmp(model_type, map[i].type) == 0) return map[i].family;
  return SQ_FAMILY_OTHER;
}

const char *sq_model_family_name(sq_model_family f) {
  switch (f) {
    case SQ_FAMILY_LLAMA:
      return "llama";
    case SQ_FAMILY_MISTRAL:
      return "mistral";
    case SQ_FAMILY_QWEN2:
      return "qwen2";
    case SQ_FAMILY_MIXTRAL:
      return "mixtral";
    case SQ_FAMILY_QWEN_MOE:
      return "qwen_moe";
    case SQ_FAMILY_DEEPSEEK_V3:
      return "deepseek_v3";
    case SQ_FAMILY_LLAMA4:
      return "llama4";
    default:
      return "other";
  }
}

/* Qwen2Attention and Qwen2MoeAttention build q/k/v with bias=True whatever
 * config.json says. */
static bool sq_cfg_qkv_bias_implied(const sq_model_config *c) {
  return c->family == SQ_FAMILY_QWEN2 || strcmp(c->model_type, "qwen2_moe") == 0;
}

/* The fields of the text model, read from scope sc. */
static sq_status sq_cfg_parse_text(const sq_cfg_scope *sc, sq_model_config *c) {
  SQ_CHECK(sq_cfg_int(sc, "hidden_size", 1, 0, 1, &c->hidden_size));
  SQ_CHECK(sq_cfg_int(sc, "intermediate_size", 1, 0, 1, &c->intermediate_size));
  SQ_CHECK(sq_cfg_int(sc, "num_hidden_layers", 1, 0, 1, &c->num_hidden_layers));
  SQ_CHECK(sq_cfg_int(sc, "num_attention_heads", 1, 0, 1, &c->num_attention_heads));
  SQ_CHECK(
      sq_cfg_int(sc, "num_key_value_heads", 0, c->num_attention_heads, 1, &c->num_key_value_heads));
  SQ_CHECK(sq_cfg_int(sc, "vocab_size", 1, 0, 1, &c->vocab_size));
  SQ_CHECK(sq_cfg_int(sc, "max_position_embeddings", 0, 0, 1, &c->max_position_embeddings));
  if (c->num_attention_heads % c->num_key_value_heads != 0)
    return sq_error_set(SQ_ERR_FORMAT,
                        "%s: key '%snum_key_value_heads' (%lld) must divide num_attention_heads "
                        "(%lld)",
                        sc->label, sc->prefix, (long long)c->num_key_value_heads,
                        (long long)c->num_attention_heads);
  json_t *hd = json_object_get(sc->obj, "head_dim");
  if ((!hd || json_is_null(hd)) && c->hidden_size % c->num_attention_heads != 0 &&
      c->family != SQ_FAMILY_DEEPSEEK_V3)
    return sq_error_set(SQ_ERR_FORMAT,
                        "%s: no key '%shead_dim' and hidden_size %lld is not a multiple of "
                        "num_attention_heads %lld -- hint: add \"head_dim\"",
                        sc->label, sc->prefix, (long long)c->hidden_size,
                        (long long)c->num_attention_heads);
  SQ_CHECK(sq_cfg_int(sc, "head_dim", 0, c->hidden_size / c->num_attention_heads, 1, &c->head_dim));
  SQ_CHECK(sq_cfg_num(sc, "rms_norm_eps", 1e-6, &c->rms_norm_eps));
  SQ_CHECK(sq_cfg_num(sc, "rope_theta", 10000.0, &c->rope_theta));
  SQ_CHECK(sq_cfg_rope_scaling(sc, &c->rope_scaling));
  SQ_CHECK(sq_cfg_bool(sc, "attention_bias", false, &c->attention_bias));
  SQ_CHECK(sq_cfg_bool(sc, "mlp_bias", false, &c->mlp_bias));
  /* Llama's attention_bias biases q, k, v and o; Qwen2 and Qwen2-MoE hard-code
   * q/k/v biases (Qwen3-MoE reads attention_bias). */
  c->o_proj_bias = c->attention_bias && c->family == SQ_FAMILY_LLAMA;
  if (sq_cfg_qkv_bias_implied(c)) c->attention_bias = true;
  if (c->family == SQ_FAMILY_MISTRAL) c->attention_bias = c->mlp_bias = false;

  int64_t bos[1];
  int nbos = 0;
  SQ_CHECK(sq_cfg_token_ids(sc, "bos_token_id", bos, 1, &nbos));
  c->bos_token_id = nbos ? bos[0] : -1;
  SQ_CHECK(sq_cfg_token_ids(sc, "eos_token_id", c->eos_token_ids, SQ_MODEL_MAX_EOS, &c->n_eos));

  /* MoE: three spellings of the routed expert count. */
  static const char *const experts_keys[] = {"num_local_experts", "num_experts",
                                             "n_routed_experts"};
  for (size_t i = 0; i < 3 && c->num_experts == 0; ++i)
    SQ_CHECK(sq_cfg_int(sc, experts_keys[i], 0, 0, 0, &c->num_experts));
  SQ_CHECK(sq_cfg_int(sc, "num_experts_per_tok", 0, 0, 0, &c->num_experts_per_tok));
  /* Llama-4's MoE layers always have one shared expert (no key for it). */
  SQ_CHECK(sq_cfg_int(sc, "n_shared_experts", 0, c->family == SQ_FAMILY_LLAMA4 ? 1 : 0, 0,
                      &c->n_shared_experts));
  SQ_CHECK(sq_cfg_int(sc, "moe_intermediate_size", 0, 0, 0, &c->moe_intermediate_size));
  SQ_CHECK(sq_cfg_int(sc, "first_k_dense_replace", 0, 0, 0, &c->first_k_dense_replace));
  SQ_CHECK(sq_cfg_int(sc, "interleave_moe_layer_step", 0, 0, 0, &c->interleave_moe_layer_step));
  SQ_CHECK(sq_cfg_int(sc, "intermediate_size_mlp", 0, 0, 0, &c->intermediate_size_mlp));
  SQ_CHECK(sq_cfg_int(sc, "decoder_sparse_step", 0, 1, 1, &c->decoder_sparse_step));
  SQ_CHECK(sq_cfg_int(sc, "shared_expert_intermediate_size", 0, 0, 0,
                      &c->shared_expert_intermediate_size));
  SQ_CHECK(sq_cfg_int(sc, "q_lora_rank", 0, 0, 0, &c->q_lora_rank));
  SQ_CHECK(sq_cfg_int(sc, "kv_lora_rank", 0, 0, 0, &c->kv_lora_rank));
  SQ_CHECK(sq_cfg_int(sc, "qk_nope_head_dim", 0, 0, 0, &c->qk_nope_head_dim));
  SQ_CHECK(sq_cfg_int(sc, "qk_rope_head_dim", 0, 0, 0, &c->qk_rope_head_dim));
  SQ_CHECK(sq_cfg_int(sc, "v_head_dim", 0, 0, 0, &c->v_head_dim));
  SQ_CHECK(sq_cfg_int(sc, "n_group", 0, 0, 0, &c->n_group));
  SQ_CHECK(sq_cfg_int(sc, "topk_group", 0, 0, 0, &c->topk_group));
  return SQ_OK;
}

static sq_status sq_cfg_torch_dtype(const sq_cfg_scope *sc, const char *key, sq_dtype *out) {
  char name[32];
  SQ_CHECK(sq_cfg_str(sc, key, 0, name, sizeof name));
  if (!name[0]) return SQ_OK;
  *out = sq_dtype_from_torch_name(name);
  if (*out == SQ_DTYPE_INVALID)
    return sq_cfg_bad(sc, key, "\"bfloat16\", \"float16\" or \"float32\"",
                      json_object_get(sc->obj, key));
  return SQ_OK;
}

sq_status sq_model_config_parse(const char *label, const char *text, size_t len,
                                sq_model_config *out) {
  memset(out, 0, sizeof *out);
  snprintf(out->label, sizeof out->label, "%s", label ? label : "config.json");
  json_error_t jerr;
  json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
  if (!root)
    return sq_error_set(SQ_ERR_FORMAT, "%s:%d:%d: invalid JSON: %s", out->label, jerr.line,
                        jerr.column, jerr.text);
  out->json = root;
  sq_status st = SQ_OK;
  if (!json_is_object(root)) {
    st = sq_error_set(SQ_ERR_FORMAT, "%s: top level must be a JSON object", out->label);
    goto fail;
  }
  sq_cfg_scope top = {out->label, root, ""};
  SQ_CHECK_GOTO(sq_cfg_str(&top, "model_type", 1, out->model_type, sizeof out->model_type), st,
                fail);
  out->family = sq_family_of(out->model_type);
  json_t *arch = json_object_get(root, "architectures");
  if (arch && !json_is_null(arch)) {
    if (!json_is_array(arch) || json_array_size(arch) == 0 ||
        !json_is_string(json_array_get(arch, 0)) ||
        json_string_length(json_array_get(arch, 0)) >= sizeof out->architecture) {
      st = sq_cfg_bad(&top, "architectures", "a non-empty list of class names", arch);
      goto fail;
    }
    snprintf(out->architecture, sizeof out->architecture, "%s",
             json_string_value(json_array_get(arch, 0)));
  }
  sq_cfg_scope text_scope = top;
  if (out->family == SQ_FAMILY_LLAMA4) {
    json_t *tc = json_object_get(root, "text_config");
    if (!tc) {
      st = sq_cfg_missing(&top, "text_config");
      goto fail;
    }
    if (!json_is_object(tc)) {
      st = sq_cfg_bad(&top, "text_config", "an object", tc);
      goto fail;
    }
    text_scope.obj = tc;
    text_scope.prefix = "text_config.";
  }
  SQ_CHECK_GOTO(sq_cfg_parse_text(&text_scope, out), st, fail);
  /* tie_word_embeddings and the dtype may sit at either level for llama4. */
  SQ_CHECK_GOTO(sq_cfg_bool(&text_scope, "tie_word_embeddings", false, &out->tie_word_embeddings),
                st, fail);
  out->torch_dtype = SQ_DTYPE_INVALID;
  const char *dkey = json_object_get(root, "torch_dtype") ? "torch_dtype" : "dtype";
  SQ_CHECK_GOTO(sq_cfg_torch_dtype(&top, dkey, &out->torch_dtype), st, fail);
  if (out->torch_dtype == SQ_DTYPE_INVALID && text_scope.obj != root)
    SQ_CHECK_GOTO(sq_cfg_torch_dtype(&text_scope, "torch_dtype", &out->torch_dtype), st, fail);
  return SQ_OK;
fail:
  sq_model_config_free(out);
  return st;
}

sq_status sq_model_config_load(const char *path, sq_model_config *out) {
  memset(out, 0, sizeof *out);
  char *file = NULL, *text = NULL;
  size_t len = strlen(path);
  if (len >= 5 && strcmp(path + len - 5, ".json") == 0)
    file = strdup(path);
  else
    file = sq_fs_join(path, "config.json");
  if (!file) return sq_error_set(SQ_ERR_NOMEM, "out of memory joining %s", path);
  size_t n = 0;
  sq_status st = sq_fs_read_small_file(file, SQ_CONFIG_MAX_BYTES, &text, &n);
  if (st == SQ_OK) st = sq_model_config_parse(file, text, n, out);
  free(text);
  free(file);
  return st;
}

void sq_model_config_free(sq_model_config *c) {
  if (!c) return;
  if (c->json) json_decref(c->json);
  c->json = NULL;
}

bool sq_model_config_is_dense(const sq_model_config *c) {
  return (c->family == SQ_FAMILY_LLAMA || c->family == SQ_FAMILY_MISTRAL ||
          c->family == SQ_FAMILY_QWEN2) &&
         c->num_experts == 0;
}

sq_status sq_model_config_check_forward(const sq_model_config *c) {
  if (!sq_model_config_is_dense(c))
    return sq_error_set(SQ_ERR_UNSUPPORTED,
                        "%s: model_type '%s' is not supported by the forward pass yet "
                        "-- hint: supported are llama, mistral, qwen2 (dense)",
                        c->label, c->model_type);
  if (c->rope_scaling.kind == SQ_ROPE_OTHER)
    return sq_error_set(SQ_ERR_UNSUPPORTED,
                        "%s: key 'rope_scaling' has type '%s', which the forward pass does not "
                        "support -- hint: supported are default, linear, llama3",
                        c->label, c->rope_scaling.type);
  return SQ_OK;
}

/* ---- writing config.json back ---- */

/* Real numbers print with 15 significant digits when every real in the
 * document round-trips that way (so 1e-05 stays "1e-05"), else 17. */
static int sq_json_reals_fit15(const json_t *v) {
  if (json_is_real(v)) {
    char buf[40];
    snprintf(buf, sizeof buf, "%.15g", json_real_value(v));
    return strtod(buf, NULL) == json_real_value(v);
  }
  const char *k;
  json_t *e;
  size_t i;
  if (json_is_object(v)) {
    json_object_foreach((json_t *)v, k, e) if (!sq_json_reals_fit15(e)) return 0;
  } else if (json_is_array(v)) {
    json_array_foreach((json_t *)v, i, e) if (!sq_json_reals_fit15(e)) return 0;
  }
  return 1;
}

static int sq_json_set_int(json_t *o, const char *key, int64_t v) {
  return json_object_set_new(o, key, json_integer((json_int_t)v));
}

sq_status sq_model_config_to_json(const sq_model_config *c, char **out) {
  *out = NULL;
  json_t *root = c->json ? json_deep_copy(c->json) : json_object();
  if (!root) return sq_error_set(SQ_ERR_NOMEM, "%s: out of memory copying config", c->label);
  json_t *t = root;
  if (c->family == SQ_FAMILY_LLAMA4) {
    t = json_object_get(root, "text_config");
    if (!t) {
      t = json_object();
      json_object_set_new(root, "text_config", t);
    }
  }
  int rc = 0;
  rc |= json_object_set_new(root, "model_type", json_string(c->model_type));
  if (c->architecture[0] && !json_object_get(root, "architectures"))
    rc |= json_object_set_new(root, "architectures", json_pack("[s]", c->architecture));
  rc |= sq_json_set_int(t, "hidden_size", c->hidden_size);
  rc |= sq_json_set_int(t, "intermediate_size", c->intermediate_size);
  rc |= sq_json_set_int(t, "num_hidden_layers", c->num_hidden_layers);
  rc |= sq_json_set_int(t, "num_attention_heads", c->num_attention_heads);
  rc |= sq_json_set_int(t, "num_key_value_heads", c->num_key_value_heads);
  if (json_object_get(t, "head_dim") || c->head_dim * c->num_attention_heads != c->hidden_size)
    rc |= sq_json_set_int(t, "head_dim", c->head_dim);
  rc |= sq_json_set_int(t, "vocab_size", c->vocab_size);
  if (c->max_position_embeddings > 0)
    rc |= sq_json_set_int(t, "max_position_embeddings", c->max_position_embeddings);
  rc |= json_object_set_new(t, "rms_norm_eps", json_real(c->rms_norm_eps));
  rc |= json_object_set_new(t, "rope_theta", json_real(c->rope_theta));
  rc |= json_object_set_new(t, "tie_word_embeddings", json_boolean(c->tie_word_embeddings));
  /* qwen2's and qwen2_moe's implied q/k/v bias is not written as a key they never had. */
  if (!sq_cfg_qkv_bias_implied(c) && (json_object_get(t, "attention_bias") || c->attention_bias))
    rc |= json_object_set_new(t, "attention_bias", json_boolean(c->attention_bias));
  if (json_object_get(t, "mlp_bias") || c->mlp_bias)
    rc |= json_object_set_new(t, "mlp_bias", json_boolean(c->mlp_bias));
  if (c->torch_dtype != SQ_DTYPE_INVALID)
    rc |= json_object_set_new(
        root,
        !json_object_get(root, "torch_dtype") && json_object_get(root, "dtype") ? "dtype"
                                                                                : "torch_dtype",
        json_string(sq_dtype_torch_name(c->torch_dtype)));
  if (rc != 0) {
    json_decref(root);
    return sq_error_set(SQ_ERR_NOMEM, "%s: out of memory building config", c->label);
  }
  size_t flags = JSON_INDENT(2) | JSON_REAL_PRECISION(sq_json_reals_fit15(root) ? 15 : 17);
  *out = json_dumps(root, flags);
  json_decref(root);
  if (!*out) return sq_error_set(SQ_ERR_NOMEM, "%s: out of memory writing config", c->label);
  return SQ_OK;
}

sq_status sq_model_config_save(const sq_model_config *c, const char *dir) {
  char *text = NULL;
  SQ_CHECK(sq_model_config_to_json(c, &text));
  char *path = sq_fs_join(dir, "config.json");
  sq_status st = SQ_OK;
  if (!path)
    st = sq_error_set(SQ_ERR_NOMEM, "out of memory joining %s", dir);
  else {
    size_t n = strlen(text);
    char *nl = realloc(text, n + 2); /* json_dumps ends without a newline */
    if (!nl)
      st = sq_error_set(SQ_ERR_NOMEM, "out of memory writing %s", path);
    else {
      text = nl;
      text[n] = '\n';
      text[n + 1] = '\0';
      st = sq_fs_write_file_atomic(path, text, n + 1);
    }
  }
  free(path);
  free(text);
  return st;
}

/* ---- tensor lists ---- */

/* Tensors are emitted twice: once to count (s == NULL), once to fill. */
typedef struct {
  sq_tensor_spec *s;
  size_t n;
} sq_emit;

static void sq_put(sq_emit *e, sq_tensor_role role, int layer, int ndim, int64_t d0, int64_t d1,
                   int64_t d2, const char *fmt, ...) __attribute__((format(printf, 8, 9)));
static void sq_put(sq_emit *e, sq_tensor_role role, int layer, int ndim, int64_t d0, int64_t d1,
                   int64_t d2, const char *fmt, ...) {
  if (e->s) {
    sq_tensor_spec *t = &e->s[e->n];
    memset(t, 0, sizeof *t);
    t->role = role;
    t->layer = layer;
    t->ndim = ndim;
    t->shape[0] = d0;
    t->shape[1] = ndim > 1 ? d1 : 0;
    t->shape[2] = ndim > 2 ? d2 : 0;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t->name, sizeof t->name, fmt, ap);
    va_end(ap);
  }
  e->n++;
}

#define SQ_LIN(e, l, o, i, ...) sq_put(e, SQ_ROLE_LINEAR, l, 2, o, i, 0, __VA_ARGS__)
#define SQ_VEC(e, role, l, n, ...) sq_put(e, role, l, 1, n, 0, 0, __VA_ARGS__)

/* Llama/Mistral/Qwen2/Mixtral attention: q, k, v, o (+ biases). */
static void sq_list_gqa(const sq_model_config *c, sq_emit *e, const char *p, int l) {
  const int64_t h = c->hidden_size, q = c->num_attention_heads * c->head_dim;
  const int64_t kv = c->num_key_value_heads * c->head_dim;
  const char *names[3] = {"q", "k", "v"};
  const int64_t outs[3] = {q, kv, kv};
  for (int k = 0; k < 3; ++k) {
    SQ_LIN(e, l, outs[k], h, "%smodel.layers.%d.self_attn.%s_proj.weight", p, l, names[k]);
    if (c->attention_bias)
      SQ_VEC(e, SQ_ROLE_BIAS, l, outs[k], "%smodel.layers.%d.self_attn.%s_proj.bias", p, l,
             names[k]);
  }
  SQ_LIN(e, l, h, q, "%smodel.layers.%d.self_attn.o_proj.weight", p, l);
  if (c->o_proj_bias)
    SQ_VEC(e, SQ_ROLE_BIAS, l, h, "%smodel.layers.%d.self_attn.o_proj.bias", p, l);
}

/* A SwiGLU MLP gate/up (inter, h), down (h, inter) under "<p>model.layers.<l>.<mlp>". */
static void sq_list_mlp(const sq_model_config *c, sq_emit *e, const char *p, int l, const char *mlp,
                        int64_t inter, int bias) {
  const int64_t h = c->hidden_size;
  SQ_LIN(e, l, inter, h, "%smodel.layers.%d.%s.gate_proj.weight", p, l, mlp);
  if (bias) SQ_VEC(e, SQ_ROLE_BIAS, l, inter, "%smodel.layers.%d.%s.gate_proj.bias", p, l, mlp);
  SQ_LIN(e, l, inter, h, "%smodel.layers.%d.%s.up_proj.weight", p, l, mlp);
  if (bias) SQ_VEC(e, SQ_ROLE_BIAS, l, inter, "%smodel.layers.%d.%s.up_proj.bias", p, l, mlp);
  SQ_LIN(e, l, h, inter, "%smodel.layers.%d.%s.down_proj.weight", p, l, mlp);
  if (bias) SQ_VEC(e, SQ_ROLE_BIAS, l, h, "%smodel.layers.%d.%s.down_proj.bias", p, l, mlp);
}

/* DeepSeek-V2/V3 multi-head latent attention. */
static void sq_list_mla(const sq_model_config *c, sq_emit *e, int l) {
  const int64_t h = c->hidden_size, nh = c->num_attention_heads;
  const int64_t qk = c->qk_nope_head_dim + c->qk_rope_head_dim;
  if (c->q_lora_rank > 0) {
    SQ_LIN(e, l, c->q_lora_rank, h, "model.layers.%d.self_attn.q_a_proj.weight", l);
    SQ_VEC(e, SQ_ROLE_NORM, l, c->q_lora_rank, "model.layers.%d.self_attn.q_a_layernorm.weight", l);
    SQ_LIN(e, l, nh * qk, c->q_lora_rank, "model.layers.%d.self_attn.q_b_proj.weight", l);
  } else {
    SQ_LIN(e, l, nh * qk, h, "model.layers.%d.self_attn.q_proj.weight", l);
  }
  SQ_LIN(e, l, c->kv_lora_rank + c->qk_rope_head_dim, h,
         "model.layers.%d.self_attn.kv_a_proj_with_mqa.weight", l);
  SQ_VEC(e, SQ_ROLE_NORM, l, c->kv_lora_rank, "model.layers.%d.self_attn.kv_a_layernorm.weight", l);
  SQ_LIN(e, l, nh * (c->qk_nope_head_dim + c->v_head_dim), c->kv_lora_rank,
         "model.layers.%d.self_attn.kv_b_proj.weight", l);
  SQ_LIN(e, l, h, nh * c->v_head_dim, "model.layers.%d.self_attn.o_proj.weight", l);
}

/* Llama-4: MoE layers are moe_layers if listed, else every
 * interleave_moe_layer_step-th layer (step - 1, 2 step - 1, ...), as transformers. */
static int sq_llama4_is_moe(const sq_model_config *c, int l) {
  json_t *tc = json_object_get(c->json, "text_config");
  json_t *list = tc ? json_object_get(tc, "moe_layers") : NULL;
  if (json_is_array(list)) {
    size_t i;
    json_t *v;
    json_array_foreach(list, i, v) if (json_is_integer(v) && json_integer_value(v) == l) return 1;
    return 0;
  }
  int64_t step = c->interleave_moe_layer_step > 0 ? c->interleave_moe_layer_step : 1;
  return (l + 1) % step == 0;
}

/* Qwen2-MoE / Qwen3-MoE: layer l is sparse unless listed in mlp_only_layers,
 * when (l + 1) % decoder_sparse_step == 0, as Qwen2MoeDecoderLayer decides. */
static int sq_qwen_moe_is_sparse(const sq_model_config *c, int l) {
  json_t *only = json_object_get(c->json, "mlp_only_layers");
  if (json_is_array(only)) {
    size_t i;
    json_t *v;
    json_array_foreach(only, i, v) if (json_is_integer(v) && json_integer_value(v) == l) return 0;
  }
  int64_t step = c->decoder_sparse_step > 0 ? c->decoder_sparse_step : 1;
  return c->num_experts > 0 && (l + 1) % step == 0;
}

/* The MLP of a Qwen-MoE layer, in the order of Qwen2MoeSparseMoeBlock's modules. */
static void sq_list_qwen_moe_mlp(const sq_model_config *c, sq_emit *e, int l) {
  const int64_t h = c->hidden_size, E = c->num_experts;
  if (!sq_qwen_moe_is_sparse(c, l)) {
    sq_list_mlp(c, e, "", l, "mlp", c->intermediate_size, 0);
    return;
  }
  sq_put(e, SQ_ROLE_ROUTER, l, 2, E, h, 0, "model.layers.%d.mlp.gate.weight", l);
  const int64_t f = c->moe_intermediate_size > 0 ? c->moe_intermediate_size : c->intermediate_size;
  for (int64_t x = 0; x < E; ++x) {
    char mlp[48];
    snprintf(mlp, sizeof mlp, "mlp.experts.%lld", (long long)x);
    sq_list_mlp(c, e, "", l, mlp, f, 0);
  }
  /* Qwen3-MoE has no shared expert (and no such key). */
  if (strcmp(c->model_type, "qwen2_moe") == 0 && c->shared_expert_intermediate_size > 0) {
    sq_list_mlp(c, e, "", l, "mlp.shared_expert", c->shared_expert_intermediate_size, 0);
    /* Linear(h, 1): kept unquantized like the router in every published recipe. */
    sq_put(e, SQ_ROLE_ROUTER, l, 2, 1, h, 0, "model.layers.%d.mlp.shared_expert_gate.weight", l);
  }
}

static void sq_list(const sq_model_config *c, sq_emit *e) {
  const int64_t h = c->hidden_size, E = c->num_experts;
  const char *p = c->family == SQ_FAMILY_LLAMA4 ? "language_model." : "";
  sq_put(e, SQ_ROLE_EMBED, -1, 2, c->vocab_size, h, 0, "%smodel.embed_tokens.weight", p);
  for (int l = 0; l < (int)c->num_hidden_layers; ++l) {
    SQ_VEC(e, SQ_ROLE_NORM, l, h, "%smodel.layers.%d.input_layernorm.weight", p, l);
    if (c->family == SQ_FAMILY_DEEPSEEK_V3)
      sq_list_mla(c, e, l);
    else
      sq_list_gqa(c, e, p, l);
    if (strcmp(c->model_type, "qwen3_moe") == 0) { /* Qwen3MoeAttention's per-head RMSNorms */
      SQ_VEC(e, SQ_ROLE_NORM, l, c->head_dim, "model.layers.%d.self_attn.q_norm.weight", l);
      SQ_VEC(e, SQ_ROLE_NORM, l, c->head_dim, "model.layers.%d.self_attn.k_norm.weight", l);
    }
    SQ_VEC(e, SQ_ROLE_NORM, l, h, "%smodel.layers.%d.post_attention_layernorm.weight", p, l);
    switch (c->family) {
      case SQ_FAMILY_MIXTRAL:
        sq_put(e, SQ_ROLE_ROUTER, l, 2, E, h, 0, "model.layers.%d.block_sparse_moe.gate.weight", l);
        for (int64_t x = 0; x < E; ++x) {
          const int64_t in = c->intermediate_size;
          SQ_LIN(e, l, in, h, "model.layers.%d.block_sparse_moe.experts.%lld.w1.weight", l,
                 (long long)x);
          SQ_LIN(e, l, h, in, "model.layers.%d.block_sparse_moe.experts.%lld.w2.weight", l,
                 (long long)x);
          SQ_LIN(e, l, in, h, "model.layers.%d.block_sparse_moe.experts.%lld.w3.weight", l,
                 (long long)x);
        }
        break;
      case SQ_FAMILY_QWEN_MOE:
        sq_list_qwen_moe_mlp(c, e, l);
        break;
      case SQ_FAMILY_DEEPSEEK_V3:
        if (l < c->first_k_dense_replace || E == 0) {
          sq_list_mlp(c, e, "", l, "mlp", c->intermediate_size, 0);
          break;
        }
        sq_put(e, SQ_ROLE_ROUTER, l, 2, E, h, 0, "model.layers.%d.mlp.gate.weight", l);
        {
          json_t *tm = json_object_get(c->json, "topk_method");
          if (json_is_string(tm) && strcmp(json_string_value(tm), "noaux_tc") == 0)
            SQ_VEC(e, SQ_ROLE_ROUTER, l, E, "model.layers.%d.mlp.gate.e_score_correction_bias", l);
        }
        for (int64_t x = 0; x < E; ++x) {
          char mlp[48];
          snprintf(mlp, sizeof mlp, "mlp.experts.%lld", (long long)x);
          sq_list_mlp(c, e, "", l, mlp, c->moe_intermediate_size, 0);
        }
        if (c->n_shared_experts > 0)
          sq_list_mlp(c, e, "", l, "mlp.shared_experts",
                      c->moe_intermediate_size * c->n_shared_experts, 0);
        break;
      case SQ_FAMILY_LLAMA4:
        if (!sq_llama4_is_moe(c, l) || E == 0) {
          sq_list_mlp(
              c, e, p, l, "feed_forward",
              c->intermediate_size_mlp > 0 ? c->intermediate_size_mlp : c->intermediate_size, 0);
          break;
        }
        sq_put(e, SQ_ROLE_ROUTER, l, 2, E, h, 0, "%smodel.layers.%d.feed_forward.router.weight", p,
               l);
        /* Fused expert stacks, stored (E, d_in, d_out). */
        sq_put(e, SQ_ROLE_LINEAR, l, 3, E, h, 2 * c->intermediate_size,
               "%smodel.layers.%d.feed_forward.experts.gate_up_proj", p, l);
        sq_put(e, SQ_ROLE_LINEAR, l, 3, E, c->intermediate_size, h,
               "%smodel.layers.%d.feed_forward.experts.down_proj", p, l);
        sq_list_mlp(c, e, p, l, "feed_forward.shared_expert", c->intermediate_size, 0);
        break;
      default:
        sq_list_mlp(c, e, "", l, "mlp", c->intermediate_size, c->mlp_bias);
        break;
    }
  }
  SQ_VEC(e, SQ_ROLE_NORM, -1, h, "%smodel.norm.weight", p);
  if (!c->tie_word_embeddings)
    sq_put(e, SQ_ROLE_LM_HEAD, -1, 2, c->vocab_size, h, 0,
           c->family == SQ_FAMILY_LLAMA4 ? "language_model.lm_head.weight" : "lm_head.weight");
}

/* Families with a tensor list, and a bound on its length (fuzzed configs can
 * ask for 2^31 experts). */
static sq_status sq_list_check(const sq_model_config *c) {
  int ok = sq_model_config_is_dense(c) || c->family == SQ_FAMILY_MIXTRAL ||
           c->family == SQ_FAMILY_QWEN_MOE || c->family == SQ_FAMILY_DEEPSEEK_V3 ||
           c->family == SQ_FAMILY_LLAMA4;
  if (c->family == SQ_FAMILY_DEEPSEEK_V3 && (c->kv_lora_rank <= 0 || c->v_head_dim <= 0)) ok = 0;
  if (!ok)
    return sq_error_set(SQ_ERR_UNSUPPORTED,
                        "%s: model_type '%s'%s has no tensor list in shardq yet -- hint: llama, "
                        "mistral, qwen2, mixtral, qwen2_moe, qwen3_moe, deepseek_v3 and llama4 "
                        "are listed",
                        c->label, c->model_type, c->num_experts ? " (MoE)" : "");
  if ((double)c->num_hidden_layers * (3.0 * (double)c->num_experts + 24.0) > 4e6)
    return sq_error_set(SQ_ERR_FORMAT, "%s: %lld layers x %lld experts is not a plausible model",
                        c->label, (long long)c->num_hidden_layers, (long long)c->num_experts);
  return SQ_OK;
}

size_t sq_model_config_tensor_count(const sq_model_config *c) {
  if (sq_list_check(c) != SQ_OK) {
    sq_error_clear();
    return 0;
  }
  sq_emit e = {NULL, 0};
  sq_list(c, &e);
  return e.n;
}

sq_status sq_model_config_tensors(const sq_model_config *c, sq_tensor_spec **out, size_t *n) {
  *out = NULL;
  *n = 0;
  SQ_CHECK(sq_list_check(c));
  sq_emit e = {NULL, 0};
  sq_list(c, &e);
  size_t count = e.n;
  e.s = calloc(count, sizeof *e.s);
  if (!e.s) return sq_error_set(SQ_ERR_NOMEM, "out of memory listing %zu tensors", count);
  e.n = 0;
  sq_list(c, &e);
  *out = e.s;
  *n = count;
  return SQ_OK;
}

uint64_t sq_model_config_param_count(const sq_model_config *c) {
  sq_tensor_spec *s = NULL;
  size_t n = 0;
  if (sq_model_config_tensors(c, &s, &n) != SQ_OK) {
    sq_error_clear();
    return 0;
  }
  uint64_t total = 0;
  for (size_t i = 0; i < n; ++i) {
    uint64_t ne = 1;
    for (int d = 0; d < s[i].ndim; ++d) ne *= (uint64_t)s[i].shape[d];
    total += ne;
  }
  free(s);
  return total;
}

sq_tensor_role sq_tensor_role_of(const char *name, int ndim) {
  size_t len = strlen(name);
  if (strstr(name, "embed_tokens")) return SQ_ROLE_EMBED;
  if (strncmp(name, "lm_head", 7) == 0 || strstr(name, ".lm_head.")) return SQ_ROLE_LM_HEAD;
  if (strstr(name, ".router.") || strstr(name, ".gate.weight") ||
      strstr(name, ".shared_expert_gate.weight") || strstr(name, "e_score_correction_bias"))
    return SQ_ROLE_ROUTER;
  if (len >= 5 && strcmp(name + len - 5, ".bias") == 0) return SQ_ROLE_BIAS;
  return ndim >= 2 ? SQ_ROLE_LINEAR : SQ_ROLE_NORM;
}
