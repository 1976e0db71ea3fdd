// SentencePiece encoding (no Python types here): the normalizer (precompiled character map,
// whitespace rules, user-defined pieces) and the two segmenters, BPE by piece score (or by a
// Hugging Face merge list) and unigram by Viterbi, with byte fallback.
// Both segmenters follow sentencepiece's bpe_model.cc / unigram_model.cc step by step, so
// ties break as the library breaks them.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "bpe/core.hpp"

namespace llmcore::sp {

using bpe::TokenizerError;

// piece types, the SentencePiece / GGUF enum
enum PieceType : int { NORMAL = 1, UNKNOWN = 2, CONTROL = 3, USER_DEFINED = 4, UNUSED = 5, BYTE = 6 };

struct NormalizerOptions {
  bool add_dummy_prefix = true;
  bool remove_extra_whitespaces = true;
  bool escape_whitespaces = true;
  bool treat_whitespace_as_suffix = false;
  bool prefix_unless_space = false;  // HF Metaspace: no ▁ in front of text starting with one
};

// Strings that are matched longest first at a position, bucketed by their first byte.
class PrefixSet {
 public:
  void build(std::vector<std::string> items);
  // Length of the longest item at s[pos..n), 0 when none.
  size_t match(const uint8_t* s, size_t n, size_t pos) const;
  bool empty() const { return items_.empty(); }

 private:
  std::vector<std::string> items_;
  std::vector<std::vector<uint32_t>> by_byte_;
};

class Normalizer {
 public:
  Normalizer(const std::string& charsmap, const std::vector<std::string>& user_defined,
             NormalizerOptions opt);
  // The normalized bytes of s[0..n); dummy_prefix replaces the model's add_dummy_prefix.
  std::string run(const uint8_t* s, size_t n, bool dummy_prefix) const;

 private:
  // The replacement of the longest character-map key at s[pos..n); false when none.
  bool longest(const uint8_t* s, size_t n, size_t pos, size_t& used, std::string_view& rep) const;
  // One normalization step at pos: its output and the bytes it consumed.
  std::string_view step(const uint8_t* s, size_t n, size_t pos, size_t& used) const;

  std::vector<uint32_t> units_;  // the Darts double-array trie of the character map
  std::string strings_;          // NUL-terminated replacements
  PrefixSet user_;
  NormalizerOptions opt_;
};

// A byte trie over the pieces text can match: transitions in one hash table.
class PieceTrie {
 public:
  static constexpr uint32_t kNone = 0xFFFFFFFFu;
  void insert(const std::string& key, uint32_t id);
  // Child of node by byte, kNone when there is none; the root is node 0 (its children, the
  // step taken at every position, are in a direct table).
  uint32_t child(uint32_t node, uint8_t b) const {
    return node == 0 ? root_[b] : edges_.find(node, b);
  }
  int32_t id_of(uint32_t node) const { return ids_[node]; }
  // The id of the whole key, -1 when it is not a piece.
  int32_t find(const uint8_t* p, size_t n) const;

 private:
  bpe::PairMap edges_;
  uint32_t root_[256] = {};  // filled with kNone by the first insert
  std::vector<int32_t> ids_{-1};
  size_t n_edges_ = 0;
};

// Piece text -> id in one open-addressing table (one probe, not one per byte as in the trie).
class PieceMap {
 public:
  void build(const std::vector<std::string>& keys, const std::vector<int32_t>& ids);
  int32_t find(const uint8_t* p, size_t n) const {
    if (slots_.empty()) return -1;
    const uint64_t h = bpe::hash_bytes(p, n);
    for (uint64_t s = h & mask_;; s = (s + 1) & mask_) {
      const Slot& e = slots_[s];
      if (e.id < 0) return -1;
      if (e.hash == h && e.len == n && std::memcmp(arena_.data() + e.off, p, n) == 0) return e.id;
    }
  }

 private:
  struct Slot {
    uint64_t hash;
    uint64_t off;
    uint32_t len;
    int32_t id;  // -1: empty
  };
  std::string arena_;
  std::vector<Slot> slots_;
  uint64_t mask_ = 0;
};

struct Segment {
  uint32_t len;  // bytes of the normalized text it covers
  int32_t id;    // -1: unknown
};

struct ModelSpec {
  std::vector<std::string> pieces;
  std::vector<double> scores;
  std::vector<int> types;
  int32_t unk_id = -1;
  bool byte_fallback = false;
  bool unigram = false;
  bool float64 = false;        // Hugging Face's Unigram: float64 sums, byte pieces matchable
  bool has_merges = false;     // a Hugging Face merge list ranks the pairs (BPE)
  std::vector<std::pair<std::string, std::string>> merges;
  bool ignore_merges = false;  // HF: a word in the vocabulary is one piece
  std::string charsmap;
  NormalizerOptions norm;
};

class Model {
 public:
  explicit Model(ModelSpec spec);
  // Ids of text (UTF-8 bytes, possibly with surrogates encoded as 3 bytes).
  void encode(const uint8_t* s, size_t n, bool dummy_prefix, std::vector<int32_t>& out) const;
  std::string normalize(const uint8_t* s, size_t n, bool dummy_prefix) const {
    return norm_.run(s, n, dummy_prefix);
  }
  size_t size() const { return types_.size(); }

 private:
  void bpe(const uint8_t* s, size_t n, std::vector<Segment>& segs) const;
  void bpe_chunk(const uint8_t* s, size_t n, std::vector<Segment>& segs) const;
  void resegment(const uint8_t* p, uint32_t len, int32_t id,
                 const std::unordered_map<std::string, uint32_t>& rev,
                 std::vector<Segment>& segs) const;
  void unigram(const uint8_t* s, size_t n, std::vector<Segment>& segs) const;
  void finish(const uint8_t* s, const std::vector<Segment>& segs, std::vector<int32_t>& out) const;
  double round(double x) const { return float64_ ? x : static_cast<double>(static_cast<float>(x)); }
  int32_t pair_rank(const uint8_t* a, size_t na, const uint8_t* b, size_t nb) const;

  struct Uid {  // identifies this model in the per-thread chunk cache (fresh on copies too)
    Uid();
    Uid(const Uid&) : Uid() {}
    Uid& operator=(const Uid&) { return *this; }
    uint64_t value;
  };
  Uid uid_;
  Normalizer norm_;
  PieceTrie trie_;  // for unigram's walk over every piece starting at a position
  PieceMap map_;    // for BPE's lookups of merged pieces
  PrefixSet user_;
  std::vector<double> scores_;
  std::vector<int> types_;
  int32_t unk_id_;
  int32_t byte_ids_[256];
  bool has_bytes_ = false;
  bool unigram_, float64_, ignore_merges_, chunkable_ = false;
  size_t max_len_ = 1;
  double min_score_, max_score_;
  bool has_merges_;
  std::unordered_map<std::string, int32_t> pair_rank_;  // left + '\xff' + right -> rank
};

}  // namespace llmcore::sp
