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
 * 0's journal commit; SIGTERM/SIGUSR1 stop the job after a commit (exit 75). */
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/fsio.h"
#include "common/log.h"
#include "coordinator/cli.h"
#include "coordinator/quantize_ckpt.h"
#include "coordinator/quantize_output.h"
#include "coordinator/quantize_moe.h"
#include "coordinator/quantize_plan.h"
#include "coordinator/stop_signal.h"
#include "kernels/threads.h"
#include "sharding/checkpoint.h"
#include "worker/activations.h"
#include "worker/calib.h"
#include "worker/layer_quant.h"
#include "worker/model.h"
#include "worker/smoothquant.h"

static void sq_quantize_usage(FILE *f) {
  fprintf(f,
          "usage: shardq quantize --model DIR --calib CALIB.safetensors --out OUTDIR [options]\n\n"
          "Calibrates and quantizes a checkpoint layer by layer and writes a\n"
          "compressed-tensors checkpoint: model.safetensors.index.json, config.json with\n"
          "quantization_config, the tokenizer/generation files and the shards. On one process:\n"
          "OUTDIR/model-0000k-of-0000N.safetensors (shard 1: embeddings, final norm, lm_head;\n"
          "then one shard per --layers-per-shard layers).\n"
          "As one MPI job (mpirun -np N / srun --mpi=pmix shardq quantize ...): every rank\n"
          "forwards its share of the calibration samples, each module has one owner rank (the\n"
          "plan of `shardq plan`) that solves it and writes it to its own part,\n"
          "model-rank0000r-of-0000N-part0000k.safetensors (part 0: embeddings etc., rank 0;\n"
          "part 1+g: layer group g). Any rank's error is reported by rank 0 as\n"
          "\"rank R (host): cause\"; every collective has a deadline (SHARDQ_COMM_TIMEOUT s).\n"
          "lm_head is never quantized; embeddings, norms and biases pass through unchanged.\n\n"
          "options (defaults in brackets):\n"
          "  --model DIR            input checkpoint (config.json + safetensors)\n"
          "  --calib FILE           int32 input_ids [samples, seq_len] (safetensors)\n"
          "  --out DIR              output directory (must not be --model; empty unless --force)\n"
          "  --force                write into a non-empty --out\n"
          "  --scheme S             W4A16 | W4A16_ASYM | W8A16 | W8A8 | FP8 | FP8_DYNAMIC [W4A16]\n"
          "  --recipe FILE          llm-compressor YAML recipe, resolved per module (instead of\n"
          "                         --scheme/--method and their flags): GPTQ/SparseGPT/\n"
          "                         QuantizationModifier in order, SmoothQuant (folded into the\n"
          "                         norms written out), static fp8 input_scale, kv-cache\n"
          "                         k_scale/v_scale; see recipes/*.yaml\n"
          "  --method M             gptq | rtn | sparsegpt [gptq]\n"
          "  --bits N               weight bits (overrides the scheme)\n"
          "  --group N              group size; 0 = per output channel (overrides the scheme)\n"
          "  --sym | --asym         symmetric or asymmetric weights (overrides the scheme)\n"
          "  --actorder [group|weight]  GPTQ activation order [off; bare flag = weight]\n"
          "  --damp F               GPTQ/SparseGPT dampening fraction [0.01]\n"
          "  --block N              GPTQ/SparseGPT block size [128]\n"
          "  --sparsity P           SparseGPT unstructured sparsity [0.5]\n"
          "  --mask N:M             SparseGPT N:M mask, e.g. 2:4 (instead of --sparsity)\n"
          "  --no-quant             SparseGPT: prune only, weights stay dense\n"
          "  --ignore NAME          leave a module dense (exact name or re:REGEX; repeatable)\n"
          "  --calib-samples N      calibration samples [128, or all if fewer]\n"
          "  --seq-len T            truncate samples to T tokens [full]\n"
          "  --shuffle-seed S       0 = take the first N rows; else a seeded shuffle [0]\n"
          "  --batch N              samples per forward batch (bounds memory) [8]\n"
          "  --layers-per-shard K   decoder layers per output shard [1]\n"
          "  --spill-dir DIR        keep activations in an HDF5 file there, not in memory\n"
          "  --blas-threads N       OpenBLAS threads per rank [1]; results depend on it, so it\n"
          "                         is fixed rather than taken from the CPU affinity\n"
          "  -q, --quiet            no progress lines (errors and the summary only)\n\n"
          "MoE models (mixtral, qwen2_moe, qwen3_moe, deepseek_v3 incl. fp8 block-scaled\n"
          "weights, dequantized on load): experts run expert-parallel (tokens all-to-all to\n"
          "each expert's owner rank); every routed expert, the shared expert(s) and attention\n"
          "are quantized, routers stay dense; the summary reports tokens per expert per layer.\n"
          "They take --scheme W4A16 | W4A16_ASYM | W8A16 with --method gptq | rtn (no recipe,\n"
          "--ignore or --checkpoint-dir yet).\n"
          "  --moe-routed-only      expert Hessians from the tokens routed to each expert only\n"
          "                         (default: from all tokens, as llm-compressor); an expert\n"
          "                         with fewer than 16 tokens then falls back to RTN (warned)\n\n"
          "checkpoint-restart (what `shardq submit` uses):\n"
          "  --checkpoint-dir DIR   after each layer, every rank publishes its shard part and\n"
          "                         an HDF5 file of its samples' hidden states in DIR, and rank 0\n"
          "                         commits the layer in DIR/journal.json (needs\n"
          "                         --layers-per-shard 1). SIGTERM/SIGUSR1 then stop the job\n"
          "                         after the next commit with exit 75 (requeue me).\n"
          "  --resume               continue the job journaled in --checkpoint-dir (inputs,\n"
          "                         options and rank count must be unchanged: a change is\n"
          "                         refused, naming it); start fresh when DIR has no journal\n\n"
          "Progress on stderr: layer i/N  module  loss  s/layer  ETA; a summary table at the end.\n"
          "Two runs with the same inputs and rank count write byte-identical files, also when\n"
          "one of them was stopped or killed and resumed.\n"
          "exit: 0 done, 1 error, 2 usage error, 75 stopped at a safe point (resume it)\n");
}

