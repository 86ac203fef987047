/* DeepSeek-V3 block-scaled fp8 (sharding/fp8_block.h):
 *  - every e4m3 code times its block's scale_inv equals the e4m3 formula
 *    (-1)^s 2^(e-7) (1 + m/8), subnormal (-1)^s 2^-6 m/8, decoded here in double;
 *  - quantize: scale_inv = block amax / 448 and each value within half an e4m3
 *    ulp of the original (bounds from the format, computed here);
 *  - a synthetic deepseek_v3 written with fp8_blocks (one with dims < 128 = one
 *    partial block, one with dims > 128) reads back within that bound of the same
 *    synthetic model written in fp32 (the unquantized generated weights);
 *  - errors name the tensor: missing scale, wrong scale shape, wrong weight shape. */
#include "sharding/fp8_block.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/dtype.h"
#include "common/fsio.h"
#include "sharding/checkpoint.h"
#include "sharding/model_config.h"
#include "sharding/safetensors.h"
#include "sharding/synth.h"
#include "test_util.h"

/* e4m3fn decoded from the bit fields. */
static double e4m3_formula(unsigned b) {
  unsigned s = b >> 7, e = (b >> 3) & 15u, m = b & 7u;
  if (e == 15 && m == 7) return NAN;
  double v = e == 0 ? ldexp(m / 8.0, -6) : ldexp(1.0 + m / 8.0, (int)e - 7);
  return s ? -v : v;
}

static void test_every_code(void) {
  enum { DO = 20, DI = 40, BO = 8, BI = 16 }; /* 3 x 3 blocks, partial at both edges */
  uint8_t codes[DO * DI];
  float scales[3 * 3], out[DO * DI];
  for (int i = 0; i < 9; i++) scales[i] = ldexpf(1.0f + 0.125f * (float)i, i - 4);
  for (int i = 0; i < DO * DI; i++) codes[i] = (uint8_t)(i * 7 % 256);
  sq_fp8_block_dequant(codes, scales, DO, DI, BO, BI, out);
  int seen[256] = {0};
  for (int r = 0; r < DO; r++)
    for (int c = 0; c < DI; c++) {
      unsigned b = codes[r * DI + c];
      double want = e4m3_formula(b) * scales[(r / BO) * 3 + c / BI];
      float got = out[r * DI + c];
      seen[b] = 1;
      if (isnan(want))
        SQ_EXPECT_MSG(isnan(got), "code 0x%02x: want NaN, got %g", b, (double)got);
      else
        SQ_EXPECT_MSG((double)got == want, "code 0x%02x at [%d,%d]: %.9g != %.9g", b, r, c,
                      (double)got, want);
    }
  int n = 0;
  for (int i = 0; i < 256; i++) n += seen[i];
  SQ_EXPECT_EQ_INT(n, 256);
  /* In place: codes staged in the destination's own bytes, as the reader does. */
  float inplace[DO * DI];
  memcpy(inplace, codes, sizeof codes);
  sq_fp8_block_dequant((const uint8_t *)inplace, scales, DO, DI, BO, BI, inplace);
  for (int i = 0; i < DO * DI; i++) SQ_EXPECT(memcmp(&inplace[i], &out[i], sizeof(float)) == 0);
}

/* |w - q| allowed for one value at block scale s: half an e4m3 ulp of w/s, times s. */
static double fp8_bound(double w, double s) {
  double a = fabs(w) / s;
  if (a < ldexp(1.0, -6)) return s * ldexp(1.0, -10);
  return s * ldexp(1.0, (int)floor(log2(a)) - 4) * (1 + 1e-12);
}

