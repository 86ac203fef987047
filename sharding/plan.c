/* The plan: owners for every module (greedy LPT per layer over Hessian
 * groups) and the split of calibration samples. See sharding/plan.h. */
#include <stdlib.h>
#include <string.h>

#include "sharding/plan.h"

void sq_plan_opts_default(sq_plan_opts *o) {
  o->samples = 512;
  o->seq_len = 2048;
  o->byte_cost = 400e12 / 2e9;
}

typedef struct {
  size_t first; /* first module of the group */
  size_t count;
  double load;
} sq_group_item;

/* Load descending, then first module index ascending: a total order, so
 * qsort's instability cannot change the result. */
static int sq_group_cmp(const void *a, const void *b) {
  const sq_group_item *x = a, *y = b;
  if (x->load != y->load) return x->load > y->load ? -1 : 1;
  return x->first < y->first ? -1 : x->first > y->first;
}

/* Assign the groups of layer L: each (largest first) goes to the rank with the
 * least load in this layer, ties to the least load over earlier layers, then to
 * the lower rank. load/cum are [ranks]; items has room for L->n_groups. */
static void sq_assign_layer(sq_plan *p, const sq_plan_layer *L, sq_group_item *items, double *load,
                            const double *cum) {
  int ng = 0;
  for (size_t i = L->first; i < L->first + L->count; ++i) {
    const sq_plan_module *m = &p->modules[i];
    if (ng == 0 || p->modules[items[ng - 1].first].group != m->group) {
      items[ng].first = i;
      items[ng].count = 0;
      items[ng].load = 0;
      ng++;
    }
    items[ng - 1].count++;
    items[ng - 1].load += m->load;
  }
  qsort(items, (size_t)ng, sizeof *items, sq_group_cmp);
  for (int r = 0; r < p->ranks; ++r) load[r] = 0;
  for (int g = 0; g < ng; ++g) {
    int best = 0;
    for (int r = 1; r < p->ranks; ++r)
      if (load[r] < load[best] || (load[r] == load[best] && cum[r] < cum[best])) best = r;
    load[best] += items[g].load;
    for (size_t i = items[g].first; i < items[g].first + items[g].count; ++i)
      p->modules[i].owner = best;
  }
}

sq_status sq_plan_build(const sq_model_config *c, int ranks, const sq_plan_opts *opts,
                        sq_plan **out) {
  *out = NULL;
  sq_plan_opts def;
  if (!opts) {
    sq_plan_opts_default(&def);
    opts = &def;
  }
  if (ranks < 1 || ranks > 1 << 20)
    return sq_error_set(SQ_ERR_ARG, "plan: ranks must be in 1..%d (got %d)", 1 << 20, ranks);
  if (!(opts->byte_cost >= 0) || opts->byte_cost > 1e30)
    return sq_error_set(SQ_ERR_ARG, "plan: byte_cost must be >= 0 (got %g)", opts->byte_cost);
  if (opts->samples < 1 || opts->seq_len < 1 || opts->samples > (int64_t)1 << 40 ||
      opts->seq_len > (int64_t)1 << 30)
    return sq_error_set(SQ_ERR_ARG,
                        "plan: samples and seq_len must be in 1..2^40 / 1..2^30 (got %lld, %lld)",
                        (long long)opts->samples, (long long)opts->seq_len);
  sq_plan *p = calloc(1, sizeof *p);
  if (!p) return sq_error_set(SQ_ERR_NOMEM, "plan: out of memory");
  p->ranks = ranks;
  p->samples = opts->samples;
  p->seq_len = opts->seq_len;
  p->n_layers = (int)c->num_hidden_layers;
  sq_status st = SQ_OK;
  double *load = NULL, *cum = NULL;
  sq_group_item *items = NULL;
  SQ_CHECK_GOTO(sq_plan_modules(c, opts, &p->modules, &p->n_modules, &p->layers), st, fail);
  p->n_groups = p->n_modules ? p->modules[p->n_modules - 1].group + 1 : 0;

  int max_groups = 1;
  for (int l = 0; l < p->n_layers; ++l)
    if (p->layers[l].n_groups > max_groups) max_groups = p->layers[l].n_groups;
  p->rank = calloc((size_t)ranks, sizeof *p->rank);
  load = calloc((size_t)ranks, sizeof *load);
  cum = calloc((size_t)ranks, sizeof *cum);
  items = calloc((size_t)max_groups, sizeof *items);
  if (!p->rank || !load || !cum || !items) {
    st = sq_error_set(SQ_ERR_NOMEM, "plan: out of memory for %d ranks", ranks);
    goto fail;
  }
  for (int r = 0; r < ranks; ++r) {
    /* Contiguous near-equal ranges: rank r gets [r·S/N, (r+1)·S/N). */
    p->rank[r].sample_begin = (int64_t)r * opts->samples / ranks;
    p->rank[r].sample_end = (int64_t)(r + 1) * opts->samples / ranks;
  }
  for (int l = 0; l < p->n_layers; ++l) {
    sq_assign_layer(p, &p->layers[l], items, load, cum);
    double mx = 0;
    for (int r = 0; r < ranks; ++r) {
      cum[r] += load[r];
      if (load[r] > mx) mx = load[r];
      if (load[r] > p->rank[r].max_layer_load) p->rank[r].max_layer_load = load[r];
    }
    p->layer_makespan += mx;
  }
  for (size_t i = 0; i < p->n_modules; ++i) {
    sq_plan_rank *R = &p->rank[p->modules[i].owner];
    R->n_modules++;
    R->cost += p->modules[i].cost;
    R->load += p->modules[i].load;
    R->params += (uint64_t)p->modules[i].d_out * (uint64_t)p->modules[i].d_in;
  }
  free(load);
  free(cum);
  free(items);
  *out = p;
  return SQ_OK;
fail:
  free(load);
  free(cum);
  free(items);
  sq_plan_free(p);
  return st;
}

void sq_plan_free(sq_plan *p) {
  if (!p) return;
  free(p->modules);
  free(p->layers);
  free(p->rank);
  free(p);
}

long sq_plan_find(const sq_plan *p, const char *name) {
  for (size_t i = 0; i < p->n_modules; ++i)
    if (strcmp(p->modules[i].name, name) == 0) return (long)i;
  return -1;
}
