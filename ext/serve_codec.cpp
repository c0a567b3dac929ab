// The /serve codec: typed request objects (simdjson DOM, straight into
// tensor memory) and results written into one growing buffer.
#include "serve_codec.h"

#include <ATen/ATen.h>
#include <ATen/core/Dict.h>
#include <ATen/core/List.h>

#include <array>
#include <optional>

#include "base64.h"
#include "errors.h"
#include "image.h"
#include "json_path.h"
#include "json_tensor.h"

namespace torch_serving {
namespace {

using namespace json;
using simdjson::dom::element_type;

at::ScalarType parse_dtype(std::optional<element> field, const JsonPath& at) {
  if (!field) return at::kFloat;
  std::string_view name = expect_string(*field, at);
  if (auto dtype = dtype_named(name)) return *dtype;
  fail(at, "unknown data_type " + quote_text(name) + " (expected one of " + dtype_names() + ")");
}

struct TypedFields {
  std::optional<element> type, value, shape, data_type, mode;
};

at::Tensor decode_tensor(const TypedFields& f, const JsonPath& at) {
  JsonPath value_at = at.member("value");
  at::ScalarType dtype = parse_dtype(f.data_type, at.member("data_type"));
  if (!f.value) fail(at, "missing key \"value\"");
  if (!f.shape) return decode_nested(*f.value, dtype, value_at);
  int64_t numel;
  auto shape = parse_shape(*f.shape, at.member("shape"), &numel);
  auto values = expect_array(*f.value, value_at);
  // Compared before allocating, so a huge shape costs nothing.
  const size_t found = array_length(values);
  if (int64_t(found) != numel) {
    fail(value_at, "expected " + std::to_string(numel) + " values for shape " + shape_text(shape) +
                       ", found " + std::to_string(found));
  }
  return decode_flat(values, dtype, shape, value_at);
}

// ---------------------------------------------------------------------------
// Typed objects.

enum class Kind { kTensor, kImage, kTensorList, kTensorDict, kScalar, kString, kList, kNone };

struct KindInfo {
  std::string_view name;
  Kind kind;
  bool allows_shape;
  bool allows_data_type;
  bool allows_mode;
};

constexpr std::array<KindInfo, 8> kKinds{{
    {"tensor", Kind::kTensor, true, true, false},
    {"image", Kind::kImage, false, true, true},
    {"tensor_list", Kind::kTensorList, false, false, false},
    {"tensor_dict", Kind::kTensorDict, false, false, false},
    {"scalar", Kind::kScalar, false, true, false},
    {"string", Kind::kString, false, false, false},
    {"list", Kind::kList, false, false, false},
    {"none", Kind::kNone, false, false, false},
}};

TypedFields read_fields(element e, const JsonPath& at) {
  TypedFields f;
  read_members(e, at,
               {{"type", &f.type}, {"value", &f.value}, {"shape", &f.shape}, {"data_type", &f.data_type},
                {"mode", &f.mode}});
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
      if (f.mode && !k.allows_mode) fail(at, "key \"mode\" is not allowed for type " + std::string(name));
      return k;
    }
  }
  fail(type_at, "unknown type " + quote_text(name) + " (expected one of " + names_of(kKinds) + ")");
}

// An image: base64 (or a data URL) of a JPEG, PNG or WebP file, decoded
// into a [C, H, W] tensor of uint8 or (scaled to [0, 1]) float32.
at::Tensor decode_image(const TypedFields& f, const JsonPath& at, int64_t max_image_pixels) {
  if (!f.value) fail(at, "missing key \"value\"");
  JsonPath value_at = at.member("value");
  std::string_view text = expect_string(*f.value, value_at);
  if (text.substr(0, 5) == "data:") {
    const size_t comma = text.find(',');
    constexpr std::string_view kBase64Marker = ";base64";
    if (comma == std::string_view::npos || comma < kBase64Marker.size() ||
        text.substr(comma - kBase64Marker.size(), kBase64Marker.size()) != kBase64Marker) {
      fail(value_at, "a data URL must be base64-encoded: data:image/...;base64,...");
    }
    text.remove_prefix(comma + 1);
  }
  image::Mode mode = image::Mode::kRGB;
  if (f.mode) {
    std::string_view name = expect_string(*f.mode, at.member("mode"));
    auto named = image::mode_named(name);
    if (!named) {
      fail(at.member("mode"), "unknown mode " + quote_text(name) + " (expected one of " +
                                  image::mode_names() + ")");
    }
    mode = *named;
  }
  at::ScalarType dtype = f.data_type ? parse_dtype(f.data_type, at.member("data_type")) : at::kByte;
  if (dtype != at::kByte && dtype != at::kFloat) {
    fail(at.member("data_type"), "an image's data_type must be uint8 or float32, found " +
                                     quote_text(*dtype_name(dtype)));
  }
  at::Tensor pixels = image::decode(decode_base64(text, value_at), mode, max_image_pixels, value_at);
  return dtype == at::kFloat ? pixels.to(at::kFloat).div_(255.0f) : pixels;
}

