/* Reading a compressed-tensors checkpoint directory back to dense fp32
 * weights: config.json's quantization_config says which group (and so which
 * bits, strategy, format) each module has; the module's tensors are checked
 * against it (names, dtypes, shapes) and dequantized exactly as
 * kernels/quant_math.h defines it, which is what compressed-tensors computes
 * in the scale dtype. Tensors stored dense pass through. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/fsio.h"
#include "kernels/pack_math.h"
#include "sharding/compressed.h"

typedef struct ct_entry {
  char *name;   /* dense name ("model.layers.0.mlp.up_proj.weight") */
  char *module; /* quantized: "model.layers.0.mlp.up_proj"; NULL when stored dense */
  const sq_ct_scheme *scheme;
  sq_ct_format fmt;
  int ndim;
  int64_t shape[SQ_ST_MAX_DIMS];
} ct_entry;

struct sq_ct_reader {
  sq_ckpt *ck;
  bool has_cfg;
  sq_ct_config cfg;
  ct_entry *e;
  size_t n;
  size_t *by_name; /* indices of e sorted by name, for lookups on models with 1e5 tensors */
};

/* Parameters of quantized modules, never dense weights themselves. */
static const char *const k_param_suffixes[] = {
    ".weight_packed",     ".weight_scale",      ".weight_zero_point", ".weight_g_idx",
    ".weight_shape",      ".weight_global_scale", ".weight_shape_original", ".input_scale",
    ".input_zero_point",  ".input_global_scale", ".output_scale",      ".output_zero_point",
    ".k_scale",           ".v_scale"};

static bool ends_with(const char *s, const char *suf) {
  size_t n = strlen(s), m = strlen(suf);
  return n >= m && strcmp(s + n - m, suf) == 0;
}

static const char *file_of(const sq_st_file *f) { return f ? sq_st_path(f) : "?"; }

static char *dup_prefix(const char *s, size_t len) {
  char *p = malloc(len + 1);
  if (p) {
    memcpy(p, s, len);
    p[len] = '\0';
  }
  return p;
}

static char *join2(const char *a, const char *b) {
  size_t n = strlen(a) + strlen(b) + 1;
  char *p = malloc(n);
  if (p) snprintf(p, n, "%s%s", a, b);
  return p;
}

static const sq_st_tensor *find_param(const sq_ct_reader *r, const char *module,
                                      const char *suffix, const sq_st_file **f) {
  char name[1024];
  snprintf(name, sizeof name, "%s.%s", module, suffix);
  return sq_ckpt_find(r->ck, name, f);
}

/* config.json's quantization_config, if any, into r->cfg. */
static sq_status load_config(sq_ct_reader *r, const char *dir) {
  char *path = sq_fs_join(dir, "config.json"), *text = NULL;
  size_t len = 0;
  json_t *doc = NULL;
  sq_status st = SQ_OK;
  if (!path) return sq_error_set(SQ_ERR_NOMEM, "out of memory");
  SQ_CHECK_GOTO(sq_fs_read_small_file(path, 64u << 20, &text, &len), st, done);
  json_error_t err;
  doc = json_loadb(text, len, 0, &err);
  if (!doc || !json_is_object(doc)) {
    st = sq_error_set(SQ_ERR_FORMAT, "%s:%d: %s", path, doc ? 1 : err.line,
                      doc ? "top level is not an object" : err.text);
    goto done;
  }
  const json_t *qc = json_object_get(doc, "quantization_config");
  if (!qc) qc = json_object_get(doc, "compression_config"); /* compressed-tensors < 0.7 */
  if (qc && !json_is_null(qc)) {
    SQ_CHECK_GOTO(sq_ct_config_from_json(qc, path, &r->cfg), st, done);
    r->has_cfg = true;
  }
done:
  json_decref(doc);
  free(text);
  free(path);
  return st;
}

