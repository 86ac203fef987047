/* The quantization plan of `shardq quantize` (see quantize_plan.h). */
#include "coordinator/quantize_plan.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/log.h"

void sq_qplan_args_default(sq_qplan_args *a) {
  memset(a, 0, sizeof *a);
  a->scheme = "W4A16";
  a->method = "gptq";
  a->damp = 0.01;
  a->block = 128;
  a->sparsity = 0.5;
  a->sym = -1;
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

sq_status sq_qplan_build(const sq_qplan_args *a, const sq_model *m, sq_qplan *out) {
  memset(out, 0, sizeof *out);
  sq_ct_config_init(&out->ct);
  if (a->recipe)
    return sq_error_set(SQ_ERR_UNSUPPORTED,
                        "--recipe %s: recipes arrive with the recipes issue in `shardq quantize` "
                        "-- hint: use --scheme/--method for now (`shardq recipe check` "
                        "validates the file)",
                        a->recipe);
  sq_lq_opts *o = &out->lq;
  if (!strcasecmp(a->method, "gptq")) o->method = SQ_LQ_GPTQ;
  else if (!strcasecmp(a->method, "rtn")) o->method = SQ_LQ_RTN;
  else if (!strcasecmp(a->method, "sparsegpt")) o->method = SQ_LQ_SPARSEGPT;
  else
    return sq_error_set(SQ_ERR_ARG, "--method %s: expected gptq, rtn or sparsegpt", a->method);

  char wname[128];
  snprintf(wname, sizeof wname, "model.layers.0.self_attn.q_proj.weight");
  sq_dtype dt = sq_model_tensor_dtype(m, wname);
  if (dt != SQ_DTYPE_F32 && dt != SQ_DTYPE_F16 && dt != SQ_DTYPE_BF16)
    return sq_error_set(SQ_ERR_UNSUPPORTED,
                        "%s: tensor '%s' has dtype %s; shardq quantizes F32/F16/BF16 weights",
                        m->info.dir, wname, sq_dtype_name(dt));
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
  if (wa->q.type == SQ_QTYPE_FLOAT && o->method != SQ_LQ_RTN) {
    sq_log_warn("--scheme %s has fp8 weights: GPTQ/SparseGPT handle integer weights only, "
                "using round-to-nearest",
                a->scheme);
    o->method = SQ_LQ_RTN;
  }
  o->q = wa->q;
  o->quantize = !(o->method == SQ_LQ_SPARSEGPT && a->no_quant);
  o->block = a->block;
  o->damp = (float)a->damp;
  o->sparsity = (float)a->sparsity;
  o->dense_dtype = dt;
  if (a->mask && sscanf(a->mask, "%d:%d", &o->prune_n, &o->prune_m) != 2)
    return sq_error_set(SQ_ERR_ARG, "--mask %s: expected N:M, e.g. 2:4", a->mask);
  sq_status st = SQ_OK;
  if (o->quantize) {
    o->fmt = sq_ct_scheme_infer_format(&s);
    st = sq_ct_config_add_group(&out->ct, &s);
  }
  sq_ct_scheme_free(&s);
  SQ_CHECK(st);
  SQ_CHECK(sq_ct_config_add_ignore(&out->ct, "lm_head"));
  for (int i = 0; i < a->n_ignore; i++) SQ_CHECK(sq_ct_config_add_ignore(&out->ct, a->ignore[i]));
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

void sq_qplan_free(sq_qplan *p) { sq_ct_config_free(&p->ct); }

int sq_qplan_quantized(const sq_qplan *p, const char *module) {
  if (!p->lq.quantize) {
    /* pruning only: no config group; ignore list decides */
    for (size_t i = 0; i < p->ct.n_ignore; i++)
      if (!strcmp(p->ct.ignore[i], module)) return 0;
    return strncmp(module, "lm_head", 7) != 0;
  }
  return sq_ct_config_match(&p->ct, module) != NULL;
}
