/* shardq quantize-layer: quantize (GPTQ, RTN) or prune (SparseGPT) ONE Linear
 * weight from files, for experiments and comparisons between implementations.
 * W (d_out, d_in) comes from a safetensors file; the Hessian either from a
 * file (d_in, d_in), already divided by the token count, or accumulated here
 * from calibration inputs X (tokens, d_in) with sq_hessian (X is streamed in
 * row chunks, so a large X never sits in memory whole). The output file holds
 * the module's compressed-tensors tensors (pack-quantized, sharding/compressed.h)
 * plus NAME itself = the dequantized (or pruned) weight in F32, and is written
 * atomically (nothing appears at --out on error). With X, the relative output
 * error ||X (W - Q)^T||_F / ||X W^T||_F is reported. */
#include <cblas.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/log.h"
#include "coordinator/cli.h"
#include "kernels/gptq.h"
#include "kernels/hessian.h"
#include "kernels/quant.h"
#include "kernels/sparsegpt.h"
#include "sharding/compressed.h"
#include "sharding/safetensors.h"

#define QL_CHUNK_ELEMS (4u << 20) /* floats of X read per chunk (16 MiB) */

typedef enum ql_method { QL_GPTQ = 0, QL_SPARSEGPT, QL_RTN } ql_method;
static const char *const ql_method_names[] = {"gptq", "sparsegpt", "rtn"};
static const char *const ql_actorder_names[] = {"none", "group", "weight"};

typedef struct ql_opts {
  char *w_path, *w_name; /* --weight FILE:NAME */
  char *h_path, *h_name; /* --hessian FILE[:NAME] (h_name may be NULL) */
  char *x_path, *x_name; /* --inputs FILE[:NAME] */
  const char *out;
  ql_method method;
  int bits, bits_given;
  int group; /* <= 0: per channel */
  sq_actorder actorder;
  int symmetric;
  float damp;
  int64_t block;
  float sparsity;
  int prune_n, prune_m;
  sq_dtype scale_dtype; /* SQ_DTYPE_INVALID: the dtype of W (bf16 if W is not a 16/32-bit float) */
  int json;
  int sparse_given; /* --mask or --sparsity was given */
} ql_opts;

/* Everything one run allocates; freed in ql_free. */
typedef struct ql_run {
  sq_st_file *wf, *hf, *xf;
  const sq_st_tensor *wt, *ht, *xt;
  int64_t d_out, d_in, tokens;
  float *W, *H, *Q; /* (d_out, d_in), (d_in, d_in), (d_out, d_in) */
  int8_t *codes;    /* (d_out, d_in) */
  float *scales;
  int32_t *zp, *g_idx;
  sq_qargs q;
  int quantized, has_g_idx;
  double loss, damp, seconds, rel_err;
  char module[512];
  sq_st_writer *writer;
} ql_run;

