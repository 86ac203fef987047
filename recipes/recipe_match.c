/* Targets and resolution: which modifier, scheme and method apply to a module.
 *
 * "re:" targets are Python regexes that compressed-tensors applies with
 * re.match (anchored at the start, not at the end). We translate the common
 * Python escapes into POSIX ERE and compile with regcomp as "^(pattern)".
 * For a yes/no match, POSIX leftmost-longest and Python leftmost-first agree,
 * so only the syntax needs translating; constructs whose meaning would differ
 * are rejected (see recipe.h). */
#include <ctype.h>
#include <regex.h>
#include <stdlib.h>
#include <string.h>

#include "recipes/recipe.h"
#include "recipes/yaml_node.h"

/* Translate Python regex syntax into POSIX ERE. Returns NULL and sets *why. */
static char *py_to_ere(const char *p, const char **why) {
  size_t len = strlen(p);
  char *o = malloc(16 * len + 8);
  if (!o) return *why = "out of memory", NULL;
  size_t k = 0;
  int in_br = 0, br_start = 0, prev_quant = 0;
  o[k++] = '^';
  o[k++] = '(';
  for (size_t i = 0; i < len; i++) {
    char ch = p[i];
    if (in_br) {
      int first = i == (size_t)br_start;
      if (ch == ']' && !first) {
        in_br = 0;
        o[k++] = ']';
      } else if (ch == '[' && p[i + 1] == ':') {
        free(o);
        return *why = "'[:' inside a character class (Python reads it literally, POSIX as a class)", NULL;
      } else if (ch == '\\') {
        char e = p[++i];
        const char *rep = NULL;
        if (e == 'd') rep = "0-9";
        else if (e == 'w') rep = "A-Za-z0-9_";
        else if (e == 's') rep = "[:space:]";
        else if (e == 'n') rep = "\n";
        else if (e == 't') rep = "\t";
        else if (e && !isalnum((unsigned char)e) && e != ']' && e != '-' && e != '^') {
          o[k++] = e; /* \. in a class is a literal dot in both dialects */
          continue;
        } else {
          free(o);
          return *why = "unsupported escape inside a character class (only \\d \\w \\s and punctuation "
                        "other than \\] \\- \\^)", NULL;
        }
        size_t rl = strlen(rep);
        memcpy(o + k, rep, rl);
        k += rl;
      } else {
        o[k++] = ch;
      }
      continue;
    }
    int quant = 0;
    if (ch == '\\') {
      char e = p[++i];
      const char *rep = NULL;
      switch (e) {
        case 'd': rep = "[0-9]"; break;
        case 'D': rep = "[^0-9]"; break;
        case 'w': rep = "[A-Za-z0-9_]"; break;
        case 'W': rep = "[^A-Za-z0-9_]"; break;
        case 's': rep = "[[:space:]]"; break;
        case 'S': rep = "[^[:space:]]"; break;
        case 'n': rep = "\n"; break;
        case 't': rep = "\t"; break;
        default: break;
      }
      if (!rep) {
        if (!e || isalnum((unsigned char)e)) {
          free(o);
          return *why = e ? "unsupported escape (\\b, \\A, \\Z, back-references ... have no POSIX equivalent)"
                          : "trailing backslash", NULL;
        }
        if (strchr(".[]()*+?{}|^$\\", e)) o[k++] = '\\';
        o[k++] = e;
      } else {
        size_t rl = strlen(rep);
        memcpy(o + k, rep, rl);
        k += rl;
      }
    } else if (ch == '(' && p[i + 1] == '?') {
      free(o);
      return *why = "(?...) groups (non-capturing, lookaround, flags) are not supported -- use plain (...)", NULL;
    } else if (ch == '*' || ch == '+' || ch == '?' || ch == '}') {
      if (prev_quant) {
        free(o);
        return *why = "non-greedy or stacked quantifiers (*?, +?, ??, *+) are not supported", NULL;
      }
      quant = 1;
      o[k++] = ch;
    } else if (ch == '[') {
      in_br = 1;
      o[k++] = '[';
      br_start = (int)i + 1;
      if (p[i + 1] == '^') {
        o[k++] = '^';
        i++;
        br_start = (int)i + 1;
      }
    } else {
      o[k++] = ch;
    }
    prev_quant = quant;
  }
  if (in_br) {
    free(o);
    return *why = "unterminated character class '['", NULL;
  }
  o[k++] = ')';
  o[k] = 0;
  return o;
}