/* The dense shape of a pack-quantized module from its weight_shape tensor. */
static sq_status read_weight_shape(const sq_ct_reader *r, const char *module, int64_t shape[2]) {
  const sq_st_file *f = NULL;
  const sq_st_tensor *t = find_param(r, module, "weight_shape", &f);
  const sq_st_file *pf = NULL;
  find_param(r, module, "weight_packed", &pf);
  if (!t)
    return sq_error_set(SQ_ERR_FORMAT, "%s: tensor %s.weight_shape is missing (needed with %s.weight_packed)",
                        file_of(pf), module, module);
  if ((t->dtype != SQ_DTYPE_I64 && t->dtype != SQ_DTYPE_I32) || t->nelem != 2)
    return sq_error_set(SQ_ERR_FORMAT, "%s: tensor %s.weight_shape must be I64 [2] (got %s, %llu elements)",
                        file_of(f), module, sq_dtype_name(t->dtype), (unsigned long long)t->nelem);
  if (t->dtype == SQ_DTYPE_I64) {
    SQ_CHECK(sq_st_read_raw(f, t, 0, shape, 16));
  } else {
    int32_t s32[2];
    SQ_CHECK(sq_st_read_raw(f, t, 0, s32, 8));
    shape[0] = s32[0];
    shape[1] = s32[1];
  }
  if (shape[0] <= 0 || shape[1] <= 0 || shape[0] > (1ll << 31) || shape[1] > (1ll << 31))
    return sq_error_set(SQ_ERR_FORMAT, "%s: tensor %s.weight_shape = [%lld, %lld] is not a valid shape",
                        file_of(f), module, (long long)shape[0], (long long)shape[1]);
  return SQ_OK;
}

static sq_status add_entry(sq_ct_reader *r, const ct_entry *e) {
  ct_entry *grown = realloc(r->e, (r->n + 1) * sizeof *grown);
  if (!grown) return sq_error_set(SQ_ERR_NOMEM, "out of memory listing tensors");
  r->e = grown;
  grown[r->n++] = *e;
  return SQ_OK;
}

static sq_status list_tensors(sq_ct_reader *r) {
  size_t n = sq_ckpt_count(r->ck);
  for (size_t i = 0; i < n; ++i) {
    const sq_st_file *f = NULL;
    const sq_st_tensor *t = sq_ckpt_at(r->ck, i, &f);
    ct_entry e;
    memset(&e, 0, sizeof e);
    const char *nm = t->name;
    bool packed = ends_with(nm, ".weight_packed");
    bool quant_weight = false;
    if (r->has_cfg && !packed) {
      bool param = false;
      for (size_t k = 0; k < sizeof k_param_suffixes / sizeof *k_param_suffixes; ++k)
        if (ends_with(nm, k_param_suffixes[k])) param = true;
      if (param) continue;
      if (ends_with(nm, ".weight")) {
        char *mod = dup_prefix(nm, strlen(nm) - strlen(".weight"));
        if (!mod) return sq_error_set(SQ_ERR_NOMEM, "out of memory");
        const sq_st_file *sf;
        quant_weight = find_param(r, mod, "weight_scale", &sf) != NULL;
        free(mod);
      }
    }
    if (packed || quant_weight) {
      const char *suffix = packed ? ".weight_packed" : ".weight";
      if (!r->has_cfg)
        return sq_error_set(SQ_ERR_FORMAT,
                            "%s: tensor %s is compressed but config.json has no "
                            "quantization_config -- hint: restore the config.json written with it",
                            file_of(f), nm);
      e.module = dup_prefix(nm, strlen(nm) - strlen(suffix));
      e.name = e.module ? join2(e.module, ".weight") : NULL;
      if (!e.name) {
        free(e.module);
        return sq_error_set(SQ_ERR_NOMEM, "out of memory");
      }
      sq_status st = add_entry(r, &e);
      if (st != SQ_OK) {
        free(e.name);
        free(e.module);
        return st;
      }
      ct_entry *me = &r->e[r->n - 1];
      me->scheme = sq_ct_config_match(&r->cfg, me->module);
      if (!me->scheme || !me->scheme->has_weights)
        return sq_error_set(SQ_ERR_FORMAT,
                            "%s: tensor %s is compressed but no config group of config.json's "
                            "quantization_config targets module %s (or it is ignored)",
                            file_of(f), nm, me->module);
      me->fmt = sq_ct_config_module_format(&r->cfg, me->scheme);
      me->ndim = 2;
      if (packed) {
        if (me->fmt != SQ_CT_FMT_PACK)
          return sq_error_set(SQ_ERR_FORMAT, "%s: tensor %s is packed but module %s has format %s in config.json",
                              file_of(f), nm, me->module, sq_ct_format_name(me->fmt));
        SQ_CHECK(read_weight_shape(r, me->module, me->shape));
      } else {
        if (t->ndim != 2)
          return sq_error_set(SQ_ERR_FORMAT, "%s: quantized tensor %s must be 2-D (got %d dims)",
                              file_of(f), nm, t->ndim);
        me->shape[0] = t->shape[0];
        me->shape[1] = t->shape[1];
      }
      continue;
    }
    e.name = strdup(nm);
    if (!e.name) return sq_error_set(SQ_ERR_NOMEM, "out of memory");
    e.ndim = t->ndim;
    memcpy(e.shape, t->shape, sizeof e.shape);
    sq_status st = add_entry(r, &e);
    if (st != SQ_OK) {
      free(e.name);
      return st;
    }
  }
  return SQ_OK;
}

