/* Preset schemes (compressed-tensors PRESET_SCHEMES), QuantizationArgs
 * formatting and the human-readable recipe dump used by `shardq recipe check`.
 *
 * The presets are transcribed from compressed-tensors'
 * quantization/quant_scheme.py; observers follow its QuantizationArgs
 * validator ("minmax" when static, none when dynamic). */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "recipes/recipe.h"

static sq_recipe_qargs qa(int bits, sq_qtype type, sq_qstrategy strat, int group, int symmetric, int dynamic) {
  sq_recipe_qargs q;
  memset(&q, 0, sizeof q);
  q.present = 1;
  q.num_bits = bits;
  q.type = type;
  q.strategy = strat;
  q.group_size = group;
  q.symmetric = symmetric;
  q.dynamic = dynamic;
  if (!dynamic) snprintf(q.observer, sizeof q.observer, "minmax");
  return q;
}

sq_status sq_recipe_preset(const char *name, sq_recipe_scheme *out) {
  memset(out, 0, sizeof *out);
  const sq_qtype I = SQ_QTYPE_INT, F = SQ_QTYPE_FLOAT;
  if (!strcasecmp(name, "W4A16")) {
    out->preset = "W4A16";
    out->weights = qa(4, I, SQ_QSTRAT_GROUP, 128, 1, 0);
  } else if (!strcasecmp(name, "W4A16_ASYM")) {
    out->preset = "W4A16_ASYM";
    out->weights = qa(4, I, SQ_QSTRAT_GROUP, 128, 0, 0);
  } else if (!strcasecmp(name, "W8A16")) {
    out->preset = "W8A16";
    out->weights = qa(8, I, SQ_QSTRAT_CHANNEL, 0, 1, 0);
  } else if (!strcasecmp(name, "W8A8") || !strcasecmp(name, "INT8")) {
    out->preset = !strcasecmp(name, "INT8") ? "INT8" : "W8A8";
    out->weights = qa(8, I, SQ_QSTRAT_CHANNEL, 0, 1, 0);
    out->input_activations = qa(8, I, SQ_QSTRAT_TOKEN, 0, 1, 1);
  } else if (!strcasecmp(name, "W4A8")) {
    out->preset = "W4A8";
    out->weights = qa(4, I, SQ_QSTRAT_GROUP, 128, 1, 0);
    out->input_activations = qa(8, I, SQ_QSTRAT_TOKEN, 0, 1, 1);
  } else if (!strcasecmp(name, "FP8")) {
    out->preset = "FP8";
    out->weights = qa(8, F, SQ_QSTRAT_TENSOR, 0, 1, 0);
    out->input_activations = qa(8, F, SQ_QSTRAT_TENSOR, 0, 1, 0);
  } else if (!strcasecmp(name, "FP8_DYNAMIC")) {
    out->preset = "FP8_DYNAMIC";
    out->weights = qa(8, F, SQ_QSTRAT_CHANNEL, 0, 1, 0);
    out->input_activations = qa(8, F, SQ_QSTRAT_TOKEN, 0, 1, 1);
  } else if (!strcasecmp(name, "UNQUANTIZED")) {
    out->preset = "UNQUANTIZED";
  } else {
    return sq_error_set(SQ_ERR_ARG, "unknown preset scheme '%s' -- hint: W4A16, W4A16_ASYM, W8A16, W8A8, "
                        "W4A8, FP8, FP8_DYNAMIC", name);
  }
  out->name = out->preset;
  return SQ_OK;
}

static const char *strategy_name(sq_qstrategy s) {
  switch (s) {
    case SQ_QSTRAT_TENSOR: return "tensor";
    case SQ_QSTRAT_CHANNEL: return "channel";
    case SQ_QSTRAT_GROUP: return "group";
    case SQ_QSTRAT_BLOCK: return "block";
    case SQ_QSTRAT_TOKEN: return "token";
  }
  return "?";
}

char *sq_recipe_qargs_format(const sq_recipe_qargs *q, char *buf, size_t len) {
  if (!q->present) {
    snprintf(buf, len, "none");
    return buf;
  }
  char strat[48];
  if (q->strategy == SQ_QSTRAT_GROUP) snprintf(strat, sizeof strat, "group(%d)", q->group_size);
  else if (q->strategy == SQ_QSTRAT_BLOCK)
    snprintf(strat, sizeof strat, "block(%dx%d)", q->block_structure[0], q->block_structure[1]);
  else snprintf(strat, sizeof strat, "%s", strategy_name(q->strategy));
  snprintf(buf, len, "%s%d %s %s%s%s%s%s%s", q->type == SQ_QTYPE_INT ? "int" : "fp", q->num_bits,
           q->symmetric ? "sym" : "asym", strat, q->dynamic ? " dynamic" : " static",
           q->actorder == SQ_ACTORDER_GROUP ? " actorder=group" : q->actorder == SQ_ACTORDER_WEIGHT ? " actorder=weight" : "",
           q->observer[0] ? " observer=" : "", q->observer, "");
  return buf;
}

