// ModelCache with counting loaders over real TorchScript files.
#include <torch/csrc/jit/api/module.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <thread>
#include <vector>

#include "errors.h"
#include "model_cache.h"

#include "doctest_after_torch.h"

namespace fs = std::filesystem;
using torch_serving::ModelCache;
using torch_serving::ModelLoadError;
using torch_serving::Servable;

namespace {

// A folder of scripted models; model k adds k to its input.
struct ModelFolder {
  fs::path root;

  ModelFolder() {
    char pattern[] = "/tmp/torch-serving-native-XXXXXX";
    root = mkdtemp(pattern);
    for (int k = 0; k < 4; ++k) {
      torch::jit::Module module("m" + std::to_string(k));
      module.define("def forward(self, x):\n  return x + " + std::to_string(k) + "\n");
      module.save(path(k));
    }
  }
  ~ModelFolder() { fs::remove_all(root); }

  std::string path(int k) const { return (root / ("m" + std::to_string(k) + ".pt")).string(); }
};

// Loads real models, counting calls, optionally slowly or failing.
struct CountingLoader {
  std::atomic<int> calls{0};
  std::atomic<bool> fail{false};
  std::chrono::milliseconds delay{0};

  ModelCache::Loader loader() {
    return [this](const std::string& path, const std::string& name) {
      ++calls;
      std::this_thread::sleep_for(delay);
      if (fail) throw ModelLoadError(name + " failed on purpose");
      return Servable::load(path, name, c10::kCPU);
    };
  }
};

int64_t run(const ModelCache::Model& model, int64_t x) {
  std::vector<c10::IValue> args{at::tensor({x})};
  return model->run(std::move(args)).toTensor()[0].item<int64_t>();
}

}  // namespace

TEST_CASE("capacity plus buffer, then eviction down to capacity in LRU order") {
  ModelFolder folder;
  CountingLoader counter;
  ModelCache cache(2, 1, counter.loader());
  cache.get(folder.path(0), "m0");
  cache.get(folder.path(1), "m1");
  cache.get(folder.path(2), "m2");
  cache.get(folder.path(0), "m0");  // m0 becomes the most recent
  CHECK(cache.paths().size() == 3);
  cache.get(folder.path(3), "m3");
  const std::vector<std::string> expected{folder.path(3), folder.path(0)};
  CHECK(cache.paths() == expected);
  CHECK(cache.stats().evictions == 2);
  CHECK(counter.calls == 4);
}

TEST_CASE("concurrent misses for one model load it once") {
  ModelFolder folder;
  CountingLoader counter;
  counter.delay = std::chrono::milliseconds(200);
  ModelCache cache(4, 0, counter.loader());
  std::vector<std::thread> threads;
  std::atomic<int> correct{0};
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&] { correct += run(cache.get(folder.path(2), "m2"), 5) == 7; });
  }
  for (auto& t : threads) t.join();
  CHECK(counter.calls == 1);
  CHECK(correct == 8);
}

TEST_CASE("a failed load is not cached and the next request loads again") {
  ModelFolder folder;
  CountingLoader counter;
  counter.fail = true;
  ModelCache cache(2, 0, counter.loader());
  CHECK_THROWS_WITH_AS(cache.get(folder.path(1), "m1"), "m1 failed on purpose", ModelLoadError);
  CHECK(cache.paths().empty());
  counter.fail = false;
  CHECK(run(cache.get(folder.path(1), "m1"), 1) == 2);
  CHECK(counter.calls == 2);
}

TEST_CASE("a model evicted while in use stays alive for its holder") {
  ModelFolder folder;
  CountingLoader counter;
  ModelCache cache(1, 0, counter.loader());
  ModelCache::Model held = cache.get(folder.path(3), "m3");
  cache.get(folder.path(0), "m0");
  const std::vector<std::string> expected{folder.path(0)};
  CHECK(cache.paths() == expected);
  CHECK(run(held, 10) == 13);
}

TEST_CASE("a failed reload keeps the cached model") {
  ModelFolder folder;
  CountingLoader counter;
  ModelCache cache(2, 0, counter.loader());
  ModelCache::Model first = cache.get(folder.path(2), "m2");
  counter.fail = true;
  CHECK_THROWS_AS(cache.get(folder.path(2), "m2", /*reload=*/true), ModelLoadError);
  CHECK(cache.get(folder.path(2), "m2") == first);
  counter.fail = false;
  CHECK(cache.get(folder.path(2), "m2", /*reload=*/true) != first);
}
