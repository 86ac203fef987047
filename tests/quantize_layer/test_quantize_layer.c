/* `shardq quantize-layer` end to end, through $SHARDQ_BIN. The test writes W
 * (64, 128) BF16 and correlated inputs X (4, 128, 128) F32 with outlier channels,
 * runs the command and checks, against references computed here:
 *  1. NAME in the output equals the decompression of the written compressed
 *     tensors (unpacked with kernels/quant.h, dequantized by a loop written here
 *     from compressed-tensors' formula), for rtn and for gptq with actorder
 *     group + asymmetric zero points (g_idx and packed zero points in play);
 *  2. gptq's printed relative error is below rtn's (same scheme);
 *  3. the printed relative error equals ||X(W-Q)^T||_F / ||XW^T||_F recomputed
 *     here in double from the files (1e-4 relative);
 *  4. --hessian with H = 2/n sum x x^T from a naive double loop gives the same
 *     codes as --inputs;
 *  5. sparsegpt --mask 2:4 keeps <= 2 nonzeros in every 4 consecutive weights;
 *  6. errors: missing tensor -> exit 1, message names file and tensor, --out
 *     not created (an existing one unchanged); shape mismatch names both
 *     tensors; bad flag -> exit 2. */
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/dtype.h"
#include "kernels/quant.h"
#include "sharding/safetensors.h"
#include "test_util.h"

enum { D_OUT = 64, D_IN = 128, NS = 4, SEQ = 128, T = NS * SEQ };

static const char *bin;
static char *tmp;
static float X[T * D_IN], W[D_OUT * D_IN];

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static double urand(void) {
  rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
  return ((rng >> 11) + 0.5) / 9007199254740992.0;
}
static double nrand(void) {
  return sqrt(-2.0 * log(urand())) * cos(6.283185307179586 * urand());
}

static char *path(const char *base) {
  static char bufs[8][1024];
  static int k;
  char *b = bufs[k++ % 8];
  snprintf(b, 1024, "%s/%s", tmp, base);
  return b;
}

static int exists(const char *p) {
  struct stat sb;
  return stat(p, &sb) == 0;
}

/* Run "$SHARDQ_BIN quantize-layer ARGS" with stdout -> *out (malloc'd) and
 * stderr -> tmp/stderr.txt; returns the exit code. */
