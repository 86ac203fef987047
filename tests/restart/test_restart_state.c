/* Per-rank state files (worker/state.h): a round trip from in-memory and
 * spilled activations gives back exactly the values of a formula (the
 * reference); the file's layout is checked with the raw HDF5 API (a second
 * reader); the returned checksum equals sq_file_checksum of the published
 * file; truncated, bit-flipped, foreign (other layer/rank/shape) and missing
 * files are refused with a message naming the file; no temporary file is left
 * behind; sq_state_prune keeps two generations and other ranks' files. */
#include <dirent.h>
#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/fsio.h"
#include "coordinator/journal.h"
#include "test_util.h"
#include "worker/state.h"

static char *dir;

/* The reference value of sample s, token t, channel c (exact in fp32). */
static float ref_value(int64_t s, int64_t t, int64_t c) {
  return (float)(s * 1000 + t * 10 + c) * 0.25f - 7.5f;
}

static void fill(sq_acts *a, int64_t s0) {
  float *buf = malloc((size_t)(a->T * a->d) * sizeof(float));
  for (int64_t s = 0; s < a->n; s++) {
    for (int64_t t = 0; t < a->T; t++)
      for (int64_t c = 0; c < a->d; c++) buf[t * a->d + c] = ref_value(s0 + s, t, c);
    SQ_EXPECT(sq_acts_write(a, s, 1, buf) == SQ_OK);
  }
  free(buf);
}

static int64_t count_mismatch(const sq_acts *a, int64_t s0) {
  float *buf = malloc((size_t)(a->T * a->d) * sizeof(float));
  int64_t bad = 0;
  for (int64_t s = 0; s < a->n; s++) {
    SQ_EXPECT(sq_acts_read(a, s, 1, buf) == SQ_OK);
    for (int64_t t = 0; t < a->T; t++)
      for (int64_t c = 0; c < a->d; c++) bad += buf[t * a->d + c] != ref_value(s0 + s, t, c);
  }
  free(buf);
  return bad;
}

static char *state_path(int rank, int layer) {
  char name[64];
  sq_state_file_name(rank, layer, name, sizeof name);
  return sq_fs_join(dir, name);
}

static int contains(const char *hay, const char *needle) {
  return strstr(hay, needle) != NULL;
}

static int count_temps(void) {
  DIR *d = opendir(dir);
  int n = 0;
  struct dirent *e;
  while (d && (e = readdir(d)) != NULL) n += strstr(e->d_name, ".tmp.") != NULL;
  if (d) closedir(d);
  return n;
}

static void copy_file(const char *from, const char *to) {
  char *text = NULL;
  size_t len = 0;
  SQ_EXPECT(sq_fs_read_small_file(from, 1 << 26, &text, &len) == SQ_OK);
  FILE *f = fopen(to, "wb");
  fwrite(text, 1, len, f);
  fclose(f);
  free(text);
}

/* Attributes and dataset dims read with the raw HDF5 API. */
static void check_layout(const char *path, long long layer, long long rank, long long s0,
                         long long n, long long T, long long d) {
  hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
  SQ_EXPECT_MSG(f >= 0, "H5Fopen %s", path);
  if (f < 0) return;
  const char *names[] = {"format_version", "layer",   "rank",  "sample_start",
                         "sample_count",   "seq_len", "hidden"};
  long long want[] = {1, layer, rank, s0, n, T, d};
  for (int i = 0; i < 7; i++) {
    long long v = -1;
    hid_t at = H5Aopen(f, names[i], H5P_DEFAULT);
    SQ_EXPECT_MSG(at >= 0 && H5Aread(at, H5T_NATIVE_LLONG, &v) >= 0, "attribute %s", names[i]);
    if (at >= 0) H5Aclose(at);
    SQ_EXPECT_MSG(v == want[i], "attribute %s = %lld, want %lld", names[i], v, want[i]);
  }
  hid_t ds = H5Dopen2(f, "hidden", H5P_DEFAULT);
  hid_t sp = H5Dget_space(ds);
  hsize_t dims[3] = {0, 0, 0};
  SQ_EXPECT_EQ_INT(H5Sget_simple_extent_dims(sp, dims, NULL), 3);
  SQ_EXPECT(dims[0] == (hsize_t)n && dims[1] == (hsize_t)T && dims[2] == (hsize_t)d);
  hid_t ty = H5Dget_type(ds);
  SQ_EXPECT(H5Tequal(ty, H5T_IEEE_F32LE) > 0);
  H5Tclose(ty);
  H5Sclose(sp);
  H5Dclose(ds);
  H5Fclose(f);
}

