/* Per-element packing math of compressed-tensors `pack-quantized`, shared by
 * the CPU reference (kernels/cpu/pack.c) and the CUDA kernels (static inline,
 * SQ_HD), so that the CPU tests cover the GPU path.
 *
 * The layout is that of compressed-tensors' pack_to_int32 / unpack_from_int32
 * (compressed_tensors/compressors/quantized_compressors/pack_quantized.py,
 * checked in vllm-project/compressed-tensors at commit 179cba93 and in the
 * older numpy version in neuralmagic/compressed-tensors at 0199c6e7; both give
 * the same bits):
 *   - a signed code q in [-2^(b-1), 2^(b-1)-1] is stored unsigned: u = q + 2^(b-1)
 *   - pack_factor = 32 / b values go into one int32 word (integer division):
 *     b=2 -> 16, b=3 -> 10, b=4 -> 8, b=8 -> 4. Values never straddle two words;
 *     for b=3 the top 2 bits of each word are 0.
 *   - word k of a row holds the values k*pf .. k*pf+pf-1, value k*pf+i in bits
 *     [i*b, i*b+b): the first value sits in the least significant bits.
 *   - a row of n values takes ceil(n / pf) words; the unused slots of the last
 *     word are padded with u = 0 (the pad is applied after the offset).
 *   - weight_packed is (d_out, ceil(d_in / pf)) packed along d_in ("dim 1");
 *     an asymmetric weight_zero_point (d_out, n_groups) is packed along d_out
 *     ("dim 0") into (ceil(d_out / pf), n_groups).
 *   - the int32 is the bit pattern (8-bit values in the top byte give negative
 *     int32s, as torch's wrapping int32 sum does). */
#ifndef SQ_KERNELS_PACK_MATH_H
#define SQ_KERNELS_PACK_MATH_H

#include <stdint.h>

#include "common/dtype.h" /* SQ_HD */

/* Values per int32 word (compressed-tensors' pack_factor). */
static inline SQ_HD int sq_pack_factor(int bits) { return 32 / bits; }

/* int32 words that n values take when packed. */
static inline SQ_HD int64_t sq_pack_words(int64_t n, int bits) {
  int64_t pf = sq_pack_factor(bits);
  return (n + pf - 1) / pf;
}

/* Word with signed code q placed in slot i (0 <= i < pack factor); OR the
 * results of the slots together. q must be in the signed range of bits. */
static inline SQ_HD uint32_t sq_pack_slot(int q, int i, int bits) {
  uint32_t mask = (1u << bits) - 1u;
  uint32_t u = (uint32_t)(q + (1 << (bits - 1))) & mask;
  return u << (i * bits);
}

/* Signed code in slot i of a packed word. */
static inline SQ_HD int sq_unpack_slot(uint32_t word, int i, int bits) {
  uint32_t mask = (1u << bits) - 1u;
  return (int)((word >> (i * bits)) & mask) - (1 << (bits - 1));
}

#endif
