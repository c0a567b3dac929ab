// Element rules, shapes and the number writer shared by both JSON codecs.
#include "json_tensor.h"

#include <ATen/ATen.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <c10/util/accumulate.h>
#include <fmt/compile.h>
#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>

#include "errors.h"

namespace torch_serving::json {
namespace {

using simdjson::dom::element_type;

// The integers the calling thread's current document had widened, as sent,
// so that an error quotes the number the client wrote rather than its
// rounded double.
thread_local std::vector<std::string> widened_integers;

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

// ---------------------------------------------------------------------------
// Elements: one JSON value into one slot of a typed buffer.

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

std::vector<int64_t> infer_shape(element value) {
  std::vector<int64_t> shape;
  element e = value;
  simdjson::dom::array a;
  while (e.get_array().get(a) == simdjson::SUCCESS && shape.size() < kMaxRank + 1) {
    shape.push_back(int64_t(array_length(a)));
    if (shape.back() == 0) break;
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
  if (e.get_array().get(a) != simdjson::SUCCESS || int64_t(array_length(a)) != shape[depth]) {
    std::string found = e.is_array() ? "an array of length " + std::to_string(array_length(a)) : describe(e);
    fail(at, "ragged nested value: expected an array of length " + std::to_string(shape[depth]) +
                 ", found " + found);
  }
  int64_t i = 0;
  if (depth + 1 == shape.size()) {
    // Innermost level: store without building a child path per element.
    fill_flat(a, dst, at, &shape);
    dst += shape[depth];
    return;
  }
  for (element child : a) fill_nested(child, depth + 1, shape, dst, at.element(i++));
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
inline char* write_element(char* p, char* end, T v) {
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


template <typename T>
void append_element(T v, std::string& out) {
  char buf[kMaxElementChars];
  out.append(buf, write_element(buf, buf + sizeof buf, v));
}

}  // namespace

std::optional<std::string_view> dtype_name(at::ScalarType type) {
  for (const auto& d : kDtypes) {
    if (d.type == type) return d.name;
  }
  return std::nullopt;
}

void fail(const JsonPath& at, const std::string& what) {
  throw DecodeError(what + " at " + at.str());
}

std::string_view utf8_prefix(std::string_view s, size_t max_bytes) {
  if (s.size() <= max_bytes) return s;
  size_t cut = max_bytes;
  // Back up over continuation bytes (10xxxxxx) to the start of a character.
  while (cut > 0 && (static_cast<unsigned char>(s[cut]) & 0xC0) == 0x80) --cut;
  return s.substr(0, cut);
}

std::string quote_text(std::string_view s) {
  constexpr size_t kMaxShown = 40;
  std::string_view shown = utf8_prefix(s, kMaxShown);
  std::string out = "\"";
  out += shown;
  if (shown.size() < s.size()) out += "...";
  out += '"';
  return out;
}

std::string comma_separated(const std::vector<std::string>& items) {
  std::string text;
  for (size_t i = 0; i < items.size(); ++i) text += (i ? ", " : "") + items[i];
  return text;
}

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
    case element_type::DOUBLE: {
      const double v = double(e.get_double());
      for (const std::string& sent : widened_integers) {
        if (std::strtod(sent.c_str(), nullptr) == v) return sent;
      }
      return double_text(v);
    }
    case element_type::STRING:
      return "string " + quote_text(std::string_view(e.get_string()));
    case element_type::BOOL:
      return bool(e.get_bool()) ? "true" : "false";
    case element_type::NULL_VALUE:
      return "null";
  }
  return "an unknown value";
}

std::string double_text(double v) {
  char buf[32];
  auto end = std::to_chars(buf, buf + sizeof buf, v).ptr;
  std::string text(buf, end);
  if (std::isfinite(v) && text.find_first_of(".e") == std::string::npos) text += ".0";
  return text;
}

void read_members(element e, const JsonPath& at, std::initializer_list<Member> members) {
  for (auto field : expect_object(e, at)) {
    const Member* match = nullptr;
    for (const Member& member : members) {
      if (member.key == field.key) match = &member;
    }
    if (!match) {
      std::string expected;
      size_t i = 0;
      for (const Member& member : members) {
        if (i > 0) expected += i + 1 == members.size() ? " or " : ", ";
        expected += member.key;
        ++i;
      }
      fail(at, "unknown key " + quote_text(field.key) + " (expected " + expected + ")");
    }
    if (*match->slot) fail(at, "duplicate key " + quote_text(field.key));
    *match->slot = field.value;
  }
}

size_t array_length(simdjson::dom::array a) {
  constexpr size_t kSaturated = 0xFFFFFF;
  const size_t size = a.size();
  if (size < kSaturated) return size;
  size_t count = 0;
  for ([[maybe_unused]] element e : a) ++count;
  return count;
}

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
  int64_t i = 0;
  for (element d : dims) {
    int64_t v;
    if (d.type() != element_type::INT64 || d.get_int64().get(v) != simdjson::SUCCESS || v < 0) {
      fail(at.element(i), "expected a non-negative integer dimension, found " + describe(d));
    }
    if (shape.size() == kMaxRank) fail(at, "expected at most " + std::to_string(kMaxRank) + " dimensions");
    shape.push_back(v);
    ++i;
  }
  check_shape_size(shape, at);
  *numel = c10::multiply_integers(shape);
  return shape;
}

void check_shape_size(const std::vector<int64_t>& shape, const JsonPath& at) {
  // Torch multiplies the dimensions for strides and byte sizes even when one
  // of them is 0 (as at least 1), so that product must fit int64 with room
  // for the widest element.
  int64_t span = 1;
  for (int64_t d : shape) {
    if (__builtin_mul_overflow(span, std::max<int64_t>(d, 1), &span) || span > kMaxElements) {
      fail(at, "shape " + shape_text(shape) + " is too large: its dimensions multiply past " +
                   std::to_string(kMaxElements) + " elements");
    }
  }
}

void write_string(std::string_view s, std::string& out, const JsonPath& at) {
  if (!simdjson::validate_utf8(s.data(), s.size())) {
    throw EncodeError("cannot encode a string that is not valid UTF-8 at " + at.str());
  }
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


std::string dtype_names() { return names_of(kDtypes); }

std::optional<at::ScalarType> dtype_named(std::string_view name) {
  for (const auto& d : kDtypes) {
    if (d.name == name) return d.type;
  }
  return std::nullopt;
}

at::Tensor decode_flat(simdjson::dom::array values, at::ScalarType dtype, const std::vector<int64_t>& shape,
                       const JsonPath& at) {
  at::Tensor tensor = at::empty(shape, at::TensorOptions().dtype(dtype));
  dispatch_dtype(dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    fill_flat(values, tensor.data_ptr<T>(), at);
  });
  return tensor;
}

at::Tensor decode_nested(element value, at::ScalarType dtype, const JsonPath& at) {
  auto shape = infer_shape(value);
  if (shape.size() > kMaxRank) fail(at, "expected at most " + std::to_string(kMaxRank) + " dimensions");
  at::Tensor tensor = at::empty(shape, at::TensorOptions().dtype(dtype));
  dispatch_dtype(dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    T* dst = tensor.data_ptr<T>();
    fill_nested(value, 0, shape, dst, at);
  });
  return tensor;
}

