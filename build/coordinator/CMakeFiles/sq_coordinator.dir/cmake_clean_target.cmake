file(REMOVE_RECURSE
  "libsq_coordinator.a"
)
