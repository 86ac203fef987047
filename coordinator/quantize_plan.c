/* The quantization plan of `shardq quantize` (see quantize_plan.h): the
 * --scheme shorthand (one option set for every module) or a recipe resolved
 * module by module. */
#include "coordinator/quantize_plan.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/log.h"
#include "recipes/recipe.h"
#include "sharding/plan.h"

void sq_qplan_args_default(sq_qplan_args *a) {
  memset(a, 0, sizeof *a);
  a->scheme = "W4A16";
  a->method = "gptq";
  a->damp = 0.01;
  a->block = 128;
  a->sparsity = 0.5;
  a->sym = -1;
  a->blas_threads = 1;
}

static sq_status sq_qplan_strs(char ***v, size_t *n, const char *s) {
  char **nv = realloc(*v, (*n + 1) * sizeof *nv);
  if (!nv) return sq_error_set(SQ_ERR_NOMEM, "out of memory");
  *v = nv;
  nv[*n] = strdup(s);
  if (!nv[*n]) return sq_error_set(SQ_ERR_NOMEM, "out of memory");
  (*n)++;
  return SQ_OK;
}

static void sq_qplan_mod_name(char *buf, size_t len, int l, int m) {
  snprintf(buf, len, "model.layers.%d.%s", l, sq_model_module_suffix(m));
}

/* Static input activations: per-tensor symmetric only (one input_scale). */
static sq_status sq_qplan_input(sq_qplan_mod *pm, const sq_ct_args *in, const char *what) {
  if (in->dynamic) return SQ_OK;
  if (in->q.strategy != SQ_QSTRAT_TENSOR || !in->q.symmetric)
    return sq_error_set(SQ_ERR_UNSUPPORTED,
                        "%s: static input activations must be symmetric per-tensor (one "
                        "input_scale) -- hint: use dynamic: true with strategy token",
                        what);
  pm->input_scale = 1;
  pm->input_q = in->q;
  return SQ_OK;
}

/* ---- the --scheme shorthand ---------------------------------------------- */

static int sq_qplan_flag_ignored(const sq_qplan_args *a, const char *module) {
  for (int i = 0; i < a->n_ignore; i++)
    if (!strcmp(a->ignore[i], module)) return 1;
  return 0;
}

