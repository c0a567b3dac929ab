// Binding Open Inference Protocol requests to models.
#include "v2_binding.h"

#include <ATen/ATen.h>
#include <ATen/core/Dict.h>
#include <ATen/core/List.h>
#include <c10/util/accumulate.h>

#include "errors.h"
#include "json_tensor.h"

namespace torch_serving::v2 {
namespace {

using json::shape_text;

bool is_dict_of_tensors(const c10::TypePtr& type) {
  auto dict = strip_optional(type)->cast<c10::DictType>();
  return dict && dict->getKeyType()->kind() == c10::TypeKind::StringType &&
         dict->getValueType()->kind() == c10::TypeKind::TensorType;
}

bool is_integral(const Datatype& d) { return !d.is_bytes() && at::isIntegralType(d.dtype, /*includeBool=*/false); }
bool is_numeric(const Datatype& d) { return !d.is_bytes() && d.dtype != at::kBool; }

[[noreturn]] void fail_conversion(const Input& input, const c10::Argument& param, const std::string& why) {
  throw SignatureError("input " + single_quoted(input.name) + " (" + std::string(input.datatype->name) + ", shape " +
                       shape_text(input.shape) + ") cannot be argument " + single_quoted(param.name()) +
                       " of forward, which expects " + param.type()->repr_str() + ": " + why);
}

void check_primitive(const Input& input, const c10::Argument& param, Primitive kind) {
  const Datatype& d = *input.datatype;
  bool fits = (kind == Primitive::kInt && is_integral(d)) || (kind == Primitive::kFloat && is_numeric(d)) ||
              (kind == Primitive::kBool && d.dtype == at::kBool && !d.is_bytes()) ||
              (kind == Primitive::kString && d.is_bytes());
  if (!fits) {
    std::string wanted = kind == Primitive::kInt     ? "an integer datatype"
                         : kind == Primitive::kFloat ? "a numeric datatype"
                                                     : std::string(datatype_name(kind));
    fail_conversion(input, param, "give it as " + wanted);
  }
}

// Element `i` of an input as a `kind`, from `flat` (the input's tensor as one
// dimension) or, for BYTES, from its strings.
c10::IValue primitive_at(const Input& input, const at::Tensor& flat, int64_t i, Primitive kind) {
  switch (kind) {
    case Primitive::kInt: return flat[i].item<int64_t>();
    case Primitive::kFloat: return flat[i].item<double>();
    case Primitive::kBool: return flat[i].item<bool>();
    default: return input.strings[size_t(i)];
  }
}

at::Tensor flat_of(const Input& input) {
  return input.datatype->is_bytes() ? at::Tensor() : input.tensor.reshape({-1});
}

c10::IValue to_argument(Input& input, const c10::Argument& param) {
  c10::TypePtr type = strip_optional(param.type());
  const int64_t numel = c10::multiply_integers(input.shape);
  if (Primitive kind = primitive_of(type); kind != Primitive::kNone) {
    check_primitive(input, param, kind);
    if (numel != 1) fail_conversion(input, param, "it must hold exactly one element");
    return primitive_at(input, flat_of(input), 0, kind);
  }
  if (auto list = type->cast<c10::ListType>()) {
    if (Primitive kind = primitive_of(list->getElementType()); kind != Primitive::kNone) {
      check_primitive(input, param, kind);
      at::Tensor flat = flat_of(input);
      c10::impl::GenericList items(list->getElementType());
      items.reserve(size_t(numel));
      for (int64_t i = 0; i < numel; ++i) items.push_back(primitive_at(input, flat, i, kind));
      return items;
    }
  }
  if (input.datatype->is_bytes()) {
    if (type->kind() == c10::TypeKind::TensorType) fail_conversion(input, param, "BYTES cannot be a Tensor");
    c10::impl::GenericList items(c10::StringType::get());
    for (auto& s : input.strings) items.push_back(std::move(s));
    return items;
  }
  // A Tensor argument, or one V2 cannot express, which forward's type check
  // reports by name.
  return input.tensor;
}


std::string argument_names(const std::vector<c10::Argument>& params) {
  std::string names;
  for (size_t i = 1; i < params.size(); ++i) names += (i > 1 ? ", " : "") + params[i].name();
  return names;
}

// Describes a value of `type` named `name`; nothing for a type V2 cannot express.
std::optional<TensorDescription> describe_value(const std::string& name, const c10::TypePtr& type) {
  c10::TypePtr t = strip_optional(type);
  // The schema records no dtype for tensors; FP32 is torch's default one.
  if (t->kind() == c10::TypeKind::TensorType) return TensorDescription{name, "FP32", {-1}};
  if (Primitive kind = primitive_of(t); kind != Primitive::kNone) {
    return TensorDescription{name, datatype_name(kind), {1}};
  }
  if (auto list = t->cast<c10::ListType>(); list && primitive_of(list->getElementType()) != Primitive::kNone) {
    return TensorDescription{name, datatype_name(primitive_of(list->getElementType())), {-1}};
  }
  return std::nullopt;
}

// Matches the request's inputs to a package's flat input tensors, by name or
// as INPUT__i by position; returns one tensor per input, in call order.
std::vector<c10::IValue> bind_flat_inputs(Request& request, const FlatTensors& flat) {
  const std::vector<std::string>& names = flat.input_names;
  const std::vector<Input*> given = place_inputs(
      request.inputs, names.size(), [&](size_t k) -> const std::string& { return names[k]; },
      [&](const Input& input, std::optional<size_t>) {
        throw SignatureError("input '" + input.name + "' is none of the package's inputs: " + json::comma_separated(names) +
                             " (or INPUT__0 to INPUT__" + std::to_string(names.size() - 1) + " by position)");
      },
      [&](const Input& first, const Input& second, size_t position) {
        throw SignatureError("inputs '" + first.name + "' and '" + second.name + "' both give input '" +
                             names[position] + "'");
      });
  for (const Input& input : request.inputs) {
    if (input.datatype->is_bytes()) throw SignatureError("input '" + input.name + "' is BYTES, which cannot be a tensor");
  }
  std::vector<c10::IValue> tensors;
  tensors.reserve(names.size());
  for (size_t i = 0; i < names.size(); ++i) {
    if (!given[i]) throw SignatureError("missing input '" + names[i] + "' (INPUT__" + std::to_string(i) + ")");
    tensors.emplace_back(given[i]->tensor);
  }
  return tensors;
}

// Describes a package's flat tensors: by their recorded dtypes and shapes, or
// as torch's default dtype of any shape when none are recorded.
ModelDescription describe_flat(const FlatTensors& flat) {
  ModelDescription model{"torch_aoti", "torch_aoti", {}, {}};
  auto add = [](std::vector<TensorDescription>& to, const std::vector<std::string>& names,
                const std::vector<TensorSpec>& specs) {
    for (size_t i = 0; i < names.size(); ++i) {
      if (specs.empty()) {
        to.push_back({names[i], datatype_of(at::kFloat)->name, {-1}});
        continue;
      }
      // Recorded dtypes are /serve dtype names, every one of which V2 expresses.
      to.push_back({names[i], datatype_of(specs[i].dtype)->name, specs[i].shape});
    }
  };
  add(model.inputs, flat.input_names, flat.input_specs);
  add(model.outputs, flat.output_names, flat.output_specs);
  return model;
}

}  // namespace

std::optional<size_t> position_in(std::string_view name) {
  size_t mark = name.rfind("__");
  if (mark == std::string_view::npos || mark + 2 == name.size()) return std::nullopt;
  size_t position = 0;
  for (char c : name.substr(mark + 2)) {
    if (c < '0' || c > '9' || position > 1'000'000) return std::nullopt;
    position = position * 10 + size_t(c - '0');
  }
  return position;
}

NamedOutputs named_outputs(const c10::IValue& result) {
  NamedOutputs named;
  auto positional = [&](const auto& items) {
    for (const c10::IValue& item : items) named.emplace_back("OUTPUT__" + std::to_string(named.size()), item);
  };
  if (result.isGenericDict()) {
    for (const auto& entry : result.toGenericDict()) {
      const c10::IValue& key = entry.key();
      if (key.isString()) named.emplace_back(key.toStringRef(), entry.value());
      else if (key.isInt()) named.emplace_back(std::to_string(key.toInt()), entry.value());
      else throw EncodeError("the result is a dict with keys of type " + key.type()->repr_str() + ", which V2 cannot name outputs by");
    }
  } else if (result.isTuple()) {
    positional(result.toTupleRef().elements());
  } else if (result.isList() && result.toList().elementType()->kind() == c10::TypeKind::TensorType) {
    positional(result.toListRef());
  } else {
    named.emplace_back("OUTPUT__0", result);
  }
  return named;
}

ModelDescription describe_forward(const c10::FunctionSchema& schema) {
  ModelDescription model{"pytorch_torchscript", "pytorch_libtorch", {}, {}};
  const auto& params = schema.arguments();
  // A forward taking one Dict[str, Tensor] accepts inputs of any name.
  if (!(params.size() == 2 && is_dict_of_tensors(params[1].type()))) {
    for (size_t k = 1; k < params.size(); ++k) {
      if (auto input = describe_value(params[k].name(), params[k].type())) model.inputs.push_back(std::move(*input));
    }
  }
  const c10::TypePtr returned = schema.returns().size() == 1 ? schema.returns()[0].type() : c10::NoneType::get();
  auto tuple = returned->cast<c10::TupleType>();
  const std::vector<c10::TypePtr> parts = tuple ? tuple->elements().vec() : std::vector<c10::TypePtr>{returned};
  // Listed only when every output can be: dict keys and the length of a list
  // of tensors are known only at run time, and a partial list would hide the
  // outputs that V2 cannot express.
  for (size_t k = 0; k < parts.size(); ++k) {
    auto output = describe_value("OUTPUT__" + std::to_string(k), parts[k]);
    if (!output) {
      model.outputs.clear();
      break;
    }
    model.outputs.push_back(std::move(*output));
  }
  return model;
}

std::vector<c10::IValue> bind_inputs(Request& request, const c10::FunctionSchema& schema) {
  const auto& params = schema.arguments();  // params[0] is `self`
  const size_t count = params.size() - 1;
  // As Triton does, a forward taking one Dict[str, Tensor] gets every input
  // as an entry named after it.
  if (count == 1 && is_dict_of_tensors(params[1].type())) {
    c10::Dict<std::string, at::Tensor> dict;
    for (Input& input : request.inputs) {
      if (input.datatype->is_bytes()) fail_conversion(input, params[1], "BYTES cannot be a Tensor");
      dict.insert(input.name, input.tensor);
    }
    return {dict};
  }
  const std::vector<Input*> given = place_inputs(
      request.inputs, count, [&](size_t k) -> const std::string& { return params[k + 1].name(); },
      [&](const Input& input, std::optional<size_t> position) {
        if (!position) {
          throw SignatureError("input " + single_quoted(input.name) + " matches no argument of forward; its arguments are " +
                               argument_names(params) + " (or INPUT__0 to INPUT__" + std::to_string(count - 1) +
                               " by position); signature: " + signature_text(schema));
        }
        throw SignatureError("input " + single_quoted(input.name) + " names position " + std::to_string(*position) +
                             ", but forward takes " + std::to_string(count) + " argument(s); signature: " +
                             signature_text(schema));
      },
      [&](const Input& first, const Input& second, size_t position) {
        throw SignatureError("inputs " + single_quoted(first.name) + " and " + single_quoted(second.name) +
                             " both give argument " + single_quoted(params[position + 1].name()) + " of forward");
      });
  std::vector<c10::IValue> args;
  args.reserve(count);
  for (size_t k = 0; k < count; ++k) {
    const c10::Argument& param = params[k + 1];
    if (given[k]) {
      args.push_back(to_argument(*given[k], param));
    } else if (param.default_value()) {
      args.push_back(*param.default_value());
    } else {
      throw SignatureError("missing input for argument " + single_quoted(param.name()) + " (position " +
                           std::to_string(k) + ") of forward, which expects " + param.type()->repr_str() +
                           "; signature: " + signature_text(schema));
    }
  }
  return args;
}

std::vector<c10::IValue> bind_inputs(Request& request, const Servable& servable) {
  const Signature signature = servable.signature();
  if (auto schema = std::get_if<const c10::FunctionSchema*>(&signature)) return bind_inputs(request, **schema);
  return servable.arguments_from(bind_flat_inputs(request, *std::get<const FlatTensors*>(signature)));
}

NamedOutputs named_outputs(const c10::IValue& result, const Servable& servable) {
  const Signature signature = servable.signature();
  if (std::holds_alternative<const c10::FunctionSchema*>(signature)) return named_outputs(result);
  const std::vector<std::string>& names = std::get<const FlatTensors*>(signature)->output_names;
  const std::vector<c10::IValue> outputs = servable.outputs_of(result);
  NamedOutputs named;
  for (size_t i = 0; i < outputs.size(); ++i) named.emplace_back(names[i], outputs[i]);
  return named;
}

ModelDescription describe(const Servable& servable) {
  const Signature signature = servable.signature();
  if (auto schema = std::get_if<const c10::FunctionSchema*>(&signature)) return describe_forward(**schema);
  return describe_flat(*std::get<const FlatTensors*>(signature));
}

}  // namespace torch_serving::v2