c10::IValue decode_scalar_as(element value, at::ScalarType dtype, const JsonPath& at) {
  c10::IValue out;
  dispatch_dtype(dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    T slot;
    store(value, &slot, at, -1);
    if constexpr (std::is_same_v<T, bool>) out = slot;
    else if constexpr (std::is_integral_v<T>) out = int64_t(slot);
    else out = static_cast<double>(slot);
  });
  return out;
}

namespace {

// One parser per thread keeps the GIL-free path free of locks.
simdjson::dom::parser& thread_parser() {
  thread_local simdjson::dom::parser parser;
  return parser;
}

bool is_number_char(char c) { return (c >= '0' && c <= '9') || c == '.' || c == 'e' || c == 'E' || c == '+' || c == '-'; }

// Returns `json` with each integer that fits neither int64 nor uint64
// written as a float (`20000000000000000000.0`), which simdjson refuses as
// an integer but reads as a double, and records those integers in
// widened_integers; nothing when `json` has no such integer.
std::optional<std::string> widen_big_integers(std::string_view json) {
  std::string out;
  size_t copied = 0;
  bool in_string = false;
  for (size_t i = 0; i < json.size(); ++i) {
    const char c = json[i];
    if (in_string) {
      if (c == '\\') ++i;
      else if (c == '"') in_string = false;
      continue;
    }
    if (c == '"') {
      in_string = true;
      continue;
    }
    if (c != '-' && (c < '0' || c > '9')) continue;
    size_t end = i + 1;
    while (end < json.size() && is_number_char(json[end])) ++end;
    std::string_view token = json.substr(i, end - i);
    const bool integer = token.find_first_of(".eE+") == std::string_view::npos &&
                         token.find('-', 1) == std::string_view::npos && token != "-";
    if (integer) {
      int64_t as_signed;
      uint64_t as_unsigned;
      const char* first = token.data();
      const char* last = first + token.size();
      const bool fits = std::from_chars(first, last, as_signed).ec == std::errc() ||
                        (token[0] != '-' && std::from_chars(first, last, as_unsigned).ec == std::errc());
      if (!fits) {
        widened_integers.emplace_back(token);
        out.append(json.substr(copied, end - copied));
        out += ".0";
        copied = end;
      }
    }
    i = end - 1;
  }
  if (copied == 0) return std::nullopt;
  out.append(json.substr(copied));
  return out;
}

}  // namespace

