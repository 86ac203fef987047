/* Multi-rank checks of the MPI communication layer (run with np = 1..4).
 * Every rank generates every rank's input with the same formula, so each rank
 * can compute the expected result itself (sequential loops in rank order), and
 * compares bit for bit. The f32 inputs span 2^48 in magnitude with mixed signs,
 * so a sum in another order gives other bits: the test checks that too (np>=3),
 * so it can tell a rank-order sum from MPI's own reduction. Failures are summed
 * over ranks and any failure fails every rank. Also runs the single-rank
 * communicator through the same calls. */
#include <mpi.h>

#include "worker/comm.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>

#include "test_util.h"

static float val_f32(int r, int64_t i) {
  float m = 1.0f + (float)((i * 7 + r * 13) % 97) / 97.0f;
  float v = ldexpf(m, (int)((i + 3 * r) % 48) - 24);
  return (i + r) % 2 ? -v : v;
}
static double val_f64(int r, int64_t i) {
  double m = 1.0 + (double)((i * 5 + r * 11) % 89) / 89.0;
  double v = ldexp(m, (int)((i * 3 + 7 * r) % 110) - 55);
  return (i + r) % 3 ? -v : v;
}
static int64_t val_i64(int r, int64_t i) {
  return (int64_t)r * 1000003 - i * 7 + ((int64_t)1 << 40);
}
static int k_a2a(int s, int d) {
  return (s + 2 * d) % 4;
} /* elements s sends d (0..3) */

static void test_reduce_f32(const sq_comm *c, int root) {
  const int P = sq_comm_size(c), me = sq_comm_rank(c);
  const int64_t n = ((int64_t)1 << 20) + 37; /* more than one 4 MiB chunk */
  float *buf = malloc((size_t)n * sizeof *buf), *ref = malloc((size_t)n * sizeof *ref);
  int64_t order_matters = 0;
  for (int64_t i = 0; i < n; ++i) {
    buf[i] = val_f32(me, i);
    float s = val_f32(0, i), rev = val_f32(P - 1, i);
    for (int r = 1; r < P; ++r) s += val_f32(r, i);
    for (int r = P - 2; r >= 0; --r) rev += val_f32(r, i);
    ref[i] = s;
    order_matters += memcmp(&s, &rev, sizeof s) != 0;
  }
  sq_status st = sq_comm_reduce_sum_f32(c, buf, n, root, "reduce f32");
  SQ_EXPECT_MSG(st == SQ_OK, "reduce f32: %s", sq_error_message());
  if (P >= 3)
    SQ_EXPECT_MSG(order_matters > 1000, "inputs not order-sensitive (%lld)",
                  (long long)order_matters);
  if (me == root) {
    int64_t bad = 0;
    for (int64_t i = 0; i < n; ++i) bad += memcmp(&buf[i], &ref[i], sizeof *buf) != 0;
    SQ_EXPECT_MSG(bad == 0, "root %d: %lld of %lld sums differ from the rank-order sum", root,
                  (long long)bad, (long long)n);
  } else {
    int64_t bad = 0;
    for (int64_t i = 0; i < n; ++i) bad += buf[i] != val_f32(me, i);
    SQ_EXPECT_MSG(bad == 0, "non-root input changed (%lld elements)", (long long)bad);
  }
  free(buf);
  free(ref);
}

static void test_allreduce(const sq_comm *c) {
  const int P = sq_comm_size(c), me = sq_comm_rank(c);
  const int64_t n = 1000;
  double d[1000], dref[1000];
  int64_t k[1000], kref[1000];
  for (int64_t i = 0; i < n; ++i) {
    d[i] = val_f64(me, i);
    k[i] = val_i64(me, i);
    dref[i] = val_f64(0, i);
    kref[i] = val_i64(0, i);
    for (int r = 1; r < P; ++r) dref[i] += val_f64(r, i), kref[i] += val_i64(r, i);
  }
  SQ_EXPECT(sq_comm_allreduce_sum_f64(c, d, n, "allreduce f64") == SQ_OK);
  SQ_EXPECT(sq_comm_allreduce_sum_i64(c, k, n, "allreduce i64") == SQ_OK);
  SQ_EXPECT_MSG(memcmp(d, dref, sizeof d) == 0, "rank %d: allreduce f64 differs", me);
  SQ_EXPECT_MSG(memcmp(k, kref, sizeof k) == 0, "rank %d: allreduce i64 differs", me);
  float f[3] = {val_f32(me, 0), val_f32(me, 1), val_f32(me, 2)};
  float fref[3] = {val_f32(0, 0), val_f32(0, 1), val_f32(0, 2)};
  for (int r = 1; r < P; ++r)
    for (int i = 0; i < 3; ++i) fref[i] += val_f32(r, i);
  SQ_EXPECT(sq_comm_allreduce_sum_f32(c, f, 3, "allreduce f32") == SQ_OK);
  SQ_EXPECT_MSG(memcmp(f, fref, sizeof f) == 0, "rank %d: allreduce f32 differs", me);
  /* reduce i64 to the last rank */
  int64_t one = me + 1;
  SQ_EXPECT(sq_comm_reduce_sum_i64(c, &one, 1, P - 1, "reduce i64") == SQ_OK);
  if (me == P - 1) SQ_EXPECT_EQ_INT(one, (int64_t)P * (P + 1) / 2);
}