/* Check q (fp8 round trip) against w blockwise; expected scale = amax / 448. */
static void check_block_error(const char *what, const float *w, const float *q, int64_t d_out,
                              int64_t d_in, int64_t bo, int64_t bi, const float *scales) {
  const int64_t nbo = (d_out + bo - 1) / bo, nbi = (d_in + bi - 1) / bi;
  int bad = 0;
  for (int64_t a = 0; a < nbo; a++)
    for (int64_t b = 0; b < nbi; b++) {
      double amax = 0;
      for (int64_t r = a * bo; r < d_out && r < (a + 1) * bo; r++)
        for (int64_t c = b * bi; c < d_in && c < (b + 1) * bi; c++)
          amax = fmax(amax, fabs((double)w[r * d_in + c]));
      double s = amax > 0 ? (double)((float)amax / 448.0f) : 1.0;
      if (scales && (double)scales[a * nbi + b] != s && bad++ < 3)
        sq_test_fail(__FILE__, __LINE__, "%s: block [%lld,%lld] scale %.9g, amax/448 = %.9g", what,
                     (long long)a, (long long)b, (double)scales[a * nbi + b], s);
      for (int64_t r = a * bo; r < d_out && r < (a + 1) * bo; r++)
        for (int64_t c = b * bi; c < d_in && c < (b + 1) * bi; c++) {
          double e = fabs((double)q[r * d_in + c] - (double)w[r * d_in + c]);
          if (e > fp8_bound(w[r * d_in + c], s) && bad++ < 3)
            sq_test_fail(__FILE__, __LINE__, "%s: [%lld,%lld] %.9g vs %.9g (err %.3g > %.3g)", what,
                         (long long)r, (long long)c, (double)q[r * d_in + c],
                         (double)w[r * d_in + c], e, fp8_bound(w[r * d_in + c], s));
        }
    }
}

static void test_quantize(void) {
  enum { DO = 300, DI = 200 };
  float *w = malloc(DO * DI * sizeof(float)), *q = malloc(DO * DI * sizeof(float));
  uint8_t *codes = malloc(DO * DI);
  float scales[3 * 2];
  uint64_t s = 0x1234567;
  for (int i = 0; i < DO * DI; i++) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    double u = (double)(s >> 11) / 9007199254740992.0 * 2 - 1;
    w[i] = (float)(u * u * u * ((i % 97) == 0 ? 30.0 : 1.0)); /* wide range, outliers */
  }
  for (int i = 0; i < DI; i++) w[5 * DI + i] = 0; /* a row of zeros, and a zero block below */
  for (int r = 256; r < DO; r++)
    for (int c = 128; c < DI; c++) w[r * DI + c] = 0;
  sq_fp8_block_quantize(w, DO, DI, 128, 128, codes, scales);
  SQ_EXPECT(scales[2 * 2 + 1] == 1.0f); /* the all-zero block */
  sq_fp8_block_dequant(codes, scales, DO, DI, 128, 128, q);
  check_block_error("quantize 300x200", w, q, DO, DI, 128, 128, scales);
  free(w);
  free(q);
  free(codes);
}