ParsedDocument::~ParsedDocument() {
  // A large body leaves the parser's buffers sized for it; keeping them
  // would hold that memory per thread for the life of the worker.
  simdjson::dom::parser& parser = thread_parser();
  if (parser.capacity() > kKeptParserCapacity) parser = simdjson::dom::parser();
  widened_integers.clear();
}

simdjson::error_code ParsedDocument::parse(std::string_view json, size_t readable) {
  // RFC 8259 lets a parser skip a byte-order mark; Windows tools write one.
  constexpr std::string_view kByteOrderMark = "\xEF\xBB\xBF";
  if (json.substr(0, kByteOrderMark.size()) == kByteOrderMark) {
    json.remove_prefix(kByteOrderMark.size());
    readable = readable >= kByteOrderMark.size() ? readable - kByteOrderMark.size() : 0;
  }
  simdjson::dom::parser& parser = thread_parser();
  const bool padded = readable >= json.size() + simdjson::SIMDJSON_PADDING;
  auto error = parser.parse(json.data(), json.size(), /*realloc_if_needed=*/!padded).get(root_);
  if (error != simdjson::NUMBER_ERROR) return error;
  // simdjson refuses integers beyond 64 bits, which JSON allows: read them
  // as floats, which the element rules then take or refuse by range.
  std::optional<std::string> widened = widen_big_integers(json);
  if (!widened) return error;
  return parser.parse(widened->data(), widened->size(), /*realloc_if_needed=*/true).get(root_);
}

void write_values(const at::Tensor& t, std::string& out) {
  const int64_t n = t.numel();
  // Written in blocks: each block's worst-case room is made (and zeroed by
  // resize) just before it is filled, while it is hot in cache, then trimmed.
  constexpr int64_t kBlock = 4096;
  out.reserve(out.size() + size_t(n) * 12);
  dispatch_dtype(t.scalar_type(), [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    const T* src = t.const_data_ptr<T>();
    for (int64_t start = 0; start < n; start += kBlock) {
      const int64_t stop = std::min(n, start + kBlock);
      size_t base = out.size();
      out.resize(base + size_t(stop - start) * kMaxElementChars);
      char* p = out.data() + base;
      char* end = out.data() + out.size();
      for (int64_t i = start; i < stop; ++i) {
        if (i) *p++ = ',';
        p = write_element(p, end, src[i]);
      }
      out.resize(size_t(p - out.data()));
    }
  });
}

void write_number(int64_t v, std::string& out) { append_element(v, out); }
void write_number(double v, std::string& out) { append_element(v, out); }
void write_number(bool v, std::string& out) { append_element(v, out); }

}  // namespace torch_serving::json
