/* sq_ckpt_read_f32 must refuse a DeepSeek block-scaled fp8 weight (an F8_E4M3
 * tensor with a "<name>_scale_inv" next to it), since a plain conversion would
 * leave it unscaled, and point at sharding/fp8_block.h; the fp8 reader must still
 * read it, with the scale applied. Tiny checkpoints are written by hand, with
 * e4m3 codes whose values are known from the format's definition (sign, 4-bit
 * exponent with bias 7, 3-bit mantissa), so the expected floats do not come from
 * the code under test. One single-file checkpoint, and one of two shards with
 * the scale in the other shard from its weight. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sharding/checkpoint.h"
#include "sharding/fp8_block.h"
#include "sharding/safetensors.h"
#include "test_util.h"

#define ROWS 2
#define COLS 3

/* e4m3: 0x38 = 0 0111 000 = 1.0; 0x40 = 2^1 = 2.0; 0x3C = 1.5; 0xB8 = -1.0;
 * 0x30 = 2^-1 = 0.5; 0x44 = 2^1 * 1.5 = 3.0. */
static const uint8_t codes[ROWS * COLS] = {0x38, 0x40, 0x3C, 0xB8, 0x30, 0x44};
static const float values[ROWS * COLS] = {1.0f, 2.0f, 1.5f, -1.0f, 0.5f, 3.0f};
static const float scale = 0.25f; /* one 128 x 128 block covers the 2 x 3 weight */

static const char *W = "model.layers.0.mlp.down_proj.weight";
static const char *WS = "model.layers.0.mlp.down_proj.weight_scale_inv";
static const char *P = "model.layers.0.mlp.up_proj.weight"; /* F8_E4M3, no scale */

/* Declare and write tensors [first, last) of the fixed list into path. */
static void write_shard(const char *path, int first, int last) {
  const int64_t wshape[2] = {ROWS, COLS}, sshape[2] = {1, 1};
  sq_st_writer *w = NULL;
  SQ_EXPECT(sq_st_writer_create(path, &w) == SQ_OK);
  if (!w) return;
  for (int i = first; i < last; ++i) {
    if (i == 0) SQ_EXPECT(sq_st_writer_declare(w, W, SQ_DTYPE_F8_E4M3, 2, wshape) == SQ_OK);
    if (i == 1) SQ_EXPECT(sq_st_writer_declare(w, WS, SQ_DTYPE_F32, 2, sshape) == SQ_OK);
    if (i == 2) SQ_EXPECT(sq_st_writer_declare(w, P, SQ_DTYPE_F8_E4M3, 2, wshape) == SQ_OK);
  }
  for (int i = first; i < last; ++i) {
    if (i == 0) SQ_EXPECT(sq_st_writer_write(w, W, codes) == SQ_OK);
    if (i == 1) SQ_EXPECT(sq_st_writer_write(w, WS, &scale) == SQ_OK);
    if (i == 2) SQ_EXPECT(sq_st_writer_write(w, P, codes) == SQ_OK);
  }
  SQ_EXPECT_MSG(sq_st_writer_commit(w) == SQ_OK, "%s", sq_error_message());
  sq_st_writer_free(w);
}

static void check_dir(const char *dir) {
  sq_ckpt *c = NULL;
  SQ_EXPECT_MSG(sq_ckpt_open(dir, &c) == SQ_OK, "%s", sq_error_message());
  if (!c) return;
  float got[ROWS * COLS];

  /* The scaled weight: refused, one line naming it, its scale and the fp8 reader;
   * dst untouched. */
  for (int i = 0; i < ROWS * COLS; ++i) got[i] = -7.0f;
  sq_error_clear();
  SQ_EXPECT_EQ_INT(sq_ckpt_read_f32(c, W, got, ROWS * COLS), SQ_ERR_UNSUPPORTED);
  const char *msg = sq_error_message();
  SQ_EXPECT_MSG(strstr(msg, W) != NULL, "message lacks the tensor: %s", msg);
  SQ_EXPECT_MSG(strstr(msg, WS) != NULL, "message lacks the scale tensor: %s", msg);
  SQ_EXPECT_MSG(strstr(msg, "sq_fp8_block_read_f32") && strstr(msg, "sharding/fp8_block.h"),
                "message lacks the hint: %s", msg);
  SQ_EXPECT_MSG(strstr(msg, dir) != NULL, "message lacks the directory: %s", msg);
  SQ_EXPECT_MSG(strchr(msg, '\n') == NULL, "message is not one line: %s", msg);
  for (int i = 0; i < ROWS * COLS; ++i) SQ_EXPECT(got[i] == -7.0f);
  sq_error_clear();

  /* The fp8 reader applies the scale: exact, since every product is a power-of-two
   * multiple of a value with few mantissa bits. */
  SQ_EXPECT_MSG(sq_fp8_block_read_f32(c, W, got, ROWS, COLS) == SQ_OK, "%s", sq_error_message());
  for (int i = 0; i < ROWS * COLS; ++i)
    SQ_EXPECT_MSG(got[i] == values[i] * scale, "[%d] %g != %g", i, (double)got[i],
                  (double)(values[i] * scale));

  /* The scale itself (F32) and an F8_E4M3 tensor without a scale still read. */
  float s = 0;
  SQ_EXPECT(sq_ckpt_read_f32(c, WS, &s, 1) == SQ_OK && s == scale);
  SQ_EXPECT_MSG(sq_ckpt_read_f32(c, P, got, ROWS * COLS) == SQ_OK, "%s", sq_error_message());
  for (int i = 0; i < ROWS * COLS; ++i) SQ_EXPECT(got[i] == values[i]);

  /* A missing tensor keeps its own error. */
  SQ_EXPECT_EQ_INT(sq_ckpt_read_f32(c, "nope.weight", got, 1), SQ_ERR_FORMAT);
  sq_error_clear();
  sq_ckpt_close(c);
}

int main(void) {
  char *d1 = sq_test_tmpdir("ckpt-fp8-guard-1"), *d2 = sq_test_tmpdir("ckpt-fp8-guard-2");
  char path[1024];

  snprintf(path, sizeof path, "%s/model.safetensors", d1);
  write_shard(path, 0, 3);
  check_dir(d1);

  /* Two shards: the weight in the first, its scale (and P) in the second. */
  const char *f1 = "model-00001-of-00002.safetensors", *f2 = "model-00002-of-00002.safetensors";
  snprintf(path, sizeof path, "%s/%s", d2, f1);
  write_shard(path, 0, 1);
  snprintf(path, sizeof path, "%s/%s", d2, f2);
  write_shard(path, 1, 3);
  const char *names[3] = {W, WS, P}, *files[3] = {f1, f2, f2};
  SQ_EXPECT_MSG(sq_ckpt_write_index(d2, 3, names, files, 2 * ROWS * COLS + 4) == SQ_OK, "%s",
                sq_error_message());
  check_dir(d2);

  free(d1);
  free(d2);
  return sq_test_result("test_ckpt_fp8_guard");
}
