// Request decoding (simdjson DOM, straight into tensor memory) and result
// encoding (std::to_chars into one growing buffer).
#include "codec.h"

#include <ATen/ATen.h>
#include <ATen/core/Dict.h>
#include <ATen/core/List.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <fmt/compile.h>
#include <fmt/format.h>
#include <simdjson.h>

#include <array>
#include <charconv>
#include <cmath>
#include <cstring>
#include <limits>
#include <optional>
#include <type_traits>

#include "errors.h"
#include "json_path.h"

namespace torch_serving {
namespace {

using simdjson::dom::element;
using simdjson::dom::element_type;

// The highest tensor rank the decoder accepts; far above any real model and
// low enough that shape bookkeeping stays trivially small.
constexpr size_t kMaxRank = 64;

struct DtypeName {
  std::string_view name;
  at::ScalarType type;
};

constexpr std::array<DtypeName, 10> kDtypes{{
    {"bool", at::kBool},
    {"uint8", at::kByte},
    {"int8", at::kChar},
    {"int16", at::kShort},
    {"int32", at::kInt},
    {"int64", at::kLong},
    {"float16", at::kHalf},
    {"bfloat16", at::kBFloat16},
    {"float32", at::kFloat},
    {"float64", at::kDouble},
}};

constexpr std::string_view kDtypeList =
    "bool, uint8, int8, int16, int32, int64, float16, bfloat16, float32, float64";
constexpr std::string_view kTypeList =
    "tensor, tensor_list, tensor_dict, scalar, string, list, none";

std::optional<std::string_view> dtype_name(at::ScalarType type) {
  for (const auto& d : kDtypes) {
    if (d.type == type) return d.name;
  }
  return std::nullopt;
}

[[noreturn, gnu::noinline, gnu::cold]] void fail(const JsonPath& at, const std::string& what) {
  throw DecodeError(what + " at " + at.str());
}

std::string quote_text(std::string_view s) {
  constexpr size_t kMaxShown = 40;
  std::string out = "\"";
  out += s.size() > kMaxShown ? std::string(s.substr(0, kMaxShown)) + "..." : std::string(s);
  out += '"';
  return out;
}

std::string double_text(double v) {
  char buf[32];
  auto end = std::to_chars(buf, buf + sizeof buf, v).ptr;
  std::string text(buf, end);
  // A JSON number with a fraction that happens to be integral prints as an
  // integer; keep the fraction so "found 2.0" is not read as "found 2".
  if (std::isfinite(v) && text.find_first_of(".e") == std::string::npos) text += ".0";
  return text;
}

// Describes a JSON value for "found ..." in error messages.
std::string describe(element e) {
  switch (e.type()) {
    case element_type::ARRAY:
      return "an array";
    case element_type::OBJECT:
      return "an object";
    case element_type::INT64:
      return std::to_string(int64_t(e.get_int64()));
    case element_type::UINT64:
      return std::to_string(uint64_t(e.get_uint64()));
    case element_type::DOUBLE:
      return double_text(double(e.get_double()));
    case element_type::STRING:
      return "string " + quote_text(std::string_view(e.get_string()));
    case element_type::BOOL:
      return bool(e.get_bool()) ? "true" : "false";
    case element_type::NULL_VALUE:
      return "null";
  }
  return "an unknown value";
}

// ---------------------------------------------------------------------------
// Elements: one JSON value into one slot of a typed buffer.

template <typename T>
constexpr bool is_float_v = std::is_floating_point_v<T> || std::is_same_v<T, c10::Half> ||
                            std::is_same_v<T, c10::BFloat16>;

template <typename T>
std::string_view name_of() {
  return *dtype_name(c10::CppTypeToScalarType<T>::value);
}

template <typename T>
[[noreturn, gnu::noinline, gnu::cold]] void fail_element(const JsonPath& array, int64_t index, element e) {
  JsonPath at = index >= 0 ? array.element(index) : array;
  std::string expected;
  if constexpr (std::is_same_v<T, bool>) {
    expected = "true, false, 0 or 1 for bool";
  } else if constexpr (std::is_integral_v<T>) {
    expected = "an integer in [" + std::to_string(int64_t(std::numeric_limits<T>::lowest())) +
               ", " + std::to_string(int64_t(std::numeric_limits<T>::max())) + "] for " +
               std::string(name_of<T>());
  } else {
    expected = "a finite number within the range of " + std::string(name_of<T>()) +
               " or \"NaN\", \"Infinity\", \"-Infinity\"";
  }
  fail(at, "expected " + expected + ", found " + describe(e));
}

// Stores `e` into `*dst` as a T; returns false, storing nothing, when `e`
// is not representable in T.
template <typename T>
inline bool try_store(element e, T* dst) {
  if constexpr (std::is_same_v<T, bool>) {
    if (e.is_bool()) {
      *dst = bool(e.get_bool());
      return true;
    }
    int64_t v;
    if (e.get_int64().get(v) == simdjson::SUCCESS && (v == 0 || v == 1)) {
      *dst = v == 1;
      return true;
    }
  } else if constexpr (std::is_integral_v<T>) {
    int64_t v;
    if (e.type() == element_type::INT64 && e.get_int64().get(v) == simdjson::SUCCESS &&
        v >= int64_t(std::numeric_limits<T>::lowest()) &&
        v <= int64_t(std::numeric_limits<T>::max())) {
      *dst = static_cast<T>(v);
      return true;
    }
  } else {
    double v;
    if (e.get_double().get(v) == simdjson::SUCCESS) {
      T narrowed = static_cast<T>(static_cast<float>(v));
      if constexpr (std::is_same_v<T, double>) narrowed = v;
      if (std::isfinite(static_cast<double>(narrowed))) {
        *dst = narrowed;
        return true;
      }
    } else if (e.is_string()) {
      std::string_view s = e.get_string();
      if (s == "NaN") {
        *dst = static_cast<T>(std::numeric_limits<float>::quiet_NaN());
        return true;
      }
      if (s == "Infinity" || s == "-Infinity") {
        float inf = std::numeric_limits<float>::infinity();
        *dst = static_cast<T>(s[0] == '-' ? -inf : inf);
        return true;
      }
    }
  }
  return false;
}

// Stores `e` into `*dst` as a T, or fails naming `array[index]` (`index` < 0
// names `array` itself).
template <typename T>
inline void store(element e, T* dst, const JsonPath& array, int64_t index) {
  if (!try_store(e, dst)) fail_element<T>(array, index, e);
}

template <typename F>
void dispatch_dtype(at::ScalarType type, F&& f) {
  switch (type) {
    case at::kBool: return f(static_cast<bool*>(nullptr));
    case at::kByte: return f(static_cast<uint8_t*>(nullptr));
    case at::kChar: return f(static_cast<int8_t*>(nullptr));
    case at::kShort: return f(static_cast<int16_t*>(nullptr));
    case at::kInt: return f(static_cast<int32_t*>(nullptr));
    case at::kLong: return f(static_cast<int64_t*>(nullptr));
    case at::kHalf: return f(static_cast<c10::Half*>(nullptr));
    case at::kBFloat16: return f(static_cast<c10::BFloat16*>(nullptr));
    case at::kFloat: return f(static_cast<float*>(nullptr));
    case at::kDouble: return f(static_cast<double*>(nullptr));
    default: TORCH_CHECK(false, "dtype outside the protocol: ", type);
  }
}

// ---------------------------------------------------------------------------
// Tensors.

simdjson::dom::array expect_array(element e, const JsonPath& at) {
  simdjson::dom::array a;
  if (e.get_array().get(a) != simdjson::SUCCESS) fail(at, "expected an array, found " + describe(e));
  return a;
}

simdjson::dom::object expect_object(element e, const JsonPath& at) {
  simdjson::dom::object o;
  if (e.get_object().get(o) != simdjson::SUCCESS) fail(at, "expected an object, found " + describe(e));
  return o;
}

std::string_view expect_string(element e, const JsonPath& at) {
  std::string_view s;
  if (e.get_string().get(s) != simdjson::SUCCESS) fail(at, "expected a string, found " + describe(e));
  return s;
}

at::ScalarType parse_dtype(std::optional<element> field, const JsonPath& at) {
  if (!field) return at::kFloat;
  std::string_view name = expect_string(*field, at);
  for (const auto& d : kDtypes) {
    if (d.name == name) return d.type;
  }
  fail(at, "unknown data_type " + quote_text(name) + " (expected one of " + std::string(kDtypeList) + ")");
}

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

std::vector<int64_t> parse_shape(element field, const JsonPath& at, int64_t* numel) {
  auto dims = expect_array(field, at);
  std::vector<int64_t> shape;
  int64_t count = 1;
  int64_t i = 0;
  for (element d : dims) {
    int64_t v;
    if (d.type() != element_type::INT64 || d.get_int64().get(v) != simdjson::SUCCESS || v < 0) {
      fail(at.element(i), "expected a non-negative integer dimension, found " + describe(d));
    }
    if (shape.size() == kMaxRank) fail(at, "expected at most " + std::to_string(kMaxRank) + " dimensions");
    if (__builtin_mul_overflow(count, v, &count)) fail(at, "shape's element count overflows int64");
    shape.push_back(v);
    ++i;
  }
  *numel = count;
  return shape;
}

std::vector<int64_t> infer_shape(element value) {
  std::vector<int64_t> shape;
  element e = value;
  simdjson::dom::array a;
  while (e.get_array().get(a) == simdjson::SUCCESS && shape.size() < kMaxRank + 1) {
    shape.push_back(int64_t(a.size()));
    if (a.size() == 0) break;
    e = *a.begin();
  }
  return shape;
}

[[noreturn, gnu::noinline, gnu::cold]] void fail_ragged_leaf(const JsonPath& at, size_t depth,
                                                           const std::vector<int64_t>& shape) {
  fail(at, "ragged nested value: expected a number at depth " + std::to_string(depth) + " of shape " +
               shape_text(shape) + ", found an array");
}

// Stores every element of a flat array. `leaf_shape` is set for the
// innermost arrays of a nested value, where an array element means ragged
// nesting. Flattened so simdjson's accessors are inlined into the loop,
// which runs once per tensor element.
template <typename T>
[[gnu::flatten]] void fill_flat(simdjson::dom::array values, T* dst, const JsonPath& at,
                                const std::vector<int64_t>* leaf_shape = nullptr) {
  int64_t i = 0;
  for (element e : values) {
    if (!try_store(e, dst)) [[unlikely]] {
      if (leaf_shape && e.is_array()) fail_ragged_leaf(at.element(i), leaf_shape->size(), *leaf_shape);
      fail_element<T>(at, i, e);
    }
    ++dst;
    ++i;
  }
}

template <typename T>
void fill_nested(element e, size_t depth, const std::vector<int64_t>& shape, T*& dst,
                 const JsonPath& at) {
  if (depth == shape.size()) {  // a 0-d tensor: `value` is a bare number
    store(e, dst++, at, -1);
    return;
  }
  simdjson::dom::array a;
  if (e.get_array().get(a) != simdjson::SUCCESS || int64_t(a.size()) != shape[depth]) {
    std::string found = e.is_array() ? "an array of length " + std::to_string(a.size()) : describe(e);
    fail(at, "ragged nested value: expected an array of length " + std::to_string(shape[depth]) +
                 ", found " + found);
  }
  int64_t i = 0;
  if (depth + 1 == shape.size()) {
    // Innermost level: store without building a child path per element.
    fill_flat(a, dst, at, &shape);
    dst += a.size();
    return;
  }
  for (element child : a) fill_nested(child, depth + 1, shape, dst, at.element(i++));
}

struct TypedFields {
  std::optional<element> type, value, shape, data_type;
};

at::Tensor decode_tensor(const TypedFields& f, const JsonPath& at) {
  JsonPath value_at = at.member("value");
  at::ScalarType dtype = parse_dtype(f.data_type, at.member("data_type"));
  if (!f.value) fail(at, "missing key \"value\"");
  at::Tensor tensor;
  if (f.shape) {
    int64_t numel;
    auto shape = parse_shape(*f.shape, at.member("shape"), &numel);
    auto values = expect_array(*f.value, value_at);
    // Compared before allocating, so a huge shape costs nothing.
    if (int64_t(values.size()) != numel) {
      fail(value_at, "expected " + std::to_string(numel) + " values for shape " + shape_text(shape) +
                         ", found " + std::to_string(values.size()));
    }
    tensor = at::empty(shape, at::TensorOptions().dtype(dtype));
    dispatch_dtype(dtype, [&](auto* tag) {
      using T = std::remove_pointer_t<decltype(tag)>;
      fill_flat(values, tensor.data_ptr<T>(), value_at);
    });
    return tensor;
  }
  auto shape = infer_shape(*f.value);
  if (shape.size() > kMaxRank) fail(value_at, "expected at most " + std::to_string(kMaxRank) + " dimensions");
  tensor = at::empty(shape, at::TensorOptions().dtype(dtype));
  dispatch_dtype(dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    T* dst = tensor.data_ptr<T>();
    fill_nested(*f.value, 0, shape, dst, value_at);
  });
  return tensor;
}

// ---------------------------------------------------------------------------
// Typed objects.

enum class Kind { kTensor, kTensorList, kTensorDict, kScalar, kString, kList, kNone };

struct KindInfo {
  std::string_view name;
  Kind kind;
  bool allows_shape;
  bool allows_data_type;
};

constexpr std::array<KindInfo, 7> kKinds{{
    {"tensor", Kind::kTensor, true, true},
    {"tensor_list", Kind::kTensorList, false, false},
    {"tensor_dict", Kind::kTensorDict, false, false},
    {"scalar", Kind::kScalar, false, true},
    {"string", Kind::kString, false, false},
    {"list", Kind::kList, false, false},
    {"none", Kind::kNone, false, false},
}};

TypedFields read_fields(element e, const JsonPath& at) {
  auto obj = expect_object(e, at);
  TypedFields f;
  for (auto member : obj) {
    std::optional<element>* slot = nullptr;
    if (member.key == "type") slot = &f.type;
    else if (member.key == "value") slot = &f.value;
    else if (member.key == "shape") slot = &f.shape;
    else if (member.key == "data_type") slot = &f.data_type;
    else fail(at, "unknown key " + quote_text(member.key) + " (expected type, value, shape or data_type)");
    if (*slot) fail(at, "duplicate key " + quote_text(member.key));
    *slot = member.value;
  }
  return f;
}

const KindInfo& read_kind(const TypedFields& f, const JsonPath& at) {
  if (!f.type) fail(at, "missing key \"type\"");
  JsonPath type_at = at.member("type");
  std::string_view name = expect_string(*f.type, type_at);
  for (const auto& k : kKinds) {
    if (k.name == name) {
      if (f.shape && !k.allows_shape) fail(at, "key \"shape\" is not allowed for type " + std::string(name));
      if (f.data_type && !k.allows_data_type) {
        fail(at, "key \"data_type\" is not allowed for type " + std::string(name));
      }
      return k;
    }
  }
  fail(type_at, "unknown type " + quote_text(name) + " (expected one of " + std::string(kTypeList) + ")");
}

at::Tensor decode_tensor_object(element e, const JsonPath& at) {
  TypedFields f = read_fields(e, at);
  if (read_kind(f, at).kind != Kind::kTensor) {
    fail(at.member("type"), "expected type \"tensor\", found " + describe(*f.type));
  }
  return decode_tensor(f, at);
}

c10::IValue decode_scalar(const TypedFields& f, const JsonPath& at) {
  if (!f.value) fail(at, "missing key \"value\"");
  element v = *f.value;
  JsonPath value_at = at.member("value");
  if (f.data_type) {
    at::ScalarType dtype = parse_dtype(f.data_type, at.member("data_type"));
    c10::IValue out;
    dispatch_dtype(dtype, [&](auto* tag) {
      using T = std::remove_pointer_t<decltype(tag)>;
      T slot;
      store(v, &slot, value_at, -1);
      if constexpr (std::is_same_v<T, bool>) out = slot;
      else if constexpr (std::is_integral_v<T>) out = int64_t(slot);
      else out = static_cast<double>(slot);
    });
    return out;
  }
  switch (v.type()) {
    case element_type::BOOL: return bool(v.get_bool());
    case element_type::INT64: return int64_t(v.get_int64());
    case element_type::DOUBLE: return double(v.get_double());
    case element_type::UINT64:
      fail(value_at, "expected an integer in the int64 range, found " + describe(v));
    default:
      fail(value_at, "expected a number or a bool, found " + describe(v));
  }
}

c10::IValue decode_typed(element e, const JsonPath& at);

c10::IValue decode_list(const TypedFields& f, const JsonPath& at) {
  if (!f.value) fail(at, "missing key \"value\"");
  JsonPath value_at = at.member("value");
  auto items = expect_array(*f.value, value_at);
  std::vector<c10::IValue> decoded;
  decoded.reserve(items.size());
  int64_t i = 0;
  for (element item : items) decoded.push_back(decode_typed(item, value_at.element(i++)));

  // One element type for the whole list; ints beside floats widen to float,
  // as a JSON array of numbers would.
  c10::TypePtr elem_type = c10::AnyType::get();
  bool widen_ints = false;
  for (size_t k = 0; k < decoded.size(); ++k) {
    c10::TypePtr t = c10::unshapedType(decoded[k].type());
    if (k == 0) {
      elem_type = t;
    } else if (*t != *elem_type) {
      bool numbers = (t->kind() == c10::TypeKind::IntType || t->kind() == c10::TypeKind::FloatType) &&
                     (elem_type->kind() == c10::TypeKind::IntType ||
                      elem_type->kind() == c10::TypeKind::FloatType);
      if (!numbers) {
        fail(value_at.element(int64_t(k)), "expected a list element of type " + elem_type->repr_str() +
                                               " like the first one, found " + t->repr_str());
      }
      elem_type = c10::FloatType::get();
      widen_ints = true;
    }
  }
  c10::impl::GenericList list(elem_type);
  list.reserve(decoded.size());
  for (auto& v : decoded) {
    if (widen_ints && v.isInt()) v = static_cast<double>(v.toInt());
    list.push_back(std::move(v));
  }
  return list;
}

c10::IValue decode_typed(element e, const JsonPath& at) {
  TypedFields f = read_fields(e, at);
  const KindInfo& kind = read_kind(f, at);
  JsonPath value_at = at.member("value");
  switch (kind.kind) {
    case Kind::kTensor:
      return decode_tensor(f, at);
    case Kind::kTensorList: {
      if (!f.value) fail(at, "missing key \"value\"");
      auto items = expect_array(*f.value, value_at);
      c10::List<at::Tensor> list;
      list.reserve(items.size());
      int64_t i = 0;
      for (element item : items) list.push_back(decode_tensor_object(item, value_at.element(i++)));
      return list;
    }
    case Kind::kTensorDict: {
      if (!f.value) fail(at, "missing key \"value\"");
      auto members = expect_object(*f.value, value_at);
      c10::Dict<std::string, at::Tensor> dict;
      for (auto member : members) {
        std::string key(member.key);
        if (dict.contains(key)) fail(value_at, "duplicate key " + quote_text(key));
        dict.insert(key, decode_tensor_object(member.value, value_at.member(member.key)));
      }
      return dict;
    }
    case Kind::kScalar:
      return decode_scalar(f, at);
    case Kind::kString:
      if (!f.value) fail(at, "missing key \"value\"");
      return std::string(expect_string(*f.value, value_at));
    case Kind::kList:
      return decode_list(f, at);
    case Kind::kNone:
      if (f.value && !f.value->is_null()) fail(value_at, "expected null, found " + describe(*f.value));
      return c10::IValue();
  }
  fail(at, "unreachable type");
}

simdjson::dom::parser& thread_parser() {
  // Parsers keep their buffers between documents; one per thread keeps the
  // GIL-free path free of locks.
  thread_local simdjson::dom::parser parser;
  return parser;
}

// ---------------------------------------------------------------------------
// Encoding.

[[noreturn]] void fail_encode(const JsonPath& at, const std::string& what) {
  throw EncodeError(what + " at " + at.str());
}

void write_string(std::string_view s, std::string& out, const JsonPath& at) {
  if (!simdjson::validate_utf8(s.data(), s.size())) fail_encode(at, "cannot encode a string that is not valid UTF-8");
  out += '"';
  size_t run = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c != '"' && c != '\\') continue;
    out.append(s.data() + run, i - run);
    run = i + 1;
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default: {
        char buf[8];
        std::snprintf(buf, sizeof buf, "\\u%04x", c);
        out += buf;
      }
    }
  }
  out.append(s.data() + run, s.size() - run);
  out += '"';
}

