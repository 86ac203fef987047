/* The MoE quantize job (see quantize_moe.h): setup, the layer loop over
 * sq_mlq_layer with this rank's shard parts, the summary, publication. */
#include "coordinator/quantize_moe.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/fsio.h"
#include "common/log.h"
#include "coordinator/quantize_output.h"
#include "kernels/threads.h"
#include "sharding/checkpoint.h"
#include "sharding/compressed.h"
#include "sharding/model_config.h"
#include "worker/activations.h"
#include "worker/calib.h"
#include "worker/moe_layer_quant.h"
#include "worker/moe_model.h"

void sq_qmoe_detect(const char *dir, int *is_moe) {
  *is_moe = 0;
  sq_model_config c;
  memset(&c, 0, sizeof c);
  if (sq_model_config_load(dir, &c) != SQ_OK) {
    sq_error_clear();
    return;
  }
  *is_moe = c.family == SQ_FAMILY_MIXTRAL || c.family == SQ_FAMILY_QWEN_MOE ||
            c.family == SQ_FAMILY_DEEPSEEK_V3;
  sq_model_config_free(&c);
}

typedef struct {
  const sq_qplan_args *a;
  const sq_comm *c;
  int rank, ranks, broken, all_tokens;
  sq_moe_model m;
  sq_calib cal;
  sq_acts acts;
  sq_mlq q;
  sq_mlq_opts o;
  sq_ct_config ct;
  sq_tensor_spec *specs;
  size_t n_specs;
  char **files; /* [1 + n_layers] parts this rank writes (NULL: none) */
  int n_files;
  sq_mlq_stat *stats; /* [n_layers] */
  char summary[160];
} sq_qmoe;

static sq_status sq_qmoe_agree(sq_qmoe *j, sq_status local) {
  if (j->ranks == 1) return local;
  char mine[1024], msg[1200];
  snprintf(mine, sizeof mine, "%s", local != SQ_OK ? sq_error_message() : "");
  sq_status global = SQ_OK;
  if (sq_comm_agree_status(j->c, local, mine, &global, msg, sizeof msg) != SQ_OK) {
    j->broken = 1;
    return SQ_ERR_MPI;
  }
  if (global == SQ_OK) return SQ_OK;
  sq_error_clear();
  return sq_error_set(global, "%s", msg);
}
#define SQ_QM_STEP(j, call) SQ_CHECK(sq_qmoe_agree((j), (call)))
/* A collective step; SQ_ERR_MPI leaves the communicator unusable. */
#define SQ_QM_COLL(j, call)                 \
  do {                                      \
    sq_status st_ = (call);                 \
    if (st_ == SQ_ERR_MPI) (j)->broken = 1; \
    if (st_ != SQ_OK) return st_;           \
  } while (0)

/* Refuse what the MoE path does not do, naming the option. */
static sq_status sq_qmoe_check_args(const sq_qplan_args *a) {
  const char *bad = a->recipe         ? "--recipe"
                    : a->n_ignore     ? "--ignore"
                    : a->dump_dequant ? "--dump-dequant"
                    : a->mask         ? "--mask"
                    : a->no_quant     ? "--no-quant"
                                      : NULL;
  if (!bad && strcasecmp(a->method, "gptq") && strcasecmp(a->method, "rtn")) bad = "--method";
  if (bad)
    return sq_error_set(SQ_ERR_UNSUPPORTED,
                        "%s: %s is not supported for MoE models yet -- hint: "
                        "use --scheme W4A16|W4A16_ASYM|W8A16 with --method gptq or rtn",
                        a->model, bad);
  return SQ_OK;
}

