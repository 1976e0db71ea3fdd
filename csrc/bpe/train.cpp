// BPE training: parallel pre-tokenize + count, then merges with incremental pair-count
// updates (only the words that hold the merged pair are touched) and a lazy max-heap.
// Ties: highest count first, then the smallest (left id, right id).
#include <algorithm>
#include <atomic>
#include <cstring>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

#include "bpe/core.hpp"

namespace llmcore::bpe {
namespace {

struct SvHash {
  size_t operator()(std::string_view s) const {
    return static_cast<size_t>(hash_bytes(reinterpret_cast<const uint8_t*>(s.data()), s.size()));
  }
};
using CountMap = std::unordered_map<std::string_view, uint64_t, SvHash>;

// Byte offsets where a document can be cut without changing its pre-tokenization: just
// after a '\n' that follows a non-space character and precedes a letter or number (no
// pattern lets a piece run across such a point, and no lookahead sees past it).
bool safe_cut(const uint8_t* s, size_t n, size_t p) {
  if (p < 2 || p >= n || s[p - 1] != '\n') return false;
  Ch next = char_at(s, n, p);
  if (!(next.fl & (F_L | F_N))) return false;
  size_t q = p - 2, k = q;
  while (k > 0 && q - k < 3 && (s[k] & 0xC0) == 0x80) --k;
  Ch prev = char_at(s, n, k);
  if (k + prev.len != q + 1) prev = Ch{kInvalidCp, 1, 0};
  return !(prev.fl & F_WS);
}

std::vector<std::string_view> make_chunks(const std::vector<std::string_view>& docs, size_t target) {
  std::vector<std::string_view> chunks;
  for (std::string_view d : docs) {
    const uint8_t* s = reinterpret_cast<const uint8_t*>(d.data());
    const size_t n = d.size();
    size_t start = 0;
    while (n - start > target) {
      size_t p = start + target;
      bool found = false;
      while (p < n) {
        const void* nl = std::memchr(s + p, '\n', n - p);
        if (!nl) break;
        p = static_cast<size_t>(static_cast<const uint8_t*>(nl) - s) + 1;
        if (safe_cut(s, n, p)) {
          found = true;
          break;
        }
      }
      if (!found) break;
      chunks.push_back(d.substr(start, p - start));
      start = p;
    }
    chunks.push_back(d.substr(start));
  }
  return chunks;
}

struct Top {
  int64_t count;
  uint64_t key;
};
struct TopLess {  // max-heap: higher count first, then smaller key
  bool operator()(const Top& a, const Top& b) const {
    return a.count < b.count || (a.count == b.count && a.key > b.key);
  }
};

inline uint64_t pkey(uint32_t a, uint32_t b) { return (static_cast<uint64_t>(a) << 32) | b; }

}  // namespace

std::vector<std::pair<uint32_t, uint32_t>> train_bpe(
    const std::vector<std::string_view>& docs, size_t n_new_tokens, Pattern pattern,
    size_t num_threads, std::vector<std::string>& vocab,
    const std::function<void(size_t, size_t)>& progress) {
  // 1. pre-tokenize and count, in parallel over chunks
  const std::vector<std::string_view> chunks = make_chunks(docs, size_t(1) << 20);
  const size_t nt = std::max<size_t>(1, std::min(resolve_threads(num_threads), chunks.size()));
  std::vector<CountMap> maps(nt);
  std::atomic<size_t> next_chunk{0};
  auto worker = [&](size_t t) {
    CountMap& m = maps[t];
    for (;;) {
      const size_t c = next_chunk.fetch_add(1);
      if (c >= chunks.size()) break;
      const uint8_t* s = reinterpret_cast<const uint8_t*>(chunks[c].data());
      const size_t n = chunks[c].size();
      Splitter split(pattern);
      for (size_t i = 0; i < n;) {
        const size_t e = split.next(s, n, i);
        ++m[std::string_view(reinterpret_cast<const char*>(s + i), e - i)];
        i = e;
      }
    }
  };
  if (nt == 1) {
    worker(0);
  } else {
    std::vector<std::thread> th;
    for (size_t t = 0; t < nt; ++t) th.emplace_back(worker, t);
    for (auto& t : th) t.join();
  }
  for (size_t t = 1; t < nt; ++t) {
    for (const auto& kv : maps[t]) maps[0][kv.first] += kv.second;
    CountMap().swap(maps[t]);
  }
  // Deterministic word order (the result does not depend on it, but memory layout does).
  std::vector<std::pair<std::string_view, uint64_t>> uniq(maps[0].begin(), maps[0].end());
  CountMap().swap(maps[0]);
  std::sort(uniq.begin(), uniq.end());

  // 2. words as symbol sequences in one flat array (words only ever shrink in place)
  std::vector<uint32_t> sym;
  std::vector<uint64_t> woff;
  std::vector<uint32_t> wlen;
  std::vector<int64_t> wcnt;
  size_t total = 0;
  for (const auto& u : uniq) total += u.first.size();
  sym.reserve(total);
  woff.reserve(uniq.size());
  for (const auto& u : uniq) {
    if (u.first.size() < 2) continue;  // single bytes never take part in a merge
    woff.push_back(sym.size());
    wlen.push_back(static_cast<uint32_t>(u.first.size()));
    wcnt.push_back(static_cast<int64_t>(u.second));
    for (unsigned char ch : u.first) sym.push_back(ch);
  }
  std::vector<std::pair<std::string_view, uint64_t>>().swap(uniq);
  const size_t nw = woff.size();

  // 3. initial pair counts and pair -> words index
  std::unordered_map<uint64_t, int64_t> pc;
  std::unordered_map<uint64_t, std::vector<uint32_t>> where;
  for (size_t w = 0; w < nw; ++w) {
    const uint32_t* x = sym.data() + woff[w];
    for (uint32_t i = 0; i + 1 < wlen[w]; ++i) {
      const uint64_t k = pkey(x[i], x[i + 1]);
      pc[k] += wcnt[w];
      auto& v = where[k];
      if (v.empty() || v.back() != w) v.push_back(static_cast<uint32_t>(w));
    }
  }
  std::vector<Top> heap;
  heap.reserve(pc.size());
  for (const auto& kv : pc) heap.push_back({kv.second, kv.first});
  TopLess less;
  std::make_heap(heap.begin(), heap.end(), less);

  vocab.clear();
  for (int b = 0; b < 256; ++b) vocab.emplace_back(1, static_cast<char>(b));
  std::unordered_map<std::string, uint32_t> id_of;
  for (uint32_t b = 0; b < 256; ++b) id_of.emplace(vocab[b], b);

  std::vector<std::pair<uint32_t, uint32_t>> merges;
  std::vector<uint32_t> seen(nw, 0xFFFFFFFFu);
  std::unordered_map<uint64_t, int64_t> delta;
  size_t added = 0, step = 0;
  const size_t every = std::max<size_t>(1, n_new_tokens / 200);
  while (added < n_new_tokens && !heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), less);
    const Top top = heap.back();
    heap.pop_back();
    auto it = pc.find(top.key);
    if (it == pc.end() || it->second != top.count || top.count <= 0) continue;
    const uint32_t a = static_cast<uint32_t>(top.key >> 32), b = static_cast<uint32_t>(top.key);
    std::string bytes = vocab[a] + vocab[b];
    uint32_t nid;
    auto f = id_of.find(bytes);
    if (f != id_of.end()) {
      nid = f->second;
    } else {
      nid = static_cast<uint32_t>(vocab.size());
      id_of.emplace(bytes, nid);
      vocab.push_back(std::move(bytes));
      ++added;
    }
    merges.emplace_back(a, b);
    std::vector<uint32_t> ws;
    {
      auto wit = where.find(top.key);
      if (wit != where.end()) {
        ws.swap(wit->second);
        where.erase(wit);
      }
    }
    delta.clear();
    const uint32_t stamp = static_cast<uint32_t>(step);
    for (uint32_t w : ws) {
      if (seen[w] == stamp) continue;
      seen[w] = stamp;
      uint32_t* x = sym.data() + woff[w];
      const uint32_t len = wlen[w];
      bool has = false;
      for (uint32_t i = 0; i + 1 < len; ++i)
        if (x[i] == a && x[i + 1] == b) {
          has = true;
          break;
        }
      if (!has) continue;
      const int64_t c = wcnt[w];
      for (uint32_t i = 0; i + 1 < len; ++i) delta[pkey(x[i], x[i + 1])] -= c;
      uint32_t j = 0;
      for (uint32_t i = 0; i < len;) {
        if (i + 1 < len && x[i] == a && x[i + 1] == b) {
          x[j++] = nid;
          i += 2;
        } else {
          x[j++] = x[i++];
        }
      }
      wlen[w] = j;
      for (uint32_t i = 0; i + 1 < j; ++i) {
        const uint64_t k = pkey(x[i], x[i + 1]);
        delta[k] += c;
        if (x[i] == nid || x[i + 1] == nid) {
          auto& v = where[k];
          if (v.empty() || v.back() != w) v.push_back(w);
        }
      }
    }
    for (const auto& d : delta) {
      if (d.second == 0) continue;
      auto p = pc.find(d.first);
      int64_t v = (p == pc.end() ? 0 : p->second) + d.second;
      if (v <= 0) {
        if (p != pc.end()) pc.erase(p);
        continue;
      }
      if (p == pc.end()) pc.emplace(d.first, v);
      else p->second = v;
      heap.push_back({v, d.first});
      std::push_heap(heap.begin(), heap.end(), less);
    }
    ++step;
    if (progress && step % every == 0) progress(added, n_new_tokens);
  }
  if (progress) progress(added, n_new_tokens);
  return merges;
}

}  // namespace llmcore::bpe