/* Per module-kind totals for the summary table. */
typedef struct {
  double loss, seconds;
  uint64_t bytes_in, bytes_out;
  int count, has_loss;
} sq_qsum;

/* Command-line errors are printed by rank 0 only (every rank parses the same
 * arguments and fails the same way). */
static int sq_q_loud = 1;
/* --moe-routed-only: moe_calib's all-tokens mode off (MoE models). */
static int sq_q_moe_routed;

static int sq_q_arg(int argc, char **argv, int *i, const char **val) {
  if (*i + 1 >= argc) {
    if (sq_q_loud) fprintf(stderr, "shardq quantize: %s needs a value (see --help)\n", argv[*i]);
    return 0;
  }
  *val = argv[++*i];
  return 1;
}

/* Checkpoint-restart flags (not part of the plan's arguments). */
typedef struct {
  const char *dir;
  int resume;
} sq_q_ckflags;

static int sq_q_parse(int argc, char **argv, sq_qplan_args *a, sq_q_ckflags *ck) {
  for (int i = 1; i < argc; i++) {
    const char *s = argv[i], *v = NULL;
#define SQ_VAL() \
  if (!sq_q_arg(argc, argv, &i, &v)) return 0
    if (!strcmp(s, "--model")) { SQ_VAL(); a->model = v; }
    else if (!strcmp(s, "--calib")) { SQ_VAL(); a->calib = v; }
    else if (!strcmp(s, "--out")) { SQ_VAL(); a->out = v; }
    else if (!strcmp(s, "--force")) a->force = 1;
    else if (!strcmp(s, "--scheme")) { SQ_VAL(); a->scheme = v; }
    else if (!strcmp(s, "--recipe")) { SQ_VAL(); a->recipe = v; }
    else if (!strcmp(s, "--method")) { SQ_VAL(); a->method = v; }
    else if (!strcmp(s, "--bits")) { SQ_VAL(); a->bits = atoi(v); }
    else if (!strcmp(s, "--group")) { SQ_VAL(); a->group = atoi(v); a->group_set = 1; }
    else if (!strcmp(s, "--sym")) a->sym = 1;
    else if (!strcmp(s, "--asym")) a->sym = 0;
    else if (!strcmp(s, "--actorder")) {
      a->actorder = "weight";
      if (i + 1 < argc && (!strcmp(argv[i + 1], "group") || !strcmp(argv[i + 1], "weight")))
        a->actorder = argv[++i];
    }
    else if (!strcmp(s, "--damp")) { SQ_VAL(); a->damp = atof(v); }
    else if (!strcmp(s, "--block")) { SQ_VAL(); a->block = atoll(v); }
    else if (!strcmp(s, "--sparsity")) { SQ_VAL(); a->sparsity = atof(v); }
    else if (!strcmp(s, "--mask")) { SQ_VAL(); a->mask = v; }
    else if (!strcmp(s, "--no-quant")) a->no_quant = 1;
    else if (!strcmp(s, "--ignore")) {
      SQ_VAL();
      if (a->n_ignore < SQ_QPLAN_MAX_IGNORE) a->ignore[a->n_ignore++] = v;
    }
    else if (!strcmp(s, "--calib-samples")) { SQ_VAL(); a->calib_samples = atoll(v); }
    else if (!strcmp(s, "--seq-len")) { SQ_VAL(); a->seq_len = atoll(v); }
    else if (!strcmp(s, "--shuffle-seed")) { SQ_VAL(); a->shuffle_seed = strtoull(v, NULL, 10); }
    else if (!strcmp(s, "--batch")) { SQ_VAL(); a->batch = atoll(v); }
    else if (!strcmp(s, "--layers-per-shard")) { SQ_VAL(); a->layers_per_shard = atoi(v); }
    else if (!strcmp(s, "--spill-dir")) { SQ_VAL(); a->spill_dir = v; }
    else if (!strcmp(s, "--blas-threads")) {
      SQ_VAL();
      a->blas_threads = atoi(v);
      if (a->blas_threads < 1 || a->blas_threads > 1024) {
        fprintf(stderr, "shardq quantize: --blas-threads must be 1..1024 (got '%s')\n", v);
        return 0;
      }
    }
    else if (!strcmp(s, "--dump-dequant")) { SQ_VAL(); a->dump_dequant = v; } /* tests */
    else if (!strcmp(s, "-q") || !strcmp(s, "--quiet")) a->quiet = 1;
    else if (!strcmp(s, "--checkpoint-dir")) { SQ_VAL(); ck->dir = v; }
    else if (!strcmp(s, "--resume")) ck->resume = 1;
    else if (!strcmp(s, "--moe-routed-only")) sq_q_moe_routed = 1;
    else {
      if (sq_q_loud) fprintf(stderr, "shardq quantize: unknown option '%s' (see --help)\n", s);
      return 0;
    }
#undef SQ_VAL
  }
  if (!a->model || !a->calib || !a->out) {
    if (sq_q_loud)
      fprintf(stderr, "shardq quantize: --model, --calib and --out are required (see --help)\n");
    return 0;
  }
  const char *bad = NULL;
  if (ck->resume && !ck->dir) bad = "--resume needs --checkpoint-dir DIR";
  else if (ck->dir && a->layers_per_shard > 1)
    bad = "--checkpoint-dir commits layer by layer: it needs --layers-per-shard 1";
  else if (ck->dir && a->dump_dequant) bad = "--dump-dequant cannot be resumed: drop --checkpoint-dir";
  if (bad) {
    if (sq_q_loud) fprintf(stderr, "shardq quantize: %s (see --help)\n", bad);
    return 0;
  }
  return 1;
}

