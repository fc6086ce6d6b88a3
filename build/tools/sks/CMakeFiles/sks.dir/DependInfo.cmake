
# Consider dependencies only in project.
set(CMAKE_DEPENDS_IN_PROJECT_ONLY OFF)

# The set of languages for which implicit dependencies are needed:
set(CMAKE_DEPENDS_LANGUAGES
  )

# The set of dependency files which are needed:
set(CMAKE_DEPENDS_DEPENDENCY_FILES
  "/work/main/tools/sks/info.c" "tools/sks/CMakeFiles/sks.dir/info.c.o" "gcc" "tools/sks/CMakeFiles/sks.dir/info.c.o.d"
  "/work/main/tools/sks/main.c" "tools/sks/CMakeFiles/sks.dir/main.c.o" "gcc" "tools/sks/CMakeFiles/sks.dir/main.c.o.d"
  )

# Targets to which this target links.
set(CMAKE_TARGET_LINKED_INFO_FILES
  "/work/main/build/CMakeFiles/skstransport.dir/DependInfo.cmake"
  "/work/main/build/CMakeFiles/sksdevice.dir/DependInfo.cmake"
  "/work/main/build/CMakeFiles/skswire.dir/DependInfo.cmake"
  )

# Fortran module output directory.
set(CMAKE_Fortran_TARGET_MODULE_DIR "")