static sq_status sq_qplan_from_flags(const sq_qplan_args *a, sq_dtype dt, sq_qplan *out) {
  sq_lq_opts *o = &out->lq;
  if (!strcasecmp(a->method, "gptq")) o->method = SQ_LQ_GPTQ;
  else if (!strcasecmp(a->method, "rtn")) o->method = SQ_LQ_RTN;
  else if (!strcasecmp(a->method, "sparsegpt")) o->method = SQ_LQ_SPARSEGPT;
  else
    return sq_error_set(SQ_ERR_ARG, "--method %s: expected gptq, rtn or sparsegpt", a->method);
  sq_ct_scheme s;
  SQ_CHECK(sq_ct_scheme_preset(a->scheme, dt, &s));
  sq_ct_args *wa = &s.weights;
  if (a->bits > 0) wa->q.num_bits = a->bits;
  if (a->sym >= 0) wa->q.symmetric = a->sym;
  if (a->group_set) {
    wa->q.strategy = a->group > 0 ? SQ_QSTRAT_GROUP : SQ_QSTRAT_CHANNEL;
    wa->q.group_size = a->group > 0 ? a->group : 0;
  }
  o->actorder = 0;
  if (a->actorder) {
    int grp = !strcmp(a->actorder, "group");
    o->actorder = grp ? 1 : 2;
    /* compressed-tensors records actorder only for group strategy; with
     * per-channel scales it changes the column order of the sweep only. */
    if (wa->q.strategy == SQ_QSTRAT_GROUP)
      wa->actorder = grp ? SQ_CT_ACTORDER_GROUP : SQ_CT_ACTORDER_WEIGHT;
    else
      o->actorder = 2;
  }
  if (wa->q.type == SQ_QTYPE_FLOAT && o->method == SQ_LQ_GPTQ) {
    sq_log_warn("--scheme %s has fp8 weights: GPTQ handles integer weights only, using "
                "round-to-nearest",
                a->scheme);
    o->method = SQ_LQ_RTN;
  }
  o->q = wa->q;
  o->quantize = !(o->method == SQ_LQ_SPARSEGPT && a->no_quant);
  /* SparseGPT's joint quantization is integer-only: prune, then round fp8 */
  o->post_rtn = o->method == SQ_LQ_SPARSEGPT && wa->q.type == SQ_QTYPE_FLOAT;
  o->block = a->block;
  o->damp = (float)a->damp;
  o->sparsity = (float)a->sparsity;
  o->dense_dtype = dt;
  sq_status st = SQ_OK;
  if (a->mask && sscanf(a->mask, "%d:%d", &o->prune_n, &o->prune_m) != 2)
    st = sq_error_set(SQ_ERR_ARG, "--mask %s: expected N:M, e.g. 2:4", a->mask);
  if (!st && o->quantize) {
    o->fmt = sq_ct_scheme_infer_format(&s);
    st = sq_ct_config_add_group(&out->ct, &s);
  }
  sq_qplan_mod proto = {.process = 1, .quantize = o->quantize, .lq = *o};
  if (!st && o->quantize && s.has_input) st = sq_qplan_input(&proto, &s.input, a->scheme);
  sq_ct_scheme_free(&s);
  SQ_CHECK(st);
  SQ_CHECK(sq_ct_config_add_ignore(&out->ct, "lm_head"));
  for (int i = 0; i < a->n_ignore; i++) SQ_CHECK(sq_ct_config_add_ignore(&out->ct, a->ignore[i]));
  for (int l = 0; l < out->n_layers; l++)
    for (int m = 0; m < SQ_MOD_COUNT; m++) {
      char name[160];
      sq_qplan_mod_name(name, sizeof name, l, m);
      int on = o->quantize ? sq_ct_config_match(&out->ct, name) != NULL
                           : !sq_qplan_flag_ignored(a, name);
      if (on) out->mods[l * SQ_MOD_COUNT + m] = proto;
    }
  if (o->method == SQ_LQ_SPARSEGPT) {
    sq_ct_sparsity *sp = &out->ct.sparsity;
    sp->present = true;
    snprintf(sp->format, sizeof sp->format, "dense");
    if (o->prune_n) snprintf(sp->structure, sizeof sp->structure, "%d:%d", o->prune_n, o->prune_m);
    else snprintf(sp->structure, sizeof sp->structure, "unstructured");
    sp->global_sparsity = o->prune_n ? (double)o->prune_n / o->prune_m : o->sparsity;
    SQ_CHECK(sq_qplan_strs(&sp->targets, &sp->n_targets, "Linear"));
    SQ_CHECK(sq_qplan_strs(&sp->ignore, &sp->n_ignore, "lm_head"));
    for (int i = 0; i < a->n_ignore; i++)
      SQ_CHECK(sq_qplan_strs(&sp->ignore, &sp->n_ignore, a->ignore[i]));
  }
  char gs[32] = "channel";
  if (o->q.strategy == SQ_QSTRAT_GROUP) snprintf(gs, sizeof gs, "group(%d)", o->q.group_size);
  else if (o->q.strategy == SQ_QSTRAT_TENSOR) snprintf(gs, sizeof gs, "tensor");
  snprintf(out->summary, sizeof out->summary, "%s %s %s%d %s %s%s", a->scheme, a->method,
           o->q.type == SQ_QTYPE_FLOAT ? "fp" : "int", o->q.num_bits,
           o->q.symmetric ? "sym" : "asym", gs, o->actorder ? " actorder" : "");
  return SQ_OK;
}

/* ---- recipes --------------------------------------------------------------- */

