// Hand-written pre-tokenizers, exact re-implementations of tiktoken's regexes:
//   gpt2 (r50k/p50k):  '(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s
//   cl100k_base:       '(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+
//                      |\s++$|\s*[\r\n]|\s+(?!\S)|\s
//   o200k_base:        [^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?
//                      |[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?
//                      |\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+
// and the llama.cpp pre-tokenizers (Hugging Face's Split steps, checked against HF tokenizers):
//   llama3 (llama-bpe): (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}
//                      | ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
//   qwen2:             the same with \p{N} (single digits) in place of \p{N}{1,3}
//   gpt2-digits (smollm, starcoder): \p{N} isolated first, then gpt2 on each stretch between
// Each next_* function returns the end of the piece that starts at byte i (always > i).
// Input is UTF-8; an invalid byte counts as one character of no class (like U+FFFD:
// not a letter, number or space), so arbitrary bytes split without loss. Every loop only
// moves forward, so a whole text splits in O(n) (backtracking is resolved analytically).
#pragma once
#include <cstddef>
#include <cstdint>

#include "bpe/unicode_tables.hpp"

namespace llmcore::bpe {

enum class Pattern : int { GPT2 = 0, CL100K = 1, O200K = 2, LLAMA3 = 3, QWEN2 = 4, GPT2_DIGITS = 5 };

struct Ch {
  uint32_t cp;
  uint32_t len;
  uint8_t fl;
};

constexpr uint32_t kInvalidCp = 0xFFFFFFFFu;

struct AsciiFlags {
  uint8_t f[128];
  constexpr AsciiFlags() : f{} {
    for (int c = 0; c < 128; ++c) {
      uint8_t v = 0;
      if (c >= 'A' && c <= 'Z') v = F_L | F_U;
      else if (c >= 'a' && c <= 'z') v = F_L | F_W;
      else if (c >= '0' && c <= '9') v = F_N;
      else if ((c >= 9 && c <= 13) || c == ' ') v = F_WS;
      f[c] = v;
    }
  }
};
inline constexpr AsciiFlags kAscii{};

inline Ch char_at(const uint8_t* s, size_t n, size_t i) {
  const uint8_t b = s[i];
  if (b < 0x80) return {b, 1, kAscii.f[b]};
  const size_t left = n - i;
  if (b >= 0xC2 && b <= 0xDF) {
    if (left >= 2 && (s[i + 1] & 0xC0) == 0x80) {
      uint32_t cp = ((b & 0x1Fu) << 6) | (s[i + 1] & 0x3Fu);
      return {cp, 2, cp_flags(cp)};
    }
  } else if (b >= 0xE0 && b <= 0xEF) {
    if (left >= 3) {
      const uint8_t b1 = s[i + 1], b2 = s[i + 2];
      const uint8_t lo = (b == 0xE0) ? 0xA0 : 0x80, hi = (b == 0xED) ? 0x9F : 0xBF;
      if (b1 >= lo && b1 <= hi && (b2 & 0xC0) == 0x80) {
        uint32_t cp = ((b & 0x0Fu) << 12) | ((b1 & 0x3Fu) << 6) | (b2 & 0x3Fu);
        return {cp, 3, cp_flags(cp)};
      }
    }
  } else if (b >= 0xF0 && b <= 0xF4) {
    if (left >= 4) {
      const uint8_t b1 = s[i + 1], b2 = s[i + 2], b3 = s[i + 3];
      const uint8_t lo = (b == 0xF0) ? 0x90 : 0x80, hi = (b == 0xF4) ? 0x8F : 0xBF;
      if (b1 >= lo && b1 <= hi && (b2 & 0xC0) == 0x80 && (b3 & 0xC0) == 0x80) {
        uint32_t cp = ((b & 0x07u) << 18) | ((b1 & 0x3Fu) << 12) | ((b2 & 0x3Fu) << 6) | (b3 & 0x3Fu);
        return {cp, 4, cp_flags(cp)};
      }
    }
  }
  return {kInvalidCp, 1, 0};
}

// Advance over characters whose flags intersect `mask`.
inline size_t run_any(const uint8_t* s, size_t n, size_t i, uint8_t mask) {
  while (i < n) {
    const uint8_t b = s[i];
    if (b < 0x80) {
      if (!(kAscii.f[b] & mask)) break;
      ++i;
      continue;
    }
    Ch c = char_at(s, n, i);
    if (!(c.fl & mask)) break;
    i += c.len;
  }
  return i;
}

// Advance over "other" characters: [^\s\p{L}\p{N}].
inline size_t run_other(const uint8_t* s, size_t n, size_t i) {
  constexpr uint8_t kNot = F_L | F_N | F_WS;
  while (i < n) {
    const uint8_t b = s[i];
    if (b < 0x80) {
      if (kAscii.f[b] & kNot) break;
      ++i;
      continue;
    }
    Ch c = char_at(s, n, i);
    if (c.fl & kNot) break;
    i += c.len;
  }
  return i;
}

inline size_t run_digits3(const uint8_t* s, size_t n, size_t i) {
  for (int k = 0; k < 3 && i < n; ++k) {
    Ch c = char_at(s, n, i);
    if (!(c.fl & F_N)) break;
    i += c.len;
  }
  return i;
}

struct WsRun {
  size_t end;     // end of the maximal whitespace run
  size_t last;    // start of its last character
  size_t nl_end;  // end of its last \r or \n, 0 when it has none
};

inline WsRun ws_run(const uint8_t* s, size_t n, size_t i) {
  WsRun r{i, i, 0};
  while (r.end < n) {
    Ch c = char_at(s, n, r.end);
    if (!(c.fl & F_WS)) break;
    r.last = r.end;
    r.end += c.len;
    if (c.cp == '\r' || c.cp == '\n') r.nl_end = r.end;
  }
  return r;
}

inline uint32_t fold_ascii(uint32_t cp) {
  if (cp >= 'A' && cp <= 'Z') return cp + 32;
  if (cp == 0x17F) return 's';  // LATIN SMALL LETTER LONG S folds to s
  return cp;
}

// At s[i] == '\'': case-insensitive 's 't 're 've 'm 'll 'd; returns the end or 0.
inline size_t contraction_ci(const uint8_t* s, size_t n, size_t i) {
  if (i + 1 >= n) return 0;
  Ch a = char_at(s, n, i + 1);
  const uint32_t x = fold_ascii(a.cp);
  const size_t j = i + 1 + a.len;
  if (x == 's' || x == 't' || x == 'm' || x == 'd') return j;
  if (j >= n) return 0;
  Ch b = char_at(s, n, j);
  const uint32_t y = fold_ascii(b.cp);
  if ((x == 'l' && y == 'l') || (x == 'v' && y == 'e') || (x == 'r' && y == 'e')) return j + b.len;
  return 0;
}

inline size_t next_gpt2(const uint8_t* s, size_t n, size_t i) {
  Ch c = char_at(s, n, i);
  if (c.cp == '\'' && i + 1 < n) {
    const uint8_t a = s[i + 1];
    if (a == 's' || a == 't' || a == 'm' || a == 'd') return i + 2;
    if (i + 2 < n) {
      const uint8_t b = s[i + 2];
      if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return i + 3;
    }
  }
  size_t j = i;
  Ch d = c;
  if (c.cp == ' ' && i + 1 < n) {
    Ch e = char_at(s, n, i + 1);
    if (!(e.fl & F_WS)) {
      j = i + 1;
      d = e;
    }
  }
  if (d.fl & F_L) return run_any(s, n, j + d.len, F_L);
  if (d.fl & F_N) return run_any(s, n, j + d.len, F_N);
  if (!(d.fl & F_WS)) return run_other(s, n, j + d.len);
  WsRun r = ws_run(s, n, i);
  if (r.end == n) return n;
  if (r.last > i) return r.last;
  return i + c.len;
}

// The alternative " ?[^\s\p{L}\p{N}]+" followed by newlines (and '/' for o200k), shared by the
// cl100k, o200k and llama3 splitters: where its piece starting at i ends, or 0 when the
// text at i is not such a piece.
inline size_t punct_run(const uint8_t* s, size_t n, size_t i, Ch c, bool slash) {
  size_t j = i;
  Ch d = c;
  if (c.cp == ' ' && i + c.len < n) {
    Ch x = char_at(s, n, i + c.len);
    if (!(x.fl & (F_WS | F_L | F_N))) {
      j = i + c.len;
      d = x;
    }
  }
  if (d.fl & (F_WS | F_L | F_N)) return 0;
  size_t e = run_other(s, n, j + d.len);
  while (e < n && (s[e] == '\r' || s[e] == '\n' || (slash && s[e] == '/'))) ++e;
  return e;
}

inline size_t next_cl100k(const uint8_t* s, size_t n, size_t i) {
  Ch c = char_at(s, n, i);
  if (c.cp == '\'') {
    size_t e = contraction_ci(s, n, i);
    if (e) return e;
  }
  if (c.fl & F_L) return run_any(s, n, i + c.len, F_L);
  const bool nl = c.cp == '\r' || c.cp == '\n';
  if (!(c.fl & F_N) && !nl && i + c.len < n) {
    Ch d = char_at(s, n, i + c.len);
    if (d.fl & F_L) return run_any(s, n, i + c.len + d.len, F_L);
  }
  if (c.fl & F_N) return run_digits3(s, n, i);
  if (size_t e = punct_run(s, n, i, c, false)) return e;
  WsRun r = ws_run(s, n, i);
  if (r.end == n) return n;
  if (r.nl_end) return r.nl_end;
  if (r.last > i) return r.last;
  return i + c.len;
}

inline size_t o200k_suffix(const uint8_t* s, size_t n, size_t e) {
  if (e < n && s[e] == '\'') {
    size_t x = contraction_ci(s, n, e);
    if (x) return x;
  }
  return e;
}

// [U]*[W]+ contraction? starting at st; 0 when no match.
inline size_t o200k_alt1(const uint8_t* s, size_t n, size_t st) {
  size_t k = st, lastw = 0;
  while (k < n) {
    Ch x = char_at(s, n, k);
    if (!(x.fl & F_U)) {
      if (x.fl & F_W) return o200k_suffix(s, n, run_any(s, n, k + x.len, F_W));
      break;
    }
    k += x.len;
    if (x.fl & F_W) lastw = k;
  }
  if (lastw) return o200k_suffix(s, n, lastw);
  return 0;
}

// [U]+[W]* contraction? starting at st; 0 when no match.
inline size_t o200k_alt2(const uint8_t* s, size_t n, size_t st) {
  size_t k = run_any(s, n, st, F_U);
  if (k == st) return 0;
  return o200k_suffix(s, n, run_any(s, n, k, F_W));
}

inline size_t next_o200k(const uint8_t* s, size_t n, size_t i) {
  Ch c = char_at(s, n, i);
  const size_t a = i + c.len;
  const bool pre = !(c.fl & (F_L | F_N)) && c.cp != '\r' && c.cp != '\n' && a < n;
  size_t e;
  if (pre && (e = o200k_alt1(s, n, a))) return e;
  if ((c.fl & (F_U | F_W)) && (e = o200k_alt1(s, n, i))) return e;
  if (pre && (e = o200k_alt2(s, n, a))) return e;
  if ((c.fl & F_U) && (e = o200k_alt2(s, n, i))) return e;
  if (c.fl & F_N) return run_digits3(s, n, i);
  if ((e = punct_run(s, n, i, c, true))) return e;
  WsRun r = ws_run(s, n, i);
  if (r.nl_end) return r.nl_end;
  if (r.end == n) return n;
  if (r.last > i) return r.last;
  return r.end;
}

// llama3 / qwen2: cl100k's alternatives except the whitespace ones, which HF's regex tries in
// the order \s*[\r\n]+ (ends after the run's last newline), \s+(?!\S), \s+.
template <bool kDigits3>
inline size_t next_llama3(const uint8_t* s, size_t n, size_t i) {
  Ch c = char_at(s, n, i);
  if (c.cp == '\'') {
    size_t e = contraction_ci(s, n, i);
    if (e) return e;
  }
  if (c.fl & F_L) return run_any(s, n, i + c.len, F_L);
  const bool nl = c.cp == '\r' || c.cp == '\n';
  if (!(c.fl & F_N) && !nl && i + c.len < n) {
    Ch d = char_at(s, n, i + c.len);
    if (d.fl & F_L) return run_any(s, n, i + c.len + d.len, F_L);
  }
  if (c.fl & F_N) return kDigits3 ? run_digits3(s, n, i) : i + c.len;
  if (size_t e = punct_run(s, n, i, c, false)) return e;
  WsRun r = ws_run(s, n, i);
  if (r.nl_end) return r.nl_end;
  if (r.end == n) return n;
  if (r.last > i) return r.last;
  return r.end;
}

// The pieces of one text, in order. Stateless for every pattern but gpt2-digits, which
// remembers where the current stretch between two digits ends (so a text splits in O(n)).
class Splitter {
 public:
  explicit Splitter(Pattern p) : p_(p) {}
  size_t next(const uint8_t* s, size_t n, size_t i) {
    switch (p_) {
      case Pattern::GPT2: return next_gpt2(s, n, i);
      case Pattern::CL100K: return next_cl100k(s, n, i);
      case Pattern::O200K: return next_o200k(s, n, i);
      case Pattern::LLAMA3: return next_llama3<true>(s, n, i);
      case Pattern::QWEN2: return next_llama3<false>(s, n, i);
      default: return next_gpt2_digits(s, n, i);
    }
  }
  size_t next_gpt2_digits(const uint8_t* s, size_t n, size_t i) {
    if (i >= stretch_end_) {
      Ch c = char_at(s, n, i);
      if (c.fl & F_N) return i + c.len;
      size_t j = i + c.len;
      while (j < n) {
        Ch d = char_at(s, n, j);
        if (d.fl & F_N) break;
        j += d.len;
      }
      stretch_end_ = j;
    }
    return next_gpt2(s, stretch_end_, i);
  }

 private:
  Pattern p_;
  size_t stretch_end_ = 0;
};

}  // namespace llmcore::bpe
