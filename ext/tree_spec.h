// The nesting of an AOTInductor package's inputs and outputs: its call spec
// holds torch.utils._pytree specs, as JSON, of how the flat tensors the
// compiled code takes and returns nest into the model's arguments and result.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/core/ivalue.h>

#include <string>
#include <string_view>
#include <vector>

namespace torch_serving {

struct TreeSpec {
  enum class Kind { kLeaf, kTuple, kList, kDict };

  Kind kind = Kind::kLeaf;
  std::vector<std::string> keys;   // kDict: the keys, in order, as text
  std::vector<TreeSpec> children;  // one per element or key
  size_t leaves = 1;               // tensors beneath, itself included

  // Parses a pytree spec as torch.utils._pytree.treespec_dumps writes it:
  // `[1, {"type": ..., "context": ..., "children_spec": [...]}]`. Tuples,
  // lists, named tuples and dicts (plain, ordered, immutable) nest; a node
  // of any other type is refused. Throws std::invalid_argument saying why.
  static TreeSpec parse(std::string_view json);

  // Appends the tensors of `value` to `leaves` in the spec's order. A tuple
  // or list node takes a JSON list or tuple of its length, a dict node a
  // dict with exactly its keys, a leaf a tensor. `label` names `value` in
  // errors, e.g. `argument 'x'`. Throws SignatureError.
  void flatten(const c10::IValue& value, const std::string& label, std::vector<at::Tensor>& leaves) const;

  // Builds the value this spec describes from `leaves`, starting at
  // `*next` and advancing it past the leaves used: tuples as tuples, lists
  // as lists, dicts as dicts with string keys.
  c10::IValue unflatten(const std::vector<at::Tensor>& leaves, size_t* next) const;

  // The path of each leaf, in order: the keys and indices on the way from
  // the root, joined by dots (`logits`, `pair.0`); empty for a leaf root.
  std::vector<std::string> leaf_paths() const;
};

}  // namespace torch_serving
