// Call-spec pytrees without a package: parsing what torch writes, flattening
// typed arguments in its order (and refusing what does not fit), nesting
// flat tensors back, and naming leaves.
#include <ATen/ATen.h>
#include <ATen/core/Dict.h>
#include <ATen/core/List.h>

#include <stdexcept>

#include "errors.h"
#include "tree_spec.h"

#include "doctest_after_torch.h"

using torch_serving::SignatureError;
using torch_serving::TreeSpec;

namespace {

// What torch.utils._pytree.treespec_dumps writes for ((x, {"b": .., "c": ..}), {}).
constexpr char kCallSpec[] =
    R"([1, {"type": "builtins.tuple", "context": "null", "children_spec": [)"
    R"({"type": "builtins.tuple", "context": "null", "children_spec": [)"
    R"({"type": null, "context": null, "children_spec": []},)"
    R"({"type": "builtins.dict", "context": "[\"b\", \"c\"]", "children_spec": [)"
    R"({"type": null, "context": null, "children_spec": []}, {"type": null, "context": null, "children_spec": []}]}]},)"
    R"({"type": "builtins.dict", "context": "[]", "children_spec": []}]}])";

c10::IValue dict_of(std::initializer_list<std::pair<std::string, at::Tensor>> entries) {
  c10::Dict<std::string, at::Tensor> dict;
  for (const auto& [key, value] : entries) dict.insert(key, value);
  return dict;
}

}  // namespace

TEST_CASE("a call spec parses into its nesting, with leaf counts and dict keys") {
  const TreeSpec call = TreeSpec::parse(kCallSpec);
  REQUIRE(call.kind == TreeSpec::Kind::kTuple);
  CHECK(call.leaves == 3);
  const TreeSpec& args = call.children[0];
  CHECK(args.children[1].kind == TreeSpec::Kind::kDict);
  CHECK(args.children[1].keys == std::vector<std::string>{"b", "c"});
  CHECK(args.leaf_paths() == std::vector<std::string>{"0", "1.b", "1.c"});
}

TEST_CASE("flattening follows the spec's key order and nesting rebuilds the structure") {
  const TreeSpec args = TreeSpec::parse(kCallSpec).children[0];
  at::Tensor x = at::ones({2, 4}), b = at::zeros({2, 3}), c = at::full({5}, 2.0);
  std::vector<at::Tensor> flat;
  args.children[0].flatten(x, "argument 'x'", flat);
  args.children[1].flatten(dict_of({{"c", c}, {"b", b}}), "argument 'extra'", flat);
  REQUIRE(flat.size() == 3);
  CHECK(flat[1].equal(b));
  CHECK(flat[2].equal(c));
  size_t next = 1;
  c10::IValue rebuilt = args.children[1].unflatten(flat, &next);
  CHECK(next == 3);
  CHECK(rebuilt.toGenericDict().at("c").toTensor().equal(c));
}

TEST_CASE("values that do not fit the spec are refused naming where") {
  const TreeSpec args = TreeSpec::parse(kCallSpec).children[0];
  std::vector<at::Tensor> flat;
  CHECK_THROWS_WITH_AS(args.children[1].flatten(dict_of({{"b", at::ones({1})}}), "argument 'extra'", flat),
                       "argument 'extra' expects a dict with keys 'b', 'c', received one with keys 'b'",
                       SignatureError);
  CHECK_THROWS_WITH_AS(args.children[0].flatten(c10::IValue(3), "argument 'x'", flat),
                       "argument 'x' expects a Tensor, received int", SignatureError);
  c10::List<at::Tensor> two({at::ones({1}), at::ones({1})});
  CHECK_THROWS_WITH_AS(args.flatten(c10::IValue(two), "the arguments", flat),
                       "the arguments[1] expects a dict with keys 'b', 'c', received Tensor", SignatureError);
}

TEST_CASE("node types the server cannot build are refused at parse") {
  CHECK_THROWS_WITH_AS(TreeSpec::parse(R"([1, {"type": "mymodule.Point", "context": "null", "children_spec": []}])"),
                       "its call spec nests values of type mymodule.Point, which this server cannot build; tuples, "
                       "lists and dicts can be served",
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(TreeSpec::parse("[2, {}]"), "its call spec uses a pytree protocol other than 1",
                       std::invalid_argument);
}
