// TorchScript signatures: the kinds of their types, and their text.
#include "schema.h"

#include "json_tensor.h"

namespace torch_serving {
namespace {

std::string default_text(const c10::IValue& value) {
  if (value.isNone()) return "None";
  if (value.isBool()) return value.toBool() ? "True" : "False";
  if (value.isInt()) return std::to_string(value.toInt());
  if (value.isDouble()) return json::double_text(value.toDouble());  // as Python writes a float: 1.0, not 1
  if (value.isString()) return "'" + value.toStringRef() + "'";
  return "...";
}

}  // namespace

c10::TypePtr strip_optional(const c10::TypePtr& type) {
  if (auto optional = type->cast<c10::OptionalType>()) return optional->getElementType();
  return type;
}

std::string signature_text(const c10::FunctionSchema& schema) {
  std::string text = schema.name() + "(";
  const auto& params = schema.arguments();
  for (size_t i = 1; i < params.size(); ++i) {  // params[0] is `self`
    if (i > 1) text += ", ";
    text += params[i].name() + ": " + params[i].type()->annotation_str();
    if (params[i].default_value()) text += " = " + default_text(*params[i].default_value());
  }
  text += ") -> ";
  const auto& returns = schema.returns();
  if (returns.size() == 1) {
    text += returns[0].type()->annotation_str();
  } else {
    std::string items;
    for (const auto& r : returns) items += (items.empty() ? "" : ", ") + r.type()->annotation_str();
    text += returns.empty() ? "None" : "Tuple[" + items + "]";
  }
  return text;
}

Primitive primitive_of(const c10::TypePtr& type) {
  switch (type->kind()) {
    case c10::TypeKind::IntType: return Primitive::kInt;
    case c10::TypeKind::FloatType: return Primitive::kFloat;
    case c10::TypeKind::BoolType: return Primitive::kBool;
    case c10::TypeKind::StringType: return Primitive::kString;
    default: return Primitive::kNone;
  }
}

}  // namespace torch_serving