/* The whole job state, freed in one place. */
typedef struct {
  sq_qplan_args a;
  sq_q_ckflags ckf;
  sq_qckpt ck;    /* checkpoint-restart (ck.dir NULL: off) */
  const sq_comm *comm;
  int rank, ranks;
  int broken;     /* a collective failed: the communicator is unusable */
  sq_model model;
  sq_qplan plan;
  sq_calib calib;
  int64_t s0, s1; /* this rank's calibration samples [s0, s1) */
  int *owner;     /* (n_layers, SQ_MOD_COUNT) owner rank of each module */
  sq_acts acts;
  sq_acts_runner runner;
  sq_layer_buf buf;
  sq_lq lq;
  sq_smooth smooth;
  int smoothing;
  float *svec;  /* (hidden) SmoothQuant scales */
  sq_rope rope;
  sq_st_writer *w, *dump;
  char **files;   /* [n_files] parts this rank writes (NULL: none) */
  int n_files;
  float *embed;
  double *layer_s; /* [n_layers] this rank's seconds per layer */
  sq_qsum sum[SQ_MOD_COUNT];
} sq_qjob;

#define SQ_Q_OWNER(j, l, m) ((j)->owner[(size_t)(l) * SQ_MOD_COUNT + (size_t)(m)])

/* End a step: every rank learns whether any rank failed in it; a failure
 * anywhere becomes the same error on every rank, "rank R (host): cause". One
 * rank: the local status as it is. */