static const ct_entry *g_sort_entries; /* qsort has no context argument in C11 */
static int cmp_by_name(const void *a, const void *b) {
  return strcmp(g_sort_entries[*(const size_t *)a].name, g_sort_entries[*(const size_t *)b].name);
}

static sq_status index_names(sq_ct_reader *r, const char *dir) {
  r->by_name = malloc((r->n ? r->n : 1) * sizeof *r->by_name);
  if (!r->by_name) return sq_error_set(SQ_ERR_NOMEM, "out of memory indexing %s", dir);
  for (size_t i = 0; i < r->n; ++i) r->by_name[i] = i;
  g_sort_entries = r->e;
  qsort(r->by_name, r->n, sizeof *r->by_name, cmp_by_name);
  g_sort_entries = NULL;
  for (size_t i = 1; i < r->n; ++i)
    if (strcmp(r->e[r->by_name[i - 1]].name, r->e[r->by_name[i]].name) == 0)
      return sq_error_set(SQ_ERR_FORMAT, "%s: tensor %s is stored both dense and compressed", dir,
                          r->e[r->by_name[i]].name);
  return SQ_OK;
}

sq_status sq_ct_open(const char *dir, sq_ct_reader **out) {
  *out = NULL;
  sq_ct_reader *r = calloc(1, sizeof *r);
  sq_status st = SQ_OK;
  if (!r) return sq_error_set(SQ_ERR_NOMEM, "out of memory opening %s", dir);
  SQ_CHECK_GOTO(load_config(r, dir), st, fail);
  if (r->has_cfg && r->cfg.sparsity.present && strcmp(r->cfg.sparsity.format, "dense") != 0) {
    st = sq_error_set(SQ_ERR_UNSUPPORTED,
                      "%s/config.json: sparsity_config.format \"%s\" is not read by shardq yet "
                      "(only \"dense\" storage of sparse weights)",
                      dir, r->cfg.sparsity.format);
    goto fail;
  }
  SQ_CHECK_GOTO(sq_ckpt_open(dir, &r->ck), st, fail);
  SQ_CHECK_GOTO(list_tensors(r), st, fail);
  SQ_CHECK_GOTO(index_names(r, dir), st, fail);
  *out = r;
  return SQ_OK;
fail:
  sq_ct_close(r);
  return st;
}

void sq_ct_close(sq_ct_reader *r) {
  if (!r) return;
  for (size_t i = 0; i < r->n; ++i) {
    free(r->e[i].name);
    free(r->e[i].module);
  }
  free(r->e);
  free(r->by_name);
  if (r->has_cfg) sq_ct_config_free(&r->cfg);
  sq_ckpt_close(r->ck);
  free(r);
}

const sq_ct_config *sq_ct_reader_config(const sq_ct_reader *r) {
  return r->has_cfg ? &r->cfg : NULL;
}
const sq_ckpt *sq_ct_reader_ckpt(const sq_ct_reader *r) { return r->ck; }
size_t sq_ct_count(const sq_ct_reader *r) { return r->n; }
const char *sq_ct_name_at(const sq_ct_reader *r, size_t i) { return i < r->n ? r->e[i].name : NULL; }

