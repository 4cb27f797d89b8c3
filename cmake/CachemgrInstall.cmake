# Install and export rules (CACHEMGR_INSTALL): the library, the tool, the public headers
# (with the generated cachemgr/export.h) and the package config; nothing the library
# does not read at run time (the schema migrations are compiled in). The same targets
# are exported from the build tree, so another project can find_package(cachemgr) with
# cachemgr_DIR pointing at this build directory.
include(CMakePackageConfigHelpers)
set(_cmake_dir ${CMAKE_INSTALL_LIBDIR}/cmake/cachemgr)

install(TARGETS cachemgr EXPORT cachemgrTargets
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
        RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR}
        INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
# The installed tool finds the installed library wherever the prefix is.
set_target_properties(cachemgr_cli PROPERTIES
  INSTALL_RPATH "$ORIGIN/../${CMAKE_INSTALL_LIBDIR}")
install(TARGETS cachemgr_cli RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(DIRECTORY cachemgr/include/cachemgr DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(FILES ${CACHEMGR_GENERATED_INCLUDE_DIR}/cachemgr/export.h
        DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/cachemgr)
install(EXPORT cachemgrTargets NAMESPACE cachemgr:: DESTINATION ${_cmake_dir})

# A static libcachemgr carries its private dependencies into the consumer's link: the
# package config then finds them too (FindCeph.cmake is installed beside it).
get_target_property(CACHEMGR_LIBRARY_TYPE cachemgr TYPE)
if(CACHEMGR_LIBRARY_TYPE STREQUAL "STATIC_LIBRARY")
  install(FILES cmake/FindCeph.cmake cmake/FindMicroHTTPD.cmake DESTINATION ${_cmake_dir})
endif()
set(_config_dir ${CMAKE_CURRENT_BINARY_DIR}/cmake-install)
configure_package_config_file(cmake/cachemgrConfig.cmake.in
  ${_config_dir}/cachemgrConfig.cmake INSTALL_DESTINATION ${_cmake_dir})
write_basic_package_version_file(${CMAKE_CURRENT_BINARY_DIR}/cachemgrConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${_config_dir}/cachemgrConfig.cmake
              ${CMAKE_CURRENT_BINARY_DIR}/cachemgrConfigVersion.cmake
        DESTINATION ${_cmake_dir})

# The build-tree package: cachemgrConfig.cmake, its version file and cachemgrTargets.cmake
# at the top of the build directory (FindCeph.cmake beside them, for a static library).
export(EXPORT cachemgrTargets NAMESPACE cachemgr::
       FILE ${CMAKE_CURRENT_BINARY_DIR}/cachemgrTargets.cmake)
configure_package_config_file(cmake/cachemgrConfig.cmake.in
  ${CMAKE_CURRENT_BINARY_DIR}/cachemgrConfig.cmake
  INSTALL_DESTINATION ${CMAKE_CURRENT_BINARY_DIR} INSTALL_PREFIX ${CMAKE_CURRENT_BINARY_DIR})
if(CACHEMGR_LIBRARY_TYPE STREQUAL "STATIC_LIBRARY")
  configure_file(cmake/FindCeph.cmake ${CMAKE_CURRENT_BINARY_DIR}/FindCeph.cmake COPYONLY)
  configure_file(cmake/FindMicroHTTPD.cmake ${CMAKE_CURRENT_BINARY_DIR}/FindMicroHTTPD.cmake COPYONLY)
endif()