sq_status sq_recipe_target_init(const char *name, sq_arena *a, const char *text, int line, int col,
                                sq_recipe_target *t) {
  memset(t, 0, sizeof *t);
  t->line = line, t->col = col;
  t->text = sq_arena_strdup(a, text);
  if (!t->text) return sq_error_set(SQ_ERR_NOMEM, "out of memory parsing a recipe");
  if (strncmp(text, "re:", 3) != 0) return SQ_OK;
  const char *why = NULL;
  char *ere = py_to_ere(text + 3, &why);
  if (!ere)
    return sq_error_set(SQ_ERR_FORMAT, "%s:%d:%d: regex '%s': %s", name, line, col, text, why);
  regex_t *re = sq_arena_alloc(a, sizeof *re);
  if (!re) {
    free(ere);
    return sq_error_set(SQ_ERR_NOMEM, "out of memory parsing a recipe");
  }
  int rc = regcomp(re, ere, REG_EXTENDED | REG_NOSUB);
  free(ere);
  if (rc != 0) {
    char msg[128];
    regerror(rc, re, msg, sizeof msg);
    return sq_error_set(SQ_ERR_FORMAT, "%s:%d:%d: invalid regex '%s': %s", name, line, col, text, msg);
  }
  t->regex = re;
  return SQ_OK;
}

static void release_targets(sq_recipe_targets *ts) {
  for (int i = 0; ts->v && i < ts->n; i++)
    if (ts->v[i].regex) {
      regfree(ts->v[i].regex);
      ts->v[i].regex = NULL;
    }
}

void sq_recipe_release_regexes(sq_recipe *r) {
  for (int i = 0; i < r->n_mods; i++) {
    sq_recipe_modifier *m = &r->mods[i];
    release_targets(&m->targets);
    release_targets(&m->ignore);
    for (int s = 0; s < m->n_schemes; s++)
      if (m->schemes[s].targets.v != m->targets.v) release_targets(&m->schemes[s].targets);
    for (int k = 0; k < m->n_mappings; k++) {
      release_targets(&m->mappings[k].balance);
      if (m->mappings[k].smooth.regex) regfree(m->mappings[k].smooth.regex);
      m->mappings[k].smooth.regex = NULL;
    }
  }
}

void sq_recipe_free(sq_recipe *r) {
  if (!r) return;
  /* A failed parse can leave a half-built modifier: n_mods counts only those
   * started, and every compiled regex sits in a reachable target. The
   * modifier being parsed when an error struck is counted (n_mods++ happens
   * before parsing), and its arrays are zeroed until filled. */
  sq_recipe_release_regexes(r);
  sq_arena_free(r->arena_);
}

/* 0 exact name, 1 regex, 2 class name, 3 no match (compressed-tensors order) */
static int match_rank(const sq_recipe_target *t, const char *name, const char *class_name) {
  if (t->regex) return regexec(t->regex, name, 0, NULL, 0) == 0 ? 1 : 3;
  if (!strcmp(t->text, name)) return 0;
  if (class_name && !strcmp(t->text, class_name)) return 2;
  return 3;
}

int sq_recipe_target_match(const sq_recipe_target *t, const char *name, const char *class_name) {
  return match_rank(t, name, class_name) < 3;
}

static int best_rank(const sq_recipe_targets *ts, const char *name, const char *class_name) {
  int best = 3;
  for (int i = 0; i < ts->n; i++) {
    int r = match_rank(&ts->v[i], name, class_name);
    if (r < best) best = r;
  }
  return best;
}

/* "model.layers.3.mlp.down_proj" is inside decoder layer 3 */
static int in_decoder_layer(const char *name) {
  for (const char *p = name; (p = strstr(p, "layers.")); p++)
    if ((p == name || p[-1] == '.') && isdigit((unsigned char)p[7])) return 1;
  return 0;
}