static void test_bcast(const sq_comm *c) {
  const int P = sq_comm_size(c), me = sq_comm_rank(c), root = P - 1;
  const size_t n = ((size_t)3 << 20) + 5;
  unsigned char *b = malloc(n);
  for (size_t i = 0; i < n; ++i) b[i] = me == root ? (unsigned char)(i * 31 + root) : 0xEE;
  SQ_EXPECT(sq_comm_bcast(c, b, (int64_t)n, root, "bcast") == SQ_OK);
  size_t bad = 0;
  for (size_t i = 0; i < n; ++i) bad += b[i] != (unsigned char)(i * 31 + root);
  SQ_EXPECT_MSG(bad == 0, "rank %d: %zu bcast bytes wrong", me, bad);
  free(b);
}

static void test_alltoallv(const sq_comm *c) {
  const int P = sq_comm_size(c), me = sq_comm_rank(c);
  int64_t sc[4], sd[4], rc[4], rd[4], ns = 0, nr = 0;
  int32_t sendbuf[16], recvbuf[16];
  for (int d = 0; d < P; ++d) {
    sc[d] = k_a2a(me, d), sd[d] = ns;
    for (int j = 0; j < sc[d]; ++j) sendbuf[ns++] = me * 100 + d;
    rc[d] = k_a2a(d, me), rd[d] = nr, nr += rc[d];
  }
  for (int i = 0; i < 16; ++i) recvbuf[i] = -1;
  sq_status st =
      sq_comm_alltoallv(c, sendbuf, sc, sd, recvbuf, rc, rd, sizeof(int32_t), "alltoallv");
  SQ_EXPECT_MSG(st == SQ_OK, "alltoallv: %s", sq_error_message());
  for (int s = 0, at = 0; s < P; ++s)
    for (int j = 0; j < k_a2a(s, me); ++j, ++at)
      SQ_EXPECT_MSG(recvbuf[at] == s * 100 + me, "rank %d: from %d element %d = %d, want %d", me, s,
                    j, recvbuf[at], s * 100 + me);
}

static void test_p2p(const sq_comm *c) {
  const int P = sq_comm_size(c), me = sq_comm_rank(c);
  if (P == 1) return;
  int out[250], in[250], next = (me + 1) % P, prev = (me + P - 1) % P;
  for (int i = 0; i < 250; ++i) out[i] = me * 1000 + i, in[i] = -1;
  sq_status a, b;
  if (me % 2 == 0) {
    a = sq_comm_send(c, out, sizeof out, next, 5, "ring send");
    b = sq_comm_recv(c, in, sizeof in, prev, 5, "ring recv");
  } else {
    b = sq_comm_recv(c, in, sizeof in, prev, 5, "ring recv");
    a = sq_comm_send(c, out, sizeof out, next, 5, "ring send");
  }
  SQ_EXPECT(a == SQ_OK && b == SQ_OK);
  for (int i = 0; i < 250; ++i) SQ_EXPECT_EQ_INT(in[i], prev * 1000 + i);
}

