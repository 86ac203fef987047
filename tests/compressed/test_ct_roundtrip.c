/* Round trip of compressed-tensors module tensors: random codes, scales, zero
 * points and g_idx are written with sq_ct_write_module for every format
 * (pack-quantized 2/3/4/8 bits sym/asym, tensor/channel/group, act-order
 * g_idx; int-quantized; float-quantized), read back through sq_ct_open /
 * sq_ct_read_dense_f32, and compared bit for bit with a dequantization written
 * here from the definition: (q - zp) * scale computed exactly in double and
 * rounded to the scale dtype by frexp/rint arithmetic, fp8 decoded from its
 * bit fields. The packed layout is checked against words computed by hand,
 * and corrupt modules must give one-line errors naming tensor and file. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/fsio.h"
#include "sharding/compressed.h"
#include "test_util.h"

/* ------------------------------------------------------------ reference */

static uint64_t g_rng = 0x9e3779b97f4a7c15ull;
static uint32_t rnd(void) {
  g_rng ^= g_rng << 13;
  g_rng ^= g_rng >> 7;
  g_rng ^= g_rng << 17;
  return (uint32_t)(g_rng >> 11);
}

/* Round x to p significant bits (normal exponent >= emin), ties to even. */
static double round_p(double x, int p, int emin) {
  if (x == 0.0) return x;
  int e = ilogb(x);
  if (e < emin) e = emin;
  double quantum = ldexp(1.0, e - (p - 1));
  return rint(x / quantum) * quantum;
}

static double round_dt(double x, sq_dtype dt) {
  if (dt == SQ_DTYPE_BF16) return round_p(x, 8, -126);
  if (dt == SQ_DTYPE_F16) return round_p(x, 11, -14);
  return round_p(x, 24, -126);
}

/* e4m3fn from its fields: bias 7, 3 mantissa bits, subnormals at e = 0. */
static double fp8_value(uint8_t b) {
  int e = (b >> 3) & 15, m = b & 7;
  double v = e ? ldexp(1.0 + m / 8.0, e - 7) : ldexp(m / 8.0, -6);
  return (b & 0x80) ? -v : v;
}

/* ------------------------------------------------------------ cases */

typedef struct tcase {
  const char *module;
  sq_ct_format fmt;
  int bits;
  sq_qtype type;
  int sym;
  sq_qstrategy strat;
  int gs;
  sq_dtype sdt;
  bool gidx;
  int64_t d_out, d_in;
  /* generated */
  int8_t *codes;
  float *scales;
  int32_t *zp, *g_idx;
} tcase;

static tcase g_cases[] = {
    {"model.layers.0.self_attn.q_proj", SQ_CT_FMT_PACK, 4, SQ_QTYPE_INT, 1, SQ_QSTRAT_GROUP, 16, SQ_DTYPE_BF16, false, 9, 37, 0, 0, 0, 0},
    {"model.layers.0.self_attn.k_proj", SQ_CT_FMT_PACK, 4, SQ_QTYPE_INT, 0, SQ_QSTRAT_GROUP, 8, SQ_DTYPE_F16, false, 11, 24, 0, 0, 0, 0},
    {"model.layers.0.self_attn.v_proj", SQ_CT_FMT_PACK, 8, SQ_QTYPE_INT, 0, SQ_QSTRAT_CHANNEL, 0, SQ_DTYPE_BF16, false, 7, 13, 0, 0, 0, 0},
    {"model.layers.0.self_attn.o_proj", SQ_CT_FMT_PACK, 4, SQ_QTYPE_INT, 1, SQ_QSTRAT_GROUP, 8, SQ_DTYPE_BF16, true, 6, 32, 0, 0, 0, 0},
    {"model.layers.0.mlp.gate_proj", SQ_CT_FMT_PACK, 3, SQ_QTYPE_INT, 0, SQ_QSTRAT_GROUP, 5, SQ_DTYPE_F32, true, 21, 23, 0, 0, 0, 0},
    {"model.layers.0.mlp.up_proj", SQ_CT_FMT_PACK, 2, SQ_QTYPE_INT, 1, SQ_QSTRAT_TENSOR, 0, SQ_DTYPE_BF16, false, 5, 33, 0, 0, 0, 0},
    {"model.layers.0.mlp.down_proj", SQ_CT_FMT_INT, 8, SQ_QTYPE_INT, 1, SQ_QSTRAT_CHANNEL, 0, SQ_DTYPE_BF16, false, 8, 19, 0, 0, 0, 0},
    {"model.layers.1.self_attn.q_proj", SQ_CT_FMT_INT, 8, SQ_QTYPE_INT, 0, SQ_QSTRAT_GROUP, 4, SQ_DTYPE_F16, false, 4, 10, 0, 0, 0, 0},
    {"model.layers.1.self_attn.k_proj", SQ_CT_FMT_FLOAT, 8, SQ_QTYPE_FLOAT, 1, SQ_QSTRAT_CHANNEL, 0, SQ_DTYPE_BF16, false, 12, 16, 0, 0, 0, 0},
    {"model.layers.1.self_attn.v_proj", SQ_CT_FMT_FLOAT, 8, SQ_QTYPE_FLOAT, 1, SQ_QSTRAT_TENSOR, 0, SQ_DTYPE_F32, false, 3, 40, 0, 0, 0, 0},
};
#define NCASES (sizeof g_cases / sizeof *g_cases)

