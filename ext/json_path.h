// A JSON path kept on the stack while walking a document, rendered only when
// an error needs it, so the happy path never builds strings.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace torch_serving {

struct JsonPath {
  const JsonPath* parent = nullptr;
  std::string_view key;  // object member name; unused when index >= 0
  int64_t index = -1;    // array index, or -1 for a member or the root

  JsonPath member(std::string_view name) const { return {this, name, -1}; }
  JsonPath element(int64_t i) const { return {this, {}, i}; }

  // Renders the path, e.g. `body[2].value.x.shape`.
  std::string str() const {
    std::string out = parent ? parent->str() : std::string();
    if (index >= 0) {
      out += '[';
      out += std::to_string(index);
      out += ']';
    } else {
      if (parent) out += '.';
      out += key;
    }
    return out;
  }
};

}  // namespace torch_serving