static void sq_qplan_args_from_recipe(const sq_recipe_qargs *r, sq_dtype dt, sq_ct_args *out) {
  memset(out, 0, sizeof *out);
  out->q.num_bits = r->num_bits;
  out->q.type = r->type;
  out->q.symmetric = r->symmetric;
  out->q.strategy = r->strategy;
  out->q.group_size = r->strategy == SQ_QSTRAT_GROUP ? r->group_size : 0;
  out->q.scale_dtype = dt;
  out->actorder = r->actorder == SQ_ACTORDER_GROUP    ? SQ_CT_ACTORDER_GROUP
                  : r->actorder == SQ_ACTORDER_WEIGHT ? SQ_CT_ACTORDER_WEIGHT
                                                      : SQ_CT_ACTORDER_NONE;
  out->dynamic = r->dynamic != 0;
  snprintf(out->observer, sizeof out->observer, "%s", r->observer);
  out->block_structure[0] = r->block_structure[0];
  out->block_structure[1] = r->block_structure[1];
}

/* The config group of a recipe scheme: targets as written, QuantizationArgs
 * as resolved (GPTQ's default actorder applied, as llm-compressor saves it). */
static sq_status sq_qplan_group(const sq_recipe *r, const sq_recipe_resolution *res, sq_dtype dt,
                                sq_ct_config *ct) {
  const sq_recipe_scheme *rs = res->scheme;
  if (res->output_activations.present)
    return sq_error_set(SQ_ERR_UNSUPPORTED,
                        "%s:%d:%d: output_activations quantization is not supported by shardq",
                        r->path, rs->line, rs->col);
  sq_ct_scheme s;
  memset(&s, 0, sizeof s);
  s.format = SQ_CT_FMT_INVALID;
  sq_status st = SQ_OK;
  for (int i = 0; i < rs->targets.n && !st; i++)
    st = sq_ct_scheme_add_target(&s, rs->targets.v[i].text);
  s.has_weights = res->weights.present != 0;
  if (s.has_weights) sq_qplan_args_from_recipe(&res->weights, dt, &s.weights);
  s.has_input = res->input_activations.present != 0;
  if (s.has_input) sq_qplan_args_from_recipe(&res->input_activations, dt, &s.input);
  if (!st) st = sq_ct_config_add_group(ct, &s);
  /* add_group names it group_<n>; a config group keeps the recipe's name
   * (llm-compressor keeps config_groups' keys; presets become group_<n>) */
  if (!st && !rs->preset && rs->name && rs->name[0])
    snprintf(ct->groups[ct->n_groups - 1].name, sizeof ct->groups[0].name, "%s", rs->name);
  sq_ct_scheme_free(&s);
  return st;
}

