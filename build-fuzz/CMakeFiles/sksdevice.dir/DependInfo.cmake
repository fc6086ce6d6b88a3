
# Consider dependencies only in project.
set(CMAKE_DEPENDS_IN_PROJECT_ONLY OFF)

# The set of languages for which implicit dependencies are needed:
set(CMAKE_DEPENDS_LANGUAGES
  )

# The set of dependency files which are needed:
set(CMAKE_DEPENDS_DEPENDENCY_FILES
  "/work/main/device/algorithms.c" "CMakeFiles/sksdevice.dir/device/algorithms.c.o" "gcc" "CMakeFiles/sksdevice.dir/device/algorithms.c.o.d"
  "/work/main/device/crypto.c" "CMakeFiles/sksdevice.dir/device/crypto.c.o" "gcc" "CMakeFiles/sksdevice.dir/device/crypto.c.o.d"
  "/work/main/device/management.c" "CMakeFiles/sksdevice.dir/device/management.c.o" "gcc" "CMakeFiles/sksdevice.dir/device/management.c.o.d"
  "/work/main/device/objects.c" "CMakeFiles/sksdevice.dir/device/objects.c.o" "gcc" "CMakeFiles/sksdevice.dir/device/objects.c.o.d"
  "/work/main/device/pin.c" "CMakeFiles/sksdevice.dir/device/pin.c.o" "gcc" "CMakeFiles/sksdevice.dir/device/pin.c.o.d"
  "/work/main/device/provisioning.c" "CMakeFiles/sksdevice.dir/device/provisioning.c.o" "gcc" "CMakeFiles/sksdevice.dir/device/provisioning.c.o.d"
  "/work/main/device/store.c" "CMakeFiles/sksdevice.dir/device/store.c.o" "gcc" "CMakeFiles/sksdevice.dir/device/store.c.o.d"
  "/work/main/device/user_api.c" "CMakeFiles/sksdevice.dir/device/user_api.c.o" "gcc" "CMakeFiles/sksdevice.dir/device/user_api.c.o.d"
  "/work/main/wire/dispatcher.c" "CMakeFiles/sksdevice.dir/wire/dispatcher.c.o" "gcc" "CMakeFiles/sksdevice.dir/wire/dispatcher.c.o.d"
  )

# Targets to which this target links.
set(CMAKE_TARGET_LINKED_INFO_FILES
  "/work/main/build-fuzz/CMakeFiles/skswire.dir/DependInfo.cmake"
  )

# Fortran module output directory.
set(CMAKE_Fortran_TARGET_MODULE_DIR "")