static sq_qargs qargs_of(const tcase *t) {
  sq_qargs q = {t->bits, t->type, t->sym, t->strat, t->gs, t->sdt};
  return q;
}

static void generate(tcase *t) {
  sq_qargs q = qargs_of(t);
  int64_t nsc = sq_ct_scale_rows(&q, t->d_out) * sq_ct_scale_cols(&q, t->d_in);
  int64_t ng = sq_ct_scale_cols(&q, t->d_in);
  t->codes = malloc((size_t)(t->d_out * t->d_in));
  t->scales = malloc((size_t)nsc * sizeof(float));
  t->zp = t->sym ? NULL : malloc((size_t)nsc * sizeof(int32_t));
  t->g_idx = t->gidx ? malloc((size_t)t->d_in * sizeof(int32_t)) : NULL;
  int lo = -(1 << (t->bits - 1)), span = 1 << t->bits;
  for (int64_t i = 0; i < t->d_out * t->d_in; ++i) {
    if (t->type == SQ_QTYPE_FLOAT) {
      uint8_t b;
      do b = (uint8_t)rnd(); while ((b & 0x7f) == 0x7f); /* no NaN patterns */
      t->codes[i] = (int8_t)b;
    } else {
      t->codes[i] = (int8_t)(lo + (int)(rnd() % (uint32_t)span));
    }
  }
  for (int64_t i = 0; i < nsc; ++i) {
    double s = ldexp(1.0 + (rnd() % 100000) / 100000.0, -(int)(rnd() % 10) - 3);
    t->scales[i] = (float)round_dt(s, t->sdt);
    if (t->zp) t->zp[i] = lo + (int)(rnd() % (uint32_t)span);
  }
  if (t->g_idx)
    for (int64_t c = 0; c < t->d_in; ++c) t->g_idx[c] = (int32_t)(rnd() % (uint32_t)ng);
}

static double ref_value(const tcase *t, int64_t r, int64_t c) {
  int64_t ng = t->strat == SQ_QSTRAT_GROUP ? (t->d_in + t->gs - 1) / t->gs : 1;
  int64_t row = t->strat == SQ_QSTRAT_TENSOR ? 0 : r;
  int64_t g = t->strat != SQ_QSTRAT_GROUP ? 0 : (t->g_idx ? t->g_idx[c] : c / t->gs);
  double s = t->scales[row * ng + g];
  if (t->type == SQ_QTYPE_FLOAT)
    return round_dt(fp8_value((uint8_t)t->codes[r * t->d_in + c]) * s, t->sdt);
  int z = t->zp ? t->zp[row * ng + g] : 0;
  return round_dt((double)(t->codes[r * t->d_in + c] - z) * s, t->sdt);
}

/* ------------------------------------------------------------ helpers */

static void write_text(const char *dir, const char *name, const char *text) {
  char *p = sq_fs_join(dir, name);
  SQ_EXPECT(sq_fs_write_file_atomic(p, text, strlen(text)) == SQ_OK);
  free(p);
}

