# Run by ctest (cmake -P): configures probes/ in WORK, then builds each probe on its own.
# A probe's first line is either
#   // expect: compiles
#   // expect: missing <header>     (it must fail, and only because <header> is not found)
# -D: PROBES (the probe project), LAYER_FLAGS (the layers' flags), WORK (scratch), CXX.
foreach(_var PROBES LAYER_FLAGS WORK CXX)
  if(NOT DEFINED ${_var})
    message(FATAL_ERROR "layers_test.cmake: -D${_var}=... is required")
  endif()
endforeach()

file(REMOVE_RECURSE ${WORK})
execute_process(
  COMMAND ${CMAKE_COMMAND} -S ${PROBES} -B ${WORK} -DCMAKE_CXX_COMPILER=${CXX}
          -DLAYER_FLAGS=${LAYER_FLAGS}
  RESULT_VARIABLE _rc OUTPUT_VARIABLE _out ERROR_VARIABLE _out)
if(NOT _rc EQUAL 0)
  message(FATAL_ERROR "configuring the probe project ${PROBES} failed:\n${_out}")
endif()

file(GLOB _probes ${PROBES}/*.cpp)
list(LENGTH _probes _count)
if(_count LESS 3)
  message(FATAL_ERROR "only ${_count} probes in ${PROBES}: expected the upward includes and "
                      "the controls")
endif()
set(_failures "")
set(_controls 0)
set(_upward 0)
foreach(_probe IN LISTS _probes)
  get_filename_component(_name ${_probe} NAME_WE)
  file(STRINGS ${_probe} _first LIMIT_COUNT 1)
  execute_process(COMMAND ${CMAKE_COMMAND} --build ${WORK} --target probe_${_name}
                  RESULT_VARIABLE _rc OUTPUT_VARIABLE _out ERROR_VARIABLE _out)
  if(_first MATCHES "^// expect: compiles$")
    math(EXPR _controls "${_controls} + 1")
    if(_rc EQUAL 0)
      message(STATUS "ok   ${_name}: compiles")
    else()
      list(APPEND _failures "${_name}: must compile with its layer's include path, but:\n${_out}")
    endif()
  elseif(_first MATCHES "^// expect: missing ([^ ]+)$")
    set(_header ${CMAKE_MATCH_1})
    math(EXPR _upward "${_upward} + 1")
    if(_rc EQUAL 0)
      list(APPEND _failures "${_name}: an upward include of ${_header} compiled: the layer's "
                            "include path shows a folder above it (cmake/CachemgrLayers.cmake)")
    elseif(_out MATCHES "${_header}: No such file or directory"
           OR _out MATCHES "'${_header}' file not found")
      message(STATUS "ok   ${_name}: ${_header} not found")
    else()
      list(APPEND _failures "${_name}: failed, but not for want of ${_header}:\n${_out}")
    endif()
  else()
    list(APPEND _failures "${_name}: its first line must be '// expect: compiles' or "
                          "'// expect: missing <header>', not '${_first}'")
  endif()
endforeach()
if(_controls EQUAL 0 OR _upward EQUAL 0)
  list(APPEND _failures "need at least one probe that compiles and one upward include "
                        "(${_controls} and ${_upward})")
endif()
if(_failures)
  string(JOIN "\n" _text ${_failures})
  message(FATAL_ERROR "${_text}")
endif()
message(STATUS "${_upward} upward includes refused, ${_controls} controls compiled")
file(REMOVE_RECURSE ${WORK})