// Writes a non-finite float as the protocol's string; returns nullptr for a
// finite one.
inline char* write_non_finite(char* p, double v) {
  if (std::isfinite(v)) return nullptr;
  const char* text = std::isnan(v) ? "\"NaN\"" : (v > 0 ? "\"Infinity\"" : "\"-Infinity\"");
  size_t n = std::strlen(text);
  std::memcpy(p, text, n);
  return p + n;
}

// Writes the shortest decimal that reads back to the same 16-bit float: the
// fewest significant digits whose float32 rounds to `v`, printed as float32.
template <typename H>
char* write_half(char* p, char* end, H v) {
  float f = static_cast<float>(v);
  if (char* q = write_non_finite(p, f)) return q;
  for (int digits = 1; digits < 9; ++digits) {
    char buf[32];
    auto r = std::to_chars(buf, buf + sizeof buf, f, std::chars_format::scientific, digits - 1);
    float back;
    std::from_chars(buf, r.ptr, back);
    if (static_cast<H>(back).x == v.x) return std::to_chars(p, end, back).ptr;
  }
  return std::to_chars(p, end, f).ptr;
}

template <typename T>
inline char* write_number(char* p, char* end, T v) {
  if constexpr (std::is_same_v<T, bool>) {
    const char* text = v ? "true" : "false";
    size_t n = v ? 4 : 5;
    std::memcpy(p, text, n);
    return p + n;
  } else if constexpr (std::is_same_v<T, c10::Half> || std::is_same_v<T, c10::BFloat16>) {
    return write_half(p, end, v);
  } else if constexpr (std::is_floating_point_v<T>) {
    if (char* q = write_non_finite(p, v)) return q;
    // fmt's Dragonbox: the same shortest round-trip text as std::to_chars,
    // about a third faster, which matters for large float tensors.
    return fmt::format_to(p, FMT_COMPILE("{}"), v);
  } else {
    return std::to_chars(p, end, v).ptr;
  }
}

