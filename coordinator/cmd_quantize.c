/* shardq quantize: the layer-sequential job, on one process or as one MPI
 * job over many ranks (DESIGN.md's execution model). Embeds the calibration
 * tokens, then for each decoder layer in order: every rank reads the layer's
 * norms and biases and the weights of the modules it owns, the owners
 * broadcast those weights; every rank runs the layer over ITS calibration
 * samples while the Hessians of its Linear inputs accumulate; the partial
 * Hessians are reduced to each module's owner (rank order: deterministic); the
 * owner solves the module with GPTQ / SparseGPT / RTN, writes the compressed
 * tensors to its own shard of the layer group, and broadcasts the dequantized
 * weight, so that every rank re-runs the quantized layer to produce its
 * samples' inputs of the next layer. Memory per rank is one layer's weights
 * plus the activations of its own samples. Owners and sample ranges come from
 * sharding/plan.h (Hessian groups co-located); one rank owns everything and
 * keeps the single-process file names.
 * With a recipe (quantize_plan.h) each module has its own solver options; a
 * SmoothQuant layer first runs one extra pass to observe the norms' outputs
 * (ranges max-reduced over ranks) and folds the scales into the norms
 * (written out) and the q/k/v, gate/up weights; the calibration pass also
 * observes the absmax (max-reduced) that static input activations
 * (<m>.input_scale) and the kv cache (self_attn.k_scale/v_scale) need:
 * scale = absmax / 448 for fp8, shape [1] in the model's dtype.
 * Errors: every step ends with an agreement (sq_comm_agree_status), so a
 * failure on any rank makes every rank stop there and rank 0 report "rank R
 * (host): cause"; a failed collective (timeout) aborts the job. Fail points
 * (SHARDQ_FAILPOINT, comm.h) at the steps load, hessian, reduce, solve,
 * write, share, and (with --checkpoint-dir) before-journal, after-journal.
 * Checkpoint-restart (--checkpoint-dir, --resume; quantize_ckpt.h): each
 * layer ends with every rank's shard part and state file published and rank
 * 0's journal commit; SIGTERM/SIGUSR1 stop the job after a commit (exit 75).
 * The command line is quantize_cli.c, one layer's steps quantize_layer_step.c
 * (the job state both share: quantize_job.h); this file is the driver. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/fsio.h"
#include "common/log.h"
#include "coordinator/cli.h"
#include "coordinator/quantize_ckpt.h"
#include "coordinator/quantize_cli.h"
#include "coordinator/quantize_job.h"
#include "coordinator/quantize_moe.h"
#include "coordinator/quantize_output.h"
#include "coordinator/quantize_plan.h"
#include "coordinator/stop_signal.h"
#include "kernels/threads.h"
#include "worker/activations.h"
#include "worker/calib.h"
#include "worker/layer_quant.h"
#include "worker/model.h"
#include "worker/smoothquant.h"

/* End a step: every rank learns whether any rank failed in it; a failure
 * anywhere becomes the same error on every rank, "rank R (host): cause". One
 * rank: the local status as it is. */
sq_status sq_qjob_agree(sq_qjob *j, sq_status local) {
  if (j->ranks == 1) return local;
  char mine[1024], msg[1200];
  snprintf(mine, sizeof mine, "%s", local != SQ_OK ? sq_error_message() : "");
  sq_status global = SQ_OK;
  sq_status st = sq_comm_agree_status(j->comm, local, mine, &global, msg, sizeof msg);
  if (st != SQ_OK) {
    j->broken = 1;
    return st;
  }
  if (global == SQ_OK) return SQ_OK;
  sq_error_clear(); /* the agreed message replaces this rank's own (first cause wins) */
  return sq_error_set(global, "%s", msg);
}

static sq_status sq_q_write_head_shard(sq_qjob *j) {
  char *path = sq_fs_join(j->a.out, j->files[0]);
  sq_status st = path ? sq_st_writer_create(path, &j->w) : SQ_ERR_NOMEM;
  free(path);
  SQ_CHECK(st);
  const sq_model_info *mi = &j->model.info;
  for (size_t i = 0; i < mi->n_tensors; i++)
    if (mi->tensors[i].layer < 0) SQ_CHECK(sq_qout_declare_raw(j->w, j->model.ckpt, mi->tensors[i].name));
  for (size_t i = 0; i < mi->n_tensors; i++)
    if (mi->tensors[i].layer < 0) SQ_CHECK(sq_qout_write_raw(j->w, j->model.ckpt, mi->tensors[i].name));
  SQ_CHECK(sq_st_writer_commit(j->w));
  sq_st_writer_free(j->w);
  j->w = NULL;
  return SQ_OK;
}


