// JSON values to and from tensor memory, shared by the /serve codec and the
// Open Inference Protocol (V2) codec: element rules per dtype, shapes,
// error descriptions, and the number writer.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/core/ivalue.h>
#include <simdjson.h>

#include <initializer_list>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "json_path.h"

namespace torch_serving::json {

using simdjson::dom::element;

// The highest tensor rank the decoders accept; far above any real model and
// low enough that shape bookkeeping stays trivially small.
constexpr size_t kMaxRank = 64;

// Throws DecodeError("`what` at `at`").
[[noreturn, gnu::noinline, gnu::cold]] void fail(const JsonPath& at, const std::string& what);

// Describes a JSON value for "found ..." in error messages.
std::string describe(element e);

// Quotes `s` for an error message, cut short when long.
std::string quote_text(std::string_view s);

// `items`, comma-separated, for error messages.
std::string comma_separated(const std::vector<std::string>& items);

// The names of a table's entries (each with a `name`), comma-separated:
// what an error message lists as expected, derived from the table itself.
template <class Table>
std::string names_of(const Table& table) {
  std::string names;
  for (const auto& entry : table) {
    if (!names.empty()) names += ", ";
    names += entry.name;
  }
  return names;
}

// Renders a shape as `[1, 3, 224, 224]`.
std::string shape_text(const std::vector<int64_t>& shape);

// The exact number of elements of `a`. simdjson's array::size() saturates
// at 0xFFFFFF (16,777,215), so a longer array is counted; trusting the
// saturated count would size a tensor smaller than the values written to it.
size_t array_length(simdjson::dom::array a);

simdjson::dom::array expect_array(element e, const JsonPath& at);
simdjson::dom::object expect_object(element e, const JsonPath& at);
std::string_view expect_string(element e, const JsonPath& at);

// One member an object may have, and where its value goes.
struct Member {
  std::string_view key;
  std::optional<element>* slot;
};

// Reads object `e`'s members into the slots of `members`; an unknown or a
// repeated key fails naming `at`, an unknown one listing the keys expected.
void read_members(element e, const JsonPath& at, std::initializer_list<Member> members);

// Renders a double for a message in the shortest form that reads back the
// same, keeping a fraction on integral values (`2.0`, not `2`).
std::string double_text(double v);

// The most elements a shape may span, counting a 0 dimension as 1 (as
// torch's stride arithmetic does), so that a byte size of any dtype fits int64.
constexpr int64_t kMaxElements = std::numeric_limits<int64_t>::max() / 16;

// Parses an array of non-negative dimensions, setting `*numel` to their
// product; refuses ranks over kMaxRank and shapes check_shape_size refuses.
std::vector<int64_t> parse_shape(element field, const JsonPath& at, int64_t* numel);

// Fails at `at` when the dimensions of `shape`, a 0 counted as 1, multiply
// past kMaxElements: torch could not compute its strides or byte size.
void check_shape_size(const std::vector<int64_t>& shape, const JsonPath& at);

// The longest prefix of the UTF-8 text `s` of at most `max_bytes` bytes that
// ends on a character boundary.
std::string_view utf8_prefix(std::string_view s, size_t max_bytes);

// Returns a tensor of `dtype` and `shape` filled from the flat array `values`,
// whose length the caller has checked against `shape`.
at::Tensor decode_flat(simdjson::dom::array values, at::ScalarType dtype, const std::vector<int64_t>& shape,
                       const JsonPath& at);

// Returns a tensor of `dtype` whose shape is that of the nested arrays in
// `value` (a bare number is a 0-d tensor); ragged nesting is refused.
at::Tensor decode_nested(element value, at::ScalarType dtype, const JsonPath& at);

// Decodes one JSON value as a scalar of `dtype`: an int for integer dtypes,
// a float for float ones, a bool for bool.
c10::IValue decode_scalar_as(element value, at::ScalarType dtype, const JsonPath& at);

// The /serve name of `dtype` (`float32`), or nothing for a dtype the JSON
// codecs cannot read and write.
std::optional<std::string_view> dtype_name(at::ScalarType dtype);

// The dtype of a /serve name, or nothing for an unknown name.
std::optional<at::ScalarType> dtype_named(std::string_view name);

// Every /serve dtype name, comma-separated, for error messages.
std::string dtype_names();

// A JSON document parsed by the calling thread's parser, valid while this
// object lives. The parser keeps its buffers for the next document unless
// they grew past kKeptParserCapacity bytes of JSON, when they are freed.
class ParsedDocument {
 public:
  static constexpr size_t kKeptParserCapacity = 1 << 20;

  ParsedDocument() = default;
  ~ParsedDocument();
  ParsedDocument(const ParsedDocument&) = delete;
  ParsedDocument& operator=(const ParsedDocument&) = delete;

  // Parses `json`, skipping a leading UTF-8 byte-order mark, in place when
  // `readable` bytes may be read from json.data() (simdjson reads up to
  // SIMDJSON_PADDING bytes past the end), else from a padded copy. Integers
  // beyond 64 bits are read as doubles. Returns simdjson's error code.
  simdjson::error_code parse(std::string_view json, size_t readable);

  element root() const { return root_; }

 private:
  element root_;
};

// Appends `s` as a JSON string; throws EncodeError naming `at` when `s` is
// not valid UTF-8.
void write_string(std::string_view s, std::string& out, const JsonPath& at);

// Appends the elements of `t` (contiguous, on the CPU, of a supported dtype)
// separated by commas, each in the shortest form that reads back to the same
// value of the tensor's dtype; non-finite floats as "NaN", "Infinity" and
// "-Infinity".
void write_values(const at::Tensor& t, std::string& out);

// Appends one number (or bool) in the form write_values uses.
void write_number(int64_t v, std::string& out);
void write_number(double v, std::string& out);
void write_number(bool v, std::string& out);

}  // namespace torch_serving::json
