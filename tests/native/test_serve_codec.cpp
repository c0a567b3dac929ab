// The codec without Python: values land in tensor memory exactly, errors
// name the path, floats come out in their dtype's shortest form.
#include <ATen/ATen.h>

#include <cstring>

#include "serve_codec.h"
#include "errors.h"
#include "request_body.h"

#include "doctest_after_torch.h"

using torch_serving::DecodeError;
using torch_serving::RequestBody;
using torch_serving::decode_arguments;
using torch_serving::encode_result;

namespace {

std::string encoded(const c10::IValue& value) {
  std::string out;
  encode_result(value, out);
  return out;
}

std::string decode_error(std::string_view body) {
  try {
    decode_arguments(body);
  } catch (const DecodeError& e) {
    return e.what();
  }
  return "no error";
}

}  // namespace

TEST_CASE("a flat tensor with shape decodes into its dtype") {
  auto args = decode_arguments(R"([{"type":"tensor","shape":[2,2],"value":[1,2,3,4],"data_type":"int16"}])");
  REQUIRE(args.size() == 1);
  at::Tensor t = args[0].toTensor();
  CHECK(std::string(c10::toString(t.scalar_type())) == "Short");
  CHECK(t.sizes().vec() == std::vector<int64_t>{2, 2});
  CHECK(t[1][0].item<int16_t>() == 3);
}

TEST_CASE("int64 values are exact beyond double precision") {
  auto args = decode_arguments(R"({"type":"tensor","value":[9007199254740993],"data_type":"int64"})");
  CHECK(args[0].toTensor()[0].item<int64_t>() == 9007199254740993LL);
  auto scalar = decode_arguments(R"({"type":"scalar","value":-9223372036854775808})");
  CHECK(scalar[0].toInt() == INT64_MIN);
}

TEST_CASE("errors say expected and found, at the JSON path") {
  CHECK(decode_error(R"([{"type":"tensor","value":[1,300],"data_type":"uint8"}])") ==
        "expected an integer in [0, 255] for uint8, found 300 at body[0].value[1]");
  CHECK(decode_error(R"({"type":"tensor_dict","value":{"x":{"type":"tensor","value":[],"shape":[-1]}}})") ==
        "expected a non-negative integer dimension, found -1 at body.value.x.shape[0]");
  CHECK(decode_error("") == "request body is empty");
}

TEST_CASE("a shape whose element count overflows is refused before allocating") {
  CHECK(decode_error(R"({"type":"tensor","shape":[4294967296,4294967296],"value":[]})") ==
        "shape [4294967296, 4294967296] is too large: its dimensions multiply past 576460752303423487 elements at "
        "body.shape");
}

TEST_CASE("floats are written in the shortest form of their own dtype") {
  CHECK(encoded(at::tensor({19.269815f})) ==
        R"({"type":"tensor","data_type":"float32","shape":[1],"value":[19.269815]})");
  CHECK(encoded(at::tensor({0.1}, at::kDouble)) ==
        R"({"type":"tensor","data_type":"float64","shape":[1],"value":[0.1]})");
  CHECK(encoded(at::tensor({33.3f}).to(at::kHalf)) ==
        R"({"type":"tensor","data_type":"float16","shape":[1],"value":[33.3]})");
  CHECK(encoded(at::tensor({std::nanf(""), INFINITY})) ==
        R"({"type":"tensor","data_type":"float32","shape":[2],"value":["NaN","Infinity"]})");
}

TEST_CASE("a transposed view is written row-major") {
  at::Tensor t = at::arange(6, at::kLong).reshape({2, 3}).t();
  CHECK(encoded(t) == R"({"type":"tensor","data_type":"int64","shape":[3,2],"value":[0,3,1,4,2,5]})");
}

TEST_CASE("scalars, strings and None") {
  CHECK(encoded(c10::IValue(int64_t(30))) == R"({"type":"scalar","data_type":"int64","value":30})");
  CHECK(encoded(c10::IValue(std::string("a\"b"))) == R"({"type":"string","value":"a\"b"})");
  CHECK(encoded(c10::IValue()) == R"({"type":"none","value":null})");
}

TEST_CASE("a padded body is parsed in place, whatever its padding holds") {
  auto body = RequestBody::copy_of(R"([{"type":"tensor","value":[1.5,2]},{"type":"scalar","value":7}])");
  // Digits and quotes right after the end must not extend the last tokens.
  std::memset(body->data() + body->size(), '9', body->readable() - body->size());
  auto args = decode_arguments(body->view(), body->readable());
  REQUIRE(args.size() == 2);
  CHECK(args[0].toTensor()[1].item<float>() == 2.0f);
  CHECK(args[1].toInt() == 7);
  std::memset(body->data() + body->size(), '"', body->readable() - body->size());
  CHECK(decode_arguments(body->view(), body->readable())[1].toInt() == 7);
}

TEST_CASE("arrays longer than simdjson's saturated size count (16,777,215) are measured exactly") {
  // simdjson's array::size() stops at 0xFFFFFF; a tensor sized from it would
  // be smaller than the values written into it.
  constexpr size_t kSaturated = 0xFFFFFF;
  std::string values;
  values.reserve((kSaturated + 10) * 2);
  for (size_t i = 0; i < kSaturated + 10; ++i) values += i ? ",1" : "1";
  auto nested = decode_arguments(R"({"type":"tensor","data_type":"uint8","value":[)" + values + "]}");
  CHECK(nested[0].toTensor().numel() == int64_t(kSaturated + 10));
  CHECK(nested[0].toTensor().sum().item<int64_t>() == int64_t(kSaturated + 10));
  CHECK(decode_error(R"({"type":"tensor","data_type":"uint8","shape":[16777215],"value":[)" + values + "]}") ==
        "expected 16777215 values for shape [16777215], found 16777225 at body.value");
}

TEST_CASE("numbers beyond 64 bits are read as floats; a byte-order mark is skipped") {
  auto args = decode_arguments("\xEF\xBB\xBF" R"({"type":"tensor","data_type":"float64","value":[-20000000000000000000]})");
  CHECK(args[0].toTensor()[0].item<double>() == -2e19);
  CHECK(decode_error(R"({"type":"tensor","data_type":"int64","value":[-9223372036854775809]})") ==
        "expected an integer in [-9223372036854775808, 9223372036854775807] for int64, found "
        "-9223372036854775809 at body.value[0]");
  CHECK(decode_error(R"({"type":"tensor","value":[01]})") ==
        "request body is not valid JSON: Problem while parsing a number");
}