static void test_round_trip(int spill) {
  const int64_t n = 5, T = 7, d = 12, s0 = 40;
  sq_acts a, b;
  char *sp1 = spill ? sq_fs_join(dir, "spill-a.h5") : NULL,
       *sp2 = spill ? sq_fs_join(dir, "spill-b.h5") : NULL;
  SQ_EXPECT(sq_acts_init(&a, n, T, d, sp1) == SQ_OK);
  SQ_EXPECT(sq_acts_init(&b, n, T, d, sp2) == SQ_OK);
  fill(&a, s0);
  sq_state_desc desc = {.layer = 4, .rank = 1, .sample_start = s0, .n = n, .T = T, .hidden = d};
  char hex[SQ_STATE_HEX_LEN + 1] = "";
  uint64_t bytes = 0;
  SQ_EXPECT(sq_state_write(dir, &desc, &a, sq_file_checksum, hex, &bytes) == SQ_OK);
  char *p = state_path(1, 4);
  SQ_EXPECT_MSG(contains(p, "state-rank00001-layer0004.h5"), "name %s", p);
  char again[SQ_HASH_HEX_LEN + 1];
  uint64_t again_bytes = 0;
  SQ_EXPECT(sq_file_checksum(p, again, &again_bytes) == SQ_OK);
  SQ_EXPECT_MSG(!strcmp(hex, again), "returned checksum %s, file has %s", hex, again);
  struct stat sb;
  SQ_EXPECT(stat(p, &sb) == 0 && (uint64_t)sb.st_size == bytes && bytes == again_bytes);
  /* The data alone is n*T*d*4 bytes: the file holds at least that. */
  SQ_EXPECT(bytes >= (uint64_t)(n * T * d * 4));
  check_layout(p, 4, 1, s0, n, T, d);
  SQ_EXPECT_EQ_INT(count_temps(), 0);
  SQ_EXPECT(sq_state_read(dir, &desc, sq_file_checksum, hex, &b) == SQ_OK);
  SQ_EXPECT_EQ_INT(count_mismatch(&b, s0), 0);
  sq_acts_free(&a, 0);
  sq_acts_free(&b, 0);
  free(sp1);
  free(sp2);
  free(p);
}

/* Expect a refusal whose message names the file and contains what. */
static void expect_refused(const sq_state_desc *desc, const char *hex, sq_status want,
                           const char *what) {
  sq_acts b;
  SQ_EXPECT(sq_acts_init(&b, desc->n, desc->T, desc->hidden, NULL) == SQ_OK);
  sq_error_clear();
  sq_status st = sq_state_read(dir, desc, hex ? sq_file_checksum : NULL, hex, &b);
  char name[64];
  sq_state_file_name(desc->rank, desc->layer, name, sizeof name);
  SQ_EXPECT_MSG(st == want, "%s: status %d, want %d (%s)", what, st, want, sq_error_message());
  SQ_EXPECT_MSG(contains(sq_error_message(), name), "%s: message does not name %s: %s", what, name,
                sq_error_message());
  SQ_EXPECT_MSG(contains(sq_error_message(), what), "%s: message: %s", what, sq_error_message());
  sq_error_clear();
  sq_acts_free(&b, 0);
}

