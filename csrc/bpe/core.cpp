// Byte-level BPE core: rank table, exact tiktoken-compatible merging, special tokens, decode.
#include "bpe/core.hpp"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <string>
#include <thread>
#include <unordered_map>

namespace llmcore::bpe {

static uint64_t next_uid() {
  static std::atomic<uint64_t> counter{1};
  return counter.fetch_add(1);
}

namespace {
// A small direct-mapped cache per thread: piece bytes -> tokens, for pieces that are not one
// token (words of scripts whose words are not in the vocabulary whole repeat a lot).
constexpr size_t kCacheSlots = 8192;
constexpr size_t kCacheMaxLen = 48;
constexpr size_t kCacheMaxToks = 16;
struct CacheEntry {
  uint64_t h;
  uint64_t owner;
  uint8_t len;
  uint8_t ntok;
  uint8_t bytes[kCacheMaxLen];
  uint32_t toks[kCacheMaxToks];
};
struct PieceCache {
  std::vector<CacheEntry> e;
  PieceCache() : e(kCacheSlots) {
    for (auto& x : e) x.owner = 0;
  }
};
thread_local PieceCache tl_cache;
}  // namespace

bool Core::cache_get(const uint8_t* p, size_t n, uint64_t h, std::vector<uint32_t>& out) const {
  const CacheEntry& c = tl_cache.e[h & (kCacheSlots - 1)];
  if (c.owner != uid_ || c.h != h || c.len != n || std::memcmp(c.bytes, p, n) != 0) return false;
  out.insert(out.end(), c.toks, c.toks + c.ntok);
  return true;
}

void Core::cache_put(const uint8_t* p, size_t n, uint64_t h, const uint32_t* toks, size_t k) const {
  if (n > kCacheMaxLen || k > kCacheMaxToks) return;
  CacheEntry& c = tl_cache.e[h & (kCacheSlots - 1)];
  c.owner = uid_;
  c.h = h;
  c.len = static_cast<uint8_t>(n);
  c.ntok = static_cast<uint8_t>(k);
  std::memcpy(c.bytes, p, n);
  std::memcpy(c.toks, toks, k * sizeof(uint32_t));
}

uint64_t hash_bytes(const uint8_t* p, size_t n) {
  uint64_t h = 0x9E3779B97F4A7C15ull ^ (static_cast<uint64_t>(n) * 0xff51afd7ed558ccdull);
  while (n >= 8) {
    uint64_t v;
    std::memcpy(&v, p, 8);
    h = (h ^ v) * 0xbf58476d1ce4e5b9ull;
    h ^= h >> 31;
    p += 8;
    n -= 8;
  }
  if (n) {
    uint64_t v = 0;
    std::memcpy(&v, p, n);
    h = (h ^ v) * 0x94d049bb133111ebull;
  }
  h ^= h >> 29;
  h *= 0xbf58476d1ce4e5b9ull;
  h ^= h >> 32;
  return h;
}

static std::string show_bytes(const std::string& b) {
  std::string s;
  for (unsigned char c : b) {
    if (c >= 0x20 && c < 0x7f && c != '\\') {
      s.push_back(static_cast<char>(c));
    } else {
      char buf[5];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      s += buf;
    }
    if (s.size() > 60) return s + "...";
  }
  return s;
}

void RankMap::build(const std::vector<std::string>& keys, const std::vector<uint32_t>& ranks,
                    bool allow_missing_bytes) {
  size_t total = 0;
  for (const auto& k : keys) total += k.size();
  arena_.clear();
  arena_.reserve(total);
  entries_.clear();
  entries_.reserve(keys.size());
  size_t cap = 16;
  while (cap < keys.size() * 2 + 16) cap <<= 1;
  slots_.assign(cap, 0);
  mask_ = cap - 1;
  for (auto& r : byte_rank_) r = kNoRank;
  pair_rank_.assign(65536, kNoRank);
  for (size_t i = 0; i < keys.size(); ++i) {
    const std::string& k = keys[i];
    if (k.empty()) throw TokenizerError("token with rank " + std::to_string(ranks[i]) + " is empty");
    const uint8_t* p = reinterpret_cast<const uint8_t*>(k.data());
    if (find(p, k.size()) != kNoRank)
      throw TokenizerError("duplicate token b'" + show_bytes(k) + "' (ranks " +
                           std::to_string(find(p, k.size())) + " and " + std::to_string(ranks[i]) + ")");
    if (k.size() == 1) {
      byte_rank_[p[0]] = ranks[i];
      continue;
    }
    if (k.size() == 2) pair_rank_[(static_cast<size_t>(p[0]) << 8) | p[1]] = ranks[i];
    const uint64_t h = hash_bytes(p, k.size());
    uint64_t slot = h & mask_;
    while (slots_[slot]) slot = (slot + 1) & mask_;
    entries_.push_back({arena_.size(), static_cast<uint32_t>(k.size()), ranks[i]});
    arena_.insert(arena_.end(), p, p + k.size());
    slots_[slot] = ((h >> 32) << 32) | static_cast<uint64_t>(entries_.size());
  }
  lacks_bytes_ = false;
  for (int b = 0; b < 256; ++b)
    if (byte_rank_[b] == kNoRank) {
      lacks_bytes_ = true;
      if (allow_missing_bytes) continue;
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", b);
      throw TokenizerError(std::string("the vocabulary lacks the single byte b'") + buf +
                           "': a byte-level BPE needs all 256 bytes");
    }
}

Core::Core(const std::vector<std::string>& tokens, const std::vector<uint32_t>& ranks,
           const std::vector<uint32_t>& ids, const std::vector<Special>& specials, Pattern pattern,
           bool drop_missing_bytes)
    : uid_(next_uid()), pattern_(pattern), specials_(specials) {
  if (tokens.size() != ranks.size() || (!ids.empty() && ids.size() != tokens.size()))
    throw TokenizerError("tokens, ranks and ids differ in length");
  const size_t total = tokens.size() + specials.size();
  const uint64_t limit = 2 * static_cast<uint64_t>(total) + 65536;
  uint64_t max_rank = 0, max_id = 0;
  for (uint32_t r : ranks) max_rank = std::max<uint64_t>(max_rank, r);
  for (size_t i = 0; i < tokens.size(); ++i) max_id = std::max<uint64_t>(max_id, ids.empty() ? ranks[i] : ids[i]);
  for (const auto& sp : specials) {
    if (sp.text.empty()) throw TokenizerError("special token with id " + std::to_string(sp.id) + " has empty text");
    max_id = std::max<uint64_t>(max_id, sp.id);
  }
  if (max_rank >= limit || max_id >= limit)
    throw TokenizerError("token ranks/ids are too sparse (largest " + std::to_string(std::max(max_rank, max_id)) +
                         " for " + std::to_string(total) + " tokens)");
  {
    // duplicate ranks
    std::vector<char> seen(max_rank + 1, 0);
    for (uint32_t r : ranks) {
      if (seen[r]) throw TokenizerError("duplicate rank " + std::to_string(r));
      seen[r] = 1;
    }
  }
  map_.build(tokens, ranks, drop_missing_bytes);
  special_by_byte_.assign(256, {});
  for (size_t k = 0; k < specials_.size(); ++k) {
    has_always_ = has_always_ || specials_[k].always;
    special_by_byte_[static_cast<uint8_t>(specials_[k].text[0])].push_back(static_cast<uint32_t>(k));
  }
  for (auto& bucket : special_by_byte_)
    std::stable_sort(bucket.begin(), bucket.end(), [this](uint32_t a, uint32_t b) {
      return specials_[a].text.size() > specials_[b].text.size();
    });
  {
    size_t splits = 0;
    for (const auto& t : tokens) splits += t.size() > 1 ? t.size() - 1 : 0;
    pairs_.clear(std::min<size_t>(splits, tokens.size() * 2 + 1024));
    for (size_t i = 0; i < tokens.size(); ++i) {
      const uint8_t* p = reinterpret_cast<const uint8_t*>(tokens[i].data());
      const size_t L = tokens[i].size();
      for (size_t k = 1; k < L; ++k) {
        const uint32_t a = map_.find(p, k);
        if (a == kNoRank) continue;
        const uint32_t b = map_.find(p + k, L - k);
        if (b != kNoRank) pairs_.insert(a, b, ranks[i]);
      }
    }
  }
  if (!ids.empty()) {
    rank_to_id_.assign(max_rank + 1, kNoRank);
    for (size_t i = 0; i < tokens.size(); ++i) rank_to_id_[ranks[i]] = ids[i];
  }
  dec_len_.assign(max_id + 1, kNoRank);
  dec_off_.assign(max_id + 1, 0);
  size_t bytes = 0;
  for (const auto& t : tokens) bytes += t.size();
  for (const auto& sp : specials) bytes += sp.text.size();
  dec_data_.reserve(bytes);
  auto put = [&](uint64_t id, const std::string& b, bool special) {
    if (dec_len_[id] != kNoRank)
      throw TokenizerError("duplicate id " + std::to_string(id) + (special ? " (special token '" + b + "')" : ""));
    dec_off_[id] = dec_data_.size();
    dec_len_[id] = static_cast<uint32_t>(b.size());
    dec_data_.insert(dec_data_.end(), b.begin(), b.end());
  };
  for (size_t i = 0; i < tokens.size(); ++i) put(ids.empty() ? ranks[i] : ids[i], tokens[i], false);
  for (const auto& sp : specials) put(sp.id, sp.text, true);
}

void Core::bad_id(uint64_t id) const {
  if (id >= dec_len_.size())
    throw TokenizerError("token id " + std::to_string(id) + " is out of range [0, " +
                         std::to_string(dec_len_.size()) + ")");
  throw TokenizerError("token id " + std::to_string(id) + " has no token (a gap in the vocabulary)");
}

namespace {
constexpr size_t kSmall = 384;

struct HeapEntry {
  uint32_t rank;
  uint32_t pos;
  uint32_t end;
};
struct HeapCmp {
  bool operator()(const HeapEntry& a, const HeapEntry& b) const {
    return a.rank > b.rank || (a.rank == b.rank && a.pos > b.pos);
  }
};
}  // namespace

// tiktoken's algorithm: repeatedly merge the adjacent pair whose concatenation has the lowest
// rank (leftmost on ties). Quadratic in the piece length, so only for short pieces.
void Core::merge_small(const uint8_t* p, size_t n, std::vector<uint32_t>& out) const {
  uint32_t start[kSmall + 1];
  uint32_t pair_rank[kSmall + 1];
  uint32_t part_rank[kSmall + 1];
  size_t m = n;  // number of parts
  for (size_t i = 0; i <= n; ++i) {
    start[i] = static_cast<uint32_t>(i);
    pair_rank[i] = kNoRank;
    part_rank[i] = kNoRank;
  }
  for (size_t i = 0; i < n; ++i) part_rank[i] = map_.find(p + i, 1);
  for (size_t i = 0; i + 1 < n; ++i) pair_rank[i] = map_.find(p + i, 2);
  while (m > 1) {
    uint32_t best = kNoRank;
    size_t bi = 0;
    for (size_t i = 0; i + 1 < m; ++i)
      if (pair_rank[i] < best) {
        best = pair_rank[i];
        bi = i;
      }
    if (best == kNoRank) break;
    // merge parts bi and bi+1
    part_rank[bi] = best;
    for (size_t i = bi + 1; i < m; ++i) {
      start[i] = start[i + 1];
      part_rank[i] = part_rank[i + 1];
      pair_rank[i] = pair_rank[i + 1];
    }
    --m;
    start[m] = static_cast<uint32_t>(n);
    pair_rank[bi] = (bi + 1 < m) ? pairs_.find(best, part_rank[bi + 1]) : kNoRank;
    if (bi > 0) pair_rank[bi - 1] = pairs_.find(part_rank[bi - 1], best);
  }
  for (size_t i = 0; i < m; ++i) out.push_back(out_id(part_rank[i]));
}

// Same result as merge_small, O(n log n): a linked list of parts and a lazy min-heap keyed
// (rank, position), so 100k letters without a break stay fast.
void Core::merge_large(const uint8_t* p, size_t n, std::vector<uint32_t>& out) const {
  constexpr uint32_t kNone = 0xFFFFFFFFu;
  std::vector<uint32_t> nxt(n), prv(n), prank(n);
  std::vector<char> alive(n, 1);
  std::vector<HeapEntry> heap;
  heap.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    nxt[i] = static_cast<uint32_t>(i + 1);
    prv[i] = i ? static_cast<uint32_t>(i - 1) : kNone;
    prank[i] = map_.find(p + i, 1);
  }
  for (size_t i = 0; i + 1 < n; ++i) {
    uint32_t r = map_.find(p + i, 2);
    if (r != kNoRank) heap.push_back({r, static_cast<uint32_t>(i), static_cast<uint32_t>(i + 2)});
  }
  HeapCmp cmp;
  std::make_heap(heap.begin(), heap.end(), cmp);
  const uint32_t un = static_cast<uint32_t>(n);
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), cmp);
    HeapEntry e = heap.back();
    heap.pop_back();
    const uint32_t a = e.pos;
    if (!alive[a]) continue;
    const uint32_t b = nxt[a];
    if (b >= un || nxt[b] != e.end) continue;
    const uint32_t c = e.end;
    prank[a] = e.rank;
    alive[b] = 0;
    nxt[a] = c;
    if (c < un) prv[c] = a;
    if (prv[a] != kNone) {
      const uint32_t q = prv[a];
      uint32_t r = pairs_.find(prank[q], prank[a]);
      if (r != kNoRank) {
        heap.push_back({r, q, c});
        std::push_heap(heap.begin(), heap.end(), cmp);
      }
    }
    if (c < un) {
      const uint32_t d = nxt[c];
      uint32_t r = pairs_.find(prank[a], prank[c]);
      if (r != kNoRank) {
        heap.push_back({r, a, d});
        std::push_heap(heap.begin(), heap.end(), cmp);
      }
    }
  }
  for (uint32_t a = 0; a < un; a = nxt[a]) out.push_back(out_id(prank[a]));
}

