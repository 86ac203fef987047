/* Names, sizes and bulk conversions for common/dtype.h. */
#include "common/dtype.h"

#include <string.h>

static const struct {
  sq_dtype dt;
  const char *name;
  size_t size;
} sq_dtype_table[] = {
    {SQ_DTYPE_F64, "F64", 8},     {SQ_DTYPE_F32, "F32", 4},
    {SQ_DTYPE_F16, "F16", 2},     {SQ_DTYPE_BF16, "BF16", 2},
    {SQ_DTYPE_F8_E4M3, "F8_E4M3", 1}, {SQ_DTYPE_F8_E5M2, "F8_E5M2", 1},
    {SQ_DTYPE_I64, "I64", 8},     {SQ_DTYPE_I32, "I32", 4},
    {SQ_DTYPE_I16, "I16", 2},     {SQ_DTYPE_I8, "I8", 1},
    {SQ_DTYPE_U64, "U64", 8},     {SQ_DTYPE_U32, "U32", 4},
    {SQ_DTYPE_U16, "U16", 2},     {SQ_DTYPE_U8, "U8", 1},
    {SQ_DTYPE_BOOL, "BOOL", 1},
};

#define SQ_DTYPE_TABLE_LEN (sizeof sq_dtype_table / sizeof sq_dtype_table[0])

size_t sq_dtype_size(sq_dtype dt) {
  for (size_t i = 0; i < SQ_DTYPE_TABLE_LEN; ++i)
    if (sq_dtype_table[i].dt == dt) return sq_dtype_table[i].size;
  return 0;
}

const char *sq_dtype_name(sq_dtype dt) {
  for (size_t i = 0; i < SQ_DTYPE_TABLE_LEN; ++i)
    if (sq_dtype_table[i].dt == dt) return sq_dtype_table[i].name;
  return "INVALID";
}

sq_dtype sq_dtype_from_name(const char *name) {
  for (size_t i = 0; i < SQ_DTYPE_TABLE_LEN; ++i)
    if (strcmp(sq_dtype_table[i].name, name) == 0) return sq_dtype_table[i].dt;
  return SQ_DTYPE_INVALID;
}

sq_dtype sq_dtype_from_torch_name(const char *name) {
  if (!strcmp(name, "bfloat16")) return SQ_DTYPE_BF16;
  if (!strcmp(name, "float16") || !strcmp(name, "half")) return SQ_DTYPE_F16;
  if (!strcmp(name, "float32") || !strcmp(name, "float")) return SQ_DTYPE_F32;
  if (!strcmp(name, "float8_e4m3fn")) return SQ_DTYPE_F8_E4M3;
  return SQ_DTYPE_INVALID;
}

const char *sq_dtype_torch_name(sq_dtype dt) {
  switch (dt) {
    case SQ_DTYPE_BF16: return "bfloat16";
    case SQ_DTYPE_F16: return "float16";
    case SQ_DTYPE_F32: return "float32";
    case SQ_DTYPE_F8_E4M3: return "float8_e4m3fn";
    default: return "unknown";
  }
}

int sq_dtype_convert_to_f32(sq_dtype dt, const void *src, float *dst, size_t n) {
  const uint8_t *s = (const uint8_t *)src;
  switch (dt) {
    case SQ_DTYPE_F32:
      memcpy(dst, src, n * 4);
      return 0;
    case SQ_DTYPE_BF16:
      for (size_t i = 0; i < n; ++i)
        dst[i] = sq_bf16_to_f32((uint16_t)(s[2 * i] | (s[2 * i + 1] << 8)));
      return 0;
    case SQ_DTYPE_F16:
      for (size_t i = 0; i < n; ++i)
        dst[i] = sq_f16_to_f32((uint16_t)(s[2 * i] | (s[2 * i + 1] << 8)));
      return 0;
    case SQ_DTYPE_F8_E4M3:
      for (size_t i = 0; i < n; ++i) dst[i] = sq_fp8e4m3_to_f32(s[i]);
      return 0;
    default:
      return -1;
  }
}

int sq_dtype_convert_from_f32(sq_dtype dt, const float *src, void *dst, size_t n) {
  uint8_t *d = (uint8_t *)dst;
  switch (dt) {
    case SQ_DTYPE_F32:
      memcpy(dst, src, n * 4);
      return 0;
    case SQ_DTYPE_BF16:
    case SQ_DTYPE_F16:
      for (size_t i = 0; i < n; ++i) {
        uint16_t h = dt == SQ_DTYPE_BF16 ? sq_f32_to_bf16(src[i]) : sq_f32_to_f16(src[i]);
        d[2 * i] = (uint8_t)(h & 0xff);
        d[2 * i + 1] = (uint8_t)(h >> 8);
      }
      return 0;
    case SQ_DTYPE_F8_E4M3:
      for (size_t i = 0; i < n; ++i) d[i] = sq_f32_to_fp8e4m3(src[i]);
      return 0;
    default:
      return -1;
  }
}