static sq_status sq_q_agree(sq_qjob *j, sq_status local) {
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

/* A collective: its failure (timeout, dead peer) leaves no usable communicator. */
#define SQ_Q_COLL(j, call)        \
  do {                            \
    sq_status st_ = (call);       \
    if (st_ != SQ_OK) {           \
      (j)->broken = 1;            \
      return st_;                 \
    }                             \
  } while (0)
/* A local step followed by its agreement. */
#define SQ_Q_STEP(j, call) SQ_CHECK(sq_q_agree((j), (call)))

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

/* Write n fp32 values as tensor name in dtype dt (declared so). */
static sq_status sq_q_write_f32_as(sq_st_writer *w, const char *name, const float *x, size_t n,
                                   sq_dtype dt) {
  void *tmp = malloc(n * sq_dtype_size(dt));
  if (!tmp) return sq_error_set(SQ_ERR_NOMEM, "%s: out of memory converting the tensor", name);
  sq_dtype_convert_from_f32(dt, x, tmp, n);
  sq_status st = sq_st_writer_write(w, name, tmp);
  free(tmp);
  return st;
}

/* "self_attn.q_proj.weight" of layer l -> module index, else -1. */
static int sq_q_module_of(const char *name, int l) {
  for (int m = 0; m < SQ_MOD_COUNT; m++) {
    char full[176];
    snprintf(full, sizeof full, "model.layers.%d.%s.weight", l, sq_model_module_suffix(m));
    if (!strcmp(full, name)) return m;
  }
  return -1;
}

/* The rank that writes tensor `name` of layer l: a Linear's weight, bias and
 * input_scale go with the module's owner; norms and kv scales with q_proj's. */
static int sq_q_writer_of(const sq_qjob *j, const char *name, int l) {
  for (int m = 0; m < SQ_MOD_COUNT; m++) {
    char pre[160];
    int n = snprintf(pre, sizeof pre, "model.layers.%d.%s.", l, sq_model_module_suffix(m));
    if (!strncmp(name, pre, (size_t)n)) return SQ_Q_OWNER(j, l, m);
  }
  return SQ_Q_OWNER(j, l, SQ_MOD_Q);
}

/* Does this rank write any tensor of layers [first, last]? */
static int sq_q_writes_group(const sq_qjob *j, int first, int last) {
  const sq_model_info *mi = &j->model.info;
  for (size_t i = 0; i < mi->n_tensors; i++) {
    const sq_model_tensor *t = &mi->tensors[i];
    if (t->layer >= first && t->layer <= last && sq_q_writer_of(j, t->name, t->layer) == j->rank)
      return 1;
  }
  return 0;
}

/* Open layer group k's shard writer (this rank's part) and declare every
 * tensor of its layers that this rank writes, plus the calibrated scales
 * (input_scale, k_scale, v_scale: shape [1] in the model's dtype, as
 * compressed-tensors registers them). */
static sq_status sq_q_open_layer_shard(sq_qjob *j, int first, int last, int k) {
  if (!j->files[k]) return SQ_OK;
  char *path = sq_fs_join(j->a.out, j->files[k]);
  sq_status st = path ? sq_st_writer_create(path, &j->w) : SQ_ERR_NOMEM;
  free(path);
  SQ_CHECK(st);
  const sq_model_info *mi = &j->model.info;
  const sq_qplan *p = &j->plan;
  int64_t one[1] = {1};
  for (size_t i = 0; i < mi->n_tensors; i++) {
    const sq_model_tensor *t = &mi->tensors[i];
    if (t->layer < first || t->layer > last) continue;
    if (sq_q_writer_of(j, t->name, t->layer) != j->rank) continue;
    int m = t->role == SQ_MT_LINEAR ? sq_q_module_of(t->name, (int)t->layer) : -1;
    const sq_qplan_mod *pm = m >= 0 ? sq_qplan_module(p, (int)t->layer, m) : NULL;
    if (pm && pm->process) {
      char mod[160];
      snprintf(mod, sizeof mod, "%.*s", (int)(strlen(t->name) - 7), t->name);
      sq_lq_set_opts(&j->lq, &pm->lq);
      SQ_CHECK(sq_lq_declare(&j->lq, j->w, mod, t->shape[0], t->shape[1]));
      if (pm->input_scale) {
        char iname[192];
        snprintf(iname, sizeof iname, "%s.input_scale", mod);
        SQ_CHECK(sq_st_writer_declare(j->w, iname, p->dtype, 1, one));
      }
    } else {
      SQ_CHECK(sq_qout_declare_raw(j->w, j->model.ckpt, t->name));
    }
  }
  for (int l = first; p->kv_cache && l <= last; l++) {
    if (SQ_Q_OWNER(j, l, SQ_MOD_Q) != j->rank) continue;
    for (int kv = 0; kv < 2; kv++) {
      char name[96];
      snprintf(name, sizeof name, "model.layers.%d.self_attn.%s", l, kv ? "v_scale" : "k_scale");
      SQ_CHECK(sq_st_writer_declare(j->w, name, p->dtype, 1, one));
    }
  }
  return SQ_OK;
}

/* SmoothQuant for layer l: observe the norms' outputs over this rank's
 * calibration samples (agreed, then min/max-reduced over ranks), fold the
 * scales into the norms and balance layers, then round the changed tensors to
 * the checkpoint dtype (what is written and what the rest of the layer's
 * calibration sees). Every rank computes the same scales from the same data. */
static sq_status sq_q_smooth_layer(sq_qjob *j, int l, const sq_fwd_layer_cfg *cfg) {
  static const int bal[SQ_SMOOTH_COUNT][3] = {{SQ_MOD_Q, SQ_MOD_K, SQ_MOD_V},
                                              {SQ_MOD_GATE, SQ_MOD_UP, -1}};
  const sq_model_info *mi = &j->model.info;
  char label[96];
  snprintf(label, sizeof label, "model.layers.%d (SmoothQuant)", l);
  j->smooth.label = label;
  sq_smooth_reset(&j->smooth);
  sq_fwd_hooks hooks = sq_smooth_hooks(&j->smooth);
  sq_fwd_layer_weights w = sq_layer_buf_weights(&j->buf);
  SQ_Q_STEP(j, sq_acts_forward(&j->acts, &j->runner, cfg, &w, &hooks, 0));
  for (int k = 0; k < SQ_SMOOTH_COUNT && j->ranks > 1; k++) {
    if (!j->smooth.enabled[k]) continue;
    sq_smooth_range *r = &j->smooth.r[k];
    SQ_Q_COLL(j, sq_comm_allreduce_max_f32(j->comm, r->mx, r->d, label));
    for (int64_t c = 0; c < r->d; c++) r->mn[c] = -r->mn[c]; /* min = -max(-x): exact */
    SQ_Q_COLL(j, sq_comm_allreduce_max_f32(j->comm, r->mn, r->d, label));
    for (int64_t c = 0; c < r->d; c++) r->mn[c] = -r->mn[c];
    SQ_Q_COLL(j, sq_comm_allreduce_sum_i64(j->comm, &r->rows, 1, label));
  }
  sq_dtype dt = j->plan.dtype;
  for (int k = 0; k < SQ_SMOOTH_COUNT; k++) {
    if (!j->smooth.enabled[k]) continue;
    float *W[3];
    int64_t d_out[3], d_in;
    int n = 0;
    for (int b = 0; b < 3 && bal[k][b] >= 0; b++, n++) {
      W[b] = j->buf.mod[bal[k][b]];
      sq_model_module_shape(mi, bal[k][b], &d_out[b], &d_in);
    }
    float *norm = k == SQ_SMOOTH_ATTN ? j->buf.attn_norm : j->buf.mlp_norm;
    SQ_Q_STEP(j, sq_smooth_scales(&j->smooth.r[k], (const float *const *)W, d_out, n,
                                  j->smooth.alpha, j->svec, label));
    sq_smooth_apply(norm, W, d_out, n, mi->hidden, j->svec);
    for (int64_t c = 0; c < mi->hidden; c++) norm[c] = sq_round_to_dtype(norm[c], dt);
    for (int b = 0; b < n; b++)
      for (int64_t e = 0; e < d_out[b] * d_in; e++) W[b][e] = sq_round_to_dtype(W[b][e], dt);
  }
  return SQ_OK;
}

/* The calibrated scales of layer l (after the calibration forward and the
 * observers' max-reduce) that this rank writes. */
static sq_status sq_q_write_scales(sq_qjob *j, int l) {
  const sq_qplan *p = &j->plan;
  for (int m = 0; m < SQ_MOD_COUNT; m++) {
    const sq_qplan_mod *pm = sq_qplan_module(p, l, m);
    if (!pm->process || !pm->input_scale || SQ_Q_OWNER(j, l, m) != j->rank) continue;
    float amax = j->lq.absmax[sq_model_module_group(m)], scale;
    int zp;
    sq_q_params(pm->input_q, -amax, amax, &scale, &zp);
    char name[192];
    snprintf(name, sizeof name, "model.layers.%d.%s.input_scale", l, sq_model_module_suffix(m));
    SQ_CHECK(sq_q_write_f32_as(j->w, name, &scale, 1, p->dtype));
  }
  for (int kv = 0; p->kv_cache && kv < 2 && SQ_Q_OWNER(j, l, SQ_MOD_Q) == j->rank; kv++) {
    float amax = kv ? j->lq.v_absmax : j->lq.k_absmax, scale;
    int zp;
    sq_q_params(p->kv_q, -amax, amax, &scale, &zp);
    char name[96];
    snprintf(name, sizeof name, "model.layers.%d.self_attn.%s", l, kv ? "v_scale" : "k_scale");
    SQ_CHECK(sq_q_write_f32_as(j->w, name, &scale, 1, p->dtype));
  }
  return SQ_OK;
}

/* Norms and Linears the solver does not write (this rank's share): raw
 * bytes, or the smoothed values when SmoothQuant changed them. */
static sq_status sq_q_write_passthrough(sq_qjob *j, int l) {
  const sq_model_info *mi = &j->model.info;
  for (size_t i = 0; i < mi->n_tensors; i++) {
    const sq_model_tensor *t = &mi->tensors[i];
    if (t->layer != l || sq_q_writer_of(j, t->name, l) != j->rank) continue;
    int m = t->role == SQ_MT_LINEAR ? sq_q_module_of(t->name, l) : -1;
    if (m >= 0 && sq_qplan_module(&j->plan, l, m)->process) continue;
    const float *changed = NULL;
    size_t n = (size_t)mi->hidden;
    char an[96], mn[96];
    snprintf(an, sizeof an, "model.layers.%d.input_layernorm.weight", l);
    snprintf(mn, sizeof mn, "model.layers.%d.post_attention_layernorm.weight", l);
    if (j->plan.smooth_attn && !strcmp(t->name, an)) changed = j->buf.attn_norm;
    if (j->plan.smooth_mlp && !strcmp(t->name, mn)) changed = j->buf.mlp_norm;
    if (m >= 0) {
      int attn = m == SQ_MOD_Q || m == SQ_MOD_K || m == SQ_MOD_V;
      int mlp = m == SQ_MOD_GATE || m == SQ_MOD_UP;
      if ((attn && j->plan.smooth_attn) || (mlp && j->plan.smooth_mlp)) {
        int64_t d_out, d_in;
        sq_model_module_shape(mi, m, &d_out, &d_in);
        changed = j->buf.mod[m];
        n = (size_t)(d_out * d_in);
      }
    }
    if (changed) SQ_CHECK(sq_q_write_f32_as(j->w, t->name, changed, n, j->plan.dtype));
    else SQ_CHECK(sq_qout_write_raw(j->w, j->model.ckpt, t->name));
  }
  return SQ_OK;
}

/* Step "load": the layer's norms and biases, and the modules this rank owns. */
static sq_status sq_q_load(sq_qjob *j, int l) {
  SQ_CHECK(sq_comm_failpoint(j->comm, "load"));
  int mine[SQ_MOD_COUNT];
  for (int m = 0; m < SQ_MOD_COUNT; m++) mine[m] = SQ_Q_OWNER(j, l, m) == j->rank;
  return sq_layer_buf_load_parts(&j->buf, &j->model, l, mine);
}

/* Step "solve": the modules this rank owns, written to its shard; the
 * dequantized weight replaces the module's weight here (shared afterwards).
 * stats (SQ_MOD_COUNT, 4): loss, seconds, bytes in, bytes out of each. */
static sq_status sq_q_solve(sq_qjob *j, int l, double *stats) {
  const sq_model_info *mi = &j->model.info;
  SQ_CHECK(sq_comm_failpoint(j->comm, "solve"));
  for (int m = 0; m < SQ_MOD_COUNT; m++) {
    const sq_qplan_mod *pm = sq_qplan_module(&j->plan, l, m);
    if (!pm->process || SQ_Q_OWNER(j, l, m) != j->rank) continue;
    char name[160], wname[176];
    snprintf(name, sizeof name, "model.layers.%d.%s", l, sq_model_module_suffix(m));
    snprintf(wname, sizeof wname, "%s.weight", name);
    sq_lq_set_opts(&j->lq, &pm->lq);
    int64_t d_out, d_in;
    sq_model_module_shape(mi, m, &d_out, &d_in);
    sq_lq_stat stat = {0};
    SQ_CHECK(sq_lq_solve(&j->lq, m, name, j->buf.mod[m],
                         sq_model_tensor_dtype(&j->model, wname), j->w, &stat));
    memcpy(j->buf.mod[m], j->lq.deq, (size_t)(d_out * d_in) * sizeof(float));
    double *s = stats + 4 * m;
    s[0] = stat.loss;
    s[1] = stat.seconds;
    s[2] = (double)stat.bytes_in;
    s[3] = (double)stat.bytes_out;
  }
  return SQ_OK;
}

static void sq_q_progress(const sq_qjob *j, int l, int m, double loss_v, double t_start,
                          double layer_t0) {
  const sq_model_info *mi = &j->model.info;
  double done = sq_time_now() - t_start;
  double per = (l > 0 ? done / l : sq_time_now() - layer_t0 + 1e-9);
  double eta = per * (double)(mi->n_layers - l) - (l > 0 ? 0 : done);
  char loss[32];
  if (isnan(loss_v)) snprintf(loss, sizeof loss, "-");
  else snprintf(loss, sizeof loss, "%.4g", loss_v);
  fprintf(stderr, "layer %d/%lld  %-18s loss %-10s %6.2f s/layer  ETA %.0f s\n", l + 1,
          (long long)mi->n_layers, sq_model_module_suffix(m), loss, per, eta < 0 ? 0 : eta);
}

static sq_status sq_q_layer(sq_qjob *j, int l, double t_start) {
  const sq_model_info *mi = &j->model.info;
  const sq_comm *comm = j->comm;
  sq_fwd_layer_cfg cfg = sq_model_fwd_cfg(mi, &j->rope);
  SQ_Q_STEP(j, sq_q_load(j, l));
  /* The owners' weights to every rank (the forward needs the whole layer). */
  for (int m = 0; m < SQ_MOD_COUNT && j->ranks > 1; m++) {
    int64_t d_out, d_in;
    sq_model_module_shape(mi, m, &d_out, &d_in);
    char name[160];
    snprintf(name, sizeof name, "model.layers.%d.%s (original)", l, sq_model_module_suffix(m));
    SQ_Q_COLL(j, sq_comm_share_f32(comm, j->buf.mod[m], d_out * d_in, SQ_Q_OWNER(j, l, m), name));
  }
  /* 0: SmoothQuant (its own calibration pass) changes the weights first. */
  if (j->smoothing) SQ_CHECK(sq_q_smooth_layer(j, l, &cfg));
  /* 1-2: calibration forward with the layer's unquantized weights: Hessians,
   * activation and kv-cache absmax; Hessian reduce to the groups' owners. */
  sq_lq_begin_layer(&j->lq, l);
  if (sq_qplan_needs_calibration(&j->plan)) {
    sq_fwd_hooks hooks = sq_lq_hooks(&j->lq);
    sq_fwd_layer_weights w = sq_layer_buf_weights(&j->buf);
    sq_status st = sq_comm_failpoint(comm, "hessian");
    if (st == SQ_OK) st = sq_acts_forward(&j->acts, &j->runner, &cfg, &w, &hooks, 0);
    SQ_Q_STEP(j, st);
    SQ_Q_STEP(j, sq_comm_failpoint(comm, "reduce"));
    static const int first_mod[SQ_HG_COUNT] = {SQ_MOD_Q, SQ_MOD_O, SQ_MOD_GATE, SQ_MOD_DOWN};
    int gowner[SQ_HG_COUNT];
    for (int g = 0; g < SQ_HG_COUNT; g++) gowner[g] = SQ_Q_OWNER(j, l, first_mod[g]);
    SQ_Q_COLL(j, sq_lq_reduce(&j->lq, comm, gowner));
    SQ_Q_COLL(j, sq_lq_reduce_observers(&j->lq, comm));
  }
  sq_status st = sq_comm_failpoint(comm, "write");
  if (st == SQ_OK) st = sq_q_write_scales(j, l);
  if (st == SQ_OK) st = sq_q_write_passthrough(j, l);
  SQ_Q_STEP(j, st);
  /* 3: each owner solves its modules and writes them to its shard. */
  double layer_t0 = sq_time_now();
  double stats[SQ_MOD_COUNT * 4] = {0};
  SQ_Q_STEP(j, sq_q_solve(j, l, stats));
  /* 4: the dequantized weights from their owners to every rank. */
  SQ_Q_STEP(j, sq_comm_failpoint(comm, "share"));
  for (int m = 0; m < SQ_MOD_COUNT; m++) {
    if (!sq_qplan_module(&j->plan, l, m)->process) continue;
    int64_t d_out, d_in;
    sq_model_module_shape(mi, m, &d_out, &d_in);
    char name[160];
    snprintf(name, sizeof name, "model.layers.%d.%s", l, sq_model_module_suffix(m));
    SQ_Q_COLL(j, sq_comm_share_f32(comm, j->buf.mod[m], d_out * d_in, SQ_Q_OWNER(j, l, m), name));
  }
  /* Each module's figures from its owner (only its slot is non-zero). */
  SQ_Q_COLL(j, sq_comm_reduce_sum_f64(comm, stats, SQ_MOD_COUNT * 4, 0, "module figures"));
  st = SQ_OK;
  for (int m = 0; m < SQ_MOD_COUNT && j->rank == 0; m++) {
    if (!sq_qplan_module(&j->plan, l, m)->process) continue;
    if (j->dump && st == SQ_OK) {
      char wname[176];
      snprintf(wname, sizeof wname, "model.layers.%d.%s.weight", l, sq_model_module_suffix(m));
      st = sq_st_writer_write_f32(j->dump, wname, j->buf.mod[m]);
    }
    const double *s = stats + 4 * m;
    sq_qsum *q = &j->sum[m];
    q->seconds += s[1];
    q->bytes_in += (uint64_t)s[2];
    q->bytes_out += (uint64_t)s[3];
    q->count++;
    if (!isnan(s[0])) {
      q->loss += s[0];
      q->has_loss = 1;
    }
    if (!j->a.quiet) sq_q_progress(j, l, m, s[0], t_start, layer_t0);
  }
  SQ_Q_STEP(j, st);
  /* 5: the quantized layer's outputs are the next layer's inputs. */
  if (l + 1 < mi->n_layers) {
    sq_fwd_layer_weights w = sq_layer_buf_weights(&j->buf);
    st = sq_acts_forward(&j->acts, &j->runner, &cfg, &w, NULL, 1);
    if (st == SQ_OK) st = sq_acts_set_layer(&j->acts, l + 1);
    SQ_Q_STEP(j, st);
  }
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
    if (k == 0 ? j->rank != 0 : !sq_q_writes_group(j, first, last)) continue;
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
      SQ_Q_STEP(j, sq_q_open_layer_shard(j, l, last, 1 + g));
    }
    SQ_CHECK(sq_q_layer(j, l, t_start));
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
      sq_quantize_usage(stdout);
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
  sq_q_loud = j->rank == 0;
  int code;
  if (!sq_q_parse(argc, argv, &j->a, &j->ckf)) {
    code = SQ_EXIT_USAGE; /* every rank parsed the same arguments */
    goto done;
  }
  sq_qckpt_init(&j->ck, j->ckf.dir, j->ckf.resume, j->rank, j->ranks);
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
    st = sq_qmoe_run(&j->a, j->comm, !sq_q_moe_routed, &j->broken);
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
