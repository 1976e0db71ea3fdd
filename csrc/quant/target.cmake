# The matmul's dot products rely on fused multiply-adds (-std=c++17 turns contraction off
# in GCC otherwise). Dequantization and quantization keep it off: their values must be
# gguf's, bit for bit.
set_source_files_properties(csrc/quant/matmul.cpp TARGET_DIRECTORY _C
  PROPERTIES COMPILE_OPTIONS "-ffp-contract=fast")
