/* Minimal assertion helpers for the C tests: a failed check prints file:line
 * and the values, counts a failure, and the test's main returns
 * sq_test_result() (0 pass, 1 fail). sq_test_skip() exits 77 (ctest: skipped). */
#ifndef SQ_TESTS_TEST_UTIL_H
#define SQ_TESTS_TEST_UTIL_H

#include <stddef.h>
#include <stdint.h>

extern int sq_test_failures;

void sq_test_fail(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
int sq_test_result(const char *name);
/* Print why and exit 77 so that ctest reports the test as skipped. */
void sq_test_skip(const char *why) __attribute__((noreturn));
/* $SHARDQ_TESTDATA/<rel> if it exists, else NULL. Caller frees. */
char *sq_test_data_path(const char *rel);
/* A fresh empty directory under $TMPDIR for this test. Caller frees. */
char *sq_test_tmpdir(const char *name);

#define SQ_EXPECT(cond)                                                  \
  do {                                                                   \
    if (!(cond)) sq_test_fail(__FILE__, __LINE__, "expected: %s", #cond); \
  } while (0)

#define SQ_EXPECT_MSG(cond, ...)                                  \
  do {                                                            \
    if (!(cond)) sq_test_fail(__FILE__, __LINE__, __VA_ARGS__);   \
  } while (0)

#define SQ_EXPECT_EQ_INT(a, b)                                                          \
  do {                                                                                  \
    long long sq_a_ = (long long)(a), sq_b_ = (long long)(b);                           \
    if (sq_a_ != sq_b_)                                                                 \
      sq_test_fail(__FILE__, __LINE__, "%s == %s: %lld != %lld", #a, #b, sq_a_, sq_b_); \
  } while (0)

/* |a - b| <= atol + rtol * |b| */
#define SQ_EXPECT_NEAR(a, b, atol, rtol)                                                   \
  do {                                                                                     \
    double sq_a_ = (double)(a), sq_b_ = (double)(b);                                       \
    double sq_d_ = sq_a_ > sq_b_ ? sq_a_ - sq_b_ : sq_b_ - sq_a_;                          \
    double sq_m_ = sq_b_ < 0 ? -sq_b_ : sq_b_;                                             \
    if (!(sq_d_ <= (atol) + (rtol) * sq_m_))                                               \
      sq_test_fail(__FILE__, __LINE__, "%s ~= %s: %.9g vs %.9g", #a, #b, sq_a_, sq_b_);   \
  } while (0)

#endif