void Core::encode_piece(const uint8_t* p, size_t n, std::vector<uint32_t>& out) const {
  if (map_.lacks_bytes()) {
    size_t k = 0;
    while (k < n && map_.find(p + k, 1) != kNoRank) ++k;
    if (k < n) {  // drop the bytes without a token, then merge what is left
      thread_local std::string kept;
      kept.assign(reinterpret_cast<const char*>(p), k);
      for (; k < n; ++k)
        if (map_.find(p + k, 1) != kNoRank) kept.push_back(static_cast<char>(p[k]));
      if (!kept.empty())
        encode_known_bytes(reinterpret_cast<const uint8_t*>(kept.data()), kept.size(), out);
      return;
    }
  }
  encode_known_bytes(p, n, out);
}

void Core::encode_known_bytes(const uint8_t* p, size_t n, std::vector<uint32_t>& out) const {
  if (n == 1) {
    out.push_back(out_id(map_.find(p, 1)));
    return;
  }
  const uint64_t h = hash_bytes(p, n);
  const uint32_t r = map_.find_h(p, n, h);
  if (r != kNoRank) {
    out.push_back(out_id(r));
    return;
  }
  if (n > kSmall) {
    merge_large(p, n, out);
    return;
  }
  if (n <= kCacheMaxLen && cache_get(p, n, h, out)) return;
  const size_t before = out.size();
  merge_small(p, n, out);
  if (n <= kCacheMaxLen) cache_put(p, n, h, out.data() + before, out.size() - before);
}

size_t resolve_threads(size_t requested) {
  if (requested) return requested;
  const unsigned hc = std::thread::hardware_concurrency();
  return hc ? hc : 1;
}

}  // namespace llmcore::bpe
