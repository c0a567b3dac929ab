// Parsing pytree specs, and nesting tensors by them.
#include "tree_spec.h"

#include <ATen/core/Dict.h>
#include <ATen/core/List.h>
#include <simdjson.h>

#include <stdexcept>

#include "errors.h"

namespace torch_serving {
namespace {

using simdjson::dom::element;

TreeSpec::Kind kind_named(std::string_view type) {
  if (type == "builtins.tuple" || type == "collections.namedtuple") return TreeSpec::Kind::kTuple;
  if (type == "builtins.list" || type == "torch.fx.immutable_collections.immutable_list") return TreeSpec::Kind::kList;
  if (type == "builtins.dict" || type == "collections.OrderedDict" || type == "collections.defaultdict" ||
      type == "torch.fx.immutable_collections.immutable_dict") {
    return TreeSpec::Kind::kDict;
  }
  throw std::invalid_argument("its call spec nests values of type " + std::string(type) +
                              ", which this server cannot build; tuples, lists and dicts can be served");
}

// The keys of a dict node, whose context is a JSON list of them as text.
std::vector<std::string> dict_keys(std::string_view context) {
  simdjson::dom::parser parser;
  simdjson::dom::array keys;
  if (parser.parse(context).get_array().get(keys)) throw std::invalid_argument("a dict node's keys are not a list");
  std::vector<std::string> result;
  for (element key : keys) {
    if (key.is_string()) {
      result.emplace_back(std::string_view(key.get_string()));
    } else if (key.is_int64()) {
      result.push_back(std::to_string(int64_t(key.get_int64())));
    } else {
      throw std::invalid_argument("a dict node has a key that is neither a string nor an integer");
    }
  }
  return result;
}

TreeSpec parse_node(element node) {
  TreeSpec spec;
  element type = node["type"];
  if (type.is_null()) return spec;
  std::string_view type_name;
  simdjson::dom::array children;
  if (type.get_string().get(type_name) || node["children_spec"].get_array().get(children)) {
    throw std::invalid_argument("a node of its call spec lacks a type or children");
  }
  spec.kind = kind_named(type_name);
  spec.leaves = 0;
  for (element child : children) {
    spec.children.push_back(parse_node(child));
    spec.leaves += spec.children.back().leaves;
  }
  if (spec.kind == TreeSpec::Kind::kDict) {
    std::string_view context;
    if (node["context"].get_string().get(context)) throw std::invalid_argument("a dict node has no keys");
    spec.keys = dict_keys(context);
    if (spec.keys.size() != spec.children.size()) throw std::invalid_argument("a dict node has keys and values apart");
  }
  return spec;
}

std::string listed_keys(const std::vector<std::string>& keys) {
  std::string text;
  for (const auto& key : keys) text += (text.empty() ? "'" : ", '") + key + "'";
  return text;
}

std::string received(const c10::IValue& value) { return c10::unshapedType(value.type())->repr_str(); }

}  // namespace

TreeSpec TreeSpec::parse(std::string_view json) {
  simdjson::dom::parser parser;
  simdjson::dom::array root;
  if (parser.parse(json).get_array().get(root) || root.size() != 2) {
    throw std::invalid_argument("its call spec is not a pytree spec");
  }
  int64_t protocol = 0;
  if (root.at(0).get_int64().get(protocol) || protocol != 1) {
    throw std::invalid_argument("its call spec uses a pytree protocol other than 1");
  }
  try {
    return parse_node(root.at(1));
  } catch (const simdjson::simdjson_error&) {
    throw std::invalid_argument("its call spec is not a pytree spec");
  }
}

void TreeSpec::flatten(const c10::IValue& value, const std::string& label, std::vector<at::Tensor>& out) const {
  switch (kind) {
    case Kind::kLeaf:
      if (!value.isTensor()) throw SignatureError(label + " expects a Tensor, received " + received(value));
      out.push_back(value.toTensor());
      return;
    case Kind::kTuple:
    case Kind::kList: {
      std::vector<c10::IValue> items;
      if (value.isList()) items = value.toListRef().vec();
      else if (value.isTuple()) items = value.toTupleRef().elements().vec();
      else throw SignatureError(label + " expects a list of " + std::to_string(children.size()) + ", received " + received(value));
      if (items.size() != children.size()) {
        throw SignatureError(label + " expects a list of " + std::to_string(children.size()) + ", received one of " +
                             std::to_string(items.size()));
      }
      for (size_t i = 0; i < items.size(); ++i) children[i].flatten(items[i], label + "[" + std::to_string(i) + "]", out);
      return;
    }
    case Kind::kDict: {
      if (!value.isGenericDict()) {
        throw SignatureError(label + " expects a dict with keys " + listed_keys(keys) + ", received " + received(value));
      }
      auto dict = value.toGenericDict();
      std::vector<std::string> given;
      for (const auto& entry : dict) {
        given.push_back(entry.key().isString() ? entry.key().toStringRef() : entry.key().tagKind());
      }
      bool same = given.size() == keys.size();
      for (const auto& key : keys) same = same && dict.contains(key);
      if (!same) {
        throw SignatureError(label + " expects a dict with keys " + listed_keys(keys) + ", received one with keys " +
                             listed_keys(given));
      }
      for (size_t i = 0; i < keys.size(); ++i) children[i].flatten(dict.at(keys[i]), label + "['" + keys[i] + "']", out);
      return;
    }
  }
}

c10::IValue TreeSpec::unflatten(const std::vector<at::Tensor>& leaves, size_t* next) const {
  switch (kind) {
    case Kind::kLeaf:
      return leaves.at((*next)++);
    case Kind::kTuple: {
      std::vector<c10::IValue> items;
      for (const TreeSpec& child : children) items.push_back(child.unflatten(leaves, next));
      return c10::ivalue::Tuple::create(std::move(items));
    }
    case Kind::kList: {
      c10::impl::GenericList items(c10::AnyType::get());
      for (const TreeSpec& child : children) items.push_back(child.unflatten(leaves, next));
      return items;
    }
    case Kind::kDict: {
      c10::impl::GenericDict dict(c10::StringType::get(), c10::AnyType::get());
      for (size_t i = 0; i < keys.size(); ++i) dict.insert(keys[i], children[i].unflatten(leaves, next));
      return dict;
    }
  }
  return {};
}

std::vector<std::string> TreeSpec::leaf_paths() const {
  if (kind == Kind::kLeaf) return {""};
  std::vector<std::string> paths;
  for (size_t i = 0; i < children.size(); ++i) {
    const std::string step = kind == Kind::kDict ? keys[i] : std::to_string(i);
    for (const std::string& below : children[i].leaf_paths()) paths.push_back(below.empty() ? step : step + "." + below);
  }
  return paths;
}

}  // namespace torch_serving