static void sq_q_summary(const sq_qjob *j, double seconds) {
  uint64_t tin = 0, tout = 0;
  double tsec = 0;
  fprintf(stderr, "\n%-18s %7s %12s %9s %12s %12s %7s\n", "module", "count", "loss(sum)",
          "time s", "bytes in", "bytes out", "ratio");
  for (int m = 0; m < SQ_MOD_COUNT; m++) {
    const sq_qsum *s = &j->sum[m];
    if (!s->count) continue;
    char lb[32], bi[32], bo[32];
    if (s->has_loss) snprintf(lb, sizeof lb, "%.5g", s->loss);
    else snprintf(lb, sizeof lb, "-");
    fprintf(stderr, "%-18s %7d %12s %9.2f %12s %12s %6.2fx\n", sq_model_module_suffix(m),
            s->count, lb, s->seconds, sq_format_bytes(s->bytes_in, bi, sizeof bi),
            sq_format_bytes(s->bytes_out, bo, sizeof bo),
            s->bytes_out ? (double)s->bytes_in / (double)s->bytes_out : 0.0);
    tin += s->bytes_in;
    tout += s->bytes_out;
    tsec += s->seconds;
  }
  char bi[32], bo[32], rss[32];
  fprintf(stderr, "%-18s %7s %12s %9.2f %12s %12s %6.2fx\n", "total (Linear)", "", "", tsec,
          sq_format_bytes(tin, bi, sizeof bi), sq_format_bytes(tout, bo, sizeof bo),
          tout ? (double)tin / (double)tout : 0.0);
  fprintf(stderr, "layers %lld, samples %lld x %lld tokens, wall %.2f s, peak RSS %s -> %s\n",
          (long long)j->model.info.n_layers, (long long)j->calib.n, (long long)j->calib.T,
          seconds, sq_format_bytes(sq_peak_rss_bytes(), rss, sizeof rss), j->a.out);
}

/* Per-rank figures to rank 0 (each rank fills its row; a sum is exact) and
 * one line per rank: checkpoint bytes read, peak RSS, seconds per layer. */
static sq_status sq_q_rank_figures(sq_qjob *j) {
  int64_t L = j->model.info.n_layers, row = 3 + L;
  double *f = calloc((size_t)(j->ranks * row), sizeof *f);
  if (!f) return sq_error_set(SQ_ERR_NOMEM, "out of memory for the per-rank figures");
  double *mine = f + (size_t)j->rank * (size_t)row;
  mine[0] = (double)sq_model_bytes_read();
  mine[1] = (double)sq_peak_rss_bytes();
  mine[2] = (double)(j->s1 - j->s0);
  for (int64_t l = 0; l < L; l++) mine[3 + l] = j->layer_s[l];
  sq_status st = sq_comm_reduce_sum_f64(j->comm, f, j->ranks * row, 0, "per-rank figures");
  if (st != SQ_OK) j->broken = 1;
  for (int r = 0; r < j->ranks && st == SQ_OK && j->rank == 0; r++) {
    const double *x = f + (size_t)r * (size_t)row;
    char rb[32], rs[32];
    fprintf(stderr, "rank %d: samples %.0f, checkpoint bytes read %.0f (%s), peak RSS %s, s/layer",
            r, x[2], x[0], sq_format_bytes((uint64_t)x[0], rb, sizeof rb),
            sq_format_bytes((uint64_t)x[1], rs, sizeof rs));
    for (int64_t l = 0; l < L; l++) fprintf(stderr, " %.3f", x[3 + l]);
    fprintf(stderr, "\n");
  }
  free(f);
  return st;
}

