// Binding Open Inference Protocol requests to models: inputs to a forward's
// arguments by name or position, results to named outputs, and a forward's
// signature to the model's description.
#pragma once

#include <ATen/core/function_schema.h>
#include <ATen/core/ivalue.h>

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "servable.h"
#include "v2.h"

namespace torch_serving::v2 {

// The position an input named like `INPUT__3` gives, if any.
std::optional<size_t> position_in(std::string_view name);

// Matches the request's inputs to the arguments of `schema` (a forward
// method's) by name, or by position for names like `INPUT__0`, and returns
// forward's positional arguments with left-out optional ones defaulted.
//
// Throws SignatureError when an input fits no argument, two give the same
// one, a required one is missing, or an input cannot become its argument's
// type.
std::vector<c10::IValue> bind_inputs(Request& request, const c10::FunctionSchema& schema);

// Names the parts of a forward's result: dict entries by key, tuple and
// list-of-tensor elements as OUTPUT__i, anything else (a list of lists too)
// as OUTPUT__0.
NamedOutputs named_outputs(const c10::IValue& result);

// Describes the inputs and outputs of a forward with `schema`. The schema
// records no dtypes or sizes: tensors are listed as FP32 of shape [-1].
ModelDescription describe_forward(const c10::FunctionSchema& schema);

// The same for any model, by its signature (Servable::signature): a
// TorchScript forward's as above; a package's flat tensors by name or as
// INPUT__i by position, and as its output names (BYTES cannot be a tensor).
std::vector<c10::IValue> bind_inputs(Request& request, const Servable& servable);
NamedOutputs named_outputs(const c10::IValue& result, const Servable& servable);
ModelDescription describe(const Servable& servable);

// Places each of `inputs` at the parameter it names: by its name among the
// `count` parameters' (`name_at(k)`), else by a position name like
// `INPUT__2`. Returns, for each parameter, the input that gives it, or null.
// For an input it cannot place it calls, and they must throw,
// `unplaced(input, position)` (position: none when the input names nothing,
// else the one it names past the parameters) or `repeated(first, second,
// position)`. A template, so that a request pays for no callable's copy.
template <class NameAt, class Unplaced, class Repeated>
std::vector<Input*> place_inputs(std::vector<Input>& inputs, size_t count, const NameAt& name_at,
                                 const Unplaced& unplaced, const Repeated& repeated) {
  std::vector<Input*> given(count, nullptr);
  for (Input& input : inputs) {
    std::optional<size_t> position;
    for (size_t k = 0; k < count; ++k) {
      if (name_at(k) == input.name) position = k;
    }
    if (!position) position = position_in(input.name);
    if (!position || *position >= count) unplaced(input, position);
    if (given[*position]) repeated(*given[*position], input, *position);
    given[*position] = &input;
  }
  return given;
}

}  // namespace torch_serving::v2