static void ql_usage(FILE *f) {
  fprintf(
      f,
      "usage: shardq quantize-layer --weight W.safetensors:NAME\n"
      "         (--hessian H.safetensors[:NAME] | --inputs X.safetensors[:NAME])\n"
      "         --method gptq|sparsegpt|rtn [options] --out Q.safetensors\n\n"
      "Quantizes or prunes one Linear weight W (d_out, d_in), any float dtype, and writes\n"
      "Q.safetensors (atomically) with the module's compressed-tensors tensors, named after\n"
      "NAME without \".weight\": <m>.weight_packed, <m>.weight_scale, <m>.weight_shape, and\n"
      "<m>.weight_zero_point (--asym), <m>.weight_g_idx (--actorder group), as vLLM loads them\n"
      "(format pack-quantized); plus NAME itself = the dequantized weight in F32, to compare\n"
      "implementations. SparseGPT without --bits writes only NAME = the pruned weight (F32).\n"
      "The Hessian is either given as a (d_in, d_in) tensor, already divided by the token\n"
      "count, or accumulated as H = 2/n sum x x^T from inputs X (tokens, d_in) or\n"
      "(samples, seq, d_in), any float dtype. [:NAME] may be left out when the file holds one\n"
      "tensor. rtn needs neither (they only serve the error report).\n"
      "Prints method, shape, the solver's loss (sum (w-q)^2 / U_kk^2 / 2; rtn has none),\n"
      "damping, time and, with --inputs, the relative output error\n"
      "||X (W - Q)^T||_F / ||X W^T||_F, where W is the original weight and Q the output NAME.\n\n"
      "options:\n"
      "  --weight FILE:NAME      the weight tensor (2-D, F32/F16/BF16/F8_E4M3)\n"
      "  --hessian FILE[:NAME]   a finalized Hessian (d_in, d_in)\n"
      "  --inputs FILE[:NAME]    calibration inputs X; also enables the error report\n"
      "  --method M              gptq, sparsegpt or rtn (required)\n"
      "  --out FILE              output safetensors (required; replaced atomically)\n"
      "  --bits B                integer bits, 2..8 [4]; for sparsegpt, giving --bits turns on\n"
      "                          joint quantization of the kept weights\n"
      "  --group G               columns per scale group [128]; 0 or -1 = per channel\n"
      "  --actorder A            gptq only: none, group (g_idx stored) or weight [none]\n"
      "  --sym | --asym          symmetric scales, or asymmetric with zero points [--sym]\n"
      "  --damp F                dampening fraction of mean(diag H) [0.01]\n"
      "  --block N               columns per lazy-update block [128]\n"
      "  --sparsity F            sparsegpt: unstructured ratio in [0, 1) [0.5]\n"
      "  --mask N:M              sparsegpt: N:M semi-structured pruning, e.g. 2:4 (overrides\n"
      "                          --sparsity)\n"
      "  --scale-dtype D         bf16, fp16 or fp32: dtype scales are stored and computed in\n"
      "                          [the dtype of W if it is one of these, else bf16]\n"
      "  --json                  print one JSON object on stdout instead of the text report\n"
      "  -h, --help              this help\n\n"
      "exit codes: 0 done, 1 error (missing tensor, shape mismatch, numerical failure),\n"
      "2 bad flags.\n");
}

/* ---- command-line parsing ---- */

static int ql_bad(const char *flag, const char *val, const char *want) {
  fprintf(stderr, "shardq quantize-layer: bad value '%s' for %s: expected %s (see --help)\n", val,
          flag, want);
  return SQ_EXIT_USAGE;
}

static int ql_parse_long(const char *s, long lo, long hi, long *out) {
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno || end == s || *end || v < lo || v > hi) return 0;
  *out = v;
  return 1;
}

static int ql_parse_float(const char *s, double lo, double hi, float *out) {
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  if (errno || end == s || *end || !(v >= lo && v <= hi)) return 0;
  *out = (float)v;
  return 1;
}

/* Split "FILE:NAME" (at the last ':' unless the whole argument is an existing
 * file). Returns 0 when a name is required and missing. */
static int ql_split(const char *arg, int name_required, char **path, char **name) {
  struct stat sb;
  const char *c = strrchr(arg, ':');
  if (!c || (!name_required && stat(arg, &sb) == 0)) {
    if (name_required) return 0;
    *path = strdup(arg);
    *name = NULL;
    return *path != NULL;
  }
  if (c == arg || !c[1]) return 0;
  *path = strndup(arg, (size_t)(c - arg));
  *name = strdup(c + 1);
  return *path && *name;
}