// Longest text one element can take, separator included.
constexpr size_t kMaxElementChars = 32;

void write_tensor(at::Tensor t, std::string& out, const JsonPath& at) {
  auto name = dtype_name(t.scalar_type());
  if (!name) fail_encode(at, "cannot encode a tensor of dtype " + std::string(c10::toString(t.scalar_type())));
  if (t.layout() != at::kStrided) t = t.to_dense();
  t = t.to(at::kCPU).resolve_conj().resolve_neg().contiguous();
  out += R"({"type":"tensor","data_type":")";
  out += *name;
  out += R"(","shape":[)";
  for (int64_t d = 0; d < t.dim(); ++d) {
    if (d) out += ',';
    out += std::to_string(t.size(d));
  }
  out += R"(],"value":[)";
  const int64_t n = t.numel();
  // Written in blocks: each block's worst-case room is made (and zeroed by
  // resize) just before it is filled, while it is hot in cache, then trimmed.
  constexpr int64_t kBlock = 4096;
  out.reserve(out.size() + size_t(n) * 12);
  dispatch_dtype(t.scalar_type(), [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    const T* src = t.data_ptr<T>();
    for (int64_t start = 0; start < n; start += kBlock) {
      const int64_t stop = std::min(n, start + kBlock);
      size_t base = out.size();
      out.resize(base + size_t(stop - start) * kMaxElementChars);
      char* p = out.data() + base;
      char* end = out.data() + out.size();
      for (int64_t i = start; i < stop; ++i) {
        if (i) *p++ = ',';
        p = write_number(p, end, src[i]);
      }
      out.resize(size_t(p - out.data()));
    }
  });
  out += "]}";
}