static sq_ct_scheme scheme_for(const tcase *t) {
  sq_ct_scheme s;
  memset(&s, 0, sizeof s);
  s.has_weights = true;
  s.weights.q = qargs_of(t);
  s.weights.actorder = t->gidx ? SQ_CT_ACTORDER_GROUP : SQ_CT_ACTORDER_NONE;
  snprintf(s.weights.observer, sizeof s.weights.observer, "minmax");
  s.format = t->fmt;
  SQ_EXPECT(sq_ct_scheme_add_target(&s, t->module) == SQ_OK);
  return s;
}

static void roundtrip(void) {
  char *dir = sq_test_tmpdir("ct-roundtrip");
  char *path = sq_fs_join(dir, "model.safetensors");
  for (size_t i = 0; i < NCASES; ++i) generate(&g_cases[i]);
  sq_st_writer *w = NULL;
  SQ_EXPECT(sq_st_writer_create(path, &w) == SQ_OK);
  int64_t hid = 7;
  float norm[7] = {1.0f, 0.5f, -2.0f, 3.25f, 0.0f, 1e-3f, 7.0f};
  SQ_EXPECT(sq_st_writer_declare(w, "model.norm.weight", SQ_DTYPE_F32, 1, &hid) == SQ_OK);
  for (size_t i = 0; i < NCASES; ++i) {
    tcase *t = &g_cases[i];
    sq_qargs q = qargs_of(t);
    SQ_EXPECT_MSG(sq_ct_declare_module(w, t->fmt, t->module, &q, t->d_out, t->d_in, t->gidx) == SQ_OK,
                  "declare %s: %s", t->module, sq_error_message());
  }
  SQ_EXPECT(sq_st_writer_write(w, "model.norm.weight", norm) == SQ_OK);
  uint64_t data_bytes = 4 * 7;
  for (size_t i = NCASES; i-- > 0;) { /* any order */
    tcase *t = &g_cases[i];
    sq_qargs q = qargs_of(t);
    SQ_EXPECT_MSG(sq_ct_write_module(w, t->fmt, t->module, &q, t->d_out, t->d_in, t->codes, t->scales,
                                     t->zp, t->g_idx) == SQ_OK,
                  "write %s: %s", t->module, sq_error_message());
    data_bytes += sq_ct_module_bytes(t->fmt, &q, t->d_out, t->d_in, t->gidx);
  }
  SQ_EXPECT(sq_st_writer_commit(w) == SQ_OK);
  sq_st_writer_free(w);

  /* config.json: one group per module (exact-name targets) -> mixed-precision */
  write_text(dir, "config.json", "{\"model_type\": \"llama\", \"hidden_size\": 7}\n");
  sq_ct_config cfg;
  sq_ct_config_init(&cfg);
  for (size_t i = 0; i < NCASES; ++i) {
    sq_ct_scheme s = scheme_for(&g_cases[i]);
    SQ_EXPECT(sq_ct_config_add_group(&cfg, &s) == SQ_OK);
    sq_ct_scheme_free(&s);
  }
  SQ_EXPECT_EQ_INT(cfg.format, SQ_CT_FMT_MIXED);
  SQ_EXPECT_MSG(sq_ct_config_write(dir, &cfg) == SQ_OK, "%s", sq_error_message());
  sq_ct_config_free(&cfg);

  sq_ct_reader *r = NULL;
  SQ_EXPECT_MSG(sq_ct_open(dir, &r) == SQ_OK, "open: %s", sq_error_message());
  if (!r) return;
  SQ_EXPECT(sq_ct_reader_config(r) != NULL);
  SQ_EXPECT_EQ_INT(sq_ct_count(r), NCASES + 1);
  /* data bytes of the file = what sq_ct_module_bytes predicts (+ the norm) */
  uint64_t on_disk = 0;
  for (size_t i = 0; i < sq_ckpt_count(sq_ct_reader_ckpt(r)); ++i) {
    const sq_st_tensor *t = sq_ckpt_at(sq_ct_reader_ckpt(r), i, NULL);
    on_disk += t->end - t->begin;
  }
  SQ_EXPECT_EQ_INT(on_disk, data_bytes);
  for (size_t i = 0; i < sq_ct_count(r); ++i)
    SQ_EXPECT_MSG(!strstr(sq_ct_name_at(r, i), "_scale") && !strstr(sq_ct_name_at(r, i), "_packed"),
                  "listed %s", sq_ct_name_at(r, i));
  float nb[7];
  SQ_EXPECT(sq_ct_read_dense_f32(r, "model.norm.weight", nb, 7) == SQ_OK);
  SQ_EXPECT(memcmp(nb, norm, sizeof nb) == 0);
  for (size_t i = 0; i < NCASES; ++i) {
    tcase *t = &g_cases[i];
    char name[256];
    snprintf(name, sizeof name, "%s.weight", t->module);
    int nd = 0;
    int64_t shape[SQ_ST_MAX_DIMS];
    SQ_EXPECT(sq_ct_shape(r, name, &nd, shape) == SQ_OK);
    SQ_EXPECT(nd == 2 && shape[0] == t->d_out && shape[1] == t->d_in);
    uint64_t n = (uint64_t)(t->d_out * t->d_in);
    float *got = malloc(n * sizeof *got);
    SQ_EXPECT_MSG(sq_ct_read_dense_f32(r, name, got, n) == SQ_OK, "read %s: %s", name,
                  sq_error_message());
    int bad = 0;
    for (int64_t rr = 0; rr < t->d_out && bad < 3; ++rr)
      for (int64_t c = 0; c < t->d_in && bad < 3; ++c) {
        float want = (float)ref_value(t, rr, c), g = got[rr * t->d_in + c];
        if (memcmp(&want, &g, sizeof g) != 0) {
          ++bad;
          sq_test_fail(__FILE__, __LINE__, "%s[%lld, %lld]: got %.9g want %.9g", name,
                       (long long)rr, (long long)c, g, want);
        }
      }
    free(got);
    free(t->codes);
    free(t->scales);
    free(t->zp);
    free(t->g_idx);
  }
  sq_ct_close(r);
  free(path);
  free(dir);
}

