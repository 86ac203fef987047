/* shardq recipe check: validate a recipe, print the resolved modifiers and
 * schemes, and with --model show which modules get which scheme and method.
 *
 * Module names come from DIR/config.json (num_hidden_layers, and the MoE
 * expert count when present) using the Hugging Face Llama/Mixtral names; the
 * checkpoint's tensors are not read. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "coordinator/cli.h"
#include "recipes/recipe.h"

static void usage(FILE *f) {
  fprintf(f,
          "usage: shardq recipe check FILE [--model DIR] [--all]\n"
          "\n"
          "Validates an llm-compressor recipe (YAML) and prints its modifiers in order\n"
          "with their resolved schemes (QuantizationArgs). Errors name FILE:LINE:COLUMN.\n"
          "\n"
          "  --model DIR  also read DIR/config.json and show, for every Linear module of\n"
          "               the model (Llama-style names), the scheme and method applied,\n"
          "               or that it is ignored. Nothing is run.\n"
          "  --all        with --model, list every layer's modules (default: layer 0 and\n"
          "               any module that resolves differently from layer 0)\n"
          "  -h, --help   this help\n"
          "\n"
          "Exit status: 0 valid, 1 invalid recipe or model, 2 usage error.\n");
}

/* One line describing what happens to a module, for comparison and printing. */
static void describe(const sq_recipe_resolution *res, char *buf, size_t len) {
  char w[160], a[160];
  size_t k = 0;
  buf[0] = 0;
  if (res->ignored) {
    snprintf(buf, len, "ignored");
    return;
  }
  if (res->smooth_mod) k += (size_t)snprintf(buf + k, len - k, "smoothquant + ");
  if (res->sparse_mod && k < len) {
    const sq_recipe_modifier *m = res->sparse_mod;
    if (m->mask_m) k += (size_t)snprintf(buf + k, len - k, "sparsegpt %d:%d + ", m->mask_n, m->mask_m);
    else k += (size_t)snprintf(buf + k, len - k, "sparsegpt %g + ", m->sparsity);
  }
  if (k >= len) return;
  if (res->method == SQ_METHOD_NONE && !res->input_activations.present) {
    snprintf(buf + k, len - k, "%s", k ? "weights unquantized" : "untouched");
    return;
  }
  snprintf(buf + k, len - k, "%s %s: W %s%s%s", sq_recipe_method_name(res->method),
           res->scheme && res->scheme->preset ? res->scheme->preset : res->scheme ? res->scheme->name : "-",
           sq_recipe_qargs_format(&res->weights, w, sizeof w), res->input_activations.present ? " | A " : "",
           res->input_activations.present ? sq_recipe_qargs_format(&res->input_activations, a, sizeof a) : "");
}

typedef struct counts {
  int total, gptq, rtn, sparse, ignored, untouched;
} counts;

static sq_status show_module(const sq_recipe *r, const char *name, const char *cls, const char *ref, int print,
                             counts *c, char *out, size_t outlen) {
  sq_recipe_resolution res;
  SQ_CHECK(sq_recipe_resolve(r, name, cls, &res));
  describe(&res, out, outlen);
  c->total++;
  c->gptq += res.method == SQ_METHOD_GPTQ;
  c->rtn += res.method == SQ_METHOD_RTN;
  c->sparse += res.sparse_mod != NULL;
  c->ignored += res.ignored;
  c->untouched += !res.ignored && res.method == SQ_METHOD_NONE && !res.sparse_mod;
  if (print || (ref && strcmp(ref, out) != 0)) printf("  %-44s %s\n", name, out);
  return SQ_OK;
}

