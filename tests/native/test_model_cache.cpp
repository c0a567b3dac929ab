// ModelCache with counting loaders over real TorchScript files, and
// ModelFile's refusals.
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <torch/csrc/jit/api/module.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <thread>
#include <vector>

#include "errors.h"
#include "model_cache.h"
#include "model_file.h"
#include "script_module.h"

#include "doctest_after_torch.h"

namespace fs = std::filesystem;
using torch_serving::ModelCache;
using torch_serving::ModelFile;
using torch_serving::ModelLoadError;
using torch_serving::ModelNotFoundError;
using torch_serving::ScriptModule;

namespace {

// A folder of scripted models; model k (`m<k>.pt`) adds k to its input.
struct ModelFolder {
  fs::path root;
  int fd;

  ModelFolder() {
    char pattern[] = "/tmp/torch-serving-native-XXXXXX";
    root = mkdtemp(pattern);
    for (int k = 0; k < 4; ++k) {
      torch::jit::Module module("m" + std::to_string(k));
      module.define("def forward(self, x):\n  return x + " + std::to_string(k) + "\n");
      module.save((root / name(k)).string());
    }
    fd = ::open(root.c_str(), O_PATH | O_DIRECTORY);
  }
  ~ModelFolder() {
    ::close(fd);
    fs::remove_all(root);
  }

  static std::string name(int k) { return "m" + std::to_string(k) + ".pt"; }
  ModelFile open(int k) const { return ModelFile::open(fd, name(k), name(k), 0); }
};

// Loads real models, counting calls, optionally slowly or failing.
struct CountingLoader {
  const ModelFolder& folder;
  std::atomic<int> calls{0};
  std::atomic<bool> fail{false};
  std::chrono::milliseconds delay{0};

  ModelCache::Model get(ModelCache& cache, int k, bool reload = false) {
    ModelFile file = folder.open(k);
    return cache.get(ModelFolder::name(k), file.identity(), [&] {
      ++calls;
      std::this_thread::sleep_for(delay);
      if (fail) throw ModelLoadError(ModelFolder::name(k) + " failed on purpose");
      return ModelCache::Model(ScriptModule::load(file, ModelFolder::name(k), c10::kCPU, torch_serving::InstanceCounts{}, [](const std::string&) {}));
    }, reload);
  }
};

int64_t run(const ModelCache::Model& model, int64_t x) {
  std::vector<c10::IValue> args{at::tensor({x})};
  return model->run(std::move(args)).toTensor()[0].item<int64_t>();
}

}  // namespace

TEST_CASE("capacity plus buffer, then eviction down to capacity in LRU order") {
  ModelFolder folder;
  CountingLoader loader{folder};
  ModelCache cache(2, 1);
  loader.get(cache, 0);
  loader.get(cache, 1);
  loader.get(cache, 2);
  loader.get(cache, 0);  // m0 becomes the most recent
  CHECK(cache.paths().size() == 3);
  loader.get(cache, 3);
  const std::vector<std::string> expected{"m3.pt", "m0.pt"};
  CHECK(cache.paths() == expected);
  CHECK(cache.stats().evictions == 2);
  CHECK(loader.calls == 4);
}

TEST_CASE("use takes a loaded model as a hit, most recent, without its file") {
  ModelFolder folder;
  CountingLoader loader{folder};
  ModelCache cache(2, 0);
  CHECK(cache.use("m0.pt") == nullptr);  // absent: the caller looks it up as usual
  ModelCache::Model loaded = loader.get(cache, 0);
  loader.get(cache, 1);
  CHECK(cache.use("m0.pt") == loaded);
  CHECK(cache.stats().hits == 1);
  CHECK(cache.paths() == std::vector<std::string>{"m0.pt", "m1.pt"});
  loader.get(cache, 2);  // evicts m1, the least recently used
  CHECK(cache.paths() == std::vector<std::string>{"m2.pt", "m0.pt"});
  CHECK(loader.calls == 3);
}

TEST_CASE("executions are counted by key over loads, and after a model is dropped") {
  ModelFolder folder;
  CountingLoader loader{folder};
  ModelCache cache(1, 0);
  ModelCache::Model held = loader.get(cache, 0);
  run(held, 1);
  loader.get(cache, 1);  // evicts m0, which a request still holds
  run(held, 2);          // and finishes with
  run(loader.get(cache, 0), 3);  // loaded again, evicting m1
  auto totals = cache.execution_totals();
  std::sort(totals.begin(), totals.end());
  const std::vector<std::pair<std::string, uint64_t>> expected{{"m0.pt", 3}, {"m1.pt", 0}};
  CHECK(totals == expected);
  CHECK(held->executions() == 2);  // a model's own count starts at its load
  CHECK(cache.stats().evictions == 2);
}

TEST_CASE("concurrent misses for one model load it once") {
  ModelFolder folder;
  CountingLoader loader{folder};
  loader.delay = std::chrono::milliseconds(200);
  ModelCache cache(4, 0);
  std::vector<std::thread> threads;
  std::atomic<int> correct{0};
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&] { correct += run(loader.get(cache, 2), 5) == 7; });
  }
  for (auto& t : threads) t.join();
  CHECK(loader.calls == 1);
  CHECK(correct == 8);
}

