# FindCeph: imported targets for Ceph's C client libraries, which ship no CMake config.
#
#   Ceph::rados   librados (librados.h)
#   Ceph::rbd     librbd   (librbd.h), depends on Ceph::rados
#
# Sets Ceph_FOUND, Ceph_INCLUDE_DIR, Ceph_RADOS_LIBRARY, Ceph_RBD_LIBRARY.
include(FindPackageHandleStandardArgs)

find_path(Ceph_INCLUDE_DIR NAMES rbd/librbd.h rados/librados.h)
find_library(Ceph_RADOS_LIBRARY NAMES rados)
find_library(Ceph_RBD_LIBRARY NAMES rbd)

find_package_handle_standard_args(Ceph
  REQUIRED_VARS Ceph_RBD_LIBRARY Ceph_RADOS_LIBRARY Ceph_INCLUDE_DIR)

if(Ceph_FOUND)
  if(NOT TARGET Ceph::rados)
    add_library(Ceph::rados UNKNOWN IMPORTED)
    set_target_properties(Ceph::rados PROPERTIES
      IMPORTED_LOCATION "${Ceph_RADOS_LIBRARY}"
      INTERFACE_INCLUDE_DIRECTORIES "${Ceph_INCLUDE_DIR}")
  endif()
  if(NOT TARGET Ceph::rbd)
    add_library(Ceph::rbd UNKNOWN IMPORTED)
    set_target_properties(Ceph::rbd PROPERTIES
      IMPORTED_LOCATION "${Ceph_RBD_LIBRARY}"
      INTERFACE_INCLUDE_DIRECTORIES "${Ceph_INCLUDE_DIR}"
      INTERFACE_LINK_LIBRARIES Ceph::rados)
  endif()
endif()
mark_as_advanced(Ceph_INCLUDE_DIR Ceph_RADOS_LIBRARY Ceph_RBD_LIBRARY)
