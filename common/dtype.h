/* Element types of checkpoints and exact conversions between them.
 *
 * The conversions are static inline and marked SQ_HD so that the CUDA kernels
 * use the very code that the CPU tests check (every bf16, fp16 and fp8 bit
 * pattern is tested against an independent formula in tests/). Narrowing
 * conversions round to nearest, ties to even, as PyTorch does; fp8 e4m3fn has
 * no infinity, so it saturates at +-448 and keeps NaN as 0x7f/0xff. */
#ifndef SQ_COMMON_DTYPE_H
#define SQ_COMMON_DTYPE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#ifdef __CUDACC__
#define SQ_HD __host__ __device__
#else
#define SQ_HD
#endif

#ifdef __cplusplus
extern "C" {
#endif

typedef enum sq_dtype {
  SQ_DTYPE_INVALID = 0,
  SQ_DTYPE_F64,
  SQ_DTYPE_F32,
  SQ_DTYPE_F16,
  SQ_DTYPE_BF16,
  SQ_DTYPE_F8_E4M3, /* float8_e4m3fn, safetensors "F8_E4M3" */
  SQ_DTYPE_F8_E5M2,
  SQ_DTYPE_I64,
  SQ_DTYPE_I32,
  SQ_DTYPE_I16,
  SQ_DTYPE_I8,
  SQ_DTYPE_U64,
  SQ_DTYPE_U32,
  SQ_DTYPE_U16,
  SQ_DTYPE_U8,
  SQ_DTYPE_BOOL,
  SQ_DTYPE_COUNT
} sq_dtype;

/* Bytes per element (0 for SQ_DTYPE_INVALID). */
size_t sq_dtype_size(sq_dtype dt);
/* safetensors spelling ("BF16", "F8_E4M3", ...). */
const char *sq_dtype_name(sq_dtype dt);
/* Parse a safetensors dtype string; SQ_DTYPE_INVALID if unknown. */
sq_dtype sq_dtype_from_name(const char *name);
/* Parse a torch_dtype string from config.json ("bfloat16", "float16", "float32"). */
sq_dtype sq_dtype_from_torch_name(const char *name);
/* torch spelling ("bfloat16"), for config.json. */
const char *sq_dtype_torch_name(sq_dtype dt);

static inline SQ_HD uint32_t sq_f32_bits(float f) {
  uint32_t u;
  memcpy(&u, &f, sizeof u);
  return u;
}

static inline SQ_HD float sq_bits_f32(uint32_t u) {
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
}

static inline SQ_HD float sq_bf16_to_f32(uint16_t h) {
  return sq_bits_f32((uint32_t)h << 16);
}

static inline SQ_HD uint16_t sq_f32_to_bf16(float f) {
  uint32_t x = sq_f32_bits(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40u); /* quiet NaN */
  x += 0x7fffu + ((x >> 16) & 1u);
  return (uint16_t)(x >> 16);
}

static inline SQ_HD float sq_f16_to_f32(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
  uint32_t e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
  if (e == 0) {
    float v = (float)m * (1.0f / 16777216.0f); /* m * 2^-24, exact */
    return sign ? -v : v;
  }
  if (e == 31) return sq_bits_f32(sign | 0x7f800000u | (m << 13));
  return sq_bits_f32(sign | ((e + 112u) << 23) | (m << 13));
}

static inline SQ_HD uint16_t sq_f32_to_f16(float f) {
  uint32_t x = sq_f32_bits(f);
  uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
  x &= 0x7fffffffu;
  if (x > 0x7f800000u) return (uint16_t)(sign | 0x7e00u);  /* NaN */
  if (x >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* >= 65520 -> inf */
  if (x < 0x38800000u) {                                    /* below 2^-14: subnormal */
    if (x < 0x33000001u) return sign;                       /* <= 2^-25 rounds to 0 */
    uint32_t e = x >> 23, m = (x & 0x7fffffu) | 0x800000u;
    uint32_t shift = 126u - e;
    uint32_t q = m >> shift, rem = m & ((1u << shift) - 1u), half = 1u << (shift - 1u);
    if (rem > half || (rem == half && (q & 1u))) ++q;
    return (uint16_t)(sign | q);
  }
  uint32_t r = x - 0x38000000u; /* rebias 127 -> 15 */
  uint32_t q = r >> 13, rem = r & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (q & 1u))) ++q;
  return (uint16_t)(sign | q);
}

#define SQ_FP8_E4M3_MAX 448.0f

static inline SQ_HD float sq_fp8e4m3_to_f32(uint8_t b) {
  uint32_t e = (b >> 3) & 0xfu, m = b & 7u;
  float v;
  if (e == 15 && m == 7) return sq_bits_f32(((uint32_t)(b & 0x80u) << 24) | 0x7fc00000u);
  if (e == 0) v = (float)m * (1.0f / 512.0f); /* m * 2^-9 */
  else v = sq_bits_f32(((e + 120u) << 23) | (m << 20));
  return (b & 0x80u) ? -v : v;
}

/* Round to nearest even, saturating to +-448 (also for +-inf); NaN -> 0x7f. */
static inline SQ_HD uint8_t sq_f32_to_fp8e4m3(float f) {
  uint32_t x = sq_f32_bits(f);
  uint8_t sign = (uint8_t)((x >> 24) & 0x80u);
  x &= 0x7fffffffu;
  if (x > 0x7f800000u) return (uint8_t)(sign | 0x7fu);
  if (x >= 0x43e00000u) return (uint8_t)(sign | 0x7eu); /* >= 448 */
  if (x < 0x3c800000u) {                                /* below 2^-6: subnormal */
    uint32_t e = x >> 23;
    if (e < 117u) return sign; /* < 2^-10 rounds to 0 */
    uint32_t m = (x & 0x7fffffu) | 0x800000u;
    uint32_t shift = 141u - e;
    uint32_t q = m >> shift, rem = m & ((1u << shift) - 1u), half = 1u << (shift - 1u);
    if (rem > half || (rem == half && (q & 1u))) ++q;
    return (uint8_t)(sign | q);
  }
  uint32_t r = x - 0x3c000000u; /* rebias 127 -> 7 */
  uint32_t q = r >> 20, rem = r & 0xfffffu;
  if (rem > 0x80000u || (rem == 0x80000u && (q & 1u))) ++q;
  return (uint8_t)(sign | q);
}

/* Round x to the nearest value representable in dt (bf16, f16, f32). Scales
 * are stored in the checkpoint's dtype, so quantizers use the rounded scale. */
static inline SQ_HD float sq_round_to_dtype(float x, sq_dtype dt) {
  if (dt == SQ_DTYPE_BF16) return sq_bf16_to_f32(sq_f32_to_bf16(x));
  if (dt == SQ_DTYPE_F16) return sq_f16_to_f32(sq_f32_to_f16(x));
  return x;
}

/* Convert n elements of src (dtype dt, little-endian) to fp32. Returns 0, or
 * -1 when dt is not a floating type that converts exactly. */
int sq_dtype_convert_to_f32(sq_dtype dt, const void *src, float *dst, size_t n);

/* Convert n fp32 values to dt (F32, F16, BF16, F8_E4M3); -1 if unsupported. */
int sq_dtype_convert_from_f32(sq_dtype dt, const float *src, void *dst, size_t n);

#ifdef __cplusplus
}
#endif

#endif