/* SmoothQuant mappings -> which norms are smoothed (the two Llama mappings). */
static sq_status sq_qplan_smooth(const sq_recipe *r, const sq_recipe_modifier *md, sq_qplan *out) {
  static const char *const norms[2] = {"model.layers.0.input_layernorm",
                                       "model.layers.0.post_attention_layernorm"};
  static const int bal[2][4] = {{SQ_MOD_Q, SQ_MOD_K, SQ_MOD_V, -1},
                                {SQ_MOD_GATE, SQ_MOD_UP, -1, -1}};
  if (out->smooth_attn || out->smooth_mlp)
    return sq_error_set(SQ_ERR_UNSUPPORTED,
                        "%s:%d:%d: a second SmoothQuantModifier -- hint: shardq applies one",
                        r->path, md->line, md->col);
  out->smooth_alpha = (float)md->smoothing_strength;
  if (md->n_mappings == 0) {
    out->smooth_attn = out->smooth_mlp = 1; /* llm-compressor's default Llama mappings */
    return SQ_OK;
  }
  for (int i = 0; i < md->n_mappings; i++) {
    const sq_recipe_smooth_mapping *mp = &md->mappings[i];
    int k = -1;
    for (int n = 0; n < 2; n++)
      if (sq_recipe_target_match(&mp->smooth, norms[n], "LlamaRMSNorm")) k = n;
    int ok = k >= 0;
    /* the balance targets must select exactly the layers that norm feeds */
    for (int m = 0; ok && m < SQ_MOD_COUNT; m++) {
      char name[160];
      sq_qplan_mod_name(name, sizeof name, 0, m);
      int hit = 0, want = 0;
      for (int b = 0; b < mp->balance.n; b++)
        hit |= sq_recipe_target_match(&mp->balance.v[b], name, "Linear");
      for (int b = 0; bal[k][b] >= 0; b++) want |= bal[k][b] == m;
      if (hit != want) ok = 0;
    }
    if (!ok)
      return sq_error_set(SQ_ERR_UNSUPPORTED,
                          "%s:%d:%d: SmoothQuant mapping %d (smooth '%s') is not one shardq "
                          "applies -- hint: supported are [q/k/v_proj] <- input_layernorm and "
                          "[gate/up_proj] <- post_attention_layernorm",
                          r->path, mp->smooth.line, mp->smooth.col, i, mp->smooth.text);
    if (k == 0) out->smooth_attn = 1;
    else out->smooth_mlp = 1;
  }
  return SQ_OK;
}

/* Solver options of one module from its resolution. */
static sq_status sq_qplan_mod_opts(const sq_recipe_resolution *res, const char *name,
                                   sq_dtype dt, sq_qplan_mod *pm, int *warned) {
  sq_lq_opts *o = &pm->lq;
  memset(o, 0, sizeof *o);
  o->dense_dtype = dt;
  o->block = 128;
  o->damp = 0.01f;
  pm->process = 1;
  pm->quantize = res->method != SQ_METHOD_NONE;
  if (pm->quantize) {
    if (!res->weights.present)
      return sq_error_set(SQ_ERR_UNSUPPORTED,
                          "%s: the recipe quantizes its activations but not its weights -- "
                          "hint: shardq needs a weights scheme", name);
    sq_ct_args wa;
    sq_qplan_args_from_recipe(&res->weights, dt, &wa);
    o->q = wa.q;
    o->actorder = wa.actorder == SQ_CT_ACTORDER_GROUP ? 1 : wa.actorder ? 2 : 0;
    if (res->input_activations.present) {
      sq_ct_args ia;
      sq_qplan_args_from_recipe(&res->input_activations, dt, &ia);
      SQ_CHECK(sq_qplan_input(pm, &ia, name));
    }
  }
  o->quantize = pm->quantize;
  int is_float = o->q.type == SQ_QTYPE_FLOAT;
  if (res->sparse_mod) {
    const sq_recipe_modifier *sp = res->sparse_mod;
    o->method = SQ_LQ_SPARSEGPT;
    o->sparsity = (float)sp->sparsity;
    o->prune_n = sp->mask_n;
    o->prune_m = sp->mask_m;
    o->block = sp->block_size;
    o->damp = (float)sp->dampening_frac;
    /* a later GPTQ on int weights runs jointly (SparseGPT's own quantizer);
     * round-to-nearest schemes and fp8 are applied to the pruned weight */
    o->post_rtn = pm->quantize && (res->method == SQ_METHOD_RTN || is_float);
    if (o->post_rtn) o->actorder = 0;
  } else if (res->method == SQ_METHOD_GPTQ) {
    o->method = SQ_LQ_GPTQ;
    o->block = res->quant_mod->block_size;
    o->damp = (float)res->quant_mod->dampening_frac;
    if (is_float) {
      if (!*warned)
        sq_log_warn("%s: fp8 weights: GPTQ handles integer weights only, using "
                    "round-to-nearest", name);
      *warned = 1;
      o->method = SQ_LQ_RTN;
    }
  } else {
    o->method = SQ_LQ_RTN;
  }
  if (o->method == SQ_LQ_RTN) o->actorder = 0;
  return SQ_OK;
}