static sq_status show_model(const sq_recipe *r, const char *dir, int all) {
  char path[4096];
  snprintf(path, sizeof path, "%s/config.json", dir);
  json_error_t jerr;
  json_t *cfg = json_load_file(path, 0, &jerr);
  if (!cfg)
    return sq_error_set(SQ_ERR_FORMAT, "%s:%d:%d: %s -- hint: --model takes a Hugging Face model directory",
                        path, jerr.line, jerr.column, jerr.text);
  sq_status st = SQ_OK;
  json_t *nl = json_object_get(cfg, "num_hidden_layers");
  if (!json_is_integer(nl) || json_integer_value(nl) <= 0 || json_integer_value(nl) > 100000) {
    st = sq_error_set(SQ_ERR_FORMAT, "%s: num_hidden_layers is missing or not a positive integer", path);
    json_decref(cfg);
    return st;
  }
  int layers = (int)json_integer_value(nl);
  int experts = 0;
  const char *ekeys[] = {"num_local_experts", "n_routed_experts", "num_experts"};
  for (int i = 0; i < 3 && !experts; i++) {
    json_t *e = json_object_get(cfg, ekeys[i]);
    if (json_is_integer(e) && json_integer_value(e) > 0 && json_integer_value(e) <= 4096)
      experts = (int)json_integer_value(e);
  }
  const char *mt = json_string_value(json_object_get(cfg, "model_type"));
  char ex[48] = "";
  if (experts) snprintf(ex, sizeof ex, ", %d experts", experts);
  printf("\nmodules of %s (%s, %d layers%s):\n", dir, mt ? mt : "?", layers, ex);

  static const char *const attn[] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                     "self_attn.o_proj"};
  static const char *const mlp[] = {"gate_proj", "up_proj", "down_proj"};
  int per_layer = 4 + 3 * (experts ? experts : 1);
  char(*ref)[512] = calloc((size_t)per_layer, sizeof *ref);
  char cur[512], name[256];
  counts c = {0};
  if (!ref) {
    json_decref(cfg);
    return sq_error_set(SQ_ERR_NOMEM, "out of memory");
  }
  for (int l = 0; l < layers && st == SQ_OK; l++) {
    int j = 0;
    for (int a = 0; a < 4 && st == SQ_OK; a++, j++) {
      snprintf(name, sizeof name, "model.layers.%d.%s", l, attn[a]);
      st = show_module(r, name, "Linear", l ? ref[j] : NULL, all || l == 0, &c, l ? cur : ref[j], sizeof cur);
    }
    for (int e = 0; e < (experts ? experts : 1) && st == SQ_OK; e++)
      for (int k = 0; k < 3 && st == SQ_OK; k++, j++) {
        if (experts) snprintf(name, sizeof name, "model.layers.%d.mlp.experts.%d.%s", l, e, mlp[k]);
        else snprintf(name, sizeof name, "model.layers.%d.mlp.%s", l, mlp[k]);
        st = show_module(r, name, "Linear", l ? ref[j] : NULL, all || l == 0, &c, l ? cur : ref[j],
                         sizeof cur);
      }
    if (l == 0 && layers > 1 && !all) printf("  (layers 1..%d: shown only where they differ from layer 0)\n",
                                             layers - 1);
  }
  if (st == SQ_OK) st = show_module(r, "lm_head", "Linear", NULL, 1, &c, cur, sizeof cur);
  const sq_recipe_qargs *kv = sq_recipe_kv_cache(r);
  if (st == SQ_OK) {
    char b[160];
    printf("  %-44s %s\n", "kv cache (k_proj/v_proj outputs)", kv ? sq_recipe_qargs_format(kv, b, sizeof b) : "not quantized");
    printf("\n%d Linear modules: %d gptq, %d rtn, %d sparsified, %d ignored, %d untouched\n", c.total, c.gptq,
           c.rtn, c.sparse, c.ignored, c.untouched);
  }
  free(ref);
  json_decref(cfg);
  return st;
}

int sq_cmd_recipe(int argc, char **argv) {
  if (argc < 2 || sq_cli_is_help(argv[1])) {
    usage(argc < 2 ? stderr : stdout);
    return argc < 2 ? SQ_EXIT_USAGE : SQ_EXIT_OK;
  }
  if (strcmp(argv[1], "check") != 0) {
    fprintf(stderr, "shardq recipe: unknown subcommand '%s' (try: shardq recipe check FILE)\n", argv[1]);
    return SQ_EXIT_USAGE;
  }
  const char *file = NULL, *model = NULL;
  int all = 0;
  for (int i = 2; i < argc; i++) {
    if (sq_cli_is_help(argv[i])) {
      usage(stdout);
      return SQ_EXIT_OK;
    } else if (!strcmp(argv[i], "--model") && i + 1 < argc) {
      model = argv[++i];
    } else if (!strcmp(argv[i], "--all")) {
      all = 1;
    } else if (argv[i][0] == '-' || file) {
      fprintf(stderr, "shardq recipe check: unexpected argument '%s'\n", argv[i]);
      usage(stderr);
      return SQ_EXIT_USAGE;
    } else {
      file = argv[i];
    }
  }
  if (!file) {
    usage(stderr);
    return SQ_EXIT_USAGE;
  }
  sq_recipe *r = NULL;
  sq_status st = sq_recipe_load(file, &r);
  if (st != SQ_OK) return sq_cli_report("recipe check", st, -1);
  sq_recipe_print(r, stdout);
  if (model) st = show_model(r, model, all);
  sq_recipe_free(r);
  if (st != SQ_OK) return sq_cli_report("recipe check", st, -1);
  printf("recipe OK\n");
  return SQ_EXIT_OK;
}