/* Solver options and quantization_config from --scheme and its flags. */
static sq_status sq_qmoe_opts(sq_qmoe *j, sq_dtype dt) {
  const sq_qplan_args *a = j->a;
  sq_mlq_opts *o = &j->o;
  *o = sq_mlq_opts_default();
  o->lq.method = strcasecmp(a->method, "rtn") ? SQ_LQ_GPTQ : SQ_LQ_RTN;
  sq_ct_scheme s;
  SQ_CHECK(sq_ct_scheme_preset(a->scheme, dt, &s));
  sq_ct_args *wa = &s.weights;
  sq_status st = SQ_OK;
  if (s.has_input || !s.has_weights || wa->q.type != SQ_QTYPE_INT)
    st = sq_error_set(SQ_ERR_UNSUPPORTED,
                      "--scheme %s: MoE models take integer weight-only "
                      "schemes for now -- hint: W4A16, W4A16_ASYM or W8A16",
                      a->scheme);
  if (a->bits > 0) wa->q.num_bits = a->bits;
  if (a->sym >= 0) wa->q.symmetric = a->sym;
  if (a->group_set) {
    wa->q.strategy = a->group > 0 ? SQ_QSTRAT_GROUP : SQ_QSTRAT_CHANNEL;
    wa->q.group_size = a->group > 0 ? a->group : 0;
  }
  if (a->actorder) {
    int grp = !strcmp(a->actorder, "group");
    o->lq.actorder = grp && wa->q.strategy == SQ_QSTRAT_GROUP ? 1 : 2;
    if (wa->q.strategy == SQ_QSTRAT_GROUP)
      wa->actorder = grp ? SQ_CT_ACTORDER_GROUP : SQ_CT_ACTORDER_WEIGHT;
  }
  o->lq.q = wa->q;
  o->lq.fmt = sq_ct_scheme_infer_format(&s);
  o->lq.block = a->block;
  o->lq.damp = (float)a->damp;
  o->batch = a->batch > 0 ? a->batch : 8;
  o->all_tokens = j->all_tokens;
  sq_ct_config_init(&j->ct);
  if (!st) st = sq_ct_config_add_group(&j->ct, &s);
  sq_ct_scheme_free(&s);
  SQ_CHECK(st);
  /* Routers are nn.Linear in transformers: keep them (and Qwen2-MoE's
   * shared_expert_gate) out of the Linear target, as llm-compressor does. */
  SQ_CHECK(sq_ct_config_add_ignore(&j->ct, "lm_head"));
  if (j->m.cfg.family == SQ_FAMILY_MIXTRAL) {
    SQ_CHECK(sq_ct_config_add_ignore(&j->ct, "re:.*block_sparse_moe.gate$"));
  } else {
    SQ_CHECK(sq_ct_config_add_ignore(&j->ct, "re:.*mlp.gate$"));
    SQ_CHECK(sq_ct_config_add_ignore(&j->ct, "re:.*mlp.shared_expert_gate$"));
  }
  char gs[32] = "channel";
  if (o->lq.q.strategy == SQ_QSTRAT_GROUP) snprintf(gs, sizeof gs, "group(%d)", o->lq.q.group_size);
  snprintf(j->summary, sizeof j->summary, "%s %s int%d %s %s%s", a->scheme, a->method,
           o->lq.q.num_bits, o->lq.q.symmetric ? "sym" : "asym", gs,
           o->lq.actorder ? " actorder" : "");
  return SQ_OK;
}

/* Is tensor spec i written raw (not one of the plan's modules)? */
static int sq_qmoe_is_module(const sq_qmoe *j, const char *tensor, int layer) {
  size_t f, n;
  sq_moe_model_layer_modules(&j->m, layer, &f, &n);
  for (size_t i = f; i < f + n; i++)
    if (!strcmp(j->m.mods[i].pm->tensor, tensor)) return 1;
  return 0;
}

/* The rank that copies layer l's dense tensors: q_proj's owner. */
static int sq_qmoe_raw_writer(const sq_qmoe *j, int layer) {
  size_t f, n;
  sq_moe_model_layer_modules(&j->m, layer, &f, &n);
  return n ? j->m.mods[f].owner : 0;
}

static int sq_qmoe_writes(const sq_qmoe *j, int layer) {
  return sq_mlq_writes_layer(&j->q, layer) || sq_qmoe_raw_writer(j, layer) == j->rank;
}