/* Synthetic deepseek_v3 in fp8 and in fp32 from the same seed; compare every Linear. */
static void test_synth_roundtrip(const char *tag, int64_t hidden, int64_t moe_inter) {
  char *root = sq_test_tmpdir("fp8_block");
  char fp8dir[512], f32dir[512];
  snprintf(fp8dir, sizeof fp8dir, "%s/%s-fp8", root, tag);
  snprintf(f32dir, sizeof f32dir, "%s/%s-f32", root, tag);
  sq_synth_options o;
  sq_synth_options_default(&o);
  o.arch = "deepseek_v3";
  o.layers = 2;
  o.hidden = hidden;
  o.heads = 4;
  o.kv_heads = 4;
  o.intermediate = hidden * 2 - 8;
  o.moe_intermediate = moe_inter;
  o.experts = 4;
  o.n_group = 2;
  o.topk_group = 1;
  o.vocab = 64;
  o.shards = 2;
  o.calib_samples = o.eval_samples = 0;
  o.progress = false;
  o.fp8_blocks = true;
  SQ_EXPECT_MSG(sq_synth_write(fp8dir, &o) == SQ_OK, "%s", sq_error_message());
  o.fp8_blocks = false;
  o.dtype = SQ_DTYPE_F32;
  SQ_EXPECT_MSG(sq_synth_write(f32dir, &o) == SQ_OK, "%s", sq_error_message());

  sq_model_config cfg;
  SQ_EXPECT(sq_model_config_load(fp8dir, &cfg) == SQ_OK);
  bool present = false;
  int64_t bo = 0, bi = 0;
  SQ_EXPECT(sq_fp8_block_config("config.json", cfg.json, &present, &bo, &bi) == SQ_OK);
  SQ_EXPECT(present && bo == 128 && bi == 128);
  json_t *qc = json_object_get(cfg.json, "quantization_config");
  SQ_EXPECT(qc && strcmp(json_string_value(json_object_get(qc, "quant_method")), "fp8") == 0);
  SQ_EXPECT(qc &&
            strcmp(json_string_value(json_object_get(qc, "activation_scheme")), "dynamic") == 0);
  SQ_EXPECT(qc && strcmp(json_string_value(json_object_get(qc, "fmt")), "e4m3") == 0);

  sq_ckpt *a = NULL, *b = NULL;
  SQ_EXPECT(sq_ckpt_open(fp8dir, &a) == SQ_OK);
  SQ_EXPECT(sq_ckpt_open(f32dir, &b) == SQ_OK);
  int n_fp8 = 0, n_big = 0;
  for (size_t i = 0; a && b && i < sq_ckpt_count(b); i++) {
    const sq_st_tensor *tb = sq_ckpt_at(b, i, NULL);
    const sq_st_tensor *ta = sq_ckpt_find(a, tb->name, NULL);
    SQ_EXPECT_MSG(ta != NULL, "%s missing from the fp8 checkpoint", tb->name);
    if (!ta) continue;
    const size_t len = strlen(tb->name);
    const int layer_linear = tb->ndim == 2 && strstr(tb->name, "model.layers.") &&
                             strcmp(tb->name + len - 7, ".weight") == 0 &&
                             !strstr(tb->name, "mlp.gate.weight");
    SQ_EXPECT_MSG(sq_fp8_block_is_scaled(a, tb->name) == (bool)layer_linear,
                  "%s: fp8 block-scaled is %d, expected %d", tb->name,
                  (int)sq_fp8_block_is_scaled(a, tb->name), layer_linear);
    if (strstr(tb->name, "e_score_correction_bias")) SQ_EXPECT(ta->dtype == SQ_DTYPE_F32);
    if (!layer_linear) continue;
    n_fp8++;
    const int64_t d_out = tb->shape[0], d_in = tb->shape[1];
    if (d_out > 128 || d_in > 128) n_big++;
    float *w = malloc((size_t)tb->nelem * sizeof(float)),
          *q = malloc((size_t)tb->nelem * sizeof(float));
    const int64_t nbo = (d_out + 127) / 128, nbi = (d_in + 127) / 128;
    float *sc = malloc((size_t)(nbo * nbi) * sizeof(float));
    char sname[200];
    snprintf(sname, sizeof sname, "%s_scale_inv", tb->name);
    const sq_st_tensor *ts = sq_ckpt_find(a, sname, NULL);
    SQ_EXPECT(ts && ts->dtype == SQ_DTYPE_F32 && ts->ndim == 2 && ts->shape[0] == nbo &&
              ts->shape[1] == nbi);
    SQ_EXPECT(sq_ckpt_read_f32(b, tb->name, w, tb->nelem) == SQ_OK);
    SQ_EXPECT(sq_ckpt_read_f32(a, sname, sc, (uint64_t)(nbo * nbi)) == SQ_OK);
    SQ_EXPECT_MSG(sq_fp8_block_read_f32(a, tb->name, q, d_out, d_in) == SQ_OK, "%s",
                  sq_error_message());
    check_block_error(tb->name, w, q, d_out, d_in, 128, 128, sc);
    free(w);
    free(q);
    free(sc);
  }
  /* 2 layers: MLA 5 Linears each, dense mlp 3, MoE 4 experts x 3 + shared 3. */
  SQ_EXPECT_EQ_INT(n_fp8, 2 * 5 + 3 + 4 * 3 + 3);
  if (hidden > 128) SQ_EXPECT(n_big > 10);
  printf("%s: %d fp8 block-scaled Linears (%d wider than one block) within the e4m3 bound\n", tag,
         n_fp8, n_big);
  sq_ckpt_close(a);
  sq_ckpt_close(b);
  sq_model_config_free(&cfg);
  free(root);
}

