/* (g) Hessian accumulation: syrk accumulation (fp32 and fp64) equals a naive
 * double loop of 2/n sum x x^T, and merging two partial Hessians over halves
 * of the tokens equals accumulating all of them. */
#include <stdio.h>
#include <string.h>

#include "kernels/hessian.h"
#include "solver_ref.h"
#include "test_util.h"

int main(void) {
  const int64_t d = 96, T = 700;
  float *X = malloc(sizeof(float) * (size_t)(T * d));
  float *ref = malloc(sizeof(float) * (size_t)(d * d));
  float *H = malloc(sizeof(float) * (size_t)(d * d));
  float *H2 = malloc(sizeof(float) * (size_t)(d * d));
  ref_make_x(X, T, d);
  ref_hessian(X, T, d, ref);
  for (int fp64 = 0; fp64 < 2; ++fp64) {
    sq_hessian all, a, b;
    SQ_EXPECT(sq_hessian_init(&all, d, fp64, "h.all") == SQ_OK);
    SQ_EXPECT(sq_hessian_init(&a, d, fp64, "h.a") == SQ_OK);
    SQ_EXPECT(sq_hessian_init(&b, d, fp64, "h.b") == SQ_OK);
    /* tiles of uneven sizes, including more rows than one fp64 chunk */
    const int64_t cuts[] = {0, 1, 300, 333, 700};
    for (int i = 0; i < 4; ++i)
      SQ_EXPECT(sq_hessian_accumulate(&all, X + cuts[i] * d, cuts[i + 1] - cuts[i], "h.all") == SQ_OK);
    SQ_EXPECT(sq_hessian_accumulate(&a, X, 350, "h.a") == SQ_OK);
    SQ_EXPECT(sq_hessian_accumulate(&b, X + 350 * d, T - 350, "h.b") == SQ_OK);
    SQ_EXPECT_EQ_INT(all.count, T);
    SQ_EXPECT(sq_hessian_finalize(&all, H, "h.all") == SQ_OK);
    double tol = fp64 ? 1e-6 : 1e-4;
    double maxd = 0;
    for (int64_t i = 0; i < d * d; ++i) {
      double e = fabs((double)H[i] - (double)ref[i]) / (1.0 + fabs((double)ref[i]));
      if (e > maxd) maxd = e;
    }
    fprintf(stderr, "%s: max |H - ref| / (1 + |ref|) = %.3g\n", fp64 ? "fp64" : "fp32", maxd);
    SQ_EXPECT(maxd <= tol);
    for (int64_t i = 0; i < d; ++i)
      for (int64_t j = 0; j < d; ++j) SQ_EXPECT(H[i * d + j] == H[j * d + i]);
    SQ_EXPECT(sq_hessian_merge(&a, &b, "h.a") == SQ_OK);
    SQ_EXPECT_EQ_INT(a.count, T);
    SQ_EXPECT(sq_hessian_finalize(&a, H2, "h.a") == SQ_OK);
    for (int64_t i = 0; i < d * d; ++i) SQ_EXPECT_NEAR(H2[i], ref[i], tol, tol);
    /* the merged sum is exactly sum_a + sum_b */
    sq_hessian c;
    SQ_EXPECT(sq_hessian_init(&c, d, fp64, "h.c") == SQ_OK);
    SQ_EXPECT(sq_hessian_accumulate(&c, X, 350, "h.c") == SQ_OK);
    for (int64_t i = 0; i < d; ++i)
      for (int64_t j = i; j < d; ++j) {
        if (fp64)
          SQ_EXPECT(a.sum64[i * d + j] == c.sum64[i * d + j] + b.sum64[i * d + j]);
        else
          SQ_EXPECT(a.sum[i * d + j] == c.sum[i * d + j] + b.sum[i * d + j]);
      }
    sq_hessian_reset(&c);
    SQ_EXPECT_EQ_INT(c.count, 0);
    SQ_EXPECT_EQ_INT(sq_hessian_finalize(&c, H2, "model.layers.0.mlp.experts.5.up_proj"), SQ_ERR_ARG);
    SQ_EXPECT(strstr(sq_error_message(), "experts.5.up_proj") != NULL);
    sq_error_clear();
    sq_hessian_free(&all);
    sq_hessian_free(&a);
    sq_hessian_free(&b);
    sq_hessian_free(&c);
  }
  /* mismatched merge is an error */
  sq_hessian p, q;
  SQ_EXPECT(sq_hessian_init(&p, 8, 0, "p") == SQ_OK);
  SQ_EXPECT(sq_hessian_init(&q, 9, 0, "q") == SQ_OK);
  SQ_EXPECT_EQ_INT(sq_hessian_merge(&p, &q, "p"), SQ_ERR_ARG);
  sq_error_clear();
  sq_hessian_free(&p);
  sq_hessian_free(&q);
  free(X);
  free(ref);
  free(H);
  free(H2);
  return sq_test_result("test_hessian");
}
