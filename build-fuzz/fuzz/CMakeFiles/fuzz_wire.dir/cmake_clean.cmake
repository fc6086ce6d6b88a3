file(REMOVE_RECURSE
  "CMakeFiles/fuzz_wire.dir/fuzz_wire.c.o"
  "CMakeFiles/fuzz_wire.dir/fuzz_wire.c.o.d"
  "fuzz_wire"
  "fuzz_wire.pdb"
)

# Per-language clean rules from dependency scanning.
foreach(lang C)
  include(CMakeFiles/fuzz_wire.dir/cmake_clean_${lang}.cmake OPTIONAL)
endforeach()
