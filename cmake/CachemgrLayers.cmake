# The layers of libcachemgr, as the build enforces them.
#
#   cli (cachemgr/cli)       public headers only, through the library target cachemgr
#   engine                   cachemgr/src/engine: the Cache behind cachemgr/cache.h
#   middle                   policy, storage, index, source, fetch, convert, config
#   base                     cachemgr/src/util, cachemgr/src/log
#
# Within the middle layer the arrows are: fetch -> {source, storage, convert};
# source -> convert; policy sees nothing at all (it is pure: plain structs in, a plan
# out). config sits in the middle layer (only the engine and the cli read options from
# YAML); storage, index and convert see only the base.
#
# The public headers (cachemgr/include/cachemgr/*.h) sit with the layer that implements
# them: error.h, options.h and logging.h (the vocabulary every layer speaks, util/ and
# log/ implement them) with the base; config.h with config; cache.h with the engine.
#
# Each layer is one STATIC library (position-independent, hidden visibility) named
# cachemgr_<layer>, linking only the layers it may use. Private headers are included by
# folder ("util/hash.h", "storage/backend.h"); instead of the two roots that used to
# show every folder to everyone (cachemgr/src and the repository root), each layer has
# a root of its own in the build tree, ${PROJECT_BINARY_DIR}/layers/<layer>, holding
# symbolic links to its own folders and public headers only. A layer's include path is
# its root and the roots of the layers it links (PUBLIC), so what it may include is
# exactly what it links: an upward include is "No such file or directory", and
# tests/layers checks that it is, for every pair of layers. The roots cannot stop a ".."
# or an absolute include (the folders are links into the source tree), so tests/layers
# also reads every file of every layer folder and what the compiler opens for each.
#
# The shared (or static) library cachemgr is made of the layers' object files; tests and
# tools that use internals link the layer libraries instead.

# Where a folder named in an include ("util/...", "storage/...") lives in the source tree.
function(_cachemgr_folder_dir folder out)
  if(folder STREQUAL "policy" OR folder STREQUAL "storage")
    set(${out} ${PROJECT_SOURCE_DIR}/${folder} PARENT_SCOPE)
  else()
    set(${out} ${PROJECT_SOURCE_DIR}/cachemgr/src/${folder} PARENT_SCOPE)
  endif()
endfunction()

# cachemgr_add_layer(NAME FOLDERS f... [PUBLIC_HEADERS h...] [LAYERS l...])
# Makes the library cachemgr_NAME and its include root: FOLDERS are its private-header
# folders, PUBLIC_HEADERS the cachemgr/*.h it implements, LAYERS the layers it uses
# (linked PUBLIC, so their roots, and the roots below them, are on its include path).
function(cachemgr_add_layer name)
  cmake_parse_arguments(L "" "" "FOLDERS;PUBLIC_HEADERS;LAYERS" ${ARGN})
  set(root ${PROJECT_BINARY_DIR}/layers/${name})
  file(REMOVE_RECURSE ${root})
  file(MAKE_DIRECTORY ${root})
  foreach(folder IN LISTS L_FOLDERS)
    _cachemgr_folder_dir(${folder} dir)
    file(CREATE_LINK ${dir} ${root}/${folder} SYMBOLIC)
  endforeach()
  if(L_PUBLIC_HEADERS)
    file(MAKE_DIRECTORY ${root}/cachemgr)
    foreach(header IN LISTS L_PUBLIC_HEADERS)
      file(CREATE_LINK ${PROJECT_SOURCE_DIR}/cachemgr/include/cachemgr/${header}
           ${root}/cachemgr/${header} SYMBOLIC)
    endforeach()
  endif()

  set(target cachemgr_${name})
  add_library(${target} STATIC)
  set_target_properties(${target} PROPERTIES
    POSITION_INDEPENDENT_CODE ON
    CXX_VISIBILITY_PRESET hidden
    VISIBILITY_INLINES_HIDDEN ON)
  # PUBLIC: a layer above (and a test) sees what this layer sees; nothing more.
  target_include_directories(${target} PUBLIC ${root} ${CACHEMGR_GENERATED_INCLUDE_DIR})
  target_compile_features(${target} PUBLIC cxx_std_20)
  if(NOT CACHEMGR_SHARED)
    target_compile_definitions(${target} PUBLIC CACHEMGR_STATIC_DEFINE)
  endif()
  foreach(layer IN LISTS L_LAYERS)
    target_link_libraries(${target} PUBLIC cachemgr_${layer})
  endforeach()
  set_property(GLOBAL APPEND PROPERTY CACHEMGR_LAYER_TARGETS ${target})

  # What the layer is meant to be, for the map tests/layers reads (see below).
  set(dirs "")
  foreach(folder IN LISTS L_FOLDERS)
    _cachemgr_folder_dir(${folder} dir)
    list(APPEND dirs "\"${folder}\": \"${dir}\"")
  endforeach()
  set(headers "")
  foreach(header IN LISTS L_PUBLIC_HEADERS)
    list(APPEND headers "\"${header}\"")
  endforeach()
  set(declared "")
  foreach(layer IN LISTS L_LAYERS)
    list(APPEND declared "\"${layer}\"")
  endforeach()
  string(JOIN ", " dirs ${dirs})
  string(JOIN ", " headers ${headers})
  string(JOIN ", " declared ${declared})
  string(CONCAT entry "\"${name}\": {\"root\": \"${root}\", \"folders\": {${dirs}}, "
                "\"public_headers\": [${headers}], \"declared\": [${declared}]")
  set_property(GLOBAL APPEND PROPERTY CACHEMGR_LAYER_MAP_ENTRIES "${entry}")

  # Written once, when the top directory is done: by then every target_link_libraries of
  # a layer (here, or anywhere else) has been made, so "links" is what the build really
  # does, next to "declared", what the LAYERS lists say it should.
  get_property(deferred GLOBAL PROPERTY CACHEMGR_LAYER_MAP_DEFERRED)
  if(NOT deferred)
    set_property(GLOBAL PROPERTY CACHEMGR_LAYER_MAP_DEFERRED ON)
    cmake_language(DEFER DIRECTORY ${PROJECT_SOURCE_DIR} CALL _cachemgr_write_layer_map)
  endif()
