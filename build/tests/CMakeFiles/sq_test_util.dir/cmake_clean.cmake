file(REMOVE_RECURSE
  "CMakeFiles/sq_test_util.dir/test_util.c.o"
  "CMakeFiles/sq_test_util.dir/test_util.c.o.d"
  "libsq_test_util.a"
  "libsq_test_util.pdb"
)

# Per-language clean rules from dependency scanning.
foreach(lang C)
  include(CMakeFiles/sq_test_util.dir/cmake_clean_${lang}.cmake OPTIONAL)
endforeach()