static sq_status sq_qmoe_setup(sq_qmoe *j) {
  const sq_qplan_args *a = j->a;
  SQ_CHECK(sq_qmoe_check_args(a));
  if (j->rank == 0) SQ_CHECK(sq_qout_prepare(a->model, a->out, a->force));
  SQ_CHECK(sq_calib_load(a->calib, a->calib_samples > 0 ? a->calib_samples : 128, a->seq_len,
                         a->shuffle_seed, &j->cal));
  if (j->cal.n < j->ranks)
    return sq_error_set(SQ_ERR_ARG,
                        "%s: %lld calibration samples for %d ranks -- hint: every "
                        "rank needs at least one sample",
                        a->calib, (long long)j->cal.n, j->ranks);
  SQ_CHECK(sq_moe_model_open(a->model, j->ranks, j->cal.n, j->cal.T, &j->m));
  sq_dtype dt = j->m.cfg.torch_dtype;
  if (dt != SQ_DTYPE_BF16 && dt != SQ_DTYPE_F16 && dt != SQ_DTYPE_F32) dt = SQ_DTYPE_BF16;
  SQ_CHECK(sq_qmoe_opts(j, dt));
  SQ_CHECK(sq_model_config_tensors(&j->m.cfg, &j->specs, &j->n_specs));
  const sq_moe_model *m = &j->m;
  int64_t s0 = m->plan->rank[j->rank].sample_begin, s1 = m->plan->rank[j->rank].sample_end;
  char *spill = NULL;
  if (a->spill_dir) {
    char fname[64];
    snprintf(fname, sizeof fname, "shardq-acts-rank%d.h5", j->rank);
    spill = sq_fs_join(a->spill_dir, fname);
  }
  sq_status st = sq_acts_init(&j->acts, s1 - s0, j->cal.T, m->hidden, spill);
  free(spill);
  SQ_CHECK(st);
  float *table = malloc((size_t)(m->cfg.vocab_size * m->hidden) * sizeof(float));
  if (!table) return sq_error_set(SQ_ERR_NOMEM, "out of memory for the embedding table");
  st = sq_ckpt_read_f32(m->ckpt, "model.embed_tokens.weight", table,
                        (uint64_t)(m->cfg.vocab_size * m->hidden));
  if (st == SQ_OK)
    st = sq_acts_embed(&j->acts, j->cal.ids + s0 * j->cal.T, table, m->cfg.vocab_size);
  free(table);
  SQ_CHECK(st);
  SQ_CHECK(sq_mlq_init(&j->q, m, j->c, &j->o, s1 - s0, j->cal.T));
  j->stats = calloc((size_t)m->n_layers, sizeof *j->stats);
  j->n_files = 1 + (int)m->n_layers;
  j->files = calloc((size_t)j->n_files, sizeof *j->files);
  if (!j->stats || !j->files) return sq_error_set(SQ_ERR_NOMEM, "out of memory");
  for (int k = 0; k < j->n_files; k++) {
    if (k == 0 ? j->rank != 0 : !sq_qmoe_writes(j, k - 1)) continue;
    j->files[k] = malloc(64);
    if (!j->files[k]) return sq_error_set(SQ_ERR_NOMEM, "out of memory");
    if (j->ranks == 1)
      sq_qout_shard_name(j->files[k], 64, k + 1, j->n_files);
    else
      sq_qout_rank_shard_name(j->files[k], 64, j->rank, j->ranks, k);
  }
  if (!a->quiet && j->rank == 0)
    sq_log_info(
        "quantize %s (%s, MoE): %lld layers, %lld experts top-%lld, %s, %lld samples x "
        "%lld tokens, %d rank%s",
        a->model, j->m.cfg.model_type, (long long)m->n_layers, (long long)m->n_experts,
        (long long)m->top_k, j->summary, (long long)j->cal.n, (long long)j->cal.T, j->ranks,
        j->ranks > 1 ? "s" : "");
  return SQ_OK;
}

static sq_status sq_qmoe_head(sq_qmoe *j) {
  char *path = sq_fs_join(j->a->out, j->files[0]);
  sq_st_writer *w = NULL;
  sq_status st = path ? sq_st_writer_create(path, &w) : SQ_ERR_NOMEM;
  free(path);
  SQ_CHECK(st);
  for (size_t i = 0; i < j->n_specs && st == SQ_OK; i++)
    if (j->specs[i].layer < 0) st = sq_qout_declare_raw(w, j->m.ckpt, j->specs[i].name);
  for (size_t i = 0; i < j->n_specs && st == SQ_OK; i++)
    if (j->specs[i].layer < 0) st = sq_qout_write_raw(w, j->m.ckpt, j->specs[i].name);
  if (st == SQ_OK) st = sq_st_writer_commit(w);
  sq_st_writer_free(w);
  return st;
}

