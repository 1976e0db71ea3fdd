// Instruction-set levels of the CPU kernels, chosen at run time.
//
// Each kernel source (attention, loss, activation, quant) is compiled once per level with
// its own -march flags and with LLMCORE_ISA_NS naming a namespace of its own (isa_scalar,
// isa_avx2, isa_avx512; isa_native for a -march=native build). Everything a variant
// defines, inline helpers included, lives in that namespace, so the linker never merges
// the AVX-512 copy of an inline function with the baseline one. The binding files are
// compiled at baseline and call through a dispatcher (LLMCORE_ISA_DISPATCH) that picks the
// variant of the level chosen once per process: the best one the CPU has, or the one
// named by the environment variable LLMCORE_ISA (scalar, avx2, avx512).
#pragma once

#include <string>
#include <vector>

namespace llmcore::isa {

// Ordered: a level's code runs on every CPU that has the features of a higher level.
enum class Level : int { scalar = 0, avx2 = 1, avx512 = 2, native = 3 };

// The level the kernels run at. The first call picks it (LLMCORE_ISA, else the best one
// available) and throws std::invalid_argument when LLMCORE_ISA names a level that is
// unknown, not built or missing on this CPU.
Level active();

// Force a level (tests, debugging). Throws std::invalid_argument, naming the levels that
// would be valid, when `name` is unknown, not built or missing on this CPU.
void set(const std::string& name);

const char* name(Level level);

// The levels this build compiled that this CPU can run, lowest first.
std::vector<Level> available();

}  // namespace llmcore::isa

// Declares the same functions in the namespace of every variant (declaring one a build
// did not compile is harmless: the dispatcher never names it).
#define LLMCORE_ISA_DECLARE(...)  \
  namespace isa_scalar {          \
  __VA_ARGS__                     \
  }                               \
  namespace isa_avx2 {            \
  __VA_ARGS__                     \
  }                               \
  namespace isa_avx512 {          \
  __VA_ARGS__                     \
  }                               \
  namespace isa_native {          \
  __VA_ARGS__                     \
  }

// `return isa_<level>::call;` for the active level, from inside the namespace that holds
// the variants' namespaces. The build defines LLMCORE_ISA_BUILT_AVX2/AVX512 for the
// variants it compiled, or LLMCORE_ISA_NATIVE_BUILD for a single native one.
#if defined(LLMCORE_ISA_NATIVE_BUILD)
#define LLMCORE_ISA_DISPATCH(call) return isa_native::call
#else
#if defined(LLMCORE_ISA_BUILT_AVX512)
#define LLMCORE_ISA_CASE_AVX512(level, call) \
  if (level == ::llmcore::isa::Level::avx512) return isa_avx512::call;
#else
#define LLMCORE_ISA_CASE_AVX512(level, call)
#endif
#if defined(LLMCORE_ISA_BUILT_AVX2)
#define LLMCORE_ISA_CASE_AVX2(level, call) \
  if (level == ::llmcore::isa::Level::avx2) return isa_avx2::call;
#else
#define LLMCORE_ISA_CASE_AVX2(level, call)
#endif
#define LLMCORE_ISA_DISPATCH(call)                                       \
  do {                                                                   \
    const ::llmcore::isa::Level llmcore_level_ = ::llmcore::isa::active(); \
    LLMCORE_ISA_CASE_AVX512(llmcore_level_, call)                        \
    LLMCORE_ISA_CASE_AVX2(llmcore_level_, call)                          \
    return isa_scalar::call;                                             \
  } while (0)
#endif
