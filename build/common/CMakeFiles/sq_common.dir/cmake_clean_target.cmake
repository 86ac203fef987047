file(REMOVE_RECURSE
  "libsq_common.a"
)
