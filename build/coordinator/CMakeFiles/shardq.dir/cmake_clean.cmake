file(REMOVE_RECURSE
  "CMakeFiles/shardq.dir/main.c.o"
  "CMakeFiles/shardq.dir/main.c.o.d"
  "shardq"
  "shardq.pdb"
)

# Per-language clean rules from dependency scanning.
foreach(lang C)
  include(CMakeFiles/shardq.dir/cmake_clean_${lang}.cmake OPTIONAL)
endforeach()