static int ql_parse(int argc, char **argv, ql_opts *o, int *done) {
  int have_method = 0;
  *done = 0;
  for (int i = 1; i < argc; i++) {
    const char *s = argv[i];
    if (sq_cli_is_help(s)) {
      ql_usage(stdout);
      *done = 1;
      return SQ_EXIT_OK;
    }
    if (!strcmp(s, "--json")) {
      o->json = 1;
      continue;
    }
    if (!strcmp(s, "--sym")) {
      o->symmetric = 1;
      continue;
    }
    if (!strcmp(s, "--asym")) {
      o->symmetric = 0;
      continue;
    }
    if (i + 1 >= argc || strncmp(s, "--", 2)) {
      fprintf(stderr, "shardq quantize-layer: unknown option or missing value '%s' (see --help)\n",
              s);
      return SQ_EXIT_USAGE;
    }
    const char *v = argv[++i];
    long l;
    if (!strcmp(s, "--weight")) {
      free(o->w_path), free(o->w_name);
      if (!ql_split(v, 1, &o->w_path, &o->w_name)) return ql_bad(s, v, "FILE:NAME");
    } else if (!strcmp(s, "--hessian")) {
      free(o->h_path), free(o->h_name);
      if (!ql_split(v, 0, &o->h_path, &o->h_name)) return ql_bad(s, v, "FILE[:NAME]");
    } else if (!strcmp(s, "--inputs")) {
      free(o->x_path), free(o->x_name);
      if (!ql_split(v, 0, &o->x_path, &o->x_name)) return ql_bad(s, v, "FILE[:NAME]");
    } else if (!strcmp(s, "--out")) {
      o->out = v;
    } else if (!strcmp(s, "--method")) {
      int k = 0;
      while (k < 3 && strcmp(v, ql_method_names[k])) k++;
      if (k == 3) return ql_bad(s, v, "gptq, sparsegpt or rtn");
      o->method = (ql_method)k;
      have_method = 1;
    } else if (!strcmp(s, "--bits")) {
      if (!ql_parse_long(v, 2, 8, &l)) return ql_bad(s, v, "an integer in 2..8");
      o->bits = (int)l;
      o->bits_given = 1;
    } else if (!strcmp(s, "--group")) {
      if (!ql_parse_long(v, -1, 1L << 30, &l))
        return ql_bad(s, v, "a group size, or 0/-1 for per channel");
      o->group = (int)l;
    } else if (!strcmp(s, "--actorder")) {
      int k = 0;
      while (k < 3 && strcmp(v, ql_actorder_names[k])) k++;
      if (k == 3) return ql_bad(s, v, "none, group or weight");
      o->actorder = (sq_actorder)k;
    } else if (!strcmp(s, "--damp")) {
      if (!ql_parse_float(v, 0.0, 1e6, &o->damp)) return ql_bad(s, v, "a number >= 0");
    } else if (!strcmp(s, "--block")) {
      if (!ql_parse_long(v, 1, 1L << 30, &l)) return ql_bad(s, v, "a positive integer");
      o->block = l;
    } else if (!strcmp(s, "--sparsity")) {
      if (!ql_parse_float(v, 0.0, 0.999999, &o->sparsity)) return ql_bad(s, v, "a ratio in [0, 1)");
      o->sparse_given = 1;
    } else if (!strcmp(s, "--mask")) {
      int n = 0, m = 0, used = 0;
      if (sscanf(v, "%d:%d%n", &n, &m, &used) != 2 || v[used] || n < 1 || m <= n || m > 64)
        return ql_bad(s, v, "N:M with 0 < N < M <= 64, e.g. 2:4");
      o->prune_n = n;
      o->prune_m = m;
      o->sparse_given = 1;
    } else if (!strcmp(s, "--scale-dtype")) {
      if (!strcmp(v, "bf16"))
        o->scale_dtype = SQ_DTYPE_BF16;
      else if (!strcmp(v, "fp16"))
        o->scale_dtype = SQ_DTYPE_F16;
      else if (!strcmp(v, "fp32"))
        o->scale_dtype = SQ_DTYPE_F32;
      else
        return ql_bad(s, v, "bf16, fp16 or fp32");
    } else {
      fprintf(stderr, "shardq quantize-layer: unknown option '%s' (see --help)\n", s);
      return SQ_EXIT_USAGE;
    }
  }
  const char *why = NULL;
  if (!o->w_path)
    why = "--weight FILE:NAME is required";
  else if (!have_method)
    why = "--method gptq|sparsegpt|rtn is required";
  else if (!o->out)
    why = "--out FILE is required";
  else if (o->h_path && o->x_path)
    why = "give --hessian or --inputs, not both";
  else if (o->method != QL_RTN && !o->h_path && !o->x_path)
    why = "gptq and sparsegpt need --hessian H.safetensors or --inputs X.safetensors";
  else if (o->method != QL_GPTQ && o->actorder != SQ_ACTORDER_NONE)
    why = "--actorder applies to --method gptq only";
  else if (o->method != QL_SPARSEGPT && o->sparse_given)
    why = "--mask and --sparsity apply to --method sparsegpt only";
  else if (o->actorder == SQ_ACTORDER_WEIGHT && o->group <= 0)
    why = "--actorder weight needs groups (--group > 0)";
  if (why) {
    fprintf(stderr, "shardq quantize-layer: %s (see --help)\n", why);
    return SQ_EXIT_USAGE;
  }
  return SQ_EXIT_OK;
}