/* ------------------------------------------------------------ layout by hand */

static void hand_layout(void) {
  char *dir = sq_test_tmpdir("ct-hand");
  char *path = sq_fs_join(dir, "model.safetensors");
  /* 2x8 int4, asymmetric channel: row 0 codes -8..-1 (stored 0..7), row 1 codes 0..7
   * (stored 8..15); zero points 3 and -2 (stored 11 and 6) packed along d_out. */
  int8_t c4[16];
  for (int i = 0; i < 8; ++i) {
    c4[i] = (int8_t)(i - 8);
    c4[8 + i] = (int8_t)i;
  }
  float s4[2] = {0.5f, 0.25f};
  int32_t z4[2] = {3, -2};
  sq_qargs q4 = {4, SQ_QTYPE_INT, 0, SQ_QSTRAT_CHANNEL, 0, SQ_DTYPE_BF16};
  /* 1x12 int3, symmetric tensor: codes -4..3, -4..-1 -> stored 0..7, 0..3; 10 per word. */
  int8_t c3[12] = {-4, -3, -2, -1, 0, 1, 2, 3, -4, -3, -2, -1};
  float s3[1] = {1.0f};
  sq_qargs q3 = {3, SQ_QTYPE_INT, 1, SQ_QSTRAT_TENSOR, 0, SQ_DTYPE_F32};
  sq_st_writer *w = NULL;
  SQ_EXPECT(sq_st_writer_create(path, &w) == SQ_OK);
  SQ_EXPECT(sq_ct_declare_module(w, SQ_CT_FMT_PACK, "a", &q4, 2, 8, false) == SQ_OK);
  SQ_EXPECT(sq_ct_declare_module(w, SQ_CT_FMT_PACK, "b", &q3, 1, 12, false) == SQ_OK);
  SQ_EXPECT(sq_ct_write_module(w, SQ_CT_FMT_PACK, "a", &q4, 2, 8, c4, s4, z4, NULL) == SQ_OK);
  SQ_EXPECT(sq_ct_write_module(w, SQ_CT_FMT_PACK, "b", &q3, 1, 12, c3, s3, NULL, NULL) == SQ_OK);
  SQ_EXPECT(sq_st_writer_commit(w) == SQ_OK);
  sq_st_writer_free(w);

  sq_st_file *f = NULL;
  SQ_EXPECT(sq_st_open(path, &f) == SQ_OK);
  if (f) {
    struct {
      const char *name;
      sq_dtype dt;
      int ndim;
      int64_t s0, s1;
      int64_t words[2];
    } want[] = {
        {"a.weight_packed", SQ_DTYPE_I32, 2, 2, 1, {0x76543210, (int32_t)0xFEDCBA98u}},
        {"a.weight_zero_point", SQ_DTYPE_I32, 2, 1, 1, {0x6B, 0}},
        {"a.weight_shape", SQ_DTYPE_I64, 1, 2, 0, {2, 8}},
        {"b.weight_packed", SQ_DTYPE_I32, 2, 1, 2, {0x08FAC688, 0x1A}},
        {"b.weight_shape", SQ_DTYPE_I64, 1, 2, 0, {1, 12}},
    };
    for (size_t i = 0; i < sizeof want / sizeof *want; ++i) {
      const sq_st_tensor *t = sq_st_find(f, want[i].name);
      SQ_EXPECT_MSG(t != NULL, "missing %s", want[i].name);
      if (!t) continue;
      SQ_EXPECT_EQ_INT(t->dtype, want[i].dt);
      SQ_EXPECT_EQ_INT(t->ndim, want[i].ndim);
      SQ_EXPECT_EQ_INT(t->shape[0], want[i].s0);
      if (want[i].ndim == 2) SQ_EXPECT_EQ_INT(t->shape[1], want[i].s1);
      int64_t v[2] = {0, 0};
      if (t->dtype == SQ_DTYPE_I64) {
        SQ_EXPECT(sq_st_read_raw(f, t, 0, v, 16) == SQ_OK);
      } else {
        int32_t v32[2] = {0, 0};
        SQ_EXPECT(sq_st_read_raw(f, t, 0, v32, t->nelem * 4) == SQ_OK);
        v[0] = v32[0];
        v[1] = v32[1];
      }
      for (uint64_t k = 0; k < t->nelem && k < 2; ++k)
        SQ_EXPECT_MSG(v[k] == want[i].words[k], "%s[%llu] = 0x%llx, want 0x%llx", want[i].name,
                      (unsigned long long)k, (unsigned long long)(uint32_t)v[k],
                      (unsigned long long)(uint32_t)want[i].words[k]);
    }
    const sq_st_tensor *sc = sq_st_find(f, "b.weight_scale");
    SQ_EXPECT(sc && sc->ndim == 1 && sc->shape[0] == 1 && sc->dtype == SQ_DTYPE_F32);
    SQ_EXPECT(sq_st_find(f, "b.weight_zero_point") == NULL); /* symmetric: no zero point */
    sq_st_close(f);
  }
  /* out-of-range code is refused before anything is written */
  int8_t badc[16];
  memcpy(badc, c4, sizeof badc);
  badc[5] = 8;
  sq_st_writer *w2 = NULL;
  char *p2 = sq_fs_join(dir, "x.safetensors");
  SQ_EXPECT(sq_st_writer_create(p2, &w2) == SQ_OK);
  SQ_EXPECT(sq_ct_declare_module(w2, SQ_CT_FMT_PACK, "a", &q4, 2, 8, false) == SQ_OK);
  sq_error_clear();
  SQ_EXPECT(sq_ct_write_module(w2, SQ_CT_FMT_PACK, "a", &q4, 2, 8, badc, s4, z4, NULL) == SQ_ERR_ARG);
  SQ_EXPECT(strstr(sq_error_message(), "a: code[0, 5] = 8") != NULL);
  sq_error_clear();
  sq_st_writer_free(w2);
  free(p2);
  free(path);
  free(dir);
}