TEST_CASE("a failed load is not cached and the next request loads again") {
  ModelFolder folder;
  CountingLoader loader{folder};
  loader.fail = true;
  ModelCache cache(2, 0);
  CHECK_THROWS_WITH_AS(loader.get(cache, 1), "m1.pt failed on purpose", ModelLoadError);
  CHECK(cache.paths().empty());
  loader.fail = false;
  CHECK(run(loader.get(cache, 1), 1) == 2);
  CHECK(loader.calls == 2);
}

TEST_CASE("a failed load in a full cache evicts nothing") {
  ModelFolder folder;
  CountingLoader loader{folder};
  ModelCache cache(2, 1);
  for (int k = 0; k < 3; ++k) loader.get(cache, k);
  const std::vector<std::string> before = cache.paths();
  loader.fail = true;
  CHECK_THROWS_AS(loader.get(cache, 3), ModelLoadError);
  CHECK(cache.paths() == before);
  CHECK(cache.stats().evictions == 0);
  loader.fail = false;
  loader.get(cache, 3);  // a successful load then evicts down to the capacity
  const std::vector<std::string> after{"m3.pt", "m2.pt"};
  CHECK(cache.paths() == after);
}

TEST_CASE("a model evicted while in use stays alive for its holder") {
  ModelFolder folder;
  CountingLoader loader{folder};
  ModelCache cache(1, 0);
  ModelCache::Model held = loader.get(cache, 3);
  loader.get(cache, 0);
  const std::vector<std::string> expected{"m0.pt"};
  CHECK(cache.paths() == expected);
  CHECK(run(held, 10) == 13);
}

TEST_CASE("a failed reload keeps the cached model") {
  ModelFolder folder;
  CountingLoader loader{folder};
  ModelCache cache(2, 0);
  ModelCache::Model first = loader.get(cache, 2);
  loader.fail = true;
  CHECK_THROWS_AS(loader.get(cache, 2, /*reload=*/true), ModelLoadError);
  CHECK(loader.get(cache, 2) == first);
  loader.fail = false;
  CHECK(loader.get(cache, 2, /*reload=*/true) != first);
}

TEST_CASE("model files: symlinks, escapes, special files and size limits are refused") {
  ModelFolder folder;
  fs::create_symlink(folder.root / "m1.pt", folder.root / "alias.pt");
  fs::create_directory(folder.root / "sub");
  fs::create_symlink(folder.root, folder.root / "sub" / "up");
  ::mkfifo((folder.root / "fifo.pt").c_str(), 0600);
  auto open = [&](const std::string& relative, int64_t max_size = 0) {
    return ModelFile::open(folder.fd, relative, relative, max_size);
  };
  CHECK_THROWS_WITH_AS(open("alias.pt"), "no model file alias.pt under the model root", ModelNotFoundError);
  CHECK_THROWS_AS(open("sub/up/m1.pt"), ModelNotFoundError);
  CHECK_THROWS_AS(open("../m1.pt"), ModelNotFoundError);
  CHECK_THROWS_AS(open("sub"), ModelNotFoundError);
  CHECK_THROWS_AS(open("fifo.pt"), ModelNotFoundError);
  CHECK_THROWS_AS(open("missing.pt"), ModelNotFoundError);
  CHECK_THROWS_WITH_AS(open("m1.pt", 10), doctest::Contains("over the model size limit of 10 bytes"),
                       ModelLoadError);
  CHECK(open("m1.pt").identity().size > 0);
}

TEST_CASE("a model file that cannot be opened for want of descriptors is not 'not found'") {
  ModelFolder folder;
  struct rlimit saved;
  ::getrlimit(RLIMIT_NOFILE, &saved);
  std::vector<int> held;
  // Use up the descriptors under a low limit, then open a model.
  struct rlimit low = saved;
  low.rlim_cur = 64;
  ::setrlimit(RLIMIT_NOFILE, &low);
  for (int fd; (fd = ::open("/dev/null", O_RDONLY)) >= 0;) held.push_back(fd);
  CHECK_THROWS_WITH_AS(folder.open(1), doctest::Contains("the server could not open model file m1.pt: Too many open files"),
                       torch_serving::ResourceError);
  for (int fd : held) ::close(fd);
  ::setrlimit(RLIMIT_NOFILE, &saved);
  CHECK(folder.open(1).identity().size > 0);
}

TEST_CASE("an erased model is dropped alone, and the next request loads it again") {
  ModelFolder folder;
  CountingLoader loader{folder};
  ModelCache cache(4, 0);
  ModelCache::Model held = loader.get(cache, 0);
  loader.get(cache, 1);
  CHECK(cache.erase(ModelFolder::name(0)));
  CHECK_FALSE(cache.erase(ModelFolder::name(0)));
  CHECK(cache.paths() == std::vector<std::string>{ModelFolder::name(1)});
  CHECK(run(held, 5) == 5);  // its holder still runs it
  loader.get(cache, 0);
  CHECK(loader.calls == 3);
  CHECK(cache.stats().evictions == 0);
}
