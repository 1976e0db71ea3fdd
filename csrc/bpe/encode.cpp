// Byte-level BPE encoding of whole texts: the pre-tokenizer loop, and special and added
// tokens matched leftmost-longest before it.
#include <cstring>

#include "bpe/core.hpp"

namespace llmcore::bpe {

template <class Next>
static void encode_loop(const Core& core, const uint8_t* s, size_t n, Next next,
                        std::vector<uint32_t>& out) {
  for (size_t i = 0; i < n;) {
    const size_t e = next(s, n, i);
    core.encode_piece(s + i, e - i, out);
    i = e;
  }
}

void Core::encode_plain(const uint8_t* s, size_t n, std::vector<uint32_t>& out) const {
  switch (pattern_) {
    case Pattern::GPT2: encode_loop(*this, s, n, next_gpt2, out); break;
    case Pattern::CL100K: encode_loop(*this, s, n, next_cl100k, out); break;
    case Pattern::O200K: encode_loop(*this, s, n, next_o200k, out); break;
    case Pattern::LLAMA3: encode_loop(*this, s, n, next_llama3<true>, out); break;
    case Pattern::QWEN2: encode_loop(*this, s, n, next_llama3<false>, out); break;
    default: {
      Splitter split(pattern_);
      encode_loop(
          *this, s, n, [&split](const uint8_t* a, size_t b, size_t c) { return split.next(a, b, c); },
          out);
    }
  }
}

void Core::encode_ordinary(const uint8_t* s, size_t n, std::vector<uint32_t>& out) const {
  if (has_always_) {
    encode_with_special(s, n, {}, out);
    return;
  }
  encode_plain(s, n, out);
}

void Core::encode_with_special(const uint8_t* s, size_t n, const std::vector<char>& allowed,
                               std::vector<uint32_t>& out) const {
  size_t start = 0;  // start of the stretch not yet encoded
  for (size_t pos = 0; pos < n; ++pos) {
    const auto& bucket = special_by_byte_[s[pos]];
    if (bucket.empty()) continue;
    for (uint32_t k : bucket) {
      const Special& sp = specials_[k];
      if (!sp.always && (k >= allowed.size() || !allowed[k])) continue;
      if (sp.text.size() > n - pos || std::memcmp(sp.text.data(), s + pos, sp.text.size()) != 0)
        continue;
      encode_plain(s + start, pos - start, out);
      out.push_back(sp.id);
      start = pos + sp.text.size();
      pos = start - 1;
      break;
    }
  }
  encode_plain(s + start, n - start, out);
}

}  // namespace llmcore::bpe
