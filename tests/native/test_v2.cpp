// The V2 codec without Python: binary inputs are views of the body where
// alignment allows and copies elsewhere, the body lives as long as its
// views, and output naming and framing follow docs/v2.md.
#include <ATen/ATen.h>

#include <cstring>
#include <memory>
#include <string>

#include "errors.h"
#include "request_body.h"
#include "v2.h"
#include "v2_binding.h"
#include "v2_request.h"
#include "v2_response.h"

#include "doctest_after_torch.h"

namespace v2 = torch_serving::v2;

namespace {

// A request body with `header` padded by `padding` spaces, then four float32s.
struct Body {
  std::shared_ptr<std::string> bytes;
  size_t header_length;
};

Body binary_body(size_t padding) {
  std::string header =
      R"({"inputs":[{"name":"x","shape":[4],"datatype":"FP32","parameters":{"binary_data_size":16}}]})";
  header.append(padding, ' ');
  const float values[4] = {1.5f, -2.0f, 3.25f, 4.0f};
  auto bytes = std::make_shared<std::string>(header);
  bytes->append(reinterpret_cast<const char*>(values), sizeof values);
  return {bytes, header.size()};
}

}  // namespace

TEST_CASE("an aligned binary input is a view of the body that keeps it alive") {
  for (size_t padding = 0; padding < 8; ++padding) {
    Body body = binary_body(padding);
    const char* data = body.bytes->data() + body.header_length;
    std::weak_ptr<std::string> alive = body.bytes;
    at::Tensor x;
    {
      v2::Request request = v2::decode_request(*body.bytes, int64_t(body.header_length), body.bytes);
      x = request.inputs.at(0).tensor;
    }
    const bool aligned = reinterpret_cast<uintptr_t>(data) % 4 == 0;
    CHECK((x.data_ptr() == static_cast<const void*>(data)) == aligned);
    body.bytes.reset();
    // A view keeps the body; a copy does not need it.
    CHECK(!alive.expired() == aligned);
    CHECK(x[2].item<float>() == 3.25f);
    x = at::Tensor();
    CHECK(alive.expired());
  }
}

TEST_CASE("outputs are named by dict key and tuple position, and framed after the JSON") {
  v2::Request request;
  request.binary_outputs = true;
  request.outputs = {{"b", std::nullopt}, {"a", false}};
  c10::Dict<std::string, at::Tensor> result;
  result.insert("a", at::arange(3, at::kLong));
  result.insert("b", at::ones({2}, at::kHalf));
  std::string out;
  size_t json_length = v2::encode_response("m", request, v2::named_outputs(result), out);
  CHECK(out.substr(0, json_length) ==
        R"({"model_name":"m","model_version":"1","outputs":[)"
        R"({"name":"b","datatype":"FP16","shape":[2],"parameters":{"binary_data_size":4}},)"
        R"({"name":"a","datatype":"INT64","shape":[3],"data":[0,1,2]}]})");
  CHECK(out.size() == json_length + 4);
  CHECK(std::memcmp(out.data() + json_length, "\x00\x3c\x00\x3c", 4) == 0);  // two float16 ones

  c10::IValue tuple = c10::ivalue::Tuple::create({c10::IValue(std::string("hi")), c10::IValue(int64_t(7))});
  v2::Request all;
  v2::encode_response("m", all, v2::named_outputs(tuple), out);
  CHECK(out ==
        R"({"model_name":"m","model_version":"1","outputs":[)"
        R"({"name":"OUTPUT__0","datatype":"BYTES","shape":[1],"data":["hi"]},)"
        R"({"name":"OUTPUT__1","datatype":"INT64","shape":[1],"data":[7]}]})");
}

TEST_CASE("a shape far larger than the data fails before any allocation") {
  // The most elements a shape may span: 2**59 - 1 float64s need almost 2**62 bytes.
  std::string body =
      R"({"inputs":[{"name":"x","shape":[576460752303423487],"datatype":"FP64","parameters":{"binary_data_size":8}}]})";
  size_t header_length = body.size();
  body.append(8, '\0');
  auto owner = std::make_shared<int>(0);
  CHECK_THROWS_WITH_AS(v2::decode_request(body, int64_t(header_length), owner),
                       "binary_data_size of input 'x' is 8 bytes, but shape [576460752303423487] of FP64 needs "
                       "4611686018427387896 bytes",
                       torch_serving::DecodeError);
  // One more element, or dimensions whose product passes it (a 0 counted as 1), is refused by the shape alone.
  for (const char* shape : {"[576460752303423488]", "[0,9223372036854775807,9223372036854775807]"}) {
    std::string huge = std::string(R"({"inputs":[{"name":"x","shape":)") + shape +
                       R"(,"datatype":"FP64","parameters":{"binary_data_size":0}}]})";
    CHECK_THROWS_WITH_AS(v2::decode_request(huge, int64_t(huge.size()), owner),
                         doctest::Contains("is too large: its dimensions multiply past 576460752303423487 elements"),
                         torch_serving::DecodeError);
  }
}

TEST_CASE("a request body parsed in place is kept alive by its binary views") {
  Body source = binary_body(0);
  std::shared_ptr<const torch_serving::RequestBody> body = torch_serving::RequestBody::copy_of(*source.bytes);
  std::weak_ptr<const torch_serving::RequestBody> alive = body;
  const char* data = body->view().data() + source.header_length;
  at::Tensor x;
  {
    v2::Request request = v2::decode_request(body->view(), int64_t(source.header_length), body, body->readable());
    x = request.inputs.at(0).tensor;
  }
  const bool aligned = reinterpret_cast<uintptr_t>(data) % 4 == 0;
  CHECK((x.data_ptr() == static_cast<const void*>(data)) == aligned);
  body.reset();
  CHECK(!alive.expired() == aligned);
  CHECK(x[2].item<float>() == 3.25f);
  x = at::Tensor();
  CHECK(alive.expired());
}
