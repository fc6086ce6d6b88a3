file(REMOVE_RECURSE
  "CMakeFiles/skstransport.dir/transport/frame.c.o"
  "CMakeFiles/skstransport.dir/transport/frame.c.o.d"
  "CMakeFiles/skstransport.dir/transport/local.c.o"
  "CMakeFiles/skstransport.dir/transport/local.c.o.d"
  "libskstransport.a"
  "libskstransport.pdb"
)

# Per-language clean rules from dependency scanning.
foreach(lang C)
  include(CMakeFiles/skstransport.dir/cmake_clean_${lang}.cmake OPTIONAL)
endforeach()
