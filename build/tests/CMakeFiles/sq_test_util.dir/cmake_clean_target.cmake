file(REMOVE_RECURSE
  "libsq_test_util.a"
)