static sq_status sq_qplan_from_recipe(const sq_qplan_args *a, sq_dtype dt, sq_qplan *out) {
  if (a->bits > 0 || a->group_set || a->sym >= 0 || a->actorder || a->mask || a->no_quant ||
      a->n_ignore)
    return sq_error_set(SQ_ERR_ARG,
                        "--recipe %s: --bits/--group/--sym/--asym/--actorder/--mask/--no-quant/"
                        "--ignore do not combine with a recipe -- hint: write them in the recipe",
                        a->recipe);
  sq_recipe *r = NULL;
  SQ_CHECK(sq_recipe_load(a->recipe, &r));
  sq_status st = SQ_OK;
  int64_t nm = out->n_layers * SQ_MOD_COUNT;
  const sq_recipe_scheme **seen = calloc((size_t)nm + 1, sizeof *seen);
  int *gidx = calloc((size_t)nm + 1, sizeof *gidx);
  const sq_recipe_modifier *sparse = NULL;
  int n_seen = 0, warned = 0, n_quant = 0, n_pruned = 0;
  if (!seen || !gidx) st = sq_error_set(SQ_ERR_NOMEM, "out of memory");
  for (int i = 0; i < r->n_mods && !st; i++)
    if (r->mods[i].kind == SQ_MOD_SMOOTHQUANT) st = sq_qplan_smooth(r, &r->mods[i], out);
  for (int64_t k = 0; k < nm && !st; k++) {
    char name[160];
    sq_qplan_mod_name(name, sizeof name, (int)(k / SQ_MOD_COUNT), (int)(k % SQ_MOD_COUNT));
    sq_recipe_resolution res;
    st = sq_recipe_resolve(r, name, "Linear", &res);
    if (st) break;
    gidx[k] = -1;
    if (res.method == SQ_METHOD_NONE && !res.sparse_mod) continue;
    if (res.sparse_mod) {
      if (sparse && (sparse->sparsity != res.sparse_mod->sparsity ||
                     sparse->mask_n != res.sparse_mod->mask_n))
        st = sq_error_set(SQ_ERR_UNSUPPORTED,
                          "%s:%d:%d: a second, different SparseGPTModifier -- hint: "
                          "sparsity_config holds one structure", r->path,
                          res.sparse_mod->line, res.sparse_mod->col);
      sparse = res.sparse_mod;
      n_pruned++;
    }
    if (!st) st = sq_qplan_mod_opts(&res, name, dt, &out->mods[k], &warned);
    if (st || res.method == SQ_METHOD_NONE) continue;
    n_quant++;
    int g = -1;
    for (int s = 0; s < n_seen; s++)
      if (seen[s] == res.scheme) g = s;
    if (g < 0) {
      st = sq_qplan_group(r, &res, dt, &out->ct);
      seen[n_seen] = res.scheme;
      g = n_seen++;
    }
    gidx[k] = g;
  }
  /* formats are known once every group is in (mixed-precision or one) */
  for (int64_t k = 0; k < nm && !st; k++)
    if (gidx[k] >= 0)
      out->mods[k].lq.fmt = sq_ct_config_module_format(&out->ct, &out->ct.groups[gidx[k]]);
  /* ignore: every Linear left unquantized, by name, as compressed-tensors
   * writes it (QuantizationConfig.from_pretrained); lm_head is never quantized */
  if (!st) st = sq_ct_config_add_ignore(&out->ct, "lm_head");
  for (int64_t k = 0; k < nm && !st && n_quant; k++)
    if (!out->mods[k].quantize) {
      char name[160];
      sq_qplan_mod_name(name, sizeof name, (int)(k / SQ_MOD_COUNT), (int)(k % SQ_MOD_COUNT));
      st = sq_ct_config_add_ignore(&out->ct, name);
    }
  /* sparsity_config: targets reduced to the class when every Linear of the
   * decoder layers is pruned, else the pruned names (llm-compressor's
   * infer_sparse_targets_and_ignores); ignore lm_head; stored dense (there is
   * no sparse-24-bitmask writer yet) */
  if (!st && sparse) {
    sq_ct_sparsity *sp = &out->ct.sparsity;
    sp->present = true;
    snprintf(sp->format, sizeof sp->format, "dense");
    if (sparse->mask_n)
      snprintf(sp->structure, sizeof sp->structure, "%d:%d", sparse->mask_n, sparse->mask_m);
    else
      snprintf(sp->structure, sizeof sp->structure, "unstructured");
    sp->global_sparsity =
        sparse->mask_n ? (double)sparse->mask_n / sparse->mask_m : sparse->sparsity;
    int all = n_pruned == nm;
    if (all) st = sq_qplan_strs(&sp->targets, &sp->n_targets, "Linear");
    if (!st) st = sq_qplan_strs(&sp->ignore, &sp->n_ignore, "lm_head");
    for (int64_t k = 0; k < nm && !st && !all; k++) {
      const sq_qplan_mod *pm = &out->mods[k];
      if (!pm->process || pm->lq.method != SQ_LQ_SPARSEGPT) continue;
      char name[160];
      sq_qplan_mod_name(name, sizeof name, (int)(k / SQ_MOD_COUNT), (int)(k % SQ_MOD_COUNT));
      st = sq_qplan_strs(&sp->targets, &sp->n_targets, name);
    }
  }
  const sq_recipe_qargs *kv = st ? NULL : sq_recipe_kv_cache(r);
  if (kv) {
    sq_ct_args ka;
    sq_qplan_args_from_recipe(kv, dt, &ka);
    if (ka.dynamic || ka.q.strategy != SQ_QSTRAT_TENSOR || !ka.q.symmetric)
      st = sq_error_set(SQ_ERR_UNSUPPORTED,
                        "%s:%d:%d: kv_cache_scheme must be static, symmetric, per tensor "
                        "(k_scale/v_scale) -- hint: the FP8 kv cache vLLM reads",
                        r->path, kv->line, kv->col);
    out->ct.has_kv_cache = true;
    out->ct.kv_cache = ka;
    out->kv_cache = 1;
    out->kv_q = ka.q;
  }
  const char *base = strrchr(a->recipe, '/');
  snprintf(out->summary, sizeof out->summary,
           "recipe %s: %d modules quantized, %d pruned%s%s", base ? base + 1 : a->recipe, n_quant,
           n_pruned, out->smooth_attn || out->smooth_mlp ? ", SmoothQuant" : "",
           out->kv_cache ? ", kv-cache scales" : "");
  free(seen);
  free(gidx);
  sq_recipe_free(r);
  return st;
}