/* ---- the run ---- */

static void ql_free(ql_run *r) {
  sq_st_writer_free(r->writer); /* removes the temporary file unless committed */
  sq_st_close(r->wf);
  sq_st_close(r->hf);
  sq_st_close(r->xf);
  free(r->W);
  free(r->H);
  free(r->Q);
  free(r->codes);
  free(r->scales);
  free(r->zp);
  free(r->g_idx);
}

static int ql_is_float(sq_dtype dt) {
  return dt == SQ_DTYPE_F32 || dt == SQ_DTYPE_F16 || dt == SQ_DTYPE_BF16 || dt == SQ_DTYPE_F8_E4M3;
}

static void ql_shape_str(const sq_st_tensor *t, char *buf, size_t len) {
  size_t n = (size_t)snprintf(buf, len, "(");
  for (int i = 0; i < t->ndim && n < len; i++)
    n += (size_t)snprintf(buf + n, len - n, "%s%lld", i ? ", " : "", (long long)t->shape[i]);
  if (n < len) snprintf(buf + n, len - n, ")");
}

/* Open path and find name in it; without a name the file must hold one tensor. */
static sq_status ql_open_tensor(const char *path, const char *name, const char *flag,
                                sq_st_file **f, const sq_st_tensor **t) {
  SQ_CHECK(sq_st_open(path, f));
  if (!name) {
    if (sq_st_count(*f) != 1)
      return sq_error_set(SQ_ERR_ARG,
                          "%s: holds %zu tensors, so %s needs FILE:NAME -- hint: `shardq inspect "
                          "%s` lists them",
                          path, sq_st_count(*f), flag, path);
    *t = sq_st_at(*f, 0);
  } else if (!(*t = sq_st_find(*f, name))) {
    return sq_error_set(SQ_ERR_ARG,
                        "%s: no tensor '%s' (given to %s) -- hint: `shardq inspect %s` "
                        "lists the tensors",
                        path, name, flag, path);
  }
  if (!ql_is_float((*t)->dtype))
    return sq_error_set(SQ_ERR_UNSUPPORTED,
                        "%s: tensor '%s' is %s; %s needs F32, F16, BF16 or "
                        "F8_E4M3",
                        path, (*t)->name, sq_dtype_name((*t)->dtype), flag);
  return SQ_OK;
}

static float *ql_alloc_f(int64_t n) {
  return malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
}

/* Rows of X's first dimension per chunk, and the tokens each first-dim row holds. */
static int64_t ql_chunk_rows(const ql_run *r) {
  int64_t per = (int64_t)(r->xt->nelem / (uint64_t)r->xt->shape[0]);
  int64_t rows = (int64_t)QL_CHUNK_ELEMS / (per > 0 ? per : 1);
  return rows < 1 ? 1 : rows;
}

/* H = 2/n sum x x^T over all tokens of X, streamed in chunks of rows. */
static sq_status ql_hessian_from_inputs(ql_run *r, float *chunk) {
  sq_hessian h = {0};
  sq_status st;
  SQ_CHECK_GOTO(sq_hessian_init(&h, r->d_in, 0, r->module), st, done);
  int64_t rows = r->xt->shape[0], step = ql_chunk_rows(r), tok_per = r->tokens / rows;
  for (int64_t r0 = 0; r0 < rows; r0 += step) {
    int64_t n = rows - r0 < step ? rows - r0 : step;
    SQ_CHECK_GOTO(sq_st_read_rows_f32(r->xf, r->xt, r0, n, chunk), st, done);
    SQ_CHECK_GOTO(sq_hessian_accumulate(&h, chunk, n * tok_per, r->module), st, done);
  }
  SQ_CHECK_GOTO(sq_hessian_finalize(&h, r->H, r->module), st, done);
done:
  sq_hessian_free(&h);
  return st;
}