static int run(char **out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int run(char **out, const char *fmt, ...) {
  char args[3072], cmd[4096];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(args, sizeof args, fmt, ap);
  va_end(ap);
  snprintf(cmd, sizeof cmd, "'%s' quantize-layer %s 2>'%s'", bin, args, path("stderr.txt"));
  FILE *p = popen(cmd, "r");
  if (!p) return -1;
  size_t cap = 1 << 16, n = 0;
  char *buf = calloc(cap, 1);
  while (n + 1 < cap) {
    size_t got = fread(buf + n, 1, cap - 1 - n, p);
    if (!got) break;
    n += got;
  }
  int rc = pclose(p);
  if (out)
    *out = buf;
  else
    free(buf);
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

static char *slurp(const char *p) {
  FILE *f = fopen(p, "rb");
  char *buf = calloc(1 << 16, 1);
  if (f) {
    size_t n = fread(buf, 1, (1 << 16) - 1, f);
    buf[n] = 0;
    fclose(f);
  }
  return buf;
}

/* Run with --json and return the parsed report (NULL on failure, counted). */
static json_t *run_json(const char *args) {
  char *out = NULL;
  int rc = run(&out, "%s --json", args);
  SQ_EXPECT_MSG(rc == 0, "quantize-layer %s exited %d: %s", args, rc, slurp(path("stderr.txt")));
  json_error_t err;
  json_t *j = rc == 0 ? json_loads(out, 0, &err) : NULL;
  SQ_EXPECT_MSG(rc != 0 || j, "quantize-layer %s: stdout is not JSON: %s", args, out);
  free(out);
  return j;
}

static double jnum(json_t *j, const char *key) {
  json_t *v = json_object_get(j, key);
  SQ_EXPECT_MSG(v && json_is_number(v), "report has no number '%s'", key);
  return v ? json_number_value(v) : NAN;
}

static void write_inputs(void) {
  /* X = Z A + noise, Z (T, 8) latent factors: strongly correlated channels;
   * channels 5, 77, 100 carry 20x outliers (what makes act-order matter). */
  static float A[8 * D_IN];
  for (int i = 0; i < 8 * D_IN; i++) A[i] = (float)nrand();
  for (int t = 0; t < T; t++) {
    double z[8];
    for (int k = 0; k < 8; k++) z[k] = nrand();
    for (int j = 0; j < D_IN; j++) {
      double v = 0.1 * nrand();
      for (int k = 0; k < 8; k++) v += z[k] * A[k * D_IN + j];
      if (j == 5 || j == 77 || j == 100) v *= 20.0;
      X[t * D_IN + j] = (float)v;
    }
  }
  for (int i = 0; i < D_OUT * D_IN; i++)
    W[i] = sq_bf16_to_f32(sq_f32_to_bf16((float)(0.02 * nrand())));

  sq_st_writer *w;
  int64_t ws[2] = {D_OUT, D_IN}, xs[3] = {NS, SEQ, D_IN};
  SQ_EXPECT(sq_st_writer_create(path("w.safetensors"), &w) == SQ_OK);
  SQ_EXPECT(sq_st_writer_declare(w, "other", SQ_DTYPE_F32, 1, ws) == SQ_OK);
  SQ_EXPECT(sq_st_writer_declare(w, "model.proj.weight", SQ_DTYPE_BF16, 2, ws) == SQ_OK);
  static float other[D_OUT];
  SQ_EXPECT(sq_st_writer_write_f32(w, "other", other) == SQ_OK);
  SQ_EXPECT(sq_st_writer_write_f32(w, "model.proj.weight", W) == SQ_OK);
  SQ_EXPECT(sq_st_writer_commit(w) == SQ_OK);
  sq_st_writer_free(w);

  SQ_EXPECT(sq_st_writer_create(path("x.safetensors"), &w) == SQ_OK);
  SQ_EXPECT(sq_st_writer_declare(w, "x", SQ_DTYPE_F32, 3, xs) == SQ_OK);
  SQ_EXPECT(sq_st_writer_write_f32(w, "x", X) == SQ_OK);
  SQ_EXPECT(sq_st_writer_commit(w) == SQ_OK);
  sq_st_writer_free(w);

  /* Naive Hessian in double: H = 2/n sum_t x_t x_t^T. */
  static float H[D_IN * D_IN];
  for (int a = 0; a < D_IN; a++)
    for (int b = 0; b < D_IN; b++) {
      double s = 0.0;
      for (int t = 0; t < T; t++) s += (double)X[t * D_IN + a] * X[t * D_IN + b];
      H[a * D_IN + b] = (float)(2.0 * s / T);
    }
  int64_t hs[2] = {D_IN, D_IN}, bad[2] = {D_IN - 1, D_IN - 1};
  SQ_EXPECT(sq_st_writer_create(path("h.safetensors"), &w) == SQ_OK);
  SQ_EXPECT(sq_st_writer_declare(w, "h", SQ_DTYPE_F32, 2, hs) == SQ_OK);
  SQ_EXPECT(sq_st_writer_declare(w, "h_bad", SQ_DTYPE_F32, 2, bad) == SQ_OK);
  SQ_EXPECT(sq_st_writer_write_f32(w, "h", H) == SQ_OK);
  SQ_EXPECT(sq_st_writer_write_f32(w, "h_bad", H) == SQ_OK);
  SQ_EXPECT(sq_st_writer_commit(w) == SQ_OK);
  sq_st_writer_free(w);
}

/* Read a whole tensor as fp32 (malloc'd); NULL when absent. */
static float *read_f32(sq_st_file *f, const char *name, uint64_t want) {
  const sq_st_tensor *t = sq_st_find(f, name);
  SQ_EXPECT_MSG(t != NULL, "%s: no tensor %s", sq_st_path(f), name);
  if (!t) return NULL;
  SQ_EXPECT_MSG(t->nelem == want, "%s: %llu elements, want %llu", name,
                (unsigned long long)t->nelem, (unsigned long long)want);
  float *v = calloc(t->nelem, sizeof(float));
  SQ_EXPECT(sq_st_read_f32(f, t, v, t->nelem) == SQ_OK);
  return v;
}

/* Unpacked codes of out/<module>.weight_packed into codes (D_OUT, D_IN). */
static void read_codes(sq_st_file *f, int bits, int8_t *codes) {
  const sq_st_tensor *t = sq_st_find(f, "model.proj.weight_packed");
  SQ_EXPECT_MSG(t && t->dtype == SQ_DTYPE_I32, "weight_packed missing or not I32");
  if (!t) return;
  int64_t pc = sq_quant_packed_cols(D_IN, bits);
  SQ_EXPECT(t->ndim == 2 && t->shape[0] == D_OUT && t->shape[1] == pc);
  int32_t *packed = calloc((size_t)(D_OUT * pc), 4);
  SQ_EXPECT(sq_st_read_raw(f, t, 0, packed, (uint64_t)(D_OUT * pc) * 4) == SQ_OK);
  SQ_EXPECT(sq_quant_unpack_rows(bits, "test", packed, D_OUT, D_IN, codes) == SQ_OK);
  free(packed);
}

/* Check 1: NAME == dequantization of the stored tensors. gs 0: per channel. */
static void check_decompress(const char *file, int bits, int gs, int asym, sq_dtype sdt) {
  sq_st_file *f = NULL;
  SQ_EXPECT_MSG(sq_st_open(file, &f) == SQ_OK, "open %s: %s", file, sq_error_message());
  if (!f) return;
  int ng = gs > 0 ? (D_IN + gs - 1) / gs : 1;
  static int8_t codes[D_OUT * D_IN];
  read_codes(f, bits, codes);
  const sq_st_tensor *st = sq_st_find(f, "model.proj.weight_scale");
  SQ_EXPECT_MSG(st && st->dtype == sdt, "weight_scale missing or not %s", sq_dtype_name(sdt));
  float *scales = read_f32(f, "model.proj.weight_scale", (uint64_t)D_OUT * ng);
  float *deq = read_f32(f, "model.proj.weight", (uint64_t)D_OUT * D_IN);
  int32_t *zp = calloc((size_t)D_OUT * ng, 4), gidx[D_IN];
  for (int j = 0; j < D_IN; j++) gidx[j] = gs > 0 ? j / gs : 0;
  if (asym) {
    const sq_st_tensor *zt = sq_st_find(f, "model.proj.weight_zero_point");
    SQ_EXPECT_MSG(zt && zt->dtype == SQ_DTYPE_I32, "weight_zero_point missing");
    if (zt) {
      int32_t *pz = calloc(zt->nelem, 4);
      SQ_EXPECT(sq_st_read_raw(f, zt, 0, pz, zt->nelem * 4) == SQ_OK);
      SQ_EXPECT(sq_quant_unpack_zero_points(bits, "test", pz, D_OUT, ng, zp) == SQ_OK);
      free(pz);
    }
  }
  const sq_st_tensor *gt = sq_st_find(f, "model.proj.weight_g_idx");
  if (gt) SQ_EXPECT(sq_st_read_raw(f, gt, 0, gidx, sizeof gidx) == SQ_OK);
  const sq_st_tensor *sh = sq_st_find(f, "model.proj.weight_shape");
  int64_t shape[2] = {0, 0};
  SQ_EXPECT(sh && sq_st_read_raw(f, sh, 0, shape, sizeof shape) == SQ_OK);
  SQ_EXPECT(shape[0] == D_OUT && shape[1] == D_IN);
  int bad = 0, qmin = -(1 << (bits - 1)), qmax = (1 << (bits - 1)) - 1;
  for (int r = 0; scales && deq && r < D_OUT; r++)
    for (int j = 0; j < D_IN; j++) {
      int g = gidx[j], q = codes[r * D_IN + j];
      float s = scales[r * ng + g];
      /* compressed-tensors: (q - zp) * scale, rounded to the scale dtype */
      float ref = sq_round_to_dtype((float)(q - zp[r * ng + g]) * s, sdt);
      if (q < qmin || q > qmax || deq[r * D_IN + j] != ref) {
        if (bad++ < 5)
          sq_test_fail(__FILE__, __LINE__, "%s: [%d,%d] stored %g, decompressed %g (q %d)", file, r,
                       j, deq[r * D_IN + j], ref, q);
      }
    }
  free(scales);
  free(deq);
  free(zp);
  sq_st_close(f);
}

/* Check 3: relative output error recomputed in double. */
static double rel_error(const char *file) {
  sq_st_file *f = NULL;
  SQ_EXPECT(sq_st_open(file, &f) == SQ_OK);
  if (!f) return NAN;
  float *Q = read_f32(f, "model.proj.weight", (uint64_t)D_OUT * D_IN);
  double num = 0, den = 0;
  for (int t = 0; Q && t < T; t++)
    for (int o = 0; o < D_OUT; o++) {
      double y = 0, e = 0;
      for (int j = 0; j < D_IN; j++) {
        y += (double)X[t * D_IN + j] * W[o * D_IN + j];
        e += (double)X[t * D_IN + j] * ((double)W[o * D_IN + j] - Q[o * D_IN + j]);
      }
      num += e * e;
      den += y * y;
    }
  free(Q);
  sq_st_close(f);
  return sqrt(num / den);
}

int main(void) {
  bin = getenv("SHARDQ_BIN");
  if (!bin) sq_test_skip("SHARDQ_BIN is not set (run through ctest)");
  tmp = sq_test_tmpdir("quantize_layer");
  write_inputs();
  char *W_ARG = strdup(path("w.safetensors:model.proj.weight"));
  char base[2048];
  snprintf(base, sizeof base, "--weight '%s' --inputs '%s'", W_ARG, path("x.safetensors"));

  /* rtn vs gptq, same scheme: 4-bit symmetric, groups of 32, bf16 scales */
  char args[3072];
  snprintf(args, sizeof args, "%s --method rtn --bits 4 --group 32 --out '%s'", base,
           path("rtn.safetensors"));
  json_t *jr = run_json(args);
  snprintf(args, sizeof args, "%s --method gptq --bits 4 --group 32 --out '%s'", base,
           path("gptq.safetensors"));
  json_t *jg = run_json(args);
  if (jr && jg) {
    double er = jnum(jr, "rel_error"), eg = jnum(jg, "rel_error");
    printf("rel_error rtn %.6f gptq %.6f\n", er, eg);
    SQ_EXPECT_MSG(eg < er, "gptq rel_error %g is not below rtn's %g", eg, er);
    SQ_EXPECT_NEAR(er, rel_error(path("rtn.safetensors")), 0, 1e-4);
    SQ_EXPECT_NEAR(eg, rel_error(path("gptq.safetensors")), 0, 1e-4);
    SQ_EXPECT(json_is_null(json_object_get(jr, "loss")));
    SQ_EXPECT(jnum(jg, "loss") > 0);
    SQ_EXPECT_EQ_INT(jnum(jg, "tokens"), T);
  }
  check_decompress(path("rtn.safetensors"), 4, 32, 0, SQ_DTYPE_BF16);
  check_decompress(path("gptq.safetensors"), 4, 32, 0, SQ_DTYPE_BF16);
  json_decref(jr);
  json_decref(jg);

  /* gptq with act-order groups, asymmetric 3-bit, fp16 scales: g_idx + packed zero points;
   * then the same from the naive Hessian file (check 4). */
  const char *flags =
      "--method gptq --bits 3 --group 32 --actorder group --asym "
      "--scale-dtype fp16 --block 64";
  snprintf(args, sizeof args, "%s %s --out '%s'", base, flags, path("ao.safetensors"));
  json_t *ja = run_json(args);
  snprintf(args, sizeof args, "--weight '%s' --hessian '%s' %s --out '%s'", W_ARG,
           path("h.safetensors:h"), flags, path("aoh.safetensors"));
  json_t *jh = run_json(args);
  check_decompress(path("ao.safetensors"), 3, 32, 1, SQ_DTYPE_F16);
  check_decompress(path("aoh.safetensors"), 3, 32, 1, SQ_DTYPE_F16);
  if (ja && jh) {
    SQ_EXPECT(json_is_true(json_object_get(ja, "has_g_idx")));
    SQ_EXPECT_NEAR(jnum(ja, "rel_error"), rel_error(path("ao.safetensors")), 0, 1e-4);
    SQ_EXPECT(json_is_null(json_object_get(jh, "rel_error")));
    sq_st_file *a = NULL, *h = NULL;
    SQ_EXPECT(sq_st_open(path("ao.safetensors"), &a) == SQ_OK);
    SQ_EXPECT(sq_st_open(path("aoh.safetensors"), &h) == SQ_OK);
    static int8_t ca[D_OUT * D_IN], ch[D_OUT * D_IN];
    if (a && h) {
      read_codes(a, 3, ca);
      read_codes(h, 3, ch);
      int diff = 0;
      for (int i = 0; i < D_OUT * D_IN; i++) diff += ca[i] != ch[i];
      SQ_EXPECT_MSG(diff == 0, "--hessian and --inputs codes differ in %d of %d", diff,
                    D_OUT * D_IN);
    }
    sq_st_close(a);
    sq_st_close(h);
  }
  json_decref(ja);
  json_decref(jh);

  /* check 5: sparsegpt 2:4 without quantization writes only the pruned weight */
  snprintf(args, sizeof args, "%s --method sparsegpt --mask 2:4 --out '%s'", base,
           path("sp.safetensors"));
  json_t *js = run_json(args);
  sq_st_file *f = NULL;
  SQ_EXPECT(sq_st_open(path("sp.safetensors"), &f) == SQ_OK);
  if (f) {
    SQ_EXPECT(sq_st_find(f, "model.proj.weight_packed") == NULL);
    float *P = read_f32(f, "model.proj.weight", (uint64_t)D_OUT * D_IN);
    int bad = 0, zeros = 0;
    for (int i = 0; P && i < D_OUT * D_IN; i += 4) {
      int nz = (P[i] != 0) + (P[i + 1] != 0) + (P[i + 2] != 0) + (P[i + 3] != 0);
      bad += nz > 2;
      zeros += 4 - nz;
    }
    SQ_EXPECT_MSG(bad == 0, "%d groups of 4 keep more than 2 weights", bad);
    SQ_EXPECT_EQ_INT(zeros, D_OUT * D_IN / 2);
    if (js) SQ_EXPECT_NEAR(jnum(js, "rel_error"), rel_error(path("sp.safetensors")), 0, 1e-4);
    free(P);
    sq_st_close(f);
  }
  json_decref(js);

  /* check 6: errors */
  char *out = NULL, *err;
  int rc = run(&out, "--weight '%s' --inputs '%s' --method gptq --out '%s'",
               path("w.safetensors:no.such.weight"), path("x.safetensors"), path("e1.safetensors"));
  err = slurp(path("stderr.txt"));
  SQ_EXPECT_EQ_INT(rc, 1);
  SQ_EXPECT_MSG(strstr(err, "no.such.weight") && strstr(err, path("w.safetensors")),
                "missing-tensor message does not name file and tensor: %s", err);
  SQ_EXPECT_MSG(!strchr(err, '\n') || strchr(err, '\n') == err + strlen(err) - 1,
                "error is not one line: %s", err);
  SQ_EXPECT(!exists(path("e1.safetensors")));
  free(out), free(err);

  /* an existing --out is left as it was */
  FILE *keep = fopen(path("e2.safetensors"), "w");
  if (keep) fputs("keep me", keep), fclose(keep);
  rc = run(&out, "--weight '%s' --hessian '%s' --method gptq --out '%s'", W_ARG,
           path("h.safetensors:h_bad"), path("e2.safetensors"));
  err = slurp(path("stderr.txt"));
  SQ_EXPECT_EQ_INT(rc, 1);
  SQ_EXPECT_MSG(strstr(err, "model.proj.weight") && strstr(err, "h_bad"),
                "shape-mismatch message does not name both tensors: %s", err);
  free(err);
  err = slurp(path("e2.safetensors"));
  SQ_EXPECT_MSG(!strcmp(err, "keep me"), "existing --out was changed on error");
  free(out), free(err);

  rc = run(&out, "--weight '%s' --inputs '%s' --method gptq --bits 9 --out '%s'", W_ARG,
           path("x.safetensors"), path("e3.safetensors"));
  err = slurp(path("stderr.txt"));
  SQ_EXPECT_EQ_INT(rc, 2);
  SQ_EXPECT_MSG(strstr(err, "--bits"), "bad-flag message does not name --bits: %s", err);
  SQ_EXPECT(!exists(path("e3.safetensors")));
  free(out), free(err);

  rc = run(&out, "--help");
  SQ_EXPECT_EQ_INT(rc, 0);
  SQ_EXPECT(out && strstr(out, "--mask") && strstr(out, "--scale-dtype") && strstr(out, "--json"));
  free(out);

  char cmd[2048];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
  /* QL_KEEP=1 keeps the files for a look */
  if (!getenv("QL_KEEP") && !sq_test_failures && system(cmd) != 0) { /* best effort */
  }
  free(tmp);
  free(W_ARG);
  return sq_test_result("test_quantize_layer");
}
