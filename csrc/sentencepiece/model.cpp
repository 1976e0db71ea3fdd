// SentencePiece model tables, the unigram segmenter (Viterbi) and the final id mapping.
#include <algorithm>
#include <limits>

#include "sentencepiece/model.hpp"

namespace llmcore::sp {

void PieceTrie::insert(const std::string& key, uint32_t id) {
  if (n_edges_ == 0) {
    edges_.clear(1024);
    for (auto& r : root_) r = kNone;
  }
  uint32_t node = 0;
  for (unsigned char b : key) {
    uint32_t next = child(node, b);
    if (next == kNone) {
      next = static_cast<uint32_t>(ids_.size());
      ids_.push_back(-1);
      if (node == 0)
        root_[b] = next;
      else
        edges_.insert(node, b, next);
      ++n_edges_;
    }
    node = next;
  }
  ids_[node] = static_cast<int32_t>(id);  // the last piece of equal text wins
}

int32_t PieceTrie::find(const uint8_t* p, size_t n) const {
  if (n_edges_ == 0) return -1;
  uint32_t node = 0;
  for (size_t i = 0; i < n; ++i) {
    node = child(node, p[i]);
    if (node == kNone) return -1;
  }
  return ids_[node];
}

void PieceMap::build(const std::vector<std::string>& keys, const std::vector<int32_t>& ids) {
  size_t cap = 16;
  while (cap < keys.size() * 2 + 16) cap <<= 1;
  slots_.assign(cap, Slot{0, 0, 0, -1});
  mask_ = cap - 1;
  arena_.clear();
  for (size_t k = 0; k < keys.size(); ++k) {
    const std::string& key = keys[k];
    const uint8_t* p = reinterpret_cast<const uint8_t*>(key.data());
    const uint64_t h = bpe::hash_bytes(p, key.size());
    uint64_t s = h & mask_;
    for (;; s = (s + 1) & mask_) {
      Slot& e = slots_[s];
      if (e.id < 0) break;
      if (e.hash == h && e.len == key.size() && arena_.compare(e.off, e.len, key) == 0) break;
    }
    if (slots_[s].id < 0) {
      slots_[s] = Slot{h, arena_.size(), static_cast<uint32_t>(key.size()), ids[k]};
      arena_ += key;
    } else {
      slots_[s].id = ids[k];  // the last piece of equal text wins
    }
  }
}

namespace {
int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

// Whether piece has ▁ only in a leading run (▁▁ab, not a▁b).
bool space_only_leads(const std::string& p) {
  size_t i = 0;
  while (p.compare(i, 3, "\xe2\x96\x81") == 0) i += 3;
  return p.find("\xe2\x96\x81", i) == std::string::npos;
}

std::vector<std::string> user_defined_of(const ModelSpec& s) {
  std::vector<std::string> out;
  for (size_t i = 0; i < s.pieces.size(); ++i)
    if (s.types[i] == USER_DEFINED) out.push_back(s.pieces[i]);
  return out;
}
}  // namespace

Model::Model(ModelSpec spec)
    : norm_(spec.charsmap, user_defined_of(spec), spec.norm),
      types_(spec.types),
      unk_id_(spec.unk_id),
      unigram_(spec.unigram),
      float64_(spec.float64),
      ignore_merges_(spec.ignore_merges),
      has_merges_(spec.has_merges) {
  const size_t n = spec.pieces.size();
  if (spec.scores.size() != n || spec.types.size() != n)
    throw TokenizerError("sentencepiece model: " + std::to_string(n) + " pieces, " +
                         std::to_string(spec.scores.size()) + " scores and " +
                         std::to_string(spec.types.size()) + " types must be as many");
  if (n >= static_cast<size_t>(std::numeric_limits<int32_t>::max()))
    throw TokenizerError("sentencepiece model: too many pieces");
  if (unk_id_ >= static_cast<int32_t>(n)) unk_id_ = -1;
  user_.build(user_defined_of(spec));
  scores_.resize(n);
  for (size_t i = 0; i < n; ++i) scores_[i] = round(spec.scores[i]);
  for (auto& b : byte_ids_) b = -1;
  min_score_ = std::numeric_limits<float>::max();
  max_score_ = std::numeric_limits<float>::min();  // the least positive float, as sentencepiece
  chunkable_ = true;
  std::vector<std::string> keys;
  std::vector<int32_t> key_ids;
  for (size_t i = 0; i < n; ++i) {
    const int t = types_[i];
    if (t < NORMAL || t > BYTE)
      throw TokenizerError("sentencepiece piece " + std::to_string(i) + " has unknown type " + std::to_string(t));
    const std::string& p = spec.pieces[i];
    if (t == NORMAL) {
      min_score_ = std::min(min_score_, scores_[i]);
      max_score_ = std::max(max_score_, scores_[i]);
    }
    // the pieces text can match: normal, user-defined and unused ones (as sentencepiece);
    // Hugging Face also matches the text of byte pieces ("<0x41>")
    const bool matchable = t == NORMAL || t == USER_DEFINED || t == UNUSED || (float64_ && t == BYTE);
    if (matchable && !p.empty()) {
      if (unigram_) trie_.insert(p, static_cast<uint32_t>(i));
      keys.push_back(p);
      key_ids.push_back(static_cast<int32_t>(i));
      max_len_ = std::max(max_len_, p.size());
      chunkable_ = chunkable_ && space_only_leads(p);
    }
    if (spec.byte_fallback && t == BYTE && p.size() == 6 && p.compare(0, 3, "<0x") == 0 && p[5] == '>') {
      const int hi = hex_digit(p[3]), lo = hex_digit(p[4]);
      if (hi >= 0 && lo >= 0 && byte_ids_[hi * 16 + lo] < 0) {
        byte_ids_[hi * 16 + lo] = static_cast<int32_t>(i);
        has_bytes_ = true;
      }
    }
  }
  map_.build(keys, key_ids);
  for (size_t r = 0; r < spec.merges.size(); ++r) {
    std::string key = spec.merges[r].first + '\xff' + spec.merges[r].second;
    pair_rank_.emplace(std::move(key), static_cast<int32_t>(r));  // the first rank wins
  }
}

int32_t Model::pair_rank(const uint8_t* a, size_t na, const uint8_t* b, size_t nb) const {
  thread_local std::string key;
  key.assign(reinterpret_cast<const char*>(a), na);
  key.push_back('\xff');
  key.append(reinterpret_cast<const char*>(b), nb);
  auto it = pair_rank_.find(key);
  return it == pair_rank_.end() ? -1 : it->second;
}

void Model::encode(const uint8_t* s, size_t n, bool dummy_prefix, std::vector<int32_t>& out) const {
  const std::string data = norm_.run(s, n, dummy_prefix);
  const uint8_t* d = reinterpret_cast<const uint8_t*>(data.data());
  if (ignore_merges_) {  // a whole word in the vocabulary is one piece
    const int32_t id = map_.find(d, data.size());
    if (id >= 0) {
      out.push_back(id);
      return;
    }
  }
  std::vector<Segment> segs;
  segs.reserve(data.size() / 3 + 4);
  if (unigram_)
    unigram(d, data.size(), segs);
  else
    bpe(d, data.size(), segs);
  finish(d, segs, out);
}

// Ids of the segments: the unknown ones become their bytes' <0xNN> pieces (byte fallback),
// else one unknown id for each run of them.
void Model::finish(const uint8_t* s, const std::vector<Segment>& segs, std::vector<int32_t>& out) const {
  bool prev_unk = false;
  size_t pos = 0;
  for (const Segment& g : segs) {
    const bool unk = g.id < 0 || g.id == unk_id_;
    if (unk && has_bytes_) {
      for (uint32_t k = 0; k < g.len; ++k) {
        const int32_t b = byte_ids_[s[pos + k]];
        if (b >= 0)
          out.push_back(b);
        else if (unk_id_ >= 0)
          out.push_back(unk_id_);
      }
    } else if (unk) {
      if (!prev_unk && unk_id_ >= 0) out.push_back(unk_id_);
    } else {
      out.push_back(g.id);
    }
    prev_unk = unk;
    pos += g.len;
  }
}

// The best-scoring segmentation (sentencepiece's EncodeOptimized, as of 0.2.1): the best path
// ending at each position is kept in float32 (float64 for Hugging Face's Unigram), the first of
// equal ones; a character no piece starts with is unknown, scored min_score - 10.
// Two details decide ids on long calls and follow the library exactly:
// - once the path score where a piece starts leaves [-1e5, 1e5], every stored score from there
//   on is rebased by it (exact, as the values are close), so float32 ties stay rare;
// - a user-defined piece scores 0.1 * (length - 1), rounded to float.
void Model::unigram(const uint8_t* s, size_t n, std::vector<Segment>& segs) const {
  constexpr double kRebaseAt = 1e5;
  const double unk_score = round(min_score_ - 10.0);
  std::vector<double> best(n + 1, 0.0);
  std::vector<int64_t> start(n + 1, -1);
  std::vector<int32_t> ident(n + 1, -1);
  start[0] = 0;
  size_t pos = 0, reached = 0;  // reached: the furthest end any candidate has set
  while (pos < n) {
    double here = best[pos];
    if (!float64_ && (here < -kRebaseAt || here > kRebaseAt)) {
      for (size_t i = pos; i <= reached; ++i)
        if (i == pos || start[i] != -1) best[i] = round(best[i] - here);
      here = 0.0;
    }
    const size_t ch = s[pos] < 0x80 ? 1 : std::min<size_t>(bpe::char_at(s, n, pos).len, n - pos);
    bool single = false;
    uint32_t node = 0;
    const size_t stop = std::min(n, pos + max_len_);
    for (size_t end = pos + 1; end <= stop; ++end) {
      node = trie_.child(node, s[end - 1]);
      if (node == PieceTrie::kNone) break;
      const int32_t i = trie_.id_of(node);
      if (i < 0 || types_[i] == UNUSED) continue;
      const size_t length = end - pos;
      reached = std::max(reached, end);
      const double score = types_[i] != USER_DEFINED ? scores_[i]
                           : float64_ ? static_cast<double>(length) * max_score_ - 0.1
                                      : round(static_cast<double>(length - 1) * 0.1);
      const double cand = round(score + here);
      if (start[end] == -1 || cand > best[end]) {
        best[end] = cand;
        start[end] = static_cast<int64_t>(pos);
        ident[end] = i;
      }
      single = single || length == ch;
    }
    if (!single) {
      const size_t end = pos + ch;
      reached = std::max(reached, end);
      const double cand = round(unk_score + here);
      if (start[end] == -1 || cand > best[end]) {
        best[end] = cand;
        start[end] = static_cast<int64_t>(pos);
        ident[end] = unk_id_;
      }
    }
    pos += ch;
  }
  const size_t first = segs.size();
  for (size_t end = n; end > 0;) {
    const size_t st = static_cast<size_t>(start[end]);
    segs.push_back({static_cast<uint32_t>(end - st), ident[end]});
    end = st;
  }
  std::reverse(segs.begin() + static_cast<std::ptrdiff_t>(first), segs.end());
}

}  // namespace llmcore::sp
