file(REMOVE_RECURSE
  "CMakeFiles/sks.dir/info.c.o"
  "CMakeFiles/sks.dir/info.c.o.d"
  "CMakeFiles/sks.dir/main.c.o"
  "CMakeFiles/sks.dir/main.c.o.d"
  "sks"
  "sks.pdb"
)

# Per-language clean rules from dependency scanning.
foreach(lang C)
  include(CMakeFiles/sks.dir/cmake_clean_${lang}.cmake OPTIONAL)
endforeach()