/* ---- common -------------------------------------------------------------- */

static sq_status sq_qplan_collect_opts(sq_qplan *p) {
  int64_t nm = p->n_layers * SQ_MOD_COUNT;
  p->opts_list = calloc((size_t)nm + 1, sizeof *p->opts_list);
  if (!p->opts_list) return sq_error_set(SQ_ERR_NOMEM, "out of memory");
  for (int64_t k = 0; k < nm; k++) {
    const sq_qplan_mod *pm = &p->mods[k];
    if (!pm->process) continue;
    int dup = 0;
    for (int i = 0; i < p->n_opts && !dup; i++)
      dup = !memcmp(&p->opts_list[i], &pm->lq, sizeof pm->lq);
    if (!dup) p->opts_list[p->n_opts++] = pm->lq;
  }
  if (p->n_opts == 0) p->opts_list[p->n_opts++] = p->lq; /* nothing processed: still sizes */
  p->lq = p->opts_list[0];
  return SQ_OK;
}

sq_status sq_qplan_build(const sq_qplan_args *a, const sq_model *m, sq_qplan *out) {
  memset(out, 0, sizeof *out);
  sq_ct_config_init(&out->ct);
  char wname[128];
  snprintf(wname, sizeof wname, "model.layers.0.self_attn.q_proj.weight");
  sq_dtype dt = sq_model_tensor_dtype(m, wname);
  if (dt != SQ_DTYPE_F32 && dt != SQ_DTYPE_F16 && dt != SQ_DTYPE_BF16)
    return sq_error_set(SQ_ERR_UNSUPPORTED,
                        "%s: tensor '%s' has dtype %s; shardq quantizes F32/F16/BF16 weights",
                        m->info.dir, wname, sq_dtype_name(dt));
  out->dtype = dt;
  out->n_layers = m->info.n_layers;
  /* memset-zeroed module entries: process = 0 */
  out->mods = calloc((size_t)(out->n_layers * SQ_MOD_COUNT) + 1, sizeof *out->mods);
  if (!out->mods) return sq_error_set(SQ_ERR_NOMEM, "out of memory for the module plan");
  if (a->recipe) SQ_CHECK(sq_qplan_from_recipe(a, dt, out));
  else SQ_CHECK(sq_qplan_from_flags(a, dt, out));
  return sq_qplan_collect_opts(out);
}