template <typename T>
void write_scalar(std::string_view dtype, T v, std::string& out) {
  out += R"({"type":"scalar","data_type":")";
  out += dtype;
  out += R"(","value":)";
  char buf[kMaxElementChars];
  out.append(buf, write_number(buf, buf + sizeof buf, v));
  out += '}';
}

void write_value(const c10::IValue& v, std::string& out, const JsonPath& at) {
  if (v.isTensor()) return write_tensor(v.toTensor(), out, at);
  if (v.isString()) {
    out += R"({"type":"string","value":)";
    write_string(v.toStringRef(), out, at.member("value"));
    out += '}';
    return;
  }
  if (v.isInt()) return write_scalar("int64", v.toInt(), out);
  if (v.isDouble()) return write_scalar("float64", v.toDouble(), out);
  if (v.isBool()) return write_scalar("bool", v.toBool(), out);
  if (v.isNone()) {
    out += R"({"type":"none","value":null})";
    return;
  }
  if (v.isList() || v.isTuple()) {
    out += '[';
    int64_t i = 0;
    auto write_item = [&](const c10::IValue& item) {
      if (i) out += ',';
      write_value(item, out, at.element(i++));
    };
    if (v.isList()) {
      for (const c10::IValue& item : v.toListRef()) write_item(item);
    } else {
      for (const c10::IValue& item : v.toTupleRef().elements()) write_item(item);
    }
    out += ']';
    return;
  }
  if (v.isGenericDict()) {
    out += R"({"type":"generic_dict","value":{)";
    JsonPath value_at = at.member("value");
    bool first = true;
    for (const auto& entry : v.toGenericDict()) {
      if (!first) out += ',';
      first = false;
      const c10::IValue& key = entry.key();
      std::string key_text;
      if (key.isString()) key_text = key.toStringRef();
      else if (key.isInt()) key_text = std::to_string(key.toInt());
      else fail_encode(value_at, "cannot encode a dict key of type " + key.type()->repr_str());
      write_string(key_text, out, value_at);
      out += ':';
      write_value(entry.value(), out, value_at.member(key_text));
    }
    out += "}}";
    return;
  }
  fail_encode(at, "cannot encode a value of type " + v.type()->repr_str());
}

}  // namespace

