#include "isa/isa.hpp"

#include <atomic>
#include <cstdlib>
#include <stdexcept>

namespace llmcore::isa {
namespace {

constexpr Level kAll[] = {Level::scalar, Level::avx2, Level::avx512, Level::native};

bool built(Level level) {
#if defined(LLMCORE_ISA_NATIVE_BUILD)
  return level == Level::native;
#else
  switch (level) {
    case Level::scalar: return true;
#if defined(LLMCORE_ISA_BUILT_AVX2)
    case Level::avx2: return true;
#endif
#if defined(LLMCORE_ISA_BUILT_AVX512)
    case Level::avx512: return true;
#endif
    default: return false;
  }
#endif
}

// The x86-64 micro-architecture levels the variants are compiled for (-march=x86-64-v3:
// AVX2, FMA, F16C, BMI1/2, LZCNT, MOVBE; -march=x86-64-v4: AVX-512 F/BW/CD/DQ/VL). The
// runtime check includes the OS's support for the wider register state.
bool cpu_has(Level level) {
  if (level == Level::scalar || level == Level::native) return true;
#if (defined(__x86_64__) || defined(__i386__)) && (defined(__clang__) || __GNUC__ >= 12)
  __builtin_cpu_init();
  if (level == Level::avx2) return __builtin_cpu_supports("x86-64-v3") != 0;
  if (level == Level::avx512) return __builtin_cpu_supports("x86-64-v4") != 0;
#elif defined(__x86_64__) || defined(__i386__)
  // Compilers without the level names: the features the kernels' code generation uses.
  __builtin_cpu_init();
  const bool v3 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                  __builtin_cpu_supports("bmi") && __builtin_cpu_supports("bmi2");
  if (level == Level::avx2) return v3;
  if (level == Level::avx512)
    return v3 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
#endif
  return false;
}

std::string valid_names() {
  std::string s;
  for (Level l : available()) s += (s.empty() ? "" : ", ") + std::string(name(l));
  return s;
}

Level parse(const std::string& text, const char* origin) {
  for (Level l : kAll) {
    if (text != name(l)) continue;
    if (!built(l))
      throw std::invalid_argument(std::string(origin) + "=" + text +
                                  ": this build of llmcore has no " + text +
                                  " kernels; valid here: " + valid_names());
    if (!cpu_has(l))
      throw std::invalid_argument(std::string(origin) + "=" + text + ": this CPU lacks the " +
                                  text + " instructions; valid here: " + valid_names());
    return l;
  }
  throw std::invalid_argument(std::string(origin) + "=" + text +
                              ": unknown instruction-set level; valid here: " + valid_names());
}

Level initial() {
  const char* env = std::getenv("LLMCORE_ISA");
  if (env != nullptr && env[0] != '\0') return parse(env, "LLMCORE_ISA");
  return available().back();
}

std::atomic<int>& chosen() {
  static std::atomic<int> level{static_cast<int>(initial())};
  return level;
}

}  // namespace

const char* name(Level level) {
  switch (level) {
    case Level::scalar: return "scalar";
    case Level::avx2: return "avx2";
    case Level::avx512: return "avx512";
    case Level::native: return "native";
  }
  return "?";
}

std::vector<Level> available() {
  std::vector<Level> out;
  for (Level l : kAll)
    if (built(l) && cpu_has(l)) out.push_back(l);
  return out;
}

Level active() { return static_cast<Level>(chosen().load(std::memory_order_relaxed)); }

void set(const std::string& text) {
  const Level l = parse(text, "set_isa");
  chosen().store(static_cast<int>(l), std::memory_order_relaxed);
}

}  // namespace llmcore::isa
