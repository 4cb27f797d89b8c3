# FindMicroHTTPD: an imported target for GNU libmicrohttpd, which ships no CMake config.
#
#   MicroHTTPD::MicroHTTPD   libmicrohttpd (microhttpd.h)
#
# Sets MicroHTTPD_FOUND, MicroHTTPD_INCLUDE_DIR, MicroHTTPD_LIBRARY.
include(FindPackageHandleStandardArgs)

find_path(MicroHTTPD_INCLUDE_DIR NAMES microhttpd.h)
find_library(MicroHTTPD_LIBRARY NAMES microhttpd)

find_package_handle_standard_args(MicroHTTPD
  REQUIRED_VARS MicroHTTPD_LIBRARY MicroHTTPD_INCLUDE_DIR)

if(MicroHTTPD_FOUND AND NOT TARGET MicroHTTPD::MicroHTTPD)
  add_library(MicroHTTPD::MicroHTTPD UNKNOWN IMPORTED)
  set_target_properties(MicroHTTPD::MicroHTTPD PROPERTIES
    IMPORTED_LOCATION "${MicroHTTPD_LIBRARY}"
    INTERFACE_INCLUDE_DIRECTORIES "${MicroHTTPD_INCLUDE_DIR}")
endif()
mark_as_advanced(MicroHTTPD_INCLUDE_DIR MicroHTTPD_LIBRARY)
