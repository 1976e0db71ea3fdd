// SentencePiece's normalizer: the precompiled character map and the whitespace rules.
//
// The character map of a tokenizer.model (NormalizerSpec.precompiled_charsmap, e.g. NFKC) is a
// uint32 trie size, a Darts double-array trie over UTF-8 bytes, then NUL-terminated
// replacement strings. At each position the longest matching key is replaced, else one
// character is copied (a malformed byte becomes U+FFFD). User-defined pieces are matched first
// and copied untouched. Spaces then become ▁ (U+2581), runs of spaces collapse and a ▁ is put
// in front, each as the model's options say.
#include <algorithm>
#include <cstring>

#include "sentencepiece/model.hpp"

namespace llmcore::sp {

namespace {
constexpr char kSpace[] = "\xe2\x96\x81";  // ▁
constexpr size_t kSpaceLen = 3;
constexpr char kReplacement[] = "\xef\xbf\xbd";  // U+FFFD

uint32_t load_u32(const char* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// Appends piece to out with every ' ' written as ▁ (escape) or kept.
void append_escaped(std::string& out, std::string_view piece, bool escape) {
  if (!escape) {
    out.append(piece);
    return;
  }
  for (char c : piece) {
    if (c == ' ')
      out.append(kSpace, kSpaceLen);
    else
      out.push_back(c);
  }
}
}  // namespace

void PrefixSet::build(std::vector<std::string> items) {
  std::stable_sort(items.begin(), items.end(),
                   [](const std::string& a, const std::string& b) { return a.size() > b.size(); });
  items.erase(std::unique(items.begin(), items.end()), items.end());
  items_.clear();
  for (auto& s : items)
    if (!s.empty()) items_.push_back(std::move(s));
  by_byte_.assign(256, {});
  for (size_t k = 0; k < items_.size(); ++k)
    by_byte_[static_cast<uint8_t>(items_[k][0])].push_back(static_cast<uint32_t>(k));
}

size_t PrefixSet::match(const uint8_t* s, size_t n, size_t pos) const {
  if (items_.empty()) return 0;
  for (uint32_t k : by_byte_[s[pos]]) {
    const std::string& u = items_[k];
    if (u.size() <= n - pos && std::memcmp(u.data(), s + pos, u.size()) == 0) return u.size();
  }
  return 0;
}

Normalizer::Normalizer(const std::string& charsmap, const std::vector<std::string>& user_defined,
                       NormalizerOptions opt)
    : opt_(opt) {
  user_.build(user_defined);
  if (charsmap.empty()) return;
  if (charsmap.size() < 4)
    throw TokenizerError("precompiled_charsmap is " + std::to_string(charsmap.size()) + " bytes (< 4)");
  const uint32_t trie_size = load_u32(charsmap.data());
  if (trie_size % 4 || trie_size == 0 || size_t(trie_size) + 4 > charsmap.size())
    throw TokenizerError("precompiled_charsmap trie size " + std::to_string(trie_size) + " is bad");
  units_.resize(trie_size / 4);
  std::memcpy(units_.data(), charsmap.data() + 4, trie_size);
  strings_ = charsmap.substr(4 + trie_size);
}

bool Normalizer::longest(const uint8_t* s, size_t n, size_t pos, size_t& used,
                         std::string_view& rep) const {
  const size_t nu = units_.size();
  uint64_t node = (units_[0] >> 10) << ((units_[0] & 512) >> 6);
  bool found = false;
  for (size_t i = pos; i < n; ++i) {
    const uint8_t c = s[i];
    node ^= c;
    if (node >= nu) break;
    const uint32_t unit = units_[node];
    if ((unit & 0x800000FFu) != c) break;  // the label: this byte does not continue a key
    node ^= static_cast<uint64_t>(unit >> 10) << ((unit & 512) >> 6);
    if ((unit >> 8) & 1) {  // a key ends here: the leaf holds the replacement's offset
      if (node >= nu) break;
      const size_t start = units_[node] & 0x7FFFFFFFu;
      if (start > strings_.size()) break;
      size_t end = strings_.find('\0', start);
      if (end == std::string::npos) end = strings_.size();
      used = i + 1 - pos;
      rep = std::string_view(strings_).substr(start, end - start);
      found = true;
    }
  }
  return found;
}

std::string_view Normalizer::step(const uint8_t* s, size_t n, size_t pos, size_t& used) const {
  if (s[pos] < 0x80 && units_.empty() && user_.empty()) {  // the common case, no tables
    used = 1;
    return {reinterpret_cast<const char*>(s + pos), 1};
  }
  if (size_t u = user_.match(s, n, pos)) {  // user-defined pieces are never normalized
    used = u;
    return {reinterpret_cast<const char*>(s + pos), u};
  }
  std::string_view rep;
  if (!units_.empty() && longest(s, n, pos, used, rep)) return rep;
  const bpe::Ch c = bpe::char_at(s, n, pos);
  used = c.len;
  if (c.cp == bpe::kInvalidCp) return {kReplacement, 3};
  return {reinterpret_cast<const char*>(s + pos), c.len};
}

std::string Normalizer::run(const uint8_t* s, size_t n, bool dummy_prefix) const {
  const bool remove = opt_.remove_extra_whitespaces, escape = opt_.escape_whitespaces;
  const std::string_view space = escape ? std::string_view(kSpace, kSpaceLen) : std::string_view(" ");
  size_t pos = 0, used = 0;
  if (remove) {
    while (pos < n) {
      std::string_view piece = step(s, n, pos, used);
      if (piece != " ") break;
      pos += used;
    }
  }
  std::string out;
  if (pos >= n) return out;
  out.reserve((n - pos) * 5 / 4 + 8);
  bool prev_space = remove;
  while (pos < n) {
    std::string_view piece = step(s, n, pos, used);
    pos += used;
    if (prev_space)
      while (!piece.empty() && piece.front() == ' ') piece.remove_prefix(1);
    if (!piece.empty()) {
      append_escaped(out, piece, escape);
      prev_space = piece.back() == ' ';
    }
    prev_space = prev_space && remove;
  }
  const bool suffix = opt_.treat_whitespace_as_suffix;
  bool prefix = dummy_prefix && !suffix;
  // Hugging Face's Metaspace looks at the text after spaces became ▁
  if (prefix && opt_.prefix_unless_space && out.compare(0, space.size(), space) == 0) prefix = false;
  if (prefix) out.insert(0, space);
  if (remove)  // trailing spaces go, the dummy prefix too when nothing else is left
    while (out.size() >= space.size() && out.compare(out.size() - space.size(), space.size(), space) == 0)
      out.resize(out.size() - space.size());
  if (dummy_prefix && suffix) out.append(space);
  return out;
}

}  // namespace llmcore::sp
