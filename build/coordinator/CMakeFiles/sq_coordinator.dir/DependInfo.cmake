
# Consider dependencies only in project.
set(CMAKE_DEPENDS_IN_PROJECT_ONLY OFF)

# The set of languages for which implicit dependencies are needed:
set(CMAKE_DEPENDS_LANGUAGES
  )

# The set of dependency files which are needed:
set(CMAKE_DEPENDS_DEPENDENCY_FILES
  "/work/main/coordinator/cli.c" "coordinator/CMakeFiles/sq_coordinator.dir/cli.c.o" "gcc" "coordinator/CMakeFiles/sq_coordinator.dir/cli.c.o.d"
  "/work/main/coordinator/cmd_eval.c" "coordinator/CMakeFiles/sq_coordinator.dir/cmd_eval.c.o" "gcc" "coordinator/CMakeFiles/sq_coordinator.dir/cmd_eval.c.o.d"
  "/work/main/coordinator/cmd_inspect.c" "coordinator/CMakeFiles/sq_coordinator.dir/cmd_inspect.c.o" "gcc" "coordinator/CMakeFiles/sq_coordinator.dir/cmd_inspect.c.o.d"
  "/work/main/coordinator/cmd_plan.c" "coordinator/CMakeFiles/sq_coordinator.dir/cmd_plan.c.o" "gcc" "coordinator/CMakeFiles/sq_coordinator.dir/cmd_plan.c.o.d"
  "/work/main/coordinator/cmd_quantize.c" "coordinator/CMakeFiles/sq_coordinator.dir/cmd_quantize.c.o" "gcc" "coordinator/CMakeFiles/sq_coordinator.dir/cmd_quantize.c.o.d"
  "/work/main/coordinator/cmd_quantize_layer.c" "coordinator/CMakeFiles/sq_coordinator.dir/cmd_quantize_layer.c.o" "gcc" "coordinator/CMakeFiles/sq_coordinator.dir/cmd_quantize_layer.c.o.d"
  "/work/main/coordinator/cmd_recipe.c" "coordinator/CMakeFiles/sq_coordinator.dir/cmd_recipe.c.o" "gcc" "coordinator/CMakeFiles/sq_coordinator.dir/cmd_recipe.c.o.d"
  "/work/main/coordinator/cmd_status.c" "coordinator/CMakeFiles/sq_coordinator.dir/cmd_status.c.o" "gcc" "coordinator/CMakeFiles/sq_coordinator.dir/cmd_status.c.o.d"
  "/work/main/coordinator/cmd_submit.c" "coordinator/CMakeFiles/sq_coordinator.dir/cmd_submit.c.o" "gcc" "coordinator/CMakeFiles/sq_coordinator.dir/cmd_submit.c.o.d"
  "/work/main/coordinator/cmd_synth.c" "coordinator/CMakeFiles/sq_coordinator.dir/cmd_synth.c.o" "gcc" "coordinator/CMakeFiles/sq_coordinator.dir/cmd_synth.c.o.d"
  "/work/main/coordinator/quantize_output.c" "coordinator/CMakeFiles/sq_coordinator.dir/quantize_output.c.o" "gcc" "coordinator/CMakeFiles/sq_coordinator.dir/quantize_output.c.o.d"
  "/work/main/coordinator/quantize_plan.c" "coordinator/CMakeFiles/sq_coordinator.dir/quantize_plan.c.o" "gcc" "coordinator/CMakeFiles/sq_coordinator.dir/quantize_plan.c.o.d"
  )

# Targets to which this target links.
set(CMAKE_TARGET_LINKED_INFO_FILES
  "/work/main/build/worker/CMakeFiles/sq_worker.dir/DependInfo.cmake"
  "/work/main/build/sharding/CMakeFiles/sq_sharding.dir/DependInfo.cmake"
  "/work/main/build/kernels/CMakeFiles/sq_kernels.dir/DependInfo.cmake"
  "/work/main/build/recipes/CMakeFiles/sq_recipes.dir/DependInfo.cmake"
  "/work/main/build/common/CMakeFiles/sq_common.dir/DependInfo.cmake"
  "/work/main/build/kernels/CMakeFiles/sq_kernels_cuda.dir/DependInfo.cmake"
  )

# Fortran module output directory.
set(CMAKE_Fortran_TARGET_MODULE_DIR "")
