// TorchScript signatures, whatever protocol binds requests to them: the
// kinds of their argument types, and their text in error messages.
#pragma once

#include <ATen/core/function_schema.h>
#include <ATen/core/jit_type.h>

#include <string>

namespace torch_serving {

// Returns T for `Optional[T]`, `type` otherwise.
c10::TypePtr strip_optional(const c10::TypePtr& type);

// Renders `schema` the way a Python user wrote it, without `self`, e.g.
// `forward(x: Tensor, factor: float = 2.0) -> Tensor`. Built from names,
// type annotations and our own rendering of defaults: printing a schema
// through libtorch's stream operators crashed for float defaults on a
// torch 2.11 + CUDA build.
std::string signature_text(const c10::FunctionSchema& schema);

// The element kinds a primitive argument or list element accepts.
enum class Primitive { kInt, kFloat, kBool, kString, kNone };

// The kind of `type`; kNone for anything but int, float, bool and str.
Primitive primitive_of(const c10::TypePtr& type);

}  // namespace torch_serving
