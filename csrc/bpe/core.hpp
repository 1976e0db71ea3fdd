// Byte-level BPE encoder/decoder core (no Python types here).
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "bpe/pretokenize.hpp"

namespace llmcore::bpe {

// Raised for invalid tokenizer data and undecodable ids; mapped to llmcore.errors.TokenizerError.
class TokenizerError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

constexpr uint32_t kNoRank = 0xFFFFFFFFu;

uint64_t hash_bytes(const uint8_t* p, size_t n);

// bytes -> rank, open addressing with linear probing; keys live in one arena.
class RankMap {
 public:
  // allow_missing_bytes: single bytes may lack a token (they are then dropped from pieces)
  void build(const std::vector<std::string>& keys, const std::vector<uint32_t>& ranks,
             bool allow_missing_bytes);
  bool lacks_bytes() const { return lacks_bytes_; }
  uint32_t find(const uint8_t* p, size_t n) const {
    if (n == 1) return byte_rank_[p[0]];
    if (n == 2) return pair_rank_[(static_cast<size_t>(p[0]) << 8) | p[1]];
    return find_h(p, n, hash_bytes(p, n));
  }
  // n >= 2, h == hash_bytes(p, n)
  uint32_t find_h(const uint8_t* p, size_t n, uint64_t h) const {
    const uint32_t tag = static_cast<uint32_t>(h >> 32);
    for (uint64_t slot = h & mask_;; slot = (slot + 1) & mask_) {
      const uint64_t e = slots_[slot];
      if (e == 0) return kNoRank;
      if (static_cast<uint32_t>(e >> 32) == tag) {
        const Entry& en = entries_[static_cast<uint32_t>(e) - 1];
        if (en.len == n && std::char_traits<char>::compare(
                               reinterpret_cast<const char*>(arena_.data() + en.off),
                               reinterpret_cast<const char*>(p), n) == 0)
          return en.rank;
      }
    }
  }
  size_t size() const { return entries_.size(); }

 private:
  struct Entry {
    uint64_t off;
    uint32_t len;
    uint32_t rank;
  };
  std::vector<uint8_t> arena_;
  std::vector<Entry> entries_;
  std::vector<uint64_t> slots_;  // (tag << 32) | (entry index + 1); 0 = empty
  uint64_t mask_ = 0;
  uint32_t byte_rank_[256];
  bool lacks_bytes_ = false;
  std::vector<uint32_t> pair_rank_;  // 65536 two-byte tokens, direct
};

// (left rank, right rank) -> rank of the concatenation, for every token that splits into two
// tokens: merging then needs no byte hashing at all.
class PairMap {
 public:
  void clear(size_t expected) {
    size_t cap = 16;
    while (cap < expected * 2 + 16) cap <<= 1;
    keys_.assign(cap, kEmpty);
    vals_.assign(cap, 0);
    mask_ = cap - 1;
    size_ = 0;
  }
  void insert(uint32_t a, uint32_t b, uint32_t r) {
    if ((size_ + 1) * 2 > keys_.size()) grow();
    put((static_cast<uint64_t>(a) << 32) | b, r);
  }
  void put(uint64_t k, uint32_t r) {
    for (uint64_t s = mix(k) & mask_;; s = (s + 1) & mask_) {
      if (keys_[s] == kEmpty || keys_[s] == k) {
        size_ += keys_[s] == kEmpty;
        keys_[s] = k;
        vals_[s] = r;
        return;
      }
    }
  }
  uint32_t find(uint32_t a, uint32_t b) const {
    const uint64_t k = (static_cast<uint64_t>(a) << 32) | b;
    for (uint64_t s = mix(k) & mask_;; s = (s + 1) & mask_) {
      const uint64_t x = keys_[s];
      if (x == k) return vals_[s];
      if (x == kEmpty) return 0xFFFFFFFFu;
    }
  }