static const ct_entry *find_entry(const sq_ct_reader *r, const char *name) {
  size_t lo = 0, hi = r->n;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    int c = strcmp(r->e[r->by_name[mid]].name, name);
    if (c == 0) return &r->e[r->by_name[mid]];
    if (c < 0) lo = mid + 1;
    else hi = mid;
  }
  return NULL;
}

sq_status sq_ct_shape(const sq_ct_reader *r, const char *name, int *ndim,
                      int64_t shape[SQ_ST_MAX_DIMS]) {
  const ct_entry *e = find_entry(r, name);
  if (!e)
    return sq_error_set(SQ_ERR_ARG, "%s: no tensor %s", sq_ckpt_dir(r->ck), name);
  *ndim = e->ndim;
  memcpy(shape, e->shape, sizeof e->shape);
  return SQ_OK;
}

/* A 2-D tensor's shape must be exactly (rows, cols); a tensor-strategy
 * parameter (rows == 0) must hold one element ([1], [] or [1, 1]). */
static sq_status check_shape(const sq_st_file *f, const sq_st_tensor *t, int64_t rows,
                             int64_t cols) {
  if (rows == 0) {
    if (t->nelem == 1) return SQ_OK;
    return sq_error_set(SQ_ERR_FORMAT, "%s: tensor %s must have 1 element (tensor strategy), has %llu",
                        file_of(f), t->name, (unsigned long long)t->nelem);
  }
  if (t->ndim == 2 && t->shape[0] == rows && t->shape[1] == cols) return SQ_OK;
  char got[96] = "";
  size_t o = 0;
  for (int d = 0; d < t->ndim && o < sizeof got - 24; ++d)
    o += (size_t)snprintf(got + o, sizeof got - o, "%s%lld", d ? ", " : "", (long long)t->shape[d]);
  return sq_error_set(SQ_ERR_FORMAT, "%s: tensor %s has shape [%s], expected [%lld, %lld]",
                      file_of(f), t->name, got, (long long)rows, (long long)cols);
}

static sq_status need(const sq_ct_reader *r, const ct_entry *e, const char *suffix,
                      const sq_st_file **f, const sq_st_tensor **t, const sq_st_file *wf) {
  *t = find_param(r, e->module, suffix, f);
  if (!*t)
    return sq_error_set(SQ_ERR_FORMAT, "%s: tensor %s.%s is missing (module %s is quantized, format %s)",
                        file_of(wf), e->module, suffix, e->module, sq_ct_format_name(e->fmt));
  return SQ_OK;
}

static sq_status check_dtype(const sq_st_file *f, const sq_st_tensor *t, sq_dtype want) {
  if (t->dtype == want) return SQ_OK;
  return sq_error_set(SQ_ERR_FORMAT, "%s: tensor %s has dtype %s, expected %s", file_of(f), t->name,
                      sq_dtype_name(t->dtype), sq_dtype_name(want));
}