/* ------------------------------------------------------------ corrupt input */

typedef enum { BAD_PACKED_SHAPE, BAD_NO_SCALE, BAD_WEIGHT_SHAPE, BAD_SCALE_SHAPE } bad_kind;

static void corrupt(bad_kind kind, const char *needle) {
  char *dir = sq_test_tmpdir("ct-corrupt");
  char *path = sq_fs_join(dir, "model.safetensors");
  sq_st_writer *w = NULL;
  SQ_EXPECT(sq_st_writer_create(path, &w) == SQ_OK);
  int64_t packed[2] = {4, kind == BAD_PACKED_SHAPE ? 3 : 2}, two = 2;
  int64_t scale[2] = {4, kind == BAD_SCALE_SHAPE ? 2 : 1};
  int64_t wshape[2] = {kind == BAD_WEIGHT_SHAPE ? 5 : 4, 16};
  int32_t words[12] = {0};
  uint16_t sc[8] = {0x3f80, 0x3f80, 0x3f80, 0x3f80, 0x3f80, 0x3f80, 0x3f80, 0x3f80};
  SQ_EXPECT(sq_st_writer_declare(w, "m.p.weight_packed", SQ_DTYPE_I32, 2, packed) == SQ_OK);
  if (kind != BAD_NO_SCALE)
    SQ_EXPECT(sq_st_writer_declare(w, "m.p.weight_scale", SQ_DTYPE_BF16, 2, scale) == SQ_OK);
  SQ_EXPECT(sq_st_writer_declare(w, "m.p.weight_shape", SQ_DTYPE_I64, 1, &two) == SQ_OK);
  SQ_EXPECT(sq_st_writer_write(w, "m.p.weight_packed", words) == SQ_OK);
  if (kind != BAD_NO_SCALE) SQ_EXPECT(sq_st_writer_write(w, "m.p.weight_scale", sc) == SQ_OK);
  SQ_EXPECT(sq_st_writer_write(w, "m.p.weight_shape", wshape) == SQ_OK);
  SQ_EXPECT(sq_st_writer_commit(w) == SQ_OK);
  sq_st_writer_free(w);
  write_text(dir, "config.json", "{\"model_type\": \"llama\"}");
  sq_ct_config cfg;
  sq_ct_scheme s;
  sq_ct_config_init(&cfg);
  SQ_EXPECT(sq_ct_scheme_preset("W4A16", SQ_DTYPE_BF16, &s) == SQ_OK);
  s.weights.q.strategy = SQ_QSTRAT_CHANNEL;
  s.weights.q.group_size = 0;
  SQ_EXPECT(sq_ct_config_add_group(&cfg, &s) == SQ_OK);
  SQ_EXPECT(sq_ct_config_write(dir, &cfg) == SQ_OK);
  sq_ct_scheme_free(&s);
  sq_ct_config_free(&cfg);

  sq_error_clear();
  sq_ct_reader *r = NULL;
  sq_status st = sq_ct_open(dir, &r);
  if (st == SQ_OK) {
    float out[5 * 16];
    int nd;
    int64_t shape[SQ_ST_MAX_DIMS];
    SQ_EXPECT(sq_ct_shape(r, "m.p.weight", &nd, shape) == SQ_OK);
    st = sq_ct_read_dense_f32(r, "m.p.weight", out, (uint64_t)(shape[0] * shape[1]));
    sq_ct_close(r);
  }
  const char *msg = sq_error_message();
  SQ_EXPECT_MSG(st == SQ_ERR_FORMAT, "kind %d: status %d", (int)kind, (int)st);
  SQ_EXPECT_MSG(strstr(msg, needle) && strstr(msg, "model.safetensors") && !strchr(msg, '\n'),
                "kind %d: message '%s' should name %s and the file on one line", (int)kind, msg,
                needle);
  sq_error_clear();
  free(path);
  free(dir);
}

int main(void) {
  roundtrip();
  hand_layout();
  corrupt(BAD_PACKED_SHAPE, "m.p.weight_packed has shape [4, 3], expected [4, 2]");
  corrupt(BAD_NO_SCALE, "m.p.weight_scale is missing");
  corrupt(BAD_WEIGHT_SHAPE, "m.p.weight_shape = [5, 16]");
  corrupt(BAD_SCALE_SHAPE, "m.p.weight_scale has shape [4, 2], expected [4, 1]");
  return sq_test_result("test_ct_roundtrip");
}