// A tensor where the protocol takes one: a `tensor`, or an `image`.
at::Tensor decode_tensor_object(element e, const JsonPath& at, int64_t max_image_pixels) {
  TypedFields f = read_fields(e, at);
  switch (read_kind(f, at).kind) {
    case Kind::kTensor: return decode_tensor(f, at);
    case Kind::kImage: return decode_image(f, at, max_image_pixels);
    default: fail(at.member("type"), "expected type \"tensor\" or \"image\", found " + describe(*f.type));
  }
}

c10::IValue decode_scalar(const TypedFields& f, const JsonPath& at) {
  if (!f.value) fail(at, "missing key \"value\"");
  element v = *f.value;
  JsonPath value_at = at.member("value");
  if (f.data_type) return decode_scalar_as(v, parse_dtype(f.data_type, at.member("data_type")), value_at);
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

c10::IValue decode_typed(element e, const JsonPath& at, int64_t max_image_pixels);

c10::IValue decode_list(const TypedFields& f, const JsonPath& at, int64_t max_image_pixels) {
  if (!f.value) fail(at, "missing key \"value\"");
  JsonPath value_at = at.member("value");
  auto items = expect_array(*f.value, value_at);
  std::vector<c10::IValue> decoded;
  decoded.reserve(items.size());
  int64_t i = 0;
  for (element item : items) decoded.push_back(decode_typed(item, value_at.element(i++), max_image_pixels));

  // One element type for the whole list; ints beside floats widen to float,
  // as a JSON array of numbers would.
  c10::TypePtr elem_type = c10::AnyType::get();
  bool widen_ints = false;
  for (size_t k = 0; k < decoded.size(); ++k) {
    // Only a tensor's type carries a shape to drop: the containers decoded
    // here already hold unshaped element types, and unshaping them again
    // would walk the whole nesting at every level (quadratic in depth).
    c10::TypePtr t = decoded[k].isTensor() ? c10::TensorType::get() : decoded[k].type();
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

c10::IValue decode_typed(element e, const JsonPath& at, int64_t max_image_pixels) {
  TypedFields f = read_fields(e, at);
  const KindInfo& kind = read_kind(f, at);
  JsonPath value_at = at.member("value");
  switch (kind.kind) {
    case Kind::kTensor:
      return decode_tensor(f, at);
    case Kind::kImage:
      return decode_image(f, at, max_image_pixels);
    case Kind::kTensorList: {
      if (!f.value) fail(at, "missing key \"value\"");
      auto items = expect_array(*f.value, value_at);
      c10::List<at::Tensor> list;
      list.reserve(items.size());
      int64_t i = 0;
      for (element item : items) list.push_back(decode_tensor_object(item, value_at.element(i++), max_image_pixels));
      return list;
    }
    case Kind::kTensorDict: {
      if (!f.value) fail(at, "missing key \"value\"");
      auto members = expect_object(*f.value, value_at);
      c10::Dict<std::string, at::Tensor> dict;
      for (auto member : members) {
        std::string key(member.key);
        if (dict.contains(key)) fail(value_at, "duplicate key " + quote_text(key));
        dict.insert(key, decode_tensor_object(member.value, value_at.member(member.key), max_image_pixels));
      }
      return dict;
    }
    case Kind::kScalar:
      return decode_scalar(f, at);
    case Kind::kString:
      if (!f.value) fail(at, "missing key \"value\"");
      return std::string(expect_string(*f.value, value_at));
    case Kind::kList:
      return decode_list(f, at, max_image_pixels);
    case Kind::kNone:
      if (f.value && !f.value->is_null()) fail(value_at, "expected null, found " + describe(*f.value));
      return c10::IValue();
  }
  fail(at, "unreachable type");
}

// ---------------------------------------------------------------------------
// Encoding.

[[noreturn]] void fail_encode(const JsonPath& at, const std::string& what) {
  throw EncodeError(what + " at " + at.str());
}

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
  write_values(t, out);
  out += "]}";
}

template <typename T>
void write_scalar(std::string_view dtype, T v, std::string& out) {
  out += R"({"type":"scalar","data_type":")";
  out += dtype;
  out += R"(","value":)";
  write_number(v, out);
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

std::vector<c10::IValue> decode_arguments(std::string_view body, size_t readable, int64_t max_image_pixels) {
  JsonPath root{nullptr, "body", -1};
  if (body.find_first_not_of(" \t\r\n") == std::string_view::npos) {
    throw DecodeError("request body is empty");
  }
  ParsedDocument parsed;
  auto error = parsed.parse(body, readable);
  element doc = parsed.root();
  if (error == simdjson::UTF8_ERROR) throw DecodeError("request body is not valid UTF-8");
  if (error) throw DecodeError(std::string("request body is not valid JSON: ") + simdjson::error_message(error));

  std::vector<c10::IValue> args;
  if (doc.is_array()) {
    auto items = doc.get_array();
    args.reserve(items.size());
    int64_t i = 0;
    for (element item : items) args.push_back(decode_typed(item, root.element(i++), max_image_pixels));
  } else if (doc.is_object()) {
    args.push_back(decode_typed(doc, root, max_image_pixels));
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