void sq_qplan_free(sq_qplan *p) {
  sq_ct_config_free(&p->ct);
  free(p->mods);
  free(p->opts_list);
  p->mods = NULL;
  p->opts_list = NULL;
}

const sq_qplan_mod *sq_qplan_module(const sq_qplan *p, int layer, int mod) {
  return &p->mods[(int64_t)layer * SQ_MOD_COUNT + mod];
}

int sq_qplan_needs_calibration(const sq_qplan *p) {
  if (p->kv_cache || p->smooth_attn || p->smooth_mlp) return 1;
  for (int64_t k = 0; k < p->n_layers * SQ_MOD_COUNT; k++) {
    const sq_qplan_mod *pm = &p->mods[k];
    if (pm->process && (pm->lq.method != SQ_LQ_RTN || pm->input_scale)) return 1;
  }
  return 0;
}

const sq_lq_opts *sq_qplan_all_opts(const sq_qplan *p, int *n) {
  *n = p->n_opts;
  return p->opts_list;
}

sq_status sq_qplan_distribute(const sq_model *m, int ranks, int rank, int64_t samples,
                              int64_t seq_len, int *owner, int64_t *s0, int64_t *s1) {
  const sq_model_info *mi = &m->info;
  memset(owner, 0, (size_t)(mi->n_layers * SQ_MOD_COUNT) * sizeof *owner);
  *s0 = 0;
  *s1 = samples;
  if (ranks == 1) return SQ_OK;
  sq_plan_opts po;
  sq_plan_opts_default(&po);
  po.samples = samples;
  po.seq_len = seq_len;
  sq_plan *p = NULL;
  SQ_CHECK(sq_plan_build((const sq_model_config *)mi->config_, ranks, &po, &p));
  sq_status st = SQ_OK;
  for (int64_t l = 0; l < mi->n_layers && st == SQ_OK; l++)
    for (int k = 0; k < SQ_MOD_COUNT && st == SQ_OK; k++) {
      char name[160];
      snprintf(name, sizeof name, "model.layers.%lld.%s", (long long)l, sq_model_module_suffix(k));
      long i = sq_plan_find(p, name);
      if (i < 0)
        st = sq_error_set(SQ_ERR_INTERNAL, "%s: module %s is not in the plan", mi->dir, name);
      else
        owner[l * SQ_MOD_COUNT + k] = p->modules[i].owner;
    }
  *s0 = p->rank[rank].sample_begin;
  *s1 = p->rank[rank].sample_end;
  if (st == SQ_OK && *s1 <= *s0)
    st = sq_error_set(SQ_ERR_INTERNAL, "the plan gives rank %d no calibration samples", rank);
  sq_plan_free(p);
  return st;
}
