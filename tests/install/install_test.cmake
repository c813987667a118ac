# tests/install/install_test.cmake — installs stem into a scratch prefix, then
# configures, builds and runs tests/install/consumer against that prefix with
# find_package(stem CONFIG REQUIRED). Fails at the first step that goes wrong.
#
# Register it from tests/CMakeLists.txt like this:
#
#   add_test(NAME install.consumer
#     COMMAND ${CMAKE_COMMAND}
#       -DSTEM_SOURCE_DIR=${PROJECT_SOURCE_DIR}
#       -DSTEM_BINARY_DIR=${PROJECT_BINARY_DIR}
#       -DWORK_DIR=${CMAKE_CURRENT_BINARY_DIR}/install_test
#       -DCMAKE_CXX_COMPILER=${CMAKE_CXX_COMPILER}
#       -P ${CMAKE_CURRENT_SOURCE_DIR}/install/install_test.cmake)
#   set_tests_properties(install.consumer PROPERTIES TIMEOUT 300)
#
# By hand, against any configured build tree:
#
#   cmake -DSTEM_SOURCE_DIR=$PWD -DSTEM_BINARY_DIR=$PWD/build \
#         -DWORK_DIR=/tmp/stem-install -P tests/install/install_test.cmake
#
# Optional: -DCMAKE_CXX_COMPILER=... and -DCMAKE_GENERATOR=... are passed on to
# the consumer's configure step.

cmake_minimum_required(VERSION 3.25)

foreach(var IN ITEMS STEM_SOURCE_DIR STEM_BINARY_DIR WORK_DIR)
  if(NOT DEFINED ${var} OR "${${var}}" STREQUAL "")
    message(FATAL_ERROR "install_test: pass -D${var}=<path>")
  endif()
endforeach()
if(NOT EXISTS "${STEM_BINARY_DIR}/CMakeCache.txt")
  message(FATAL_ERROR "install_test: ${STEM_BINARY_DIR} is not a configured build tree (no CMakeCache.txt)")
endif()

# WORK_DIR is wiped below: refuse anything that is not a scratch directory.
get_filename_component(work_abs "${WORK_DIR}" ABSOLUTE)
get_filename_component(src_abs "${STEM_SOURCE_DIR}" ABSOLUTE)
get_filename_component(bin_abs "${STEM_BINARY_DIR}" ABSOLUTE)
if(work_abs STREQUAL "/" OR work_abs STREQUAL src_abs OR work_abs STREQUAL bin_abs
   OR src_abs MATCHES "^${work_abs}/" OR bin_abs MATCHES "^${work_abs}/")
  message(FATAL_ERROR "install_test: WORK_DIR=${WORK_DIR} would wipe the sources or the build tree; use a scratch directory")
endif()

set(prefix "${WORK_DIR}/prefix")
set(consumer_src "${STEM_SOURCE_DIR}/tests/install/consumer")
set(consumer_build "${WORK_DIR}/build")

# Start from nothing, so a stale prefix or consumer build cannot hide a fault.
file(REMOVE_RECURSE "${WORK_DIR}")
file(MAKE_DIRECTORY "${WORK_DIR}")

# Runs one step; stops the script with a clear message if it fails.
function(stem_install_step what)
  message(STATUS "install_test: ${what}")
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    list(JOIN ARGN " " cmdline)
    message(FATAL_ERROR "install_test: ${what} FAILED (${rc})\n  command: ${cmdline}")
  endif()
endfunction()

# 1. Install.
stem_install_step("install ${STEM_BINARY_DIR} into ${prefix}"
  "${CMAKE_COMMAND}" --install "${STEM_BINARY_DIR}" --prefix "${prefix}")

file(GLOB_RECURSE stem_configs "${prefix}/*/stemConfig.cmake")
if(NOT stem_configs)
  message(FATAL_ERROR "install_test: no stemConfig.cmake was installed under ${prefix}")
endif()
if(NOT EXISTS "${prefix}/include/stem/core/task_id.hpp")
  message(FATAL_ERROR "install_test: ${prefix}/include/stem/core/task_id.hpp was not installed")
endif()

# 2. Configure the consumer against the prefix, and only the prefix.
set(configure_args
  -S "${consumer_src}" -B "${consumer_build}"
  "-DCMAKE_PREFIX_PATH=${prefix}"
  -DCMAKE_BUILD_TYPE=Release
  -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF
  -DCMAKE_FIND_USE_SYSTEM_PACKAGE_REGISTRY=OFF)
if(DEFINED CMAKE_CXX_COMPILER AND NOT "${CMAKE_CXX_COMPILER}" STREQUAL "")
  list(APPEND configure_args "-DCMAKE_CXX_COMPILER=${CMAKE_CXX_COMPILER}")
endif()
if(DEFINED CMAKE_GENERATOR AND NOT "${CMAKE_GENERATOR}" STREQUAL "")
  list(APPEND configure_args -G "${CMAKE_GENERATOR}")
endif()
stem_install_step("configure the consumer" "${CMAKE_COMMAND}" ${configure_args})

# find_package must have picked the copy we just installed.
file(STRINGS "${consumer_build}/CMakeCache.txt" stem_dir_line REGEX "^stem_DIR:")
string(REGEX REPLACE "^stem_DIR:[A-Z]+=" "" stem_dir "${stem_dir_line}")
file(REAL_PATH "${prefix}" real_prefix)
if(EXISTS "${stem_dir}")
  file(REAL_PATH "${stem_dir}" stem_dir)
endif()
string(FIND "${stem_dir}" "${real_prefix}/" at)
if(NOT at EQUAL 0)
  message(FATAL_ERROR "install_test: the consumer found stem at '${stem_dir}', not in ${prefix}")
endif()
message(STATUS "install_test: consumer uses ${stem_dir}")

# 3. Build it.
stem_install_step("build the consumer"
  "${CMAKE_COMMAND}" --build "${consumer_build}" --config Release)

# 4. Run it (single- or multi-config layout).
set(exe "${consumer_build}/consumer${CMAKE_EXECUTABLE_SUFFIX}")
if(NOT EXISTS "${exe}" AND EXISTS "${consumer_build}/Release/consumer${CMAKE_EXECUTABLE_SUFFIX}")
  set(exe "${consumer_build}/Release/consumer${CMAKE_EXECUTABLE_SUFFIX}")
endif()
if(NOT EXISTS "${exe}")
  message(FATAL_ERROR "install_test: the consumer built, but ${exe} is missing")
endif()
stem_install_step("run the consumer" "${exe}")
stem_install_step("run the adapters consumer" "${consumer_build}/consumer_adapters${CMAKE_EXECUTABLE_SUFFIX}")

message(STATUS "install_test: passed")