static void test_errors(void) {
  char *root = sq_test_tmpdir("fp8_block_err");
  char path[512];
  snprintf(path, sizeof path, "%s/model.safetensors", root);
  sq_st_writer *w = NULL;
  SQ_EXPECT(sq_st_writer_create(path, &w) == SQ_OK);
  int64_t s_a[2] = {4, 200}, s_as[2] = {1, 1}, s_b[2] = {4, 4}, s_c[2] = {3, 3}, s_cs[2] = {1, 1};
  SQ_EXPECT(sq_st_writer_declare(w, "a.weight", SQ_DTYPE_F8_E4M3, 2, s_a) == SQ_OK);
  SQ_EXPECT(sq_st_writer_declare(w, "a.weight_scale_inv", SQ_DTYPE_F32, 2, s_as) == SQ_OK);
  SQ_EXPECT(sq_st_writer_declare(w, "b.weight", SQ_DTYPE_F8_E4M3, 2, s_b) == SQ_OK);
  SQ_EXPECT(sq_st_writer_declare(w, "c.weight", SQ_DTYPE_F8_E4M3, 2, s_c) == SQ_OK);
  SQ_EXPECT(sq_st_writer_declare(w, "c.weight_scale_inv", SQ_DTYPE_F32, 2, s_cs) == SQ_OK);
  uint8_t zeros[800] = {0};
  float one = 1.0f, neg = -2.0f;
  SQ_EXPECT(sq_st_writer_write(w, "a.weight", zeros) == SQ_OK);
  SQ_EXPECT(sq_st_writer_write(w, "a.weight_scale_inv", &one) == SQ_OK);
  SQ_EXPECT(sq_st_writer_write(w, "b.weight", zeros) == SQ_OK);
  SQ_EXPECT(sq_st_writer_write(w, "c.weight", zeros) == SQ_OK);
  SQ_EXPECT(sq_st_writer_write(w, "c.weight_scale_inv", &neg) == SQ_OK);
  SQ_EXPECT(sq_st_writer_commit(w) == SQ_OK);
  sq_st_writer_free(w);
  sq_ckpt *c = NULL;
  SQ_EXPECT(sq_ckpt_open(root, &c) == SQ_OK);
  float dst[800];
  /* scale shape [1, 1] but 200 columns need 2 blocks */
  SQ_EXPECT(sq_fp8_block_read_f32(c, "a.weight", dst, 4, 200) == SQ_ERR_FORMAT);
  SQ_EXPECT(strstr(sq_error_message(), "a.weight_scale_inv") != NULL);
  sq_error_clear();
  /* no scale tensor */
  SQ_EXPECT(sq_fp8_block_read_f32(c, "b.weight", dst, 4, 4) == SQ_ERR_FORMAT);
  SQ_EXPECT(strstr(sq_error_message(), "b.weight") && strstr(sq_error_message(), "scale"));
  SQ_EXPECT(!sq_fp8_block_is_scaled(c, "b.weight"));
  sq_error_clear();
  /* negative scale */
  SQ_EXPECT(sq_fp8_block_read_f32(c, "c.weight", dst, 3, 3) == SQ_ERR_FORMAT);
  SQ_EXPECT(strstr(sq_error_message(), "c.weight_scale_inv") != NULL);
  sq_error_clear();
  /* wrong requested shape, missing tensor */
  SQ_EXPECT(sq_fp8_block_read_f32(c, "a.weight", dst, 200, 4) == SQ_ERR_FORMAT);
  SQ_EXPECT(strstr(sq_error_message(), "a.weight") != NULL);
  sq_error_clear();
  SQ_EXPECT(sq_fp8_block_read_f32(c, "nope.weight", dst, 2, 2) == SQ_ERR_FORMAT);
  SQ_EXPECT(strstr(sq_error_message(), "nope.weight") != NULL);
  sq_error_clear();
  /* the block size from config.json */
  json_t *j = json_loads("{\"quantization_config\": {\"quant_method\": \"fp8\"}}", 0, NULL);
  bool present;
  int64_t bo, bi;
  SQ_EXPECT(sq_fp8_block_config("cfg", j, &present, &bo, &bi) == SQ_ERR_UNSUPPORTED);
  sq_error_clear();
  json_decref(j);
  j = json_loads(
      "{\"quantization_config\": {\"quant_method\": \"fp8\", \"weight_block_size\": "
      "[64, 32]}}",
      0, NULL);
  SQ_EXPECT(sq_fp8_block_config("cfg", j, &present, &bo, &bi) == SQ_OK && present && bo == 64 &&
            bi == 32);
  json_decref(j);
  j = json_loads("{\"quantization_config\": {\"quant_method\": \"compressed-tensors\"}}", 0, NULL);
  SQ_EXPECT(sq_fp8_block_config("cfg", j, &present, &bo, &bi) == SQ_OK && !present);
  json_decref(j);
  sq_ckpt_close(c);
  free(root);
}

int main(void) {
  test_every_code();
  test_quantize();
  test_synth_roundtrip("tiny", 64, 40);   /* every Linear one partial block */
  test_synth_roundtrip("wide", 160, 136); /* 128-blocks plus partial edges */
  test_errors();
  return sq_test_result("test_fp8_block");
}