/* ||X (W - Q)^T||_F / ||X W^T||_F, both products by sgemm, sums in double. */
static sq_status ql_rel_error(ql_run *r, float *chunk) {
  int64_t rows = r->xt->shape[0], step = ql_chunk_rows(r), tok_per = r->tokens / rows;
  int64_t d_out = r->d_out, d_in = r->d_in, max_t = step * tok_per;
  float *D = ql_alloc_f(d_out * d_in);  /* (d_out, d_in) W - Q */
  float *Y = ql_alloc_f(max_t * d_out); /* (T, d_out) */
  float *E = ql_alloc_f(max_t * d_out); /* (T, d_out) */
  sq_status st = SQ_OK;
  if (!D || !Y || !E) {
    st = sq_error_set(SQ_ERR_NOMEM, "%s: out of memory for the error report", r->module);
    goto done;
  }
  for (int64_t i = 0; i < d_out * d_in; i++) D[i] = r->W[i] - r->Q[i];
  double num = 0.0, den = 0.0;
  for (int64_t r0 = 0; r0 < rows; r0 += step) {
    int64_t n = rows - r0 < step ? rows - r0 : step, T = n * tok_per;
    SQ_CHECK_GOTO(sq_st_read_rows_f32(r->xf, r->xt, r0, n, chunk), st, done);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)T, (int)d_out, (int)d_in, 1.0f, chunk,
                (int)d_in, r->W, (int)d_in, 0.0f, Y, (int)d_out);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)T, (int)d_out, (int)d_in, 1.0f, chunk,
                (int)d_in, D, (int)d_in, 0.0f, E, (int)d_out);
    for (int64_t i = 0; i < T * d_out; i++) {
      num += (double)E[i] * E[i];
      den += (double)Y[i] * Y[i];
    }
  }
  r->rel_err = den > 0.0 ? sqrt(num / den) : (num > 0.0 ? INFINITY : 0.0);
done:
  free(D);
  free(Y);
  free(E);
  return st;
}

static sq_status ql_solve(const ql_opts *o, ql_run *r) {
  int64_t d_out = r->d_out, d_in = r->d_in, nw = d_out * d_in;
  r->quantized = o->method != QL_SPARSEGPT || o->bits_given;
  int64_t ns = sq_gptq_scale_count(&r->q, d_out, d_in);
  r->codes = malloc((size_t)nw);
  r->scales = ql_alloc_f(ns);
  r->zp = calloc((size_t)ns, sizeof(int32_t));
  r->g_idx = calloc((size_t)d_in, sizeof(int32_t));
  if (!r->codes || !r->scales || !r->zp || !r->g_idx)
    return sq_error_set(SQ_ERR_NOMEM, "%s: out of memory for the codes of (%lld, %lld)", r->module,
                        (long long)d_out, (long long)d_in);
  double t0 = sq_time_now();
  r->loss = NAN;
  r->damp = NAN;
  if (o->method == QL_GPTQ) {
    sq_gptq_opts g = sq_gptq_opts_default();
    g.q = r->q;
    g.actorder = o->actorder;
    g.static_groups = o->actorder == SQ_ACTORDER_WEIGHT;
    g.block_size = o->block;
    g.damp_frac = o->damp;
    sq_gptq_out out = {.codes = r->codes,
                       .scales = r->scales,
                       .zero_points = r->zp,
                       .g_idx = r->g_idx,
                       .deq = r->Q};
    SQ_CHECK(sq_gptq_quantize(r->module, r->W, r->H, d_out, d_in, &g, NULL, 0, &out));
    r->has_g_idx = out.has_g_idx;
    r->loss = out.loss;
    r->damp = out.damp;
  } else if (o->method == QL_SPARSEGPT) {
    sq_sparsegpt_opts s = sq_sparsegpt_opts_default();
    s.sparsity = o->sparsity;
    s.prune_n = o->prune_n;
    s.prune_m = o->prune_m;
    s.block_size = o->block;
    s.damp_frac = o->damp;
    s.quantize = r->quantized;
    s.q = r->q;
    sq_sparsegpt_out out = {
        .weight = r->Q, .codes = r->codes, .scales = r->scales, .zero_points = r->zp};
    SQ_CHECK(sq_sparsegpt_prune(r->module, r->W, r->H, d_out, d_in, &s, NULL, 0, &out));
    r->loss = out.loss;
    r->damp = out.damp;
  } else {
    SQ_CHECK(sq_quant_check_args(&r->q, r->module, d_out, d_in));
    SQ_CHECK(sq_quant_rtn(&r->q, r->module, r->W, d_out, d_in, r->codes, r->scales,
                          r->q.symmetric ? NULL : r->zp, r->Q));
  }
  r->seconds = sq_time_now() - t0;
  return SQ_OK;
}

