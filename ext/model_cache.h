// The LRU cache of loaded models, safe to use from many threads at once.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <future>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "model_file.h"
#include "servable.h"

namespace torch_serving {

// Counters since the cache was made, for monitoring and tests.
struct CacheStats {
  uint64_t hits = 0;      // requests answered by a cached (or loading) model
  uint64_t loads = 0;     // loads started: misses, changed files and reloads
  uint64_t failed_loads = 0;
  uint64_t evictions = 0;  // models dropped to make room
};

// Holds at most `capacity + buffer` models. When an insert would pass that,
// least-recently-used models are dropped until `capacity` remain, so
// eviction happens in batches rather than on every miss.
//
// Concurrent misses for one file load it once; a failed load is never
// cached and evicts nothing (eviction follows a successful load); a model
// dropped while a request uses it lives until that request lets go of it.
class ModelCache {
 public:
  using Model = std::shared_ptr<const Servable>;
  using Loader = std::function<Model()>;

  ModelCache(size_t capacity, size_t buffer);

  // Returns the model cached under `key`, or the one `load` makes on a miss
  // or when the file's `identity` changed. With `reload`, a cached model is
  // loaded again and replaced only if that load succeeds.
  Model get(const std::string& key, const FileIdentity& identity, const Loader& load, bool reload = false);

  // Returns the model cached under `key` if it is loaded (and, given an
  // `identity`, was loaded from that file), else null; neither loads, nor
  // counts, nor checks the file itself.
  Model peek(const std::string& key, const FileIdentity* identity = nullptr) const;

  // Returns the model cached under `key` if it is loaded, as get() does
  // (a hit, now the most recently used), but without its file's identity:
  // for a caller that checked the file a moment ago (peek with an identity).
  // Null when it is not loaded (evicted since, or loading).
  Model use(const std::string& key);

  // Returns the cached keys, most recently used first.
  std::vector<std::string> paths() const;

  // Returns the loaded models with their keys, most recently used first.
  std::vector<std::pair<std::string, Model>> models() const;

  CacheStats stats() const;

  // The executions of every model loaded under each key since the cache
  // began. A key's count outlives its models, so that dropping one (evicted,
  // erased, replaced) loses none of its executions, those of requests that
  // still held it included.
  std::vector<std::pair<std::string, uint64_t>> execution_totals() const;

  // The error of each key whose last load failed, until a load of it
  // succeeds or it is erased.
  std::vector<std::pair<std::string, std::string>> load_failures() const;

  // Drops the model cached under `key`, if any; returns whether there was
  // one. Requests still using it finish with it.
  bool erase(const std::string& key);

  void clear();

 private:
  // Runs `load` and counts its outcome; the model counts its executions
  // under `key`.
  Model counted_load(const std::string& key, const Loader& load);

  struct Entry {
    FileIdentity identity;
    std::shared_future<Model> model;
    std::list<std::string>::iterator recency;
    uint64_t generation;
  };

  // Expects mutex_ held.
  void evict_if_full();

  const size_t capacity_;
  const size_t buffer_;

  mutable std::mutex mutex_;
  std::list<std::string> recency_;  // most recently used first
  std::unordered_map<std::string, Entry> entries_;
  uint64_t next_generation_ = 0;
  CacheStats stats_;
  std::unordered_map<std::string, std::shared_ptr<std::atomic<uint64_t>>> execution_totals_;
  std::unordered_map<std::string, std::string> load_failures_;
};

}  // namespace torch_serving