std::vector<c10::IValue> decode_request(std::string_view body) {
  JsonPath root{nullptr, "body", -1};
  if (body.find_first_not_of(" \t\r\n") == std::string_view::npos) {
    throw DecodeError("request body is empty");
  }
  element doc;
  auto error = thread_parser().parse(body.data(), body.size()).get(doc);
  if (error == simdjson::UTF8_ERROR) throw DecodeError("request body is not valid UTF-8");
  if (error) throw DecodeError(std::string("request body is not valid JSON: ") + simdjson::error_message(error));

  std::vector<c10::IValue> args;
  if (doc.is_array()) {
    auto items = doc.get_array();
    args.reserve(items.size());
    int64_t i = 0;
    for (element item : items) args.push_back(decode_typed(item, root.element(i++)));
  } else if (doc.is_object()) {
    args.push_back(decode_typed(doc, root));
  } else {
    fail(root, "expected a typed object or an array of typed objects, found " + describe(doc));
  }
  return args;
}

void encode_result(const c10::IValue& value, std::string& out) {
  write_value(value, out, JsonPath{nullptr, "result", -1});
}

void encode_success(const c10::IValue& value, std::string& out) {
  out.assign(R"({"code":200,"message":"OK","description":"Success","result":)");
  encode_result(value, out);
  out += '}';
}

}  // namespace torch_serving