static int ends_with(const char *s, const char *suffix) {
  size_t a = strlen(s), b = strlen(suffix);
  return a >= b && !strcmp(s + a - b, suffix);
}

/* GPTQModifier.resolve_quantization_config: actorder only on group weights. */
static void gptq_actorder(const sq_recipe_modifier *m, sq_recipe_qargs *w) {
  if (!w->present || w->strategy != SQ_QSTRAT_GROUP) return;
  if (!m->actorder_set) {
    if (w->actorder == SQ_ACTORDER_NONE) w->actorder = SQ_ACTORDER_WEIGHT; /* Sentinel("static") */
  } else {
    w->actorder = m->actorder; /* conflicts were rejected when parsing */
  }
}

sq_status sq_recipe_resolve(const sq_recipe *r, const char *module_name, const char *class_name,
                            sq_recipe_resolution *out) {
  memset(out, 0, sizeof *out);
  if (!r || !module_name) return sq_error_set(SQ_ERR_ARG, "sq_recipe_resolve: NULL recipe or module name");
  int excluded = 0;
  for (int i = 0; i < r->n_mods; i++) {
    const sq_recipe_modifier *m = &r->mods[i];
    int ignored = best_rank(&m->ignore, module_name, class_name) < 3;
    if (m->kind == SQ_MOD_QUANTIZATION || m->kind == SQ_MOD_GPTQ) {
      if (m->n_schemes == 0) {
        /* GPTQ without its own scheme: runs on modules already given weights */
        if (m->kind != SQ_MOD_GPTQ || best_rank(&m->targets, module_name, class_name) == 3) continue;
        if (ignored) {
          excluded = 1;
          continue;
        }
        if (!out->weights.present) continue;
        out->method = SQ_METHOD_GPTQ;
        out->quant_mod = m;
        gptq_actorder(m, &out->weights);
        continue;
      }
      const sq_recipe_scheme *best = NULL;
      int best_r = 3;
      for (int s = 0; s < m->n_schemes; s++) {
        int rk = best_rank(&m->schemes[s].targets, module_name, class_name);
        if (rk < best_r) best_r = rk, best = &m->schemes[s];
      }
      if (!best) continue;
      if (ignored) {
        excluded = 1;
        continue;
      }
      out->scheme = best;
      out->quant_mod = m;
      out->weights = best->weights;
      out->input_activations = best->input_activations;
      out->output_activations = best->output_activations;
      out->method = !best->weights.present ? SQ_METHOD_NONE
                    : m->kind == SQ_MOD_GPTQ ? SQ_METHOD_GPTQ : SQ_METHOD_RTN;
      if (m->kind == SQ_MOD_GPTQ) gptq_actorder(m, &out->weights);
    } else if (m->kind == SQ_MOD_SPARSEGPT) {
      if (!in_decoder_layer(module_name) || best_rank(&m->targets, module_name, class_name) == 3) continue;
      if (ignored) {
        excluded = 1;
        continue;
      }
      out->sparse_mod = m;
    } else { /* SmoothQuant: modules whose input is balanced */
      int hit = 0;
      for (int k = 0; k < m->n_mappings && !hit; k++)
        hit = best_rank(&m->mappings[k].balance, module_name, class_name) < 3;
      if (m->n_mappings == 0) /* llm-compressor's default Llama mappings */
        hit = ends_with(module_name, "q_proj") || ends_with(module_name, "k_proj") ||
              ends_with(module_name, "v_proj") || ends_with(module_name, "gate_proj") ||
              ends_with(module_name, "up_proj");
      if (hit && !ignored) out->smooth_mod = m;
    }
  }
  out->ignored = excluded && !out->scheme && !out->sparse_mod;
  return SQ_OK;
}

const sq_recipe_qargs *sq_recipe_kv_cache(const sq_recipe *r) {
  const sq_recipe_qargs *kv = NULL;
  for (int i = 0; i < r->n_mods; i++)
    if (r->mods[i].kv_cache.present) kv = &r->mods[i].kv_cache;
  return kv;
}
