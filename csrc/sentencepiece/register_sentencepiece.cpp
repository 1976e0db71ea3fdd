// Python bindings of the SentencePiece encoder: submodule llmcore._C.sentencepiece.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <memory>
#include <string>
#include <vector>

#include "sentencepiece/model.hpp"

namespace py = pybind11;

namespace llmcore {
namespace {

// The UTF-8 bytes of a str; lone surrogates are written as their 3 bytes ("surrogatepass"),
// which the normalizer then reads as malformed bytes, as the Python reference did.
std::string_view utf8_bytes(py::handle text, py::object& keep) {
  if (!PyUnicode_Check(text.ptr()))
    throw py::type_error("expected str, got " + std::string(Py_TYPE(text.ptr())->tp_name));
  Py_ssize_t len = 0;
  const char* p = PyUnicode_AsUTF8AndSize(text.ptr(), &len);
  if (p) return {p, static_cast<size_t>(len)};
  PyErr_Clear();
  keep = text.attr("encode")("utf-8", "surrogatepass");
  char* b = nullptr;
  if (PyBytes_AsStringAndSize(keep.ptr(), &b, &len) != 0) throw py::error_already_set();
  return {b, static_cast<size_t>(len)};
}

py::list to_list(const std::vector<int32_t>& v) {
  PyObject* l = PyList_New(static_cast<Py_ssize_t>(v.size()));
  if (!l) throw py::error_already_set();
  for (size_t i = 0; i < v.size(); ++i) {
    PyObject* x = PyLong_FromLong(v[i]);
    if (!x) {
      Py_DECREF(l);
      throw py::error_already_set();
    }
    PyList_SET_ITEM(l, static_cast<Py_ssize_t>(i), x);
  }
  return py::reinterpret_steal<py::list>(l);
}

constexpr size_t kReleaseGilBytes = 1 << 14;

py::list encode_py(const sp::Model& m, py::handle text, bool dummy_prefix) {
  py::object keep;
  const std::string_view s = utf8_bytes(text, keep);
  std::vector<int32_t> out;
  const uint8_t* b = reinterpret_cast<const uint8_t*>(s.data());
  if (s.size() >= kReleaseGilBytes) {
    py::gil_scoped_release nogil;
    m.encode(b, s.size(), dummy_prefix, out);
  } else {
    m.encode(b, s.size(), dummy_prefix, out);
  }
  return to_list(out);
}

py::bytes normalize_py(const sp::Model& m, py::handle text, bool dummy_prefix) {
  py::object keep;
  const std::string_view s = utf8_bytes(text, keep);
  return py::bytes(m.normalize(reinterpret_cast<const uint8_t*>(s.data()), s.size(), dummy_prefix));
}

std::shared_ptr<sp::Model> make_model(const std::vector<std::string>& pieces,
                                      const std::vector<double>& scores, const std::vector<int>& types,
                                      int32_t unk_id, bool byte_fallback, const std::string& model,
                                      py::object merges, bool float64, bool ignore_merges,
                                      const std::string& charsmap, py::dict options) {
  sp::ModelSpec spec;
  spec.pieces = pieces;
  spec.scores = scores;
  spec.types = types;
  spec.unk_id = unk_id;
  spec.byte_fallback = byte_fallback;
  if (model != "bpe" && model != "unigram")
    throw sp::TokenizerError("sentencepiece model '" + model + "': valid are 'bpe', 'unigram'");
  spec.unigram = model == "unigram";
  if (!merges.is_none()) {
    spec.has_merges = true;
    spec.merges = merges.cast<std::vector<std::pair<std::string, std::string>>>();
  }
  spec.float64 = float64;
  spec.ignore_merges = ignore_merges;
  spec.charsmap = charsmap;
  auto flag = [&](const char* key, bool dflt) {
    return options.contains(key) ? py::bool_(options[key]).cast<bool>() : dflt;
  };
  spec.norm.add_dummy_prefix = flag("add_dummy_prefix", true);
  spec.norm.remove_extra_whitespaces = flag("remove_extra_whitespaces", true);
  spec.norm.escape_whitespaces = flag("escape_whitespaces", true);
  spec.norm.treat_whitespace_as_suffix = flag("treat_whitespace_as_suffix", false);
  spec.norm.prefix_unless_space = flag("prefix_unless_space", false);
  py::gil_scoped_release nogil;
  return std::make_shared<sp::Model>(std::move(spec));
}

}  // namespace

void register_sentencepiece(py::module_& m) {
  py::module_ s = m.def_submodule("sentencepiece", "SentencePiece encoder core (C++).");
  py::class_<sp::Model, std::shared_ptr<sp::Model>>(s, "Model")
      .def(py::init(&make_model), py::arg("pieces"), py::arg("scores"), py::arg("types"),
           py::arg("unk_id"), py::arg("byte_fallback"), py::arg("model"), py::arg("merges"),
           py::arg("float64"), py::arg("ignore_merges"), py::arg("charsmap"), py::arg("options"),
           "pieces (UTF-8 bytes), their scores and types (1 normal .. 6 byte); unk_id -1 for "
           "none; merges: a Hugging Face merge list as (left, right) pairs, or None; options: "
           "the normalizer's add_dummy_prefix, remove_extra_whitespaces, escape_whitespaces, "
           "treat_whitespace_as_suffix, prefix_unless_space.")
      .def("encode", &encode_py, py::arg("text"), py::arg("dummy_prefix"),
           "Ids of text; dummy_prefix: whether a ▁ goes in front (the model's option or not).")
      .def("normalize", &normalize_py, py::arg("text"), py::arg("dummy_prefix"),
           "The normalized UTF-8 bytes the segmenter sees.")
      .def_property_readonly("size", &sp::Model::size);
}

}  // namespace llmcore
