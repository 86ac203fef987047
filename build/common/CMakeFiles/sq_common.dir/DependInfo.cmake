
# Consider dependencies only in project.
set(CMAKE_DEPENDS_IN_PROJECT_ONLY OFF)

# The set of languages for which implicit dependencies are needed:
set(CMAKE_DEPENDS_LANGUAGES
  )

# The set of dependency files which are needed:
set(CMAKE_DEPENDS_DEPENDENCY_FILES
  "/work/main/common/dtype.c" "common/CMakeFiles/sq_common.dir/dtype.c.o" "gcc" "common/CMakeFiles/sq_common.dir/dtype.c.o.d"
  "/work/main/common/fsio.c" "common/CMakeFiles/sq_common.dir/fsio.c.o" "gcc" "common/CMakeFiles/sq_common.dir/fsio.c.o.d"
  "/work/main/common/log.c" "common/CMakeFiles/sq_common.dir/log.c.o" "gcc" "common/CMakeFiles/sq_common.dir/log.c.o.d"
  "/work/main/common/status.c" "common/CMakeFiles/sq_common.dir/status.c.o" "gcc" "common/CMakeFiles/sq_common.dir/status.c.o.d"
  )

# Targets to which this target links.
set(CMAKE_TARGET_LINKED_INFO_FILES
  )

# Fortran module output directory.
set(CMAKE_Fortran_TARGET_MODULE_DIR "")
