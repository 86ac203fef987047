# CMake generated Testfile for 
# Source directory: /work/main/tests/common
# Build directory: /work/main/build/tests/common
# 
# This file includes the relevant testing commands required for 
# testing this directory and lists subdirectories to be tested as well.
add_test([=[test_dtype]=] "/work/main/build/tests/common/test_dtype")
set_tests_properties([=[test_dtype]=] PROPERTIES  ENVIRONMENT "SHARDQ_TESTDATA=/work/main/../shared/testdata;SHARDQ_BIN=/work/main/build/coordinator/shardq;SHARDQ_SOURCE_DIR=/work/main;OMPI_ALLOW_RUN_AS_ROOT=1;OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1;OMPI_MCA_rmaps_base_oversubscribe=1;ASAN_OPTIONS=detect_leaks=1:abort_on_error=0;UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1" LABELS "unit" SKIP_RETURN_CODE "77" TIMEOUT "300" _BACKTRACE_TRIPLES "/work/main/tests/CMakeLists.txt;27;add_test;/work/main/tests/common/CMakeLists.txt;1;sq_add_c_test;/work/main/tests/common/CMakeLists.txt;0;")