/* Owners of every module and this rank's samples (quantize_plan.h). */
static sq_status sq_q_distribute(sq_qjob *j) {
  const sq_model_info *mi = &j->model.info;
  j->owner = calloc((size_t)(mi->n_layers * SQ_MOD_COUNT), sizeof *j->owner);
  j->layer_s = calloc((size_t)mi->n_layers, sizeof *j->layer_s);
  if (!j->owner || !j->layer_s) return sq_error_set(SQ_ERR_NOMEM, "out of memory for the plan");
  if (j->ranks > 1 && j->calib.n < j->ranks)
    return sq_error_set(SQ_ERR_ARG,
                        "%s: %lld calibration samples for %d ranks -- hint: every rank needs at "
                        "least one sample; use fewer ranks or more --calib-samples",
                        j->a.calib, (long long)j->calib.n, j->ranks);
  return sq_qplan_distribute(&j->model, j->ranks, j->rank, j->calib.n, j->calib.T, j->owner,
                             &j->s0, &j->s1);
}

/* Rank 0: the output directory and, with --checkpoint-dir, the resume
 * decision over the fingerprint of everything the output depends on. */
static sq_status sq_q_decide(sq_qjob *j) {
  const sq_qplan_args *a = &j->a;
  char scheme[512], opts[2048];
  snprintf(scheme, sizeof scheme,
           "scheme=%s method=%s bits=%d group=%d/%d sym=%d actorder=%s damp=%.17g block=%lld "
           "sparsity=%.17g mask=%s no_quant=%d",
           a->scheme ? a->scheme : "-", a->method ? a->method : "-", a->bits, a->group,
           a->group_set, a->sym, a->actorder ? a->actorder : "-", a->damp, (long long)a->block,
           a->sparsity, a->mask ? a->mask : "-", a->no_quant);
  int len = snprintf(opts, sizeof opts,
                     "calib_samples=%lld seq_len=%lld shuffle_seed=%llu batch=%lld "
                     "layers_per_shard=%d blas_threads=%d ignore=",
                     (long long)a->calib_samples, (long long)a->seq_len,
                     (unsigned long long)a->shuffle_seed, (long long)a->batch, a->layers_per_shard,
                     a->blas_threads);
  for (int i = 0; i < a->n_ignore && len > 0 && len < (int)sizeof opts; i++)
    len += snprintf(opts + len, sizeof opts - (size_t)len, "%s;", a->ignore[i]);
  sq_resume_inputs in = {.model_dir = a->model, .recipe_path = a->recipe, .scheme_text = scheme,
                         .calib_path = a->calib, .ranks = j->ranks, .options_text = opts};
  return sq_qckpt_decide(&j->ck, &in, (int)j->model.info.n_layers, a->out, a->force);
}

/* After the first layer is known on every rank: the first layer's inputs,
 * from the embeddings (and rank 0 writes the head part) or, resuming, from
 * this rank's state file. */
static sq_status sq_q_start(sq_qjob *j) {
  const sq_model_info *mi = &j->model.info;
  SQ_CHECK(sq_qckpt_start(&j->ck, j->a.out, (const char *const *)j->files, j->n_files));
  if (j->ck.first_layer >= mi->n_layers) return SQ_OK; /* all committed: publish */
  if (j->ck.first_layer > 0) return sq_qckpt_load_state(&j->ck, j->s0, &j->acts);
  j->embed = malloc((size_t)(mi->vocab * mi->hidden) * sizeof(float));
  if (!j->embed) return sq_error_set(SQ_ERR_NOMEM, "out of memory for the embedding table");
  SQ_CHECK(sq_model_read_f32(&j->model, "model.embed_tokens.weight", j->embed,
                             (uint64_t)(mi->vocab * mi->hidden)));
  SQ_CHECK(sq_acts_embed(&j->acts, j->calib.ids + j->s0 * j->calib.T, j->embed, mi->vocab));
  free(j->embed);
  j->embed = NULL;
  if (j->rank == 0) SQ_CHECK(sq_q_write_head_shard(j));
  return SQ_OK;
}

/* Layer l is done on every rank (its shard parts committed): publish the
 * state files, commit the layer in the journal, then stop here if any rank
 * was asked to (quantize_ckpt.h has the protocol). */
