file(REMOVE_RECURSE
  "CMakeFiles/sq_common.dir/dtype.c.o"
  "CMakeFiles/sq_common.dir/dtype.c.o.d"
  "CMakeFiles/sq_common.dir/fsio.c.o"
  "CMakeFiles/sq_common.dir/fsio.c.o.d"
  "CMakeFiles/sq_common.dir/log.c.o"
  "CMakeFiles/sq_common.dir/log.c.o.d"
  "CMakeFiles/sq_common.dir/status.c.o"
  "CMakeFiles/sq_common.dir/status.c.o.d"
  "libsq_common.a"
  "libsq_common.pdb"
)

# Per-language clean rules from dependency scanning.
foreach(lang C)
  include(CMakeFiles/sq_common.dir/cmake_clean_${lang}.cmake OPTIONAL)
endforeach()
