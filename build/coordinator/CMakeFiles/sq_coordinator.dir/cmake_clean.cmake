file(REMOVE_RECURSE
  "CMakeFiles/sq_coordinator.dir/cli.c.o"
  "CMakeFiles/sq_coordinator.dir/cli.c.o.d"
  "CMakeFiles/sq_coordinator.dir/cmd_eval.c.o"
  "CMakeFiles/sq_coordinator.dir/cmd_eval.c.o.d"
  "CMakeFiles/sq_coordinator.dir/cmd_inspect.c.o"
  "CMakeFiles/sq_coordinator.dir/cmd_inspect.c.o.d"
  "CMakeFiles/sq_coordinator.dir/cmd_plan.c.o"
  "CMakeFiles/sq_coordinator.dir/cmd_plan.c.o.d"
  "CMakeFiles/sq_coordinator.dir/cmd_quantize.c.o"
  "CMakeFiles/sq_coordinator.dir/cmd_quantize.c.o.d"
  "CMakeFiles/sq_coordinator.dir/cmd_quantize_layer.c.o"
  "CMakeFiles/sq_coordinator.dir/cmd_quantize_layer.c.o.d"
  "CMakeFiles/sq_coordinator.dir/cmd_recipe.c.o"
  "CMakeFiles/sq_coordinator.dir/cmd_recipe.c.o.d"
  "CMakeFiles/sq_coordinator.dir/cmd_status.c.o"
  "CMakeFiles/sq_coordinator.dir/cmd_status.c.o.d"
  "CMakeFiles/sq_coordinator.dir/cmd_submit.c.o"
  "CMakeFiles/sq_coordinator.dir/cmd_submit.c.o.d"
  "CMakeFiles/sq_coordinator.dir/cmd_synth.c.o"
  "CMakeFiles/sq_coordinator.dir/cmd_synth.c.o.d"
  "CMakeFiles/sq_coordinator.dir/quantize_output.c.o"
  "CMakeFiles/sq_coordinator.dir/quantize_output.c.o.d"
  "CMakeFiles/sq_coordinator.dir/quantize_plan.c.o"
  "CMakeFiles/sq_coordinator.dir/quantize_plan.c.o.d"
  "libsq_coordinator.a"
  "libsq_coordinator.pdb"
)

# Per-language clean rules from dependency scanning.
foreach(lang C)
  include(CMakeFiles/sq_coordinator.dir/cmake_clean_${lang}.cmake OPTIONAL)
endforeach()