endfunction()

# ${PROJECT_BINARY_DIR}/layers/map.json: each layer's folders (where they live in the
# source tree), public headers, declared LAYERS and actual layer links. tests/layers reads
# it instead of keeping a copy of the layering that could drift from this file.
function(_cachemgr_write_layer_map)
  get_property(entries GLOBAL PROPERTY CACHEMGR_LAYER_MAP_ENTRIES)
  set(out "")
  foreach(entry IN LISTS entries)
    string(REGEX MATCH "^\"([a-z_]+)\"" _ "${entry}")
    set(target cachemgr_${CMAKE_MATCH_1})
    # LINK_LIBRARIES: what the layer's own sources compile with; INTERFACE_LINK_LIBRARIES:
    # what it passes on. $<LINK_ONLY:...> (a PRIVATE link of a static library) gives no
    # include path, so only plain layer names count.
    set(lists "")
    foreach(prop LINK_LIBRARIES INTERFACE_LINK_LIBRARIES)
      get_target_property(libs ${target} ${prop})
      set(names "")
      foreach(lib IN LISTS libs)
        if(lib MATCHES "^cachemgr_([a-z_]+)$")
          list(APPEND names "\"${CMAKE_MATCH_1}\"")
        endif()
      endforeach()
      string(JOIN ", " names ${names})
      list(APPEND lists "[${names}]")
    endforeach()
    list(GET lists 0 links)
    list(GET lists 1 interface)
    list(APPEND out "    ${entry}, \"links\": ${links}, \"interface\": ${interface}}")
  endforeach()
  string(JOIN ",\n" out ${out})
  file(WRITE ${PROJECT_BINARY_DIR}/layers/map.json
    "{\n  \"source_dir\": \"${PROJECT_SOURCE_DIR}\",\n"
    "  \"public_dir\": \"${PROJECT_SOURCE_DIR}/cachemgr/include/cachemgr\",\n"
    "  \"generated_include\": \"${CACHEMGR_GENERATED_INCLUDE_DIR}\",\n"
    "  \"layers\": {\n${out}\n  }\n}\n")
endfunction()

# Bottom to top.
cachemgr_add_layer(base FOLDERS util log PUBLIC_HEADERS error.h options.h logging.h)
target_link_libraries(cachemgr_base PUBLIC spdlog::spdlog
                      PRIVATE Threads::Threads OpenSSL::Crypto)

cachemgr_add_layer(policy FOLDERS policy)  # pure: links nothing

cachemgr_add_layer(convert FOLDERS convert LAYERS base)
target_link_libraries(cachemgr_convert PRIVATE nlohmann_json::nlohmann_json
                      ZLIB::ZLIB Threads::Threads)  # qcow2_reader: compressed clusters

cachemgr_add_layer(config FOLDERS config PUBLIC_HEADERS config.h LAYERS base)
target_link_libraries(cachemgr_config PRIVATE yaml-cpp)

cachemgr_add_layer(index FOLDERS index LAYERS base)
# PRIVATE: the index owns its transactions (index::Transaction) and maps every SQLite
# error to cachemgr::Error; no layer above sees a SQLite type.
target_link_libraries(cachemgr_index PRIVATE SQLiteCpp)

cachemgr_add_layer(storage FOLDERS storage LAYERS base)
target_link_libraries(cachemgr_storage PRIVATE nlohmann_json::nlohmann_json)  # rbd/: Ceph

cachemgr_add_layer(source FOLDERS source LAYERS convert base)
target_link_libraries(cachemgr_source PRIVATE CURL::libcurl OpenSSL::Crypto
                      nlohmann_json::nlohmann_json MicroHTTPD::MicroHTTPD)

cachemgr_add_layer(fetch FOLDERS fetch LAYERS source storage convert base)

cachemgr_add_layer(engine FOLDERS engine PUBLIC_HEADERS cache.h
                   LAYERS policy storage index source fetch convert config base)
target_link_libraries(cachemgr_engine PRIVATE OpenSSL::Crypto Threads::Threads nlohmann_json::nlohmann_json)
