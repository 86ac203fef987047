
# Consider dependencies only in project.
set(CMAKE_DEPENDS_IN_PROJECT_ONLY OFF)

# The set of languages for which implicit dependencies are needed:
set(CMAKE_DEPENDS_LANGUAGES
  )

# The set of dependency files which are needed:
set(CMAKE_DEPENDS_DEPENDENCY_FILES
  "/work/main/coordinator/main.c" "coordinator/CMakeFiles/shardq.dir/main.c.o" "gcc" "coordinator/CMakeFiles/shardq.dir/main.c.o.d"
  )

# Targets to which this target links.
set(CMAKE_TARGET_LINKED_INFO_FILES
  "/work/main/build/coordinator/CMakeFiles/sq_coordinator.dir/DependInfo.cmake"
  "/work/main/build/worker/CMakeFiles/sq_worker.dir/DependInfo.cmake"
  "/work/main/build/sharding/CMakeFiles/sq_sharding.dir/DependInfo.cmake"
  "/work/main/build/kernels/CMakeFiles/sq_kernels.dir/DependInfo.cmake"
  "/work/main/build/kernels/CMakeFiles/sq_kernels_cuda.dir/DependInfo.cmake"
  "/work/main/build/recipes/CMakeFiles/sq_recipes.dir/DependInfo.cmake"
  "/work/main/build/common/CMakeFiles/sq_common.dir/DependInfo.cmake"
  )

# Fortran module output directory.
set(CMAKE_Fortran_TARGET_MODULE_DIR "")