/* The output file: the module's compressed tensors (when quantized) and NAME in F32. */
static sq_status ql_write(const ql_opts *o, ql_run *r) {
  int64_t shape[2] = {r->d_out, r->d_in};
  SQ_CHECK(sq_st_writer_create(o->out, &r->writer));
  SQ_CHECK(sq_st_writer_set_metadata(r->writer, "shardq_method", ql_method_names[o->method]));
  if (r->quantized)
    SQ_CHECK(sq_ct_declare_module(r->writer, SQ_CT_FMT_PACK, r->module, &r->q, r->d_out, r->d_in,
                                  r->has_g_idx));
  SQ_CHECK(sq_st_writer_declare(r->writer, o->w_name, SQ_DTYPE_F32, 2, shape));
  if (r->quantized)
    SQ_CHECK(sq_ct_write_module(r->writer, SQ_CT_FMT_PACK, r->module, &r->q, r->d_out, r->d_in,
                                r->codes, r->scales, r->q.symmetric ? NULL : r->zp,
                                r->has_g_idx ? r->g_idx : NULL));
  SQ_CHECK(sq_st_writer_write(r->writer, o->w_name, r->Q));
  SQ_CHECK(sq_st_writer_commit(r->writer));
  return SQ_OK;
}

static sq_status ql_execute(const ql_opts *o, ql_run *r) {
  char ws[96], os[96];
  SQ_CHECK(ql_open_tensor(o->w_path, o->w_name, "--weight", &r->wf, &r->wt));
  ql_shape_str(r->wt, ws, sizeof ws);
  if (r->wt->ndim != 2 || r->wt->shape[0] < 1 || r->wt->shape[1] < 1)
    return sq_error_set(SQ_ERR_ARG,
                        "%s: tensor '%s' has shape %s; --weight needs a 2-D (d_out, "
                        "d_in) Linear weight",
                        o->w_path, o->w_name, ws);
  r->d_out = r->wt->shape[0];
  r->d_in = r->wt->shape[1];
  /* module name: NAME without ".weight" */
  snprintf(r->module, sizeof r->module, "%s", o->w_name);
  size_t ml = strlen(r->module);
  if (ml > 7 && !strcmp(r->module + ml - 7, ".weight")) r->module[ml - 7] = '\0';

  sq_dtype sd = o->scale_dtype;
  if (sd == SQ_DTYPE_INVALID)
    sd = (r->wt->dtype == SQ_DTYPE_F32 || r->wt->dtype == SQ_DTYPE_F16) ? r->wt->dtype
                                                                        : SQ_DTYPE_BF16;
  r->q = (sq_qargs){.num_bits = o->bits,
                    .type = SQ_QTYPE_INT,
                    .symmetric = o->symmetric,
                    .strategy = o->group > 0 ? SQ_QSTRAT_GROUP : SQ_QSTRAT_CHANNEL,
                    .group_size = o->group > 0 ? o->group : 0,
                    .scale_dtype = sd};

  int64_t d_in = r->d_in, nw = r->d_out * d_in;
  r->W = ql_alloc_f(nw);
  r->Q = ql_alloc_f(nw);
  if (!r->W || !r->Q) return sq_error_set(SQ_ERR_NOMEM, "%s: out of memory for %s", o->w_path, ws);
  SQ_CHECK(sq_st_read_f32(r->wf, r->wt, r->W, r->wt->nelem));

  if (o->h_path) {
    SQ_CHECK(ql_open_tensor(o->h_path, o->h_name, "--hessian", &r->hf, &r->ht));
    ql_shape_str(r->ht, os, sizeof os);
    if (r->ht->ndim != 2 || r->ht->shape[0] != d_in || r->ht->shape[1] != d_in)
      return sq_error_set(SQ_ERR_ARG,
                          "shape mismatch: %s:%s is %s but the Hessian %s:%s is %s; "
                          "it must be (d_in, d_in) = (%lld, %lld)",
                          o->w_path, o->w_name, ws, o->h_path, r->ht->name, os, (long long)d_in,
                          (long long)d_in);
    if (!(r->H = ql_alloc_f(d_in * d_in)))
      return sq_error_set(SQ_ERR_NOMEM, "%s: out of memory for the Hessian", o->h_path);
    SQ_CHECK(sq_st_read_f32(r->hf, r->ht, r->H, r->ht->nelem));
  }
  float *chunk = NULL;
  sq_status st = SQ_OK;
  if (o->x_path) {
    SQ_CHECK(ql_open_tensor(o->x_path, o->x_name, "--inputs", &r->xf, &r->xt));
    ql_shape_str(r->xt, os, sizeof os);
    if ((r->xt->ndim != 2 && r->xt->ndim != 3) || r->xt->shape[r->xt->ndim - 1] != d_in ||
        r->xt->nelem == 0)
      return sq_error_set(SQ_ERR_ARG,
                          "shape mismatch: %s:%s is %s but the inputs %s:%s are %s; "
                          "they must be (tokens, %lld) or (samples, seq, %lld)",
                          o->w_path, o->w_name, ws, o->x_path, r->xt->name, os, (long long)d_in,
                          (long long)d_in);
    r->tokens = (int64_t)(r->xt->nelem / (uint64_t)d_in);
    int64_t tok_per = r->tokens / r->xt->shape[0];
    chunk = ql_alloc_f(ql_chunk_rows(r) * tok_per * d_in);
    r->H = ql_alloc_f(d_in * d_in);
    if (!chunk || !r->H) {
      free(chunk);
      return sq_error_set(SQ_ERR_NOMEM, "%s: out of memory for the Hessian", o->x_path);
    }
    SQ_CHECK_GOTO(ql_hessian_from_inputs(r, chunk), st, done);
  }
  SQ_CHECK_GOTO(ql_solve(o, r), st, done);
  if (o->x_path) SQ_CHECK_GOTO(ql_rel_error(r, chunk), st, done);
  SQ_CHECK_GOTO(ql_write(o, r), st, done);
done:
  free(chunk);
  return st;
}