const char *sq_recipe_modifier_name(sq_modifier_kind k) {
  switch (k) {
    case SQ_MOD_QUANTIZATION: return "QuantizationModifier";
    case SQ_MOD_GPTQ: return "GPTQModifier";
    case SQ_MOD_SPARSEGPT: return "SparseGPTModifier";
    case SQ_MOD_SMOOTHQUANT: return "SmoothQuantModifier";
  }
  return "?";
}

const char *sq_recipe_method_name(sq_recipe_method m) {
  switch (m) {
    case SQ_METHOD_NONE: return "none";
    case SQ_METHOD_RTN: return "rtn";
    case SQ_METHOD_GPTQ: return "gptq";
  }
  return "?";
}

static void print_targets(FILE *f, const char *label, const sq_recipe_targets *t) {
  fprintf(f, "%s[", label);
  for (int i = 0; i < t->n; i++) fprintf(f, "%s\"%s\"", i ? ", " : "", t->v[i].text);
  fprintf(f, "]");
}

void sq_recipe_print(const sq_recipe *r, FILE *f) {
  char b[160];
  fprintf(f, "recipe %s: %d modifier%s\n", r->path, r->n_mods, r->n_mods == 1 ? "" : "s");
  for (int i = 0; i < r->n_mods; i++) {
    const sq_recipe_modifier *m = &r->mods[i];
    fprintf(f, "  %d. %s (line %d%s%s)\n", i + 1, sq_recipe_modifier_name(m->kind), m->line,
            m->stage[0] ? ", stage " : "", m->stage);
    if (m->kind == SQ_MOD_GPTQ)
      fprintf(f, "     block_size=%d dampening_frac=%g actorder=%s\n", m->block_size, m->dampening_frac,
              !m->actorder_set ? "static (default)"
              : m->actorder == SQ_ACTORDER_GROUP ? "group"
              : m->actorder == SQ_ACTORDER_WEIGHT ? "weight" : "none");
    if (m->kind == SQ_MOD_SPARSEGPT) {
      fprintf(f, "     sparsity=%g mask=", m->sparsity);
      if (m->mask_m) fprintf(f, "%d:%d", m->mask_n, m->mask_m);
      else fprintf(f, "unstructured");
      fprintf(f, " block_size=%d dampening_frac=%g\n", m->block_size, m->dampening_frac);
    }
    if (m->kind == SQ_MOD_SMOOTHQUANT) {
      fprintf(f, "     smoothing_strength=%g mappings=%s\n", m->smoothing_strength,
              m->n_mappings ? "" : "model defaults");
      for (int k = 0; k < m->n_mappings; k++) {
        fprintf(f, "       ");
        print_targets(f, "balance ", &m->mappings[k].balance);
        fprintf(f, " <- smooth \"%s\"\n", m->mappings[k].smooth.text);
      }
    }
    if (m->kind != SQ_MOD_SMOOTHQUANT) {
      fprintf(f, "     ");
      print_targets(f, "targets ", &m->targets);
      print_targets(f, "  ignore ", &m->ignore);
      fprintf(f, "\n");
    } else if (m->ignore.n) {
      fprintf(f, "     ");
      print_targets(f, "ignore ", &m->ignore);
      fprintf(f, "\n");
    }
    for (int s = 0; s < m->n_schemes; s++) {
      const sq_recipe_scheme *sc = &m->schemes[s];
      fprintf(f, "     scheme %s%s%s ", sc->name, sc->preset && sc->preset != sc->name ? " preset " : "",
              sc->preset && sc->preset != sc->name ? sc->preset : "");
      print_targets(f, "targets ", &sc->targets);
      fprintf(f, "\n       weights:            %s\n", sq_recipe_qargs_format(&sc->weights, b, sizeof b));
      if (sc->input_activations.present)
        fprintf(f, "       input_activations:  %s\n", sq_recipe_qargs_format(&sc->input_activations, b, sizeof b));
      if (sc->output_activations.present)
        fprintf(f, "       output_activations: %s\n", sq_recipe_qargs_format(&sc->output_activations, b, sizeof b));
    }
    if (m->kv_cache.present)
      fprintf(f, "     kv_cache_scheme: %s\n", sq_recipe_qargs_format(&m->kv_cache, b, sizeof b));
  }
}