static sq_status sq_q_commit(sq_qjob *j, int l) {
  int total = (int)j->model.info.n_layers;
  const char *parts[2] = {l == 0 ? j->files[0] : NULL, j->files[1 + l]};
  char *mine = NULL, *all = NULL;
  size_t len = 0, all_len = 0;
  SQ_Q_STEP(j, sq_qckpt_layer_files(&j->ck, l, total, &j->acts, j->s0, parts, 2, &mine, &len));
  SQ_Q_STEP(j, sq_comm_failpoint(j->comm, "before-journal"));
  sq_status st = sq_qout_gather_lists(j->comm, mine, len, &all, &all_len);
  free(mine);
  if (st != SQ_OK) {
    j->broken = 1;
    return st;
  }
  st = j->rank == 0 ? sq_qckpt_commit(&j->ck, l, all, all_len) : SQ_OK;
  free(all);
  SQ_Q_STEP(j, st);
  SQ_Q_STEP(j, sq_comm_failpoint(j->comm, "after-journal"));
  SQ_Q_STEP(j, sq_qckpt_prune(&j->ck, l));
  sq_qckpt_test_pause(&j->ck);
  int64_t stop = sq_stop_requested();
  SQ_Q_COLL(j, sq_comm_allreduce_sum_i64(j->comm, &stop, 1, "stop request"));
  if (stop > 0 && l + 1 < total)
    return sq_error_set(SQ_ERR_STOPPED,
                        "stopped at a safe point after layer %d of %d (%s on %lld rank%s): resume "
                        "with --checkpoint-dir %s --resume",
                        l, total, sq_stop_signal() == SIGTERM ? "SIGTERM" : "SIGUSR1", (long long)stop,
                        stop > 1 ? "s" : "", j->ck.dir);
  return SQ_OK;
}

/* Everything before the first layer, on every rank (rank 0 also prepares the
 * output directory). Local work: agreed after. */
static sq_status sq_q_setup(sq_qjob *j) {
  sq_qplan_args *a = &j->a;
  SQ_CHECK(sq_model_open(a->model, 0, &j->model));
  const sq_model_info *mi = &j->model.info;
  if (j->rank == 0) SQ_CHECK(sq_q_decide(j));
  SQ_CHECK(sq_qplan_build(a, &j->model, &j->plan));
  SQ_CHECK(sq_calib_load(a->calib, a->calib_samples > 0 ? a->calib_samples : 128, a->seq_len,
                         a->shuffle_seed, &j->calib));
  SQ_CHECK(sq_q_distribute(j));
  if (!a->quiet && j->rank == 0)
    sq_log_info("quantize %s: %lld layers, hidden %lld, %s, %lld samples x %lld tokens, %d rank%s",
                a->model, (long long)mi->n_layers, (long long)mi->hidden, j->plan.summary,
                (long long)j->calib.n, (long long)j->calib.T, j->ranks, j->ranks > 1 ? "s" : "");

  /* Activations of this rank's samples at the first layer's input. */
  int64_t n = j->s1 - j->s0;
  char *spill = NULL;
  if (a->spill_dir) {
    char fname[64];
    snprintf(fname, sizeof fname, "shardq-acts-rank%d.h5", j->rank);
    spill = sq_fs_join(a->spill_dir, fname);
  }
  sq_status st = sq_acts_init(&j->acts, n, j->calib.T, mi->hidden, spill);
  free(spill);
  SQ_CHECK(st);

  SQ_CHECK(sq_model_rope_init(mi, j->calib.T, &j->rope));
  sq_fwd_layer_cfg cfg = sq_model_fwd_cfg(mi, &j->rope);
  int64_t batch = a->batch > 0 ? a->batch : 8;
  if (batch > n) batch = n;
  SQ_CHECK(sq_acts_runner_init(&j->runner, &cfg, batch, j->calib.T));
  SQ_CHECK(sq_layer_buf_init(&j->buf, mi));
  int n_opts;
  const sq_lq_opts *opts = sq_qplan_all_opts(&j->plan, &n_opts);
  SQ_CHECK(sq_lq_init(&j->lq, mi, opts, n_opts));
  if (j->plan.smooth_attn || j->plan.smooth_mlp) {
    SQ_CHECK(sq_smooth_init(&j->smooth, mi->hidden, j->plan.smooth_alpha, j->plan.smooth_attn,
                            j->plan.smooth_mlp));
    j->smoothing = 1;
    j->svec = malloc((size_t)mi->hidden * sizeof(float));
    if (!j->svec) return sq_error_set(SQ_ERR_NOMEM, "out of memory for SmoothQuant scales");
  }

  /* Parts: 0 = everything outside the decoder layers (rank 0), then layer
   * groups; each rank names only the parts it writes. */
  int per = a->layers_per_shard > 0 ? a->layers_per_shard : 1;
  int n_groups = (int)((mi->n_layers + per - 1) / per);
  j->n_files = 1 + n_groups;
  j->files = calloc((size_t)j->n_files, sizeof *j->files);
  if (!j->files) return sq_error_set(SQ_ERR_NOMEM, "out of memory");
  for (int k = 0; k < j->n_files; k++) {
    int first = (k - 1) * per, last = first + per - 1;
    if (last >= mi->n_layers) last = (int)mi->n_layers - 1;
    if (k == 0 ? j->rank != 0 : !sq_qjob_writes_group(j, first, last)) continue;
    j->files[k] = malloc(64);
    if (!j->files[k]) return sq_error_set(SQ_ERR_NOMEM, "out of memory");
    if (j->ranks == 1) sq_qout_shard_name(j->files[k], 64, k + 1, j->n_files);
    else sq_qout_rank_shard_name(j->files[k], 64, j->rank, j->ranks, k);
  }

  if (a->dump_dequant && j->rank == 0) {
    SQ_CHECK(sq_st_writer_create(a->dump_dequant, &j->dump));
    for (int l = 0; l < mi->n_layers; l++)
      for (int m = 0; m < SQ_MOD_COUNT; m++) {
        char name[176];
        snprintf(name, sizeof name, "model.layers.%d.%s", l, sq_model_module_suffix(m));
        if (!sq_qplan_module(&j->plan, l, m)->process) continue;
        int64_t shape[2];
        sq_model_module_shape(mi, m, &shape[0], &shape[1]);
        strcat(name, ".weight");
        SQ_CHECK(sq_st_writer_declare(j->dump, name, SQ_DTYPE_F32, 2, shape));
      }
  }
  return SQ_OK;
}