static json_t *ql_num(double v) {
  return isfinite(v) ? json_real(v) : json_null();
}

static void ql_report(const ql_opts *o, const ql_run *r) {
  const sq_qargs *q = &r->q;
  char scheme[160], grp[32] = "channel";
  if (q->strategy == SQ_QSTRAT_GROUP) snprintf(grp, sizeof grp, "group %d", q->group_size);
  if (r->quantized)
    snprintf(scheme, sizeof scheme, "%d-bit %s, %s, scales %s", q->num_bits,
             q->symmetric ? "sym" : "asym", grp, sq_dtype_name(q->scale_dtype));
  else
    snprintf(scheme, sizeof scheme, "no quantization");
  if (o->json) {
    json_t *j = json_object();
    json_object_set_new(j, "method", json_string(ql_method_names[o->method]));
    json_object_set_new(j, "weight", json_string(o->w_name));
    json_object_set_new(j, "module", json_string(r->module));
    json_object_set_new(j, "shape", json_pack("[I,I]", (json_int_t)r->d_out, (json_int_t)r->d_in));
    json_object_set_new(j, "quantized", json_boolean(r->quantized));
    if (r->quantized) {
      json_object_set_new(j, "bits", json_integer(q->num_bits));
      json_object_set_new(j, "group_size", json_integer(q->group_size > 0 ? q->group_size : -1));
      json_object_set_new(j, "symmetric", json_boolean(q->symmetric));
      json_object_set_new(j, "scale_dtype", json_string(sq_dtype_name(q->scale_dtype)));
      json_object_set_new(j, "has_g_idx", json_boolean(r->has_g_idx));
    }
    if (o->method == QL_GPTQ)
      json_object_set_new(j, "actorder", json_string(ql_actorder_names[o->actorder]));
    if (o->method == QL_SPARSEGPT) {
      if (o->prune_n) {
        char m[32];
        snprintf(m, sizeof m, "%d:%d", o->prune_n, o->prune_m);
        json_object_set_new(j, "mask", json_string(m));
      } else {
        json_object_set_new(j, "sparsity", json_real(o->sparsity));
      }
    }
    json_object_set_new(j, "loss", ql_num(r->loss));
    json_object_set_new(j, "damp", ql_num(r->damp));
    json_object_set_new(j, "seconds", json_real(r->seconds));
    json_object_set_new(j, "tokens", o->x_path ? json_integer(r->tokens) : json_null());
    json_object_set_new(j, "rel_error", o->x_path ? ql_num(r->rel_err) : json_null());
    json_object_set_new(j, "out", json_string(o->out));
    json_dumpf(j, stdout, JSON_REAL_PRECISION(17));
    fputc('\n', stdout);
    json_decref(j);
    return;
  }
  printf("method     %s (%s", ql_method_names[o->method], scheme);
  if (o->method == QL_GPTQ) printf(", actorder %s", ql_actorder_names[o->actorder]);
  if (o->method == QL_SPARSEGPT) {
    if (o->prune_n)
      printf(", mask %d:%d", o->prune_n, o->prune_m);
    else
      printf(", sparsity %g", (double)o->sparsity);
  }
  printf(")\n");
  printf("weight     %s:%s (%lld, %lld) %s\n", o->w_path, o->w_name, (long long)r->d_out,
         (long long)r->d_in, sq_dtype_name(r->wt->dtype));
  if (isfinite(r->loss))
    printf("loss       %.6g (damp %.6g)\n", r->loss, r->damp);
  else
    printf("loss       n/a (rtn has no solver loss)\n");
  if (o->x_path)
    printf("rel_error  %.6g  ||X(W-Q)^T||_F / ||XW^T||_F over %lld tokens\n", r->rel_err,
           (long long)r->tokens);
  printf("time       %.3f s\n", r->seconds);
  printf("out        %s\n", o->out);
}

int sq_cmd_quantize_layer(int argc, char **argv) {
  ql_opts o = {.method = QL_GPTQ,
               .bits = 4,
               .group = 128,
               .actorder = SQ_ACTORDER_NONE,
               .symmetric = 1,
               .damp = 0.01f,
               .block = 128,
               .sparsity = 0.5f,
               .scale_dtype = SQ_DTYPE_INVALID};
  ql_run r = {0};
  int done = 0, rc = ql_parse(argc, argv, &o, &done);
  if (rc == SQ_EXIT_OK && !done) {
    sq_status st = ql_execute(&o, &r);
    if (st == SQ_OK) ql_report(&o, &r);
    /* a usage-level SQ_ERR_ARG from the files (missing tensor, shapes) is an error, not bad flags
     */
    rc = st == SQ_OK ? SQ_EXIT_OK : sq_cli_report("quantize-layer", st, -1);
    if (rc == SQ_EXIT_USAGE) rc = SQ_EXIT_ERROR;
  }
  ql_free(&r);
  free(o.w_path), free(o.w_name), free(o.h_path), free(o.h_name), free(o.x_path), free(o.x_name);
  return rc;
}
