// A request body held with simdjson's padding after it, so that it is
// parsed where it lies instead of being copied first. Shared by the call
// that reads it and by the tensors that view its binary parts.
#pragma once

#include <simdjson.h>

#include <cstring>
#include <memory>
#include <string_view>

namespace torch_serving {

class RequestBody {
 public:
  // `size` bytes for a body to be received in place; their content is
  // undefined until written.
  explicit RequestBody(size_t size) : data_(new char[size + simdjson::SIMDJSON_PADDING]), size_(size) {
    // The padding is read, never interpreted; zeroed so that memory checkers
    // see no uninitialised reads.
    std::memset(data_.get() + size, 0, simdjson::SIMDJSON_PADDING);
  }

  static std::shared_ptr<RequestBody> copy_of(std::string_view bytes) {
    auto body = std::make_shared<RequestBody>(bytes.size());
    std::memcpy(body->data(), bytes.data(), bytes.size());
    return body;
  }

  char* data() noexcept { return data_.get(); }
  size_t size() const noexcept { return size_; }
  std::string_view view() const noexcept { return {data_.get(), size_}; }
  // Bytes that may be read from view().data(): the body and its padding.
  size_t readable() const noexcept { return size_ + simdjson::SIMDJSON_PADDING; }

 private:
  std::unique_ptr<char[]> data_;
  size_t size_;
};

}  // namespace torch_serving