/* Rank 0: config.json, tokenizer files and the index over every rank's
 * parts (the index goes last: its presence marks a complete output). */
static sq_status sq_q_publish(sq_qjob *j, const char *list, size_t len) {
  SQ_CHECK(sq_qout_copy_aux(j->a.model, j->a.out));
  SQ_CHECK(sq_model_info_save(&j->model.info, &j->plan.ct, j->a.out));
  return sq_qout_write_index_list(j->a.out, list, len);
}

static sq_status sq_q_run(sq_qjob *j) {
  double t_start = sq_time_now();
  /* OpenBLAS picks its thread count from the CPU affinity (mpirun binds, srun
   * may not), and sgemm/ssyrk results change with it: fix it so that a run
   * and its resumption on another node give the same bytes. */
  sq_kernels_set_threads(j->a.blas_threads);
  SQ_Q_STEP(j, sq_q_setup(j));
  const sq_model_info *mi = &j->model.info;
  int per = j->a.layers_per_shard > 0 ? j->a.layers_per_shard : 1;
  if (j->ck.dir) {
    int64_t first = j->ck.first_layer;
    SQ_Q_COLL(j, sq_comm_bcast(j->comm, &first, sizeof first, 0, "first layer"));
    j->ck.first_layer = (int)first;
  }
  SQ_Q_STEP(j, sq_q_start(j));
  for (int l = j->ck.first_layer; l < mi->n_layers; l++) {
    double t0 = sq_time_now();
    sq_qckpt_gate_failpoints(&j->ck, l);
    int g = l / per;
    if (l % per == 0) {
      int last = (g + 1) * per - 1;
      if (last >= mi->n_layers) last = (int)mi->n_layers - 1;
      SQ_Q_STEP(j, sq_qjob_open_layer_shard(j, l, last, 1 + g));
    }
    SQ_CHECK(sq_qjob_layer(j, l, t_start));
    if ((l % per == per - 1 || l == mi->n_layers - 1) && j->w) {
      sq_status st = sq_st_writer_commit(j->w);
      sq_st_writer_free(j->w);
      j->w = NULL;
      SQ_Q_STEP(j, st);
    }
    if (j->ck.dir) SQ_CHECK(sq_q_commit(j, l));
    j->layer_s[l] = sq_time_now() - t0;
  }
  if (j->dump) SQ_CHECK(sq_st_writer_commit(j->dump));

  /* Only (tensor, file) names travel to rank 0. */
  char *mine = NULL, *all = NULL;
  size_t len = 0, all_len = 0;
  SQ_Q_STEP(j, sq_qout_list_shards(j->a.out, j->files, j->n_files, &mine, &len));
  sq_status st = sq_qout_gather_lists(j->comm, mine, len, &all, &all_len);
  free(mine);
  if (st != SQ_OK) {
    j->broken = 1;
    return st;
  }
  st = j->rank == 0 ? sq_q_publish(j, all, all_len) : SQ_OK;
  free(all);
  SQ_Q_STEP(j, st);
  SQ_CHECK(sq_q_rank_figures(j));
  if (j->rank == 0) sq_q_summary(j, sq_time_now() - t_start);
  return SQ_OK;
}