static sq_status read_quantized(const sq_ct_reader *r, const ct_entry *e, float *dst) {
  const sq_qargs *qa = &e->scheme->weights.q;
  const int bits = qa->num_bits;
  const int64_t d_out = e->shape[0], d_in = e->shape[1];
  const bool is_float = qa->type == SQ_QTYPE_FLOAT;
  const bool asym = !is_float && !qa->symmetric;
  const int64_t srows = qa->strategy == SQ_QSTRAT_TENSOR ? 0 : d_out; /* 0: one element */
  const int64_t scols = qa->strategy == SQ_QSTRAT_GROUP ? (d_in + qa->group_size - 1) / qa->group_size : 1;
  const sq_st_file *wf = NULL, *sf = NULL, *zf = NULL, *gf = NULL;
  const sq_st_tensor *wt, *stt, *zt = NULL, *gt;
  sq_status st = SQ_OK;
  float *scales = NULL;
  int32_t *zp = NULL, *gidx = NULL;
  void *raw = NULL;

  if (qa->strategy != SQ_QSTRAT_TENSOR && qa->strategy != SQ_QSTRAT_CHANNEL &&
      qa->strategy != SQ_QSTRAT_GROUP)
    return sq_error_set(SQ_ERR_UNSUPPORTED, "%s: module %s uses a weight strategy shardq does not read",
                        sq_ckpt_dir(r->ck), e->module);
  if (e->fmt == SQ_CT_FMT_PACK) {
    SQ_CHECK(need(r, e, "weight_packed", &wf, &wt, NULL));
    SQ_CHECK(check_dtype(wf, wt, SQ_DTYPE_I32));
    if (is_float || bits < 1 || bits > 8)
      return sq_error_set(SQ_ERR_FORMAT, "%s: tensor %s is packed but config.json gives %d-bit %s weights",
                          file_of(wf), wt->name, bits, is_float ? "float" : "int");
    if (wt->ndim != 2 || wt->shape[0] != d_out || wt->shape[1] != sq_pack_words(d_in, bits))
      return sq_error_set(SQ_ERR_FORMAT,
                          "%s: tensor %s has shape [%lld, %lld], expected [%lld, %lld] for "
                          "%s.weight_shape = [%lld, %lld] at %d bits",
                          file_of(wf), wt->name, (long long)wt->shape[0],
                          (long long)(wt->ndim > 1 ? wt->shape[1] : 0), (long long)d_out,
                          (long long)sq_pack_words(d_in, bits), e->module, (long long)d_out,
                          (long long)d_in, bits);
  } else {
    SQ_CHECK(need(r, e, "weight", &wf, &wt, NULL));
    SQ_CHECK(check_dtype(wf, wt, is_float ? SQ_DTYPE_F8_E4M3 : SQ_DTYPE_I8));
  }
  SQ_CHECK(need(r, e, "weight_scale", &sf, &stt, wf));
  if (stt->dtype != SQ_DTYPE_F32 && stt->dtype != SQ_DTYPE_F16 && stt->dtype != SQ_DTYPE_BF16)
    return sq_error_set(SQ_ERR_FORMAT, "%s: tensor %s has dtype %s, expected F32, F16 or BF16",
                        file_of(sf), stt->name, sq_dtype_name(stt->dtype));
  SQ_CHECK(check_shape(sf, stt, srows, scols));
  const sq_dtype sdt = stt->dtype;
  const bool zpk = asym && e->fmt == SQ_CT_FMT_PACK && qa->strategy != SQ_QSTRAT_TENSOR;
  if (asym) {
    SQ_CHECK(need(r, e, "weight_zero_point", &zf, &zt, wf));
    if (zpk) {
      SQ_CHECK(check_dtype(zf, zt, SQ_DTYPE_I32));
      SQ_CHECK(check_shape(zf, zt, sq_pack_words(d_out, bits), scols));
    } else {
      SQ_CHECK(check_dtype(zf, zt, SQ_DTYPE_I8));
      SQ_CHECK(check_shape(zf, zt, srows, scols));
    }
  }
  gt = find_param(r, e->module, "weight_g_idx", &gf);
  if (gt) {
    SQ_CHECK(check_dtype(gf, gt, SQ_DTYPE_I32));
    if (gt->nelem != (uint64_t)d_in || qa->strategy != SQ_QSTRAT_GROUP)
      return sq_error_set(SQ_ERR_FORMAT, "%s: tensor %s must be I32 [%lld] with a group strategy",
                          file_of(gf), gt->name, (long long)d_in);
  }

  const size_t nscale = (size_t)(srows ? srows : 1) * (size_t)scols;
  scales = malloc(nscale * sizeof *scales);
  zp = calloc(nscale, sizeof *zp);
  if (!scales || !zp) {
    st = sq_error_set(SQ_ERR_NOMEM, "%s: out of memory", e->name);
    goto done;
  }
  SQ_CHECK_GOTO(sq_st_read_f32(sf, stt, scales, nscale), st, done);
  if (zt && zpk) {
    const int pf = sq_pack_factor(bits);
    size_t nz = (size_t)zt->nelem;
    uint32_t *zw = malloc(nz * 4);
    raw = zw;
    if (!zw) {
      st = sq_error_set(SQ_ERR_NOMEM, "%s: out of memory", e->name);
      goto done;
    }
    SQ_CHECK_GOTO(sq_st_read_raw(zf, zt, 0, zw, nz * 4), st, done);
    for (int64_t rr = 0; rr < d_out; ++rr)
      for (int64_t c = 0; c < scols; ++c)
        zp[rr * scols + c] = sq_unpack_slot(zw[(rr / pf) * scols + c], (int)(rr % pf), bits);
    free(raw);
    raw = NULL;
  } else if (zt) {
    int8_t *z8 = malloc(nscale);
    raw = z8;
    if (!z8) {
      st = sq_error_set(SQ_ERR_NOMEM, "%s: out of memory", e->name);
      goto done;
    }
    SQ_CHECK_GOTO(sq_st_read_raw(zf, zt, 0, z8, nscale), st, done);
    for (size_t i = 0; i < nscale; ++i) zp[i] = z8[i];
    free(raw);
    raw = NULL;
  }
  if (gt) {
    gidx = malloc((size_t)d_in * sizeof *gidx);
    if (!gidx) {
      st = sq_error_set(SQ_ERR_NOMEM, "%s: out of memory", e->name);
      goto done;
    }
    SQ_CHECK_GOTO(sq_st_read_raw(gf, gt, 0, gidx, (uint64_t)d_in * 4), st, done);
    for (int64_t c = 0; c < d_in; ++c)
      if (gidx[c] < 0 || gidx[c] >= scols) {
        st = sq_error_set(SQ_ERR_FORMAT, "%s: tensor %s: g_idx[%lld] = %d is not a group in [0, %lld)",
                          file_of(gf), gt->name, (long long)c, gidx[c], (long long)scols);
        goto done;
      }
  }

  /* Codes, then (q - zp) * scale in the scale dtype. */
  const uint64_t nbytes = wt->end - wt->begin;
  raw = malloc(nbytes ? nbytes : 1);
  if (!raw) {
    st = sq_error_set(SQ_ERR_NOMEM, "%s: out of memory", e->name);
    goto done;
  }
  SQ_CHECK_GOTO(sq_st_read_raw(wf, wt, 0, raw, nbytes), st, done);
  const int64_t words = e->fmt == SQ_CT_FMT_PACK ? sq_pack_words(d_in, bits) : 0;
  const int pf = e->fmt == SQ_CT_FMT_PACK ? sq_pack_factor(bits) : 1;
  for (int64_t rr = 0; rr < d_out; ++rr) {
    const int64_t srow = srows ? rr : 0;
    for (int64_t c = 0; c < d_in; ++c) {
      int64_t g = 0;
      if (qa->strategy == SQ_QSTRAT_GROUP) g = gidx ? gidx[c] : c / qa->group_size;
      const float s = scales[srow * scols + g];
      float v;
      if (e->fmt == SQ_CT_FMT_PACK) {
        uint32_t word = ((const uint32_t *)raw)[rr * words + c / pf];
        v = sq_q_int_dequantize(sq_unpack_slot(word, (int)(c % pf), bits), s, zp[srow * scols + g], sdt);
      } else if (is_float) {
        v = sq_q_fp8_dequantize(((const uint8_t *)raw)[rr * d_in + c], s, sdt);
      } else {
        int q = ((const int8_t *)raw)[rr * d_in + c];
        if (q < sq_q_min(bits) || q > sq_q_max(bits)) {
          st = sq_error_set(SQ_ERR_FORMAT, "%s: tensor %s[%lld, %lld] = %d is outside the %d-bit range",
                            file_of(wf), wt->name, (long long)rr, (long long)c, q, bits);
          goto done;
        }
        v = sq_q_int_dequantize(q, s, zp[srow * scols + g], sdt);
      }
      dst[rr * d_in + c] = v;
    }
  }
done:
  free(raw);
  free(scales);
  free(zp);
  free(gidx);
  return st;
}

sq_status sq_ct_read_dense_f32(const sq_ct_reader *r, const char *name, float *dst, uint64_t n) {
  const ct_entry *e = find_entry(r, name);
  if (!e)
    return sq_error_set(SQ_ERR_ARG, "%s: no tensor %s (neither stored dense nor compressed)",
                        sq_ckpt_dir(r->ck), name);
  if (!e->module) return sq_ckpt_read_f32(r->ck, name, dst, n);
  uint64_t want = (uint64_t)e->shape[0] * (uint64_t)e->shape[1];
  if (n != want)
    return sq_error_set(SQ_ERR_ARG, "%s: asked for %llu elements of %s, which has %llu",
                        sq_ckpt_dir(r->ck), (unsigned long long)n, name, (unsigned long long)want);
  return read_quantized(r, e, dst);
}