static void test_agree(const sq_comm *c) {
  const int P = sq_comm_size(c), me = sq_comm_rank(c);
  char msg[1024], want[512];
  sq_status g = SQ_ERR_INTERNAL;
  SQ_EXPECT(sq_comm_agree_status(c, SQ_OK, NULL, &g, msg, sizeof msg) == SQ_OK);
  SQ_EXPECT_EQ_INT(g, SQ_OK);
  SQ_EXPECT(msg[0] == '\0');
  /* The last rank fails: every rank learns its status and message. */
  int bad = P - 1;
  SQ_EXPECT(sq_comm_agree_status(c, me == bad ? SQ_ERR_IO : SQ_OK,
                                 me == bad ? "out.safetensors: write: No space left" : NULL, &g,
                                 msg, sizeof msg) == SQ_OK);
  SQ_EXPECT_EQ_INT(g, SQ_ERR_IO);
  char host[256];
  snprintf(host, sizeof host, "%s", sq_comm_host(c)); /* one node: same host everywhere */
  snprintf(want, sizeof want, "rank %d (%s): out.safetensors: write: No space left", bad, host);
  SQ_EXPECT_MSG(strcmp(msg, want) == 0, "rank %d got '%s', want '%s'", me, msg, want);
  if (P >= 3) { /* two fail: the lowest rank's cause wins */
    sq_status mine = me == 1 ? SQ_ERR_NUMERIC : me == P - 1 ? SQ_ERR_IO : SQ_OK;
    SQ_EXPECT(sq_comm_agree_status(c, mine, me == 1 ? "H not positive definite" : "disk", &g, msg,
                                   sizeof msg) == SQ_OK);
    SQ_EXPECT_EQ_INT(g, SQ_ERR_NUMERIC);
    SQ_EXPECT_MSG(strstr(msg, "rank 1 (") && strstr(msg, "H not positive definite"), "got '%s'",
                  msg);
  }
}

static void test_failpoint(const sq_comm *c) {
  const int P = sq_comm_size(c), me = sq_comm_rank(c);
  unsetenv("SHARDQ_FAILPOINT");
  SQ_EXPECT(sq_comm_failpoint(c, "lbl") == SQ_OK);
  setenv("SHARDQ_FAILPOINT", "other,lbl:1", 1);
  sq_error_clear();
  sq_status st = sq_comm_failpoint(c, "lbl");
  SQ_EXPECT_EQ_INT(st, me == 1 ? SQ_ERR_INTERNAL : SQ_OK);
  if (me == 1)
    SQ_EXPECT_MSG(strstr(sq_error_message(), "fail point 'lbl' triggered on rank 1"), "got '%s'",
                  sq_error_message());
  sq_error_clear();
  SQ_EXPECT_EQ_INT(sq_comm_failpoint(c, "other"), SQ_ERR_INTERNAL); /* no rank: every rank */
  sq_error_clear();
  SQ_EXPECT_EQ_INT(sq_comm_failpoint(c, "lb"), SQ_OK);
  setenv("SHARDQ_FAILPOINT", "lbl:x1", 1);
  SQ_EXPECT_EQ_INT(sq_comm_failpoint(c, "lbl"), SQ_OK);
  unsetenv("SHARDQ_FAILPOINT");
  sq_error_clear();
  (void)P;
}

static void run_all(const sq_comm *c) {
  test_reduce_f32(c, 0);
  test_reduce_f32(c, sq_comm_size(c) - 1);
  test_allreduce(c);
  test_bcast(c);
  test_alltoallv(c);
  test_p2p(c);
  test_agree(c);
  test_failpoint(c);
  SQ_EXPECT(sq_comm_barrier(c, "barrier") == SQ_OK);
}

int main(int argc, char **argv) {
  sq_comm single = sq_comm_single();
  SQ_EXPECT(strcmp(sq_comm_backend_name(&single), "single") == 0);
  run_all(&single);

  sq_comm *c = NULL;
  sq_status st = sq_comm_init_mpi(&argc, &argv, &c);
  if (st != SQ_OK) {
    fprintf(stderr, "init: %s\n", sq_error_message());
    return 1;
  }
  SQ_EXPECT(strcmp(sq_comm_backend_name(c), "mpi") == 0);
  SQ_EXPECT(sq_comm_set_timeout(c, 30) == SQ_OK); /* a bug fails fast, not in 300 s */
  SQ_EXPECT(sq_comm_set_timeout(c, 0) == SQ_ERR_ARG);
  sq_error_clear();
  SQ_EXPECT(sq_comm_size(c) <= 4); /* alltoallv buffers are sized for 4 */
  char desc[512];
  sq_comm_describe(c, desc, sizeof desc);
  if (sq_comm_rank(c) == 0) printf("%s\n", desc);
  run_all(c);

  int mine = sq_test_failures, total = 0;
  MPI_Allreduce(&mine, &total, 1, MPI_INT, MPI_SUM, sq_comm_mpi_handle(c));
  if (sq_comm_rank(c) == 0)
    printf("test_comm_collectives: %d rank(s), %d failure(s)\n", sq_comm_size(c), total);
  sq_comm_free(c);
  return total ? 1 : 0;
}
