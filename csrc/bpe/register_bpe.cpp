// Python bindings of the byte-level BPE tokenizer: submodule llmcore._C.bpe.
#include <pybind11/functional.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <atomic>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "bpe/core.hpp"
#include "registers.hpp"

namespace py = pybind11;

namespace llmcore {
// csrc/sentencepiece: the other tokenizer core, registered with this one
void register_sentencepiece(py::module_& m);

namespace {
using bpe::Core;
using bpe::Pattern;
using bpe::TokenizerError;

Pattern parse_pattern(const std::string& name) {
  if (name == "gpt2" || name == "r50k_base" || name == "p50k_base" || name == "p50k_edit") return Pattern::GPT2;
  if (name == "cl100k_base") return Pattern::CL100K;
  if (name == "o200k_base" || name == "o200k_harmony") return Pattern::O200K;
  if (name == "llama3") return Pattern::LLAMA3;
  if (name == "qwen2") return Pattern::QWEN2;
  if (name == "gpt2-digits") return Pattern::GPT2_DIGITS;
  throw TokenizerError("unknown pre-tokenizer pattern '" + name +
                       "' (valid: gpt2, r50k_base, p50k_base, cl100k_base, o200k_base, llama3, "
                       "qwen2, gpt2-digits)");
}

// UTF-8 view of a str. Lone surrogates are replaced with U+FFFD first, as tiktoken does;
// `keep` then owns the replacement string.
std::string_view utf8_of(py::handle text, py::object& keep) {
  if (!PyUnicode_Check(text.ptr())) throw py::type_error("expected str, got " + std::string(Py_TYPE(text.ptr())->tp_name));
  Py_ssize_t len = 0;
  const char* p = PyUnicode_AsUTF8AndSize(text.ptr(), &len);
  if (!p) {
    PyErr_Clear();
    keep = text.attr("encode")("utf-16", "surrogatepass").attr("decode")("utf-16", "replace");
    p = PyUnicode_AsUTF8AndSize(keep.ptr(), &len);
    if (!p) throw py::error_already_set();
  }
  return {p, static_cast<size_t>(len)};
}

py::list to_list(const std::vector<uint32_t>& v) {
  PyObject* l = PyList_New(static_cast<Py_ssize_t>(v.size()));
  if (!l) throw py::error_already_set();
  for (size_t i = 0; i < v.size(); ++i) {
    PyObject* x = PyLong_FromUnsignedLong(v[i]);
    if (!x) {
      Py_DECREF(l);
      throw py::error_already_set();
    }
    PyList_SET_ITEM(l, static_cast<Py_ssize_t>(i), x);
  }
  return py::reinterpret_steal<py::list>(l);
}

constexpr size_t kReleaseGilBytes = 1 << 15;

py::list encode_ordinary_py(const Core& c, py::handle text) {
  py::object keep;
  std::string_view s = utf8_of(text, keep);
  std::vector<uint32_t> out;
  out.reserve(s.size() / 4 + 4);
  if (s.size() >= kReleaseGilBytes) {
    py::gil_scoped_release nogil;
    c.encode_ordinary(reinterpret_cast<const uint8_t*>(s.data()), s.size(), out);
  } else {
    c.encode_ordinary(reinterpret_cast<const uint8_t*>(s.data()), s.size(), out);
  }
  return to_list(out);
}

py::list encode_special_py(const Core& c, py::handle text, const std::vector<bool>& allowed) {
  py::object keep;
  std::string_view s = utf8_of(text, keep);
  std::vector<char> mask(allowed.begin(), allowed.end());
  std::vector<uint32_t> out;
  {
    py::gil_scoped_release nogil;
    c.encode_with_special(reinterpret_cast<const uint8_t*>(s.data()), s.size(), mask, out);
  }
  return to_list(out);
}

py::list encode_bytes_py(const Core& c, py::buffer data) {
  py::buffer_info info = data.request();
  if (info.ndim > 1 || (info.ndim == 1 && info.strides[0] != info.itemsize))
    throw py::type_error("encode_bytes expects a contiguous bytes-like object");
  const size_t n = static_cast<size_t>(info.size * info.itemsize);
  std::vector<uint32_t> out;
  {
    py::gil_scoped_release nogil;
    c.encode_ordinary(static_cast<const uint8_t*>(info.ptr), n, out);
  }
  return to_list(out);
}

// Runs fn(i) for i in [0, n) on `threads` threads (the caller has released the GIL).
template <class F>
void parallel_for(size_t n, size_t threads, F&& fn) {
  threads = std::min(threads, n);
  if (threads <= 1) {
    for (size_t i = 0; i < n; ++i) fn(i);
    return;
  }
  std::atomic<size_t> next{0};
  auto work = [&] {
    for (;;) {
      const size_t i = next.fetch_add(1);
      if (i >= n) break;
      fn(i);
    }
  };
  std::vector<std::thread> th;
  th.reserve(threads - 1);
  for (size_t t = 1; t < threads; ++t) th.emplace_back(work);
  work();
  for (auto& t : th) t.join();
}

// The ids of pieces already split (bytes objects), each merged on its own: the merging half
// of the encoder, for pre-tokenizers that have no C++ splitter.
py::list encode_pieces_py(const Core& c, py::list pieces) {
  std::vector<uint32_t> out;
  out.reserve(static_cast<size_t>(py::len(pieces)) * 2);
  for (py::handle h : pieces) {
    char* data = nullptr;
    Py_ssize_t n = 0;
    if (PyBytes_AsStringAndSize(h.ptr(), &data, &n) != 0) throw py::error_already_set();
    c.encode_piece(reinterpret_cast<const uint8_t*>(data), static_cast<size_t>(n), out);
  }
  return to_list(out);
}

py::list encode_batch_py(const Core& c, py::sequence texts, size_t num_threads) {
  const size_t n = static_cast<size_t>(py::len(texts));
  std::vector<std::string_view> views(n);
  std::vector<py::object> keep(n);
  std::vector<py::object> items(n);
  size_t total = 0;
  for (size_t i = 0; i < n; ++i) {
    items[i] = texts[i];
    views[i] = utf8_of(items[i], keep[i]);
    total += views[i].size();
  }
  std::vector<std::vector<uint32_t>> outs(n);
  {
    py::gil_scoped_release nogil;
    size_t threads = bpe::resolve_threads(num_threads);
    if (total < (size_t(1) << 16)) threads = 1;
    // blocks of texts so that short lines do not pay one atomic per line
    const size_t block = std::max<size_t>(1, std::min<size_t>(256, n / (threads * 16) + 1));
    const size_t nblocks = (n + block - 1) / block;
    parallel_for(nblocks, threads, [&](size_t bi) {
      const size_t end = std::min(n, (bi + 1) * block);
      for (size_t i = bi * block; i < end; ++i) {
        outs[i].reserve(views[i].size() / 4 + 2);
        c.encode_ordinary(reinterpret_cast<const uint8_t*>(views[i].data()), views[i].size(), outs[i]);
      }
    });
  }
  py::list res(n);
  for (size_t i = 0; i < n; ++i) {
    res[i] = to_list(outs[i]);
    std::vector<uint32_t>().swap(outs[i]);
  }
  return res;
}

std::string decode_to_string(const Core& c, py::handle ids) {
  PyObject* seq = PySequence_Fast(ids.ptr(), "token ids must be an iterable of int");
  if (!seq) throw py::error_already_set();
  py::object hold = py::reinterpret_steal<py::object>(seq);
  const Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
  PyObject** items = PySequence_Fast_ITEMS(seq);
  std::string out;
  out.reserve(static_cast<size_t>(n) * 4);
  for (Py_ssize_t i = 0; i < n; ++i) {
    int overflow = 0;
    const long long v = PyLong_AsLongLongAndOverflow(items[i], &overflow);
    if (v == -1 && PyErr_Occurred()) throw py::error_already_set();
    if (overflow || v < 0) {
      std::string r = py::repr(items[i]);
      throw TokenizerError("token id " + r + " is out of range [0, " + std::to_string(c.n_vocab()) + ")");
    }
    c.append_bytes(static_cast<uint64_t>(v), out);
  }
  return out;
}

py::bytes decode_bytes_py(const Core& c, py::handle ids) {
  std::string s = decode_to_string(c, ids);
  return py::bytes(s);
}

py::str decode_py(const Core& c, py::handle ids) {
  std::string s = decode_to_string(c, ids);
  PyObject* u = PyUnicode_DecodeUTF8(s.data(), static_cast<Py_ssize_t>(s.size()), "replace");
  if (!u) throw py::error_already_set();
  return py::reinterpret_steal<py::str>(u);
}

py::list split_py(const std::string& pattern, py::handle text) {
  const Pattern p = parse_pattern(pattern);
  py::object keep;
  std::string_view s = utf8_of(text, keep);
  const uint8_t* b = reinterpret_cast<const uint8_t*>(s.data());
  py::list out;
  bpe::Splitter splitter(p);
  for (size_t i = 0; i < s.size();) {
    const size_t e = splitter.next(b, s.size(), i);
    out.append(py::reinterpret_steal<py::str>(
        PyUnicode_DecodeUTF8(s.data() + i, static_cast<Py_ssize_t>(e - i), "replace")));
    i = e;
  }
  return out;
}

py::tuple train_py(py::sequence texts, const std::vector<std::string>& files, size_t n_new_tokens,
                   const std::string& pattern, size_t num_threads, py::object progress) {
  const Pattern p = parse_pattern(pattern);
  const size_t n = static_cast<size_t>(py::len(texts));
  std::vector<py::object> items(n), keep(n);
  std::vector<std::string_view> docs;
  docs.reserve(n + files.size());
  for (size_t i = 0; i < n; ++i) {
    items[i] = texts[i];
    docs.push_back(utf8_of(items[i], keep[i]));
  }
  std::vector<std::string> owned(files.size());
  for (size_t i = 0; i < files.size(); ++i) {
    std::ifstream f(files[i], std::ios::binary);
    if (!f) throw TokenizerError("cannot read training file '" + files[i] + "'");
    std::ostringstream ss;
    ss << f.rdbuf();
    owned[i] = ss.str();
    docs.emplace_back(owned[i]);
  }
  std::function<void(size_t, size_t)> cb;
  if (!progress.is_none()) {
    cb = [&progress](size_t done, size_t total) {
      py::gil_scoped_acquire gil;
      progress(done, total);
    };
  }
  std::vector<std::string> vocab;
  std::vector<std::pair<uint32_t, uint32_t>> merges;
  {
    py::gil_scoped_release nogil;
    merges = bpe::train_bpe(docs, n_new_tokens, p, num_threads, vocab, cb);
  }
  py::list v;
  for (const auto& t : vocab) v.append(py::bytes(t));
  py::list m;
  for (const auto& pr : merges) m.append(py::make_tuple(pr.first, pr.second));
  return py::make_tuple(v, m);
}

}  // namespace

void register_bpe(py::module_& m) {
  py::module_ b = m.def_submodule("bpe", "Byte-level BPE tokenizer core (C++).");
  register_sentencepiece(m);
  b.attr("unicode_version") = py::str(static_cast<const char*>(bpe::kUnicodeVersion));

  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const TokenizerError& e) {
      py::object cls = py::module_::import("llmcore.errors").attr("TokenizerError");
      PyErr_SetString(cls.ptr(), e.what());
    }
  });

  py::class_<Core, std::shared_ptr<Core>>(b, "Core")
      .def(py::init([](const std::vector<std::string>& tokens, const std::vector<uint32_t>& ranks,
                       const std::vector<uint32_t>& ids,
                       const std::vector<std::pair<std::string, uint32_t>>& specials,
                       const std::string& pattern,
                       const std::vector<std::pair<std::string, uint32_t>>& added,
                       bool drop_missing_bytes) {
             std::vector<bpe::Special> sp;
             for (const auto& s : specials) sp.push_back({s.first, s.second, false});
             for (const auto& s : added) sp.push_back({s.first, s.second, true});
             const Pattern p = parse_pattern(pattern);
             py::gil_scoped_release nogil;
             return std::make_shared<Core>(tokens, ranks, ids, sp, p, drop_missing_bytes);
           }),
           py::arg("tokens"), py::arg("ranks"), py::arg("ids"), py::arg("specials"), py::arg("pattern"),
           py::arg("added") = std::vector<std::pair<std::string, uint32_t>>{},
           py::arg("drop_missing_bytes") = false,
           "specials match only where encode_special allows them, added tokens in any text; "
           "drop_missing_bytes: bytes without a token are dropped instead of an error.")
      .def("encode_ordinary", &encode_ordinary_py, py::arg("text"))
      .def("encode_special", &encode_special_py, py::arg("text"), py::arg("allowed"))
      .def("encode_bytes", &encode_bytes_py, py::arg("data"))
      .def("encode_batch", &encode_batch_py, py::arg("texts"), py::arg("num_threads") = 0)
      .def("encode_pieces", &encode_pieces_py, py::arg("pieces"),
           "The ids of pre-split pieces (a list of bytes), each merged on its own.")
      .def("decode_bytes", &decode_bytes_py, py::arg("ids"))
      .def("decode", &decode_py, py::arg("ids"))
      .def("token_bytes", [](const Core& c, uint64_t id) {
             std::string s;
             c.append_bytes(id, s);
             return py::bytes(s);
           })
      .def("has_id", &Core::has_id)
      .def_property_readonly("n_vocab", &Core::n_vocab);

  b.def("split", &split_py, py::arg("pattern"), py::arg("text"),
        "Pre-tokenize `text` with a pattern family (for tests and inspection).");
  b.def("train", &train_py, py::arg("texts"), py::arg("files"), py::arg("n_new_tokens"),
        py::arg("pattern"), py::arg("num_threads") = 0, py::arg("progress") = py::none(),
        "Train byte-level BPE merges. Returns (vocab bytes by id, merges as (left, right) ids).");
}

}  // namespace llmcore