/* Open layer l's part and declare this rank's tensors in it. */
static sq_status sq_qmoe_open_layer(sq_qmoe *j, int l, sq_st_writer **w) {
  *w = NULL;
  if (!j->files[1 + l]) return SQ_OK;
  char *path = sq_fs_join(j->a->out, j->files[1 + l]);
  sq_status st = path ? sq_st_writer_create(path, w) : SQ_ERR_NOMEM;
  free(path);
  SQ_CHECK(st);
  SQ_CHECK(sq_mlq_declare(&j->q, l, *w));
  if (sq_qmoe_raw_writer(j, l) != j->rank) return SQ_OK;
  for (size_t i = 0; i < j->n_specs; i++)
    if (j->specs[i].layer == l && !sq_qmoe_is_module(j, j->specs[i].name, l))
      SQ_CHECK(sq_qout_declare_raw(*w, j->m.ckpt, j->specs[i].name));
  return SQ_OK;
}

static sq_status sq_qmoe_close_layer(sq_qmoe *j, int l, sq_st_writer *w) {
  if (!w) return SQ_OK;
  sq_status st = SQ_OK;
  if (sq_qmoe_raw_writer(j, l) == j->rank)
    for (size_t i = 0; i < j->n_specs && st == SQ_OK; i++)
      if (j->specs[i].layer == l && !sq_qmoe_is_module(j, j->specs[i].name, l))
        st = sq_qout_write_raw(w, j->m.ckpt, j->specs[i].name);
  if (st == SQ_OK) st = sq_st_writer_commit(w);
  sq_st_writer_free(w);
  return st;
}

static void sq_qmoe_summary(sq_qmoe *j, const double *tot, double seconds) {
  const sq_moe_model *m = &j->m;
  fprintf(stderr, "\n%-8s %-5s %12s %9s %12s %12s  %s\n", "layer", "ffn", "loss", "s", "bytes in",
          "bytes out", "tokens/expert (min/median/max), RTN fallbacks");
  for (int l = 0; l < m->n_layers; l++) {
    const sq_mlq_stat *s = &j->stats[l];
    const double *t = tot + 5 * l;
    char bi[32], bo[32], tok[96] = "-";
    if (s->moe)
      snprintf(tok, sizeof tok, "%lld / %.1f / %lld, %d", (long long)s->moe_stats.tok_min,
               s->moe_stats.tok_median, (long long)s->moe_stats.tok_max, (int)t[4]);
    char loss[32] = "-";
    if (j->o.lq.method == SQ_LQ_GPTQ) snprintf(loss, sizeof loss, "%.4g", t[0]);
    fprintf(stderr, "%-8d %-5s %12s %9.2f %12s %12s  %s\n", l, s->moe ? "moe" : "dense", loss,
            s->seconds, sq_format_bytes((uint64_t)t[2], bi, sizeof bi),
            sq_format_bytes((uint64_t)t[3], bo, sizeof bo), tok);
  }
  char rss[32];
  fprintf(stderr,
          "layers %lld, %lld experts, samples %lld x %lld tokens, %d rank%s, wall %.2f s, "
          "peak RSS (rank 0) %s -> %s\n",
          (long long)m->n_layers, (long long)m->n_experts, (long long)j->cal.n, (long long)j->cal.T,
          j->ranks, j->ranks > 1 ? "s" : "", seconds,
          sq_format_bytes(sq_peak_rss_bytes(), rss, sizeof rss), j->a->out);
}

