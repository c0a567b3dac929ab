// The gRPC inference messages' wire form without grpc++: a request in the
// form stock clients send becomes the REST protocol's binary body, any
// other form is left to Python, and a REST answer becomes the reply.
#include <string>

#include "grpc_wire.h"

#include "doctest_after_torch.h"

namespace wire = torch_serving::grpc_wire;

namespace {

// Protobuf's wire form, written out for the test.
std::string varint(uint64_t value) {
  std::string out;
  while (value >= 0x80) {
    out += char(value | 0x80);
    value >>= 7;
  }
  return out + char(value);
}

std::string field(uint32_t number, const std::string& bytes) {
  return varint(uint64_t(number) << 3 | 2) + varint(bytes.size()) + bytes;
}

std::string varint_field(uint32_t number, uint64_t value) { return varint(uint64_t(number) << 3) + varint(value); }

std::string packed(std::initializer_list<int64_t> values) {
  std::string out;
  for (int64_t v : values) out += varint(uint64_t(v));
  return out;
}

const std::string kData4(16, '\x01');

// A ModelInferRequest for `tiny` with one FP32 [1, 4] input in raw_input_contents, and `extra` fields.
std::string tiny_request(const std::string& extra = "", const std::string& input_extra = "") {
  const std::string input = field(1, "x") + field(2, "FP32") + field(3, packed({1, 4})) + input_extra;
  return field(1, "tiny") + field(5, input) + extra + field(7, kData4);
}

}  // namespace

TEST_CASE("a request in raw_input_contents becomes the REST body the Python servicer would write") {
  const std::string second = field(1, "n") + field(2, "INT64") + varint_field(3, 2) + varint_field(3, uint64_t(-1));
  const std::string message = field(1, "tiny") + field(2, "1") + field(3, "id \"7\"") + field(5, field(1, "x") +
                              field(2, "FP32") + field(3, packed({1, 4}))) + field(5, second) +
                              field(6, field(1, "y")) + varint_field(15, 3) + field(7, kData4) + field(7, "ab");
  auto request = wire::rest_infer_request(message);
  REQUIRE(request);
  CHECK(request->model_name == "tiny");
  const std::string json =
      R"({"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","parameters":{"binary_data_size":16}},)"
      R"({"name":"n","shape":[2,-1],"datatype":"INT64","parameters":{"binary_data_size":2}}],)"
      R"("parameters":{"binary_data_output":true},"id":"id \"7\"","outputs":[{"name":"y","parameters":{"binary_data":true}}]})";
  CHECK(request->header_length == int64_t(json.size()));
  CHECK(std::string(request->body->view()) == json + kData4 + "ab");
}

TEST_CASE("a request in another form, or malformed, is left to Python") {
  CHECK(wire::rest_infer_request(tiny_request()));
  CHECK(wire::rest_infer_request(tiny_request(field(2, "1"))));
  const std::string parameter = field(1, "priority") + field(2, varint_field(2, 1));
  CHECK_FALSE(wire::rest_infer_request(tiny_request(field(4, parameter))));  // request parameters
  CHECK_FALSE(wire::rest_infer_request(tiny_request("", field(4, parameter))));  // input parameters
  CHECK_FALSE(wire::rest_infer_request(tiny_request("", field(5, ""))));  // typed contents
  CHECK_FALSE(wire::rest_infer_request(tiny_request(field(2, "2"))));  // a version this server has not
  CHECK_FALSE(wire::rest_infer_request(tiny_request(field(6, field(2, parameter)))));  // output parameters
  CHECK_FALSE(wire::rest_infer_request(tiny_request(field(7, kData4))));  // more raw contents than inputs
  CHECK_FALSE(wire::rest_infer_request(field(1, "tiny")));  // no inputs
  CHECK_FALSE(wire::rest_infer_request(field(1, "ti\xffny") + field(5, field(1, "x")) + field(7, "")));  // not UTF-8
  const std::string whole = tiny_request();
  CHECK_FALSE(wire::rest_infer_request(whole.substr(0, whole.size() - 1)));  // cut short
  CHECK_FALSE(wire::rest_infer_request(whole + varint(uint64_t(9) << 3 | 3)));  // a group
}

TEST_CASE("a REST answer becomes a ModelInferResponse with raw_output_contents") {
  const std::string json =
      R"({"model_name":"tiny","model_version":"1","id":"q","outputs":[)"
      R"({"name":"OUTPUT__0","datatype":"FP32","shape":[1,2],"parameters":{"binary_data_size":8}},)"
      R"({"name":"s","datatype":"INT64","shape":[],"parameters":{"binary_data_size":8}}]})";
  const std::string data = std::string(8, '\x02') + std::string(8, '\x03');
  const std::string expected =
      field(1, "tiny") + field(2, "1") + field(3, "q") +
      field(5, field(1, "OUTPUT__0") + field(2, "FP32") + field(3, packed({1, 2}))) +
      field(5, field(1, "s") + field(2, "INT64")) + field(6, std::string(8, '\x02')) + field(6, std::string(8, '\x03'));
  CHECK(wire::infer_response_message(json + data, json.size()) == expected);

  const std::string anonymous = R"({"model_name":"m","model_version":"1","outputs":[]})";
  CHECK(wire::infer_response_message(anonymous, anonymous.size()) == field(1, "m") + field(2, "1"));
}