 private:
  static constexpr uint64_t kEmpty = ~uint64_t(0);
  void grow() {
    std::vector<uint64_t> k;
    std::vector<uint32_t> v;
    k.swap(keys_);
    v.swap(vals_);
    keys_.assign(k.size() * 2, kEmpty);
    vals_.assign(k.size() * 2, 0);
    mask_ = keys_.size() - 1;
    size_ = 0;
    for (size_t i = 0; i < k.size(); ++i)
      if (k[i] != kEmpty) put(k[i], v[i]);
  }
  static uint64_t mix(uint64_t k) {
    k *= 0x9E3779B97F4A7C15ull;
    return k ^ (k >> 29);
  }
  std::vector<uint64_t> keys_;
  std::vector<uint32_t> vals_;
  uint64_t mask_ = 0;
  size_t size_ = 0;
};

struct Special {
  std::string text;
  uint32_t id;
  bool always = false;  // an added token: matched in any text, not only when allowed
};

class Core {
 public:
  // tokens[i] has merge rank ranks[i] and output id ids[i] (ids empty: id == rank).
  // drop_missing_bytes: a byte without a token is dropped from its piece before merging (what
  // Hugging Face's BPE does without an unknown token) instead of being an error.
  Core(const std::vector<std::string>& tokens, const std::vector<uint32_t>& ranks,
       const std::vector<uint32_t>& ids, const std::vector<Special>& specials, Pattern pattern,
       bool drop_missing_bytes = false);

  // Ordinary text: only the added tokens (Special::always) are recognised.
  void encode_ordinary(const uint8_t* s, size_t n, std::vector<uint32_t>& out) const;
  // Also recognises the special tokens whose index (into specials()) is flagged in `allowed`;
  // at each position the longest, the leftmost match first.
  void encode_with_special(const uint8_t* s, size_t n, const std::vector<char>& allowed,
                           std::vector<uint32_t>& out) const;
  // Pre-tokenizes and merges, no special or added token recognised.
  void encode_plain(const uint8_t* s, size_t n, std::vector<uint32_t>& out) const;
  // Byte-pair encodes one piece (no pre-tokenization).
  void encode_piece(const uint8_t* p, size_t n, std::vector<uint32_t>& out) const;

  // Appends the bytes of `id`; throws TokenizerError when it has none.
  void append_bytes(uint64_t id, std::string& out) const {
    if (id >= dec_len_.size() || dec_len_[id] == kNoRank) bad_id(id);
    out.append(dec_data_.data() + dec_off_[id], dec_len_[id]);
  }
  bool has_id(uint64_t id) const { return id < dec_len_.size() && dec_len_[id] != kNoRank; }
  [[noreturn]] void bad_id(uint64_t id) const;

  size_t n_vocab() const { return dec_len_.size(); }
  Pattern pattern() const { return pattern_; }
  const std::vector<Special>& specials() const { return specials_; }
  uint32_t rank_of(const uint8_t* p, size_t n) const { return map_.find(p, n); }

 private:
  void merge_small(const uint8_t* p, size_t n, std::vector<uint32_t>& out) const;
  void encode_known_bytes(const uint8_t* p, size_t n, std::vector<uint32_t>& out) const;
  void merge_large(const uint8_t* p, size_t n, std::vector<uint32_t>& out) const;
  bool cache_get(const uint8_t* p, size_t n, uint64_t h, std::vector<uint32_t>& out) const;
  void cache_put(const uint8_t* p, size_t n, uint64_t h, const uint32_t* toks, size_t k) const;
  uint32_t out_id(uint32_t rank) const { return rank_to_id_.empty() ? rank : rank_to_id_[rank]; }

  RankMap map_;
  PairMap pairs_;
  uint64_t uid_;  // identifies this core in the thread-local piece caches
  Pattern pattern_;
  std::vector<uint32_t> rank_to_id_;
  std::vector<Special> specials_;
  bool has_always_ = false;
  // specials_ indices by their first byte, longest text first (leftmost-longest matching)
  std::vector<std::vector<uint32_t>> special_by_byte_;
  std::vector<char> dec_data_;
  std::vector<uint64_t> dec_off_;
  std::vector<uint32_t> dec_len_;
};

// ---- training -------------------------------------------------------------------------
struct TrainInput {
  std::vector<std::string_view> docs;  // UTF-8 documents (views owned by the caller)
};

// Returns the merged tokens (bytes) in merge order; the first 256 ids are the single bytes.
// `progress(done, total)` is called from the training thread now and then (may be empty).
std::vector<std::pair<uint32_t, uint32_t>> train_bpe(
    const std::vector<std::string_view>& docs, size_t n_merges_target, Pattern pattern,
    size_t num_threads, std::vector<std::string>& vocab_out,
    const std::function<void(size_t, size_t)>& progress);

size_t resolve_threads(size_t requested);

}  // namespace llmcore::bpe
