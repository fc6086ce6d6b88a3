file(REMOVE_RECURSE
  "CMakeFiles/skswire.dir/wire/codec.c.o"
  "CMakeFiles/skswire.dir/wire/codec.c.o.d"
  "libskswire.a"
  "libskswire.pdb"
)

# Per-language clean rules from dependency scanning.
foreach(lang C)
  include(CMakeFiles/skswire.dir/cmake_clean_${lang}.cmake OPTIONAL)
endforeach()
