# Compile settings of the attention kernels, applied once the _C target exists.

# The tile products rely on fused multiply-adds; -std=c++17 (not gnu++17) would
# otherwise turn contraction off in GCC.
set_source_files_properties(
  csrc/attention/flash_cpu_fwd.cpp csrc/attention/flash_cpu_bwd.cpp
  TARGET_DIRECTORY _C
  PROPERTIES COMPILE_OPTIONS "-ffp-contract=fast")