static sq_status sq_qmoe_loop(sq_qmoe *j) {
  double t_start = sq_time_now();
  /* a fixed BLAS thread count: sgemm/ssyrk results depend on it (as cmd_quantize) */
  if (j->a->blas_threads > 0) sq_kernels_set_threads(j->a->blas_threads);
  SQ_QM_STEP(j, sq_qmoe_setup(j));
  const sq_moe_model *m = &j->m;
  SQ_QM_STEP(j, j->rank == 0 ? sq_qmoe_head(j) : SQ_OK);
  for (int l = 0; l < m->n_layers; l++) {
    sq_st_writer *w = NULL;
    sq_status st = sq_qmoe_open_layer(j, l, &w);
    if (st != SQ_OK && w) {
      sq_st_writer_free(w);
      w = NULL;
    }
    SQ_QM_STEP(j, st);
    st = sq_mlq_layer(&j->q, l, &j->acts, w, &j->stats[l]);
    if (st != SQ_OK) {
      if (st == SQ_ERR_MPI) j->broken = 1;
      if (w) sq_st_writer_free(w);
      return st;
    }
    SQ_QM_STEP(j, sq_qmoe_close_layer(j, l, w));
    if (!j->a->quiet && j->rank == 0) {
      char line[256] = "dense FFN";
      if (j->stats[l].moe)
        sq_moe_calib_describe(&j->stats[l].moe_stats, (int)m->n_experts, line, sizeof line);
      double done = sq_time_now() - t_start;
      fprintf(stderr, "layer %d/%lld  %.2f s  ETA %.0f s  %s\n", l + 1, (long long)m->n_layers,
              j->stats[l].seconds, done / (l + 1) * (double)(m->n_layers - l - 1), line);
    }
  }
  /* Only (tensor, file) names travel to rank 0. */
  char *mine = NULL, *all = NULL;
  size_t len = 0, all_len = 0;
  SQ_QM_STEP(j, sq_qout_list_shards(j->a->out, j->files, j->n_files, &mine, &len));
  sq_status st = sq_qout_gather_lists(j->c, mine, len, &all, &all_len);
  free(mine);
  SQ_QM_COLL(j, st);
  if (j->rank == 0) {
    st = sq_qout_copy_aux(j->a->model, j->a->out);
    if (st == SQ_OK) st = sq_ct_config_insert(j->m.cfg.json, &j->ct);
    if (st == SQ_OK) st = sq_model_config_save(&j->m.cfg, j->a->out);
    if (st == SQ_OK) st = sq_qout_write_index_list(j->a->out, all, all_len);
  }
  free(all);
  SQ_QM_STEP(j, st);
  /* Per-layer sums over ranks: loss, -, bytes in, bytes out, fallbacks. */
  size_t n = (size_t)(5 * m->n_layers);
  double *tot = calloc(n ? n : 1, sizeof *tot);
  if (!tot) return sq_error_set(SQ_ERR_NOMEM, "out of memory for the summary");
  for (int l = 0; l < m->n_layers; l++) {
    tot[5 * l] = j->stats[l].loss;
    tot[5 * l + 2] = (double)j->stats[l].bytes_in;
    tot[5 * l + 3] = (double)j->stats[l].bytes_out;
    tot[5 * l + 4] = j->stats[l].moe ? (double)j->stats[l].moe_stats.n_fallback : 0;
    if (j->rank != 0) tot[5 * l + 4] = 0; /* the same on every rank: count once */
  }
  st = sq_comm_reduce_sum_f64(j->c, tot, (int64_t)n, 0, "MoE layer figures");
  if (st == SQ_OK && j->rank == 0) sq_qmoe_summary(j, tot, sq_time_now() - t_start);
  free(tot);
  SQ_QM_COLL(j, st);
  return SQ_OK;
}

sq_status sq_qmoe_run(const sq_qplan_args *a, const sq_comm *c, int all_tokens, int *broken) {
  sq_qmoe *j = calloc(1, sizeof *j);
  if (!j) return sq_error_set(SQ_ERR_NOMEM, "out of memory");
  j->a = a;
  j->c = c;
  j->rank = sq_comm_rank(c);
  j->ranks = sq_comm_size(c);
  j->all_tokens = all_tokens;
  sq_status st = sq_qmoe_loop(j);
  *broken = j->broken;
  for (int k = 0; k < j->n_files; k++) free(j->files[k]);
  free(j->files);
  free(j->stats);
  free(j->specs);
  sq_mlq_free(&j->q);
  sq_acts_free(&j->acts, 0);
  sq_ct_config_free(&j->ct);
  sq_calib_free(&j->cal);
  sq_moe_model_close(&j->m);
  free(j);
  return st;
}