/* Started by mpirun (Open MPI) or srun --mpi=pmix: one MPI job. */
static int sq_q_under_launcher(void) {
  return getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMIX_RANK") || getenv("PMI_RANK");
}

int sq_cmd_quantize(int argc, char **argv) {
  for (int i = 1; i < argc; i++)
    if (sq_cli_is_help(argv[i])) {
      sq_qcli_print_usage(stdout);
      return SQ_EXIT_OK;
    }
  sq_qjob *j = calloc(1, sizeof *j);
  if (!j) return SQ_EXIT_ERROR;
  sq_qplan_args_default(&j->a);
  sq_comm single = sq_comm_single(), *mpi = NULL;
  j->comm = &single;
  if (sq_q_under_launcher()) {
    sq_status st = sq_comm_init_mpi(NULL, NULL, &mpi);
    if (st != SQ_OK) {
      free(j);
      return sq_cli_report("quantize", st, -1);
    }
    j->comm = mpi;
  }
  j->rank = sq_comm_rank(j->comm);
  j->ranks = sq_comm_size(j->comm);
  if (j->ranks > 1) sq_log_set_rank(j->rank);
  int code;
  if (!sq_qcli_parse(argc, argv, j->rank == 0, &j->a, &j->flags)) {
    code = SQ_EXIT_USAGE; /* every rank parsed the same arguments */
    goto done;
  }
  sq_qckpt_init(&j->ck, j->flags.ckpt_dir, j->flags.resume, j->rank, j->ranks);
  /* Only a job that can resume stops at a safe point; others die as usual. */
  if (j->ck.dir && sq_stop_install() != SQ_OK) {
    code = sq_cli_report("quantize", SQ_ERR_IO, j->rank);
    goto done;
  }
  if (j->a.quiet || j->rank != 0) sq_log_set_level(SQ_LOG_WARN);
  if (j->rank != 0) j->a.quiet = 1;
  /* MoE checkpoints run their own layer loop (quantize_moe.h). */
  int moe = 0;
  sq_qmoe_detect(j->a.model, &moe);
  sq_status st;
  if (moe && j->ck.dir)
    st = sq_error_set(SQ_ERR_UNSUPPORTED, "%s: --checkpoint-dir is not supported for MoE models "
                      "yet -- hint: run without it", j->a.model);
  else if (moe)
    st = sq_qmoe_run(&j->a, j->comm, !j->flags.moe_routed, &j->broken);
  else
    st = sq_q_run(j);
  if (st != SQ_OK && j->broken) {
    /* A collective failed: peers may be stuck in it; end the whole job. */
    sq_cli_report("quantize", st, j->rank);
    sq_comm_abort(j->comm, SQ_EXIT_ERROR);
  }
  if (j->ranks == 1 || j->rank == 0) code = sq_cli_report("quantize", st, -1);
  else code = st == SQ_OK ? SQ_EXIT_OK : st == SQ_ERR_ARG ? SQ_EXIT_USAGE
                  : st == SQ_ERR_STOPPED ? SQ_EXIT_REQUEUE : SQ_EXIT_ERROR;
  if (st == SQ_ERR_STOPPED && j->rank == 0) fprintf(stderr, "shardq quantize: %s\n", sq_error_message());
done:
  sq_stop_uninstall();
  sq_qckpt_free(&j->ck);
  if (j->w) sq_st_writer_free(j->w);
  if (j->dump) sq_st_writer_free(j->dump);
  for (int k = 0; k < j->n_files; k++) free(j->files[k]);
  free(j->files);
  free(j->embed);
  free(j->owner);
  free(j->layer_s);
  sq_lq_free(&j->lq);
  if (j->smoothing) sq_smooth_free(&j->smooth);
  free(j->svec);
  sq_layer_buf_free(&j->buf);
  sq_acts_runner_free(&j->runner);
  sq_acts_free(&j->acts, 0);
  sq_fwd_rope_free(&j->rope);
  sq_calib_free(&j->calib);
  sq_qplan_free(&j->plan);
  sq_model_close(&j->model);
  free(j);
  sq_comm_free(mpi);
  return code;
}

