# Polynomials of the activation kernels: let GCC fuse multiply-adds (-std=c++17 turns
# contraction off otherwise).
set_source_files_properties(csrc/activation/gelu.cpp TARGET_DIRECTORY _C
  PROPERTIES COMPILE_OPTIONS "-ffp-contract=fast")
