// SentencePiece BPE (bpe_model.cc): repeatedly merge the adjacent pair whose merged piece has
// the highest score, the leftmost first; with a Hugging Face merge list, the pair of lowest
// rank instead. User-defined pieces are never merged with anything; an unused piece that
// results from a merge is split back into the pair it came from.
#include <algorithm>
#include <atomic>
#include <cstring>

#include "sentencepiece/model.hpp"

namespace llmcore::sp {

namespace {
struct Sym {
  uint32_t start, len;
  int32_t prev, next;
  bool frozen;
};

struct Cand {
  double key;  // -score, or the merge rank
  int32_t left, right;
  uint32_t size;
};

// std heap functions keep the largest first: "larger" here is the later candidate
struct Later {
  bool operator()(const Cand& a, const Cand& b) const {
    if (a.key != b.key) return a.key > b.key;
    if (a.left != b.left) return a.left > b.left;
    if (a.right != b.right) return a.right > b.right;
    return a.size > b.size;
  }
};

bool is_space_at(const uint8_t* s, size_t n, size_t i) {
  return i + 3 <= n && s[i] == 0xE2 && s[i + 1] == 0x96 && s[i + 2] == 0x81;
}

// A chunk: a run of ▁ and the bytes up to the next ▁, or the bytes before the first ▁.
size_t chunk_end(const uint8_t* s, size_t n, size_t i) {
  while (is_space_at(s, n, i)) i += 3;
  while (i < n && !is_space_at(s, n, i)) ++i;
  return i;
}

// A small direct-mapped cache per thread: chunk bytes -> segments, for the chunks (words)
// that repeat; entries carry the model's uid so models never see each other's.
constexpr size_t kCacheSlots = 32768;
constexpr size_t kCacheMaxLen = 40;
constexpr size_t kCacheMaxSegs = 12;
struct CacheEntry {
  uint64_t h = 0;
  uint64_t owner = 0;
  uint8_t len = 0;
  uint8_t nseg = 0;
  uint8_t bytes[kCacheMaxLen];
  Segment segs[kCacheMaxSegs];
};
struct ChunkCache {
  std::vector<CacheEntry> e{kCacheSlots};
};
thread_local ChunkCache tl_cache;

uint64_t next_uid() {
  static std::atomic<uint64_t> counter{1};
  return counter.fetch_add(1);
}
}  // namespace

Model::Uid::Uid() : value(next_uid()) {}

void Model::bpe(const uint8_t* s, size_t n, std::vector<Segment>& segs) const {
  if (!chunkable_) {
    bpe_chunk(s, n, segs);
    return;
  }
  // no piece holds a ▁ after another character, so no merge crosses the start of a
  // "▁*word" chunk: each chunk merges alone, exactly, and repeats come from the cache
  auto& cache = tl_cache.e;
  for (size_t i = 0; i < n;) {
    const size_t e = chunk_end(s, n, i);
    const size_t len = e - i;
    if (len > kCacheMaxLen) {
      bpe_chunk(s + i, len, segs);
      i = e;
      continue;
    }
    const uint64_t h = bpe::hash_bytes(s + i, len);
    CacheEntry& c = cache[h & (kCacheSlots - 1)];
    if (c.owner == uid_.value && c.h == h && c.len == len && std::memcmp(c.bytes, s + i, len) == 0) {
      segs.insert(segs.end(), c.segs, c.segs + c.nseg);
    } else {
      const size_t before = segs.size();
      bpe_chunk(s + i, len, segs);
      const size_t k = segs.size() - before;
      if (k <= kCacheMaxSegs) {
        c.owner = uid_.value;
        c.h = h;
        c.len = static_cast<uint8_t>(len);
        c.nseg = static_cast<uint8_t>(k);
        std::memcpy(c.bytes, s + i, len);
        std::copy(segs.begin() + static_cast<std::ptrdiff_t>(before), segs.end(), c.segs);
      }
    }
    i = e;
  }
}

void Model::bpe_chunk(const uint8_t* s, size_t n, std::vector<Segment>& segs) const {
  thread_local std::vector<Sym> sym;
  thread_local std::vector<Cand> heap;
  sym.clear();
  heap.clear();
  for (size_t pos = 0; pos < n;) {
    const size_t u = user_.match(s, n, pos);
    const size_t len = u ? u : bpe::char_at(s, n, pos).len;
    const int32_t k = static_cast<int32_t>(sym.size());
    sym.push_back({static_cast<uint32_t>(pos), static_cast<uint32_t>(len), k - 1, k + 1, u > 0});
    pos += len;
  }
  if (sym.empty()) return;
  sym.back().next = -1;
  std::unordered_map<std::string, uint32_t> rev;  // unused merged piece -> its left part's length
  const Later later;
  auto add = [&](int32_t l, int32_t r) {
    if (l < 0 || r < 0 || sym[l].frozen || sym[r].frozen) return;
    const uint8_t* p = s + sym[l].start;
    const uint32_t size = sym[l].len + sym[r].len;
    const int32_t id = map_.find(p, size);
    if (id < 0) return;
    double key;
    if (has_merges_) {
      const int32_t rank = pair_rank(p, sym[l].len, s + sym[r].start, sym[r].len);
      if (rank < 0) return;
      key = static_cast<double>(rank);
    } else {
      key = -scores_[id];
    }
    heap.push_back({key, l, r, size});
    std::push_heap(heap.begin(), heap.end(), later);
    if (types_[id] == UNUSED) rev[std::string(reinterpret_cast<const char*>(p), size)] = sym[l].len;
  };
  for (int32_t k = 1; k < static_cast<int32_t>(sym.size()); ++k) add(k - 1, k);
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), later);
    const Cand c = heap.back();
    heap.pop_back();
    Sym& l = sym[c.left];
    Sym& r = sym[c.right];
    if (!l.len || !r.len || l.len + r.len != c.size) continue;
    l.len += r.len;
    r.len = 0;
    l.next = r.next;
    if (r.next >= 0) sym[r.next].prev = c.left;
    add(l.prev, c.left);
    add(c.left, l.next);
  }
  for (int32_t k = 0; k >= 0; k = sym[k].next) {
    const uint8_t* p = s + sym[k].start;
    resegment(p, sym[k].len, map_.find(p, sym[k].len), rev, segs);
  }
}

void Model::resegment(const uint8_t* p, uint32_t len, int32_t id,
                      const std::unordered_map<std::string, uint32_t>& rev,
                      std::vector<Segment>& segs) const {
  if (id >= 0 && types_[id] == UNUSED && !rev.empty()) {
    auto it = rev.find(std::string(reinterpret_cast<const char*>(p), len));
    if (it != rev.end() && it->second > 0 && it->second < len) {
      const uint32_t a = it->second;
      resegment(p, a, map_.find(p, a), rev, segs);
      resegment(p + a, len - a, map_.find(p + a, len - a), rev, segs);
      return;
    }
  }
  segs.push_back({len, id});
}

}  // namespace llmcore::sp
