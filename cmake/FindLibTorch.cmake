# Locates LibTorch and defines the interface target `elastic::torch`.
#
# CPU builds link libtorch_cpu + libc10 only: the PyPI wheel is a CUDA build, and
# going through TorchConfig.cmake would demand a CUDA toolkit on machines that have
# no GPU. CUDA builds (ELASTIC_CUDA=ON) use TorchConfig.cmake as PyTorch intends.
#
# Where LibTorch is searched, first hit wins:
#   -DTORCH_ROOT=<dir>            a LibTorch tree (include/, lib/) or a torch site-package
#   -DTorch_DIR=<dir>/share/cmake/Torch   (e.g. the official LibTorch zip)
#   <source>/.venv                the project's virtualenv made by tools/setup.sh
#   python3 on PATH               import path of its `torch` package
include_guard(GLOBAL)

function(_elastic_torch_from_python py out)
  execute_process(
    COMMAND "${py}" -c "import importlib.util as u; s=u.find_spec('torch'); print(s.submodule_search_locations[0] if s else '')"
    OUTPUT_VARIABLE _dir OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET RESULT_VARIABLE _rc)
  if(_rc EQUAL 0 AND EXISTS "${_dir}/include/torch")
    set(${out} "${_dir}" PARENT_SCOPE)
  endif()
endfunction()

if(NOT TORCH_ROOT AND Torch_DIR)
  get_filename_component(TORCH_ROOT "${Torch_DIR}/../../.." ABSOLUTE)
endif()
if(NOT TORCH_ROOT AND EXISTS "${PROJECT_SOURCE_DIR}/.venv/bin/python3")
  _elastic_torch_from_python("${PROJECT_SOURCE_DIR}/.venv/bin/python3" TORCH_ROOT)
endif()
if(NOT TORCH_ROOT)
  find_program(_elastic_py python3)
  if(_elastic_py)
    _elastic_torch_from_python("${_elastic_py}" TORCH_ROOT)
  endif()
endif()
if(NOT TORCH_ROOT OR NOT EXISTS "${TORCH_ROOT}/include/torch/csrc/api/include/torch/torch.h")
  message(FATAL_ERROR "LibTorch not found. Run tools/setup.sh (creates .venv with torch==2.11.0), "
                      "or pass -DTORCH_ROOT=<libtorch dir> or -DTorch_DIR=<libtorch>/share/cmake/Torch.")
endif()
set(TORCH_ROOT "${TORCH_ROOT}" CACHE PATH "LibTorch root (include/, lib/)" FORCE)
message(STATUS "LibTorch: ${TORCH_ROOT}")

add_library(elastic_torch INTERFACE)
add_library(elastic::torch ALIAS elastic_torch)

if(ELASTIC_CUDA)
  list(APPEND CMAKE_PREFIX_PATH "${TORCH_ROOT}/share/cmake")
  find_package(Torch REQUIRED CONFIG)
  target_link_libraries(elastic_torch INTERFACE ${TORCH_LIBRARIES})
  # The CUDA libtorch.so exports std::filesystem symbols (broken remove_all among them); with
  # libstdc++ first among the program's needed libraries, the program resolves to libstdc++'s.
  target_link_options(elastic_torch INTERFACE "LINKER:--push-state,--no-as-needed,-lstdc++,--pop-state")
  target_include_directories(elastic_torch SYSTEM INTERFACE ${TORCH_INCLUDE_DIRS})
else()
  find_library(ELASTIC_TORCH_CPU_LIB torch_cpu PATHS "${TORCH_ROOT}/lib" NO_DEFAULT_PATH REQUIRED)
  find_library(ELASTIC_C10_LIB c10 PATHS "${TORCH_ROOT}/lib" NO_DEFAULT_PATH REQUIRED)
  target_include_directories(elastic_torch SYSTEM INTERFACE
    "${TORCH_ROOT}/include" "${TORCH_ROOT}/include/torch/csrc/api/include")
  # --no-as-needed: static registrars in libtorch_cpu must load even if no symbol is referenced.
  target_link_libraries(elastic_torch INTERFACE
    "-Wl,--no-as-needed" "${ELASTIC_TORCH_CPU_LIB}" "${ELASTIC_C10_LIB}" "-Wl,--as-needed")
  target_link_options(elastic_torch INTERFACE "-Wl,-rpath,${TORCH_ROOT}/lib")
endif()
