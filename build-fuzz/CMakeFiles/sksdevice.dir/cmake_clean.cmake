file(REMOVE_RECURSE
  "CMakeFiles/sksdevice.dir/device/algorithms.c.o"
  "CMakeFiles/sksdevice.dir/device/algorithms.c.o.d"
  "CMakeFiles/sksdevice.dir/device/crypto.c.o"
  "CMakeFiles/sksdevice.dir/device/crypto.c.o.d"
  "CMakeFiles/sksdevice.dir/device/management.c.o"
  "CMakeFiles/sksdevice.dir/device/management.c.o.d"
  "CMakeFiles/sksdevice.dir/device/objects.c.o"
  "CMakeFiles/sksdevice.dir/device/objects.c.o.d"
  "CMakeFiles/sksdevice.dir/device/pin.c.o"
  "CMakeFiles/sksdevice.dir/device/pin.c.o.d"
  "CMakeFiles/sksdevice.dir/device/provisioning.c.o"
  "CMakeFiles/sksdevice.dir/device/provisioning.c.o.d"
  "CMakeFiles/sksdevice.dir/device/store.c.o"
  "CMakeFiles/sksdevice.dir/device/store.c.o.d"
  "CMakeFiles/sksdevice.dir/device/user_api.c.o"
  "CMakeFiles/sksdevice.dir/device/user_api.c.o.d"
  "CMakeFiles/sksdevice.dir/wire/dispatcher.c.o"
  "CMakeFiles/sksdevice.dir/wire/dispatcher.c.o.d"
  "libsksdevice.a"
  "libsksdevice.pdb"
)

# Per-language clean rules from dependency scanning.
foreach(lang C)
  include(CMakeFiles/sksdevice.dir/cmake_clean_${lang}.cmake OPTIONAL)
endforeach()