static void test_damage(void) {
  const int64_t n = 3, T = 4, d = 16;
  sq_acts a;
  SQ_EXPECT(sq_acts_init(&a, n, T, d, NULL) == SQ_OK);
  fill(&a, 0);
  sq_state_desc desc = {.layer = 2, .rank = 0, .sample_start = 0, .n = n, .T = T, .hidden = d};
  char hex[SQ_STATE_HEX_LEN + 1];
  SQ_EXPECT(sq_state_write(dir, &desc, &a, sq_file_checksum, hex, NULL) == SQ_OK);
  char *p = state_path(0, 2), *keep = sq_fs_join(dir, "good.h5");
  copy_file(p, keep);

  /* Foreign files: other layer, rank, sample range, shape. */
  sq_state_desc other = desc;
  other.sample_start = 3;
  expect_refused(&other, NULL, SQ_ERR_FORMAT, "sample_start");
  other = desc;
  other.T = 5;
  expect_refused(&other, NULL, SQ_ERR_FORMAT, "seq_len");
  /* Rename to another layer's name: the layer attribute still says 2. */
  char *p7 = state_path(0, 7);
  copy_file(p, p7);
  other = desc;
  other.layer = 7;
  expect_refused(&other, NULL, SQ_ERR_FORMAT, "attribute 'layer' is 2, expected 7");
  unlink(p7);

  /* One flipped bit in the middle of the data: checksum refuses it. */
  struct stat sb;
  stat(p, &sb);
  FILE *f = fopen(p, "r+b");
  fseek(f, sb.st_size - (long)(n * T * d * 2), SEEK_SET);
  int c = fgetc(f);
  fseek(f, -1, SEEK_CUR);
  fputc(c ^ 0x10, f);
  fclose(f);
  expect_refused(&desc, hex, SQ_ERR_FORMAT, "does not match the journal");

  /* Truncated to half: the checksum refuses it; without a checksum HDF5 does. */
  copy_file(keep, p);
  SQ_EXPECT(truncate(p, sb.st_size / 2) == 0);
  expect_refused(&desc, hex, SQ_ERR_FORMAT, "truncated or damaged");
  expect_refused(&desc, NULL, SQ_ERR_FORMAT, "truncated");
  /* Truncated to 100 bytes (inside the superblock). */
  SQ_EXPECT(truncate(p, 100) == 0);
  expect_refused(&desc, NULL, SQ_ERR_FORMAT, "HDF5 cannot open it");
  /* Missing. */
  unlink(p);
  expect_refused(&desc, hex, SQ_ERR_IO, "state file missing");

  /* The intact copy still reads (the checks above did not pass a good file). */
  copy_file(keep, p);
  sq_acts b;
  SQ_EXPECT(sq_acts_init(&b, n, T, d, NULL) == SQ_OK);
  SQ_EXPECT(sq_state_read(dir, &desc, sq_file_checksum, hex, &b) == SQ_OK);
  SQ_EXPECT_EQ_INT(count_mismatch(&b, 0), 0);
  sq_acts_free(&b, 0);

  /* A write into a missing directory fails cleanly. */
  char *nodir = sq_fs_join(dir, "no/such/dir");
  sq_error_clear();
  SQ_EXPECT(sq_state_write(nodir, &desc, &a, sq_file_checksum, hex, NULL) == SQ_ERR_IO);
  SQ_EXPECT(contains(sq_error_message(), "no/such/dir"));
  sq_error_clear();
  SQ_EXPECT_EQ_INT(count_temps(), 0);
  free(nodir);
  unlink(keep);
  unlink(p);
  free(p7);
  free(p);
  free(keep);
  sq_acts_free(&a, 0);
}

static void touch(const char *name) {
  char *p = sq_fs_join(dir, name);
  FILE *f = fopen(p, "wb");
  fclose(f);
  free(p);
}

static int exists(const char *name) {
  char *p = sq_fs_join(dir, name);
  int e = access(p, F_OK) == 0;
  free(p);
  return e;
}

static void test_prune(void) {
  char name[64];
  for (int r = 1; r <= 2; r++)
    for (int l = 1; l <= 5; l++) {
      sq_state_file_name(r, l, name, sizeof name);
      touch(name);
    }
  touch(".state-rank00001-layer0006.h5.tmp.123.0"); /* left by a crashed writer */
  touch(".state-rank00002-layer0006.h5.tmp.123.0"); /* another rank's: not ours */
  touch("journal.json");
  SQ_EXPECT(sq_state_prune(dir, 1, 4) == SQ_OK);
  for (int r = 1; r <= 2; r++)
    for (int l = 1; l <= 5; l++) {
      sq_state_file_name(r, l, name, sizeof name);
      int want = r == 2 || l >= 4;
      SQ_EXPECT_MSG(exists(name) == want, "%s: exists %d, want %d", name, exists(name), want);
    }
  SQ_EXPECT(!exists(".state-rank00001-layer0006.h5.tmp.123.0"));
  SQ_EXPECT(exists(".state-rank00002-layer0006.h5.tmp.123.0"));
  SQ_EXPECT(exists("journal.json"));
}

int main(void) {
  dir = sq_test_tmpdir("restart-state");
  test_round_trip(0);
  test_round_trip(1);
  test_damage();
  test_prune();
  int rc = sq_test_result("test_restart_state");
  if (rc == 0) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) { /* best effort */
    }
  }
  free(dir);
  return rc;
}
