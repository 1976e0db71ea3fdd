# Compile settings of the attention kernels, applied once the _C target exists.

# The tile products rely on fused multiply-adds; -std=c++17 (not gnu++17) would
# otherwise turn contraction off in GCC.
set_source_files_properties(
  csrc/attention/flash_cpu_fwd.cpp csrc/attention/flash_cpu_bwd.cpp
  TARGET_DIRECTORY _C
  PROPERTIES COMPILE_OPTIONS "-ffp-contract=fast")

# The CUDA kernels: built when a CUDA compiler is found (LLMCORE_CUDA=AUTO) or required
# (ON). The CUDA runtime is linked statically and only touches the driver on the first
# CUDA call, so `import llmcore` works on machines without a GPU or driver.
if(NOT LLMCORE_CUDA STREQUAL "OFF")
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
      # Ampere SASS plus Hopper SASS and PTX (newer GPUs JIT the PTX); two targets keep
      # the compile short.
      set(CMAKE_CUDA_ARCHITECTURES "80-real;90")
    endif()
    enable_language(CUDA)
    target_sources(_C PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/csrc/attention/flash_cuda_fwd.cu
      ${CMAKE_CURRENT_SOURCE_DIR}/csrc/attention/flash_cuda_bwd.cu)
    # _C was created before CUDA was enabled: give it the architectures explicitly.
    set_target_properties(_C PROPERTIES CUDA_ARCHITECTURES "${CMAKE_CUDA_ARCHITECTURES}"
      CUDA_RUNTIME_LIBRARY Static CUDA_STANDARD 17)
    target_compile_definitions(_C PRIVATE LLMCORE_CUDA_ATTENTION=1)
    message(STATUS "llmcore: building the CUDA attention kernels for ${CMAKE_CUDA_ARCHITECTURES}")
  elseif(LLMCORE_CUDA STREQUAL "ON")
    message(FATAL_ERROR "LLMCORE_CUDA=ON but no CUDA compiler was found (set CMAKE_CUDA_COMPILER)")
  else()
    message(STATUS "llmcore: no CUDA compiler found, building without the CUDA attention kernels")
  endif()
endif()
