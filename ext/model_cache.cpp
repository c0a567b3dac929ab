// LRU bookkeeping and single-flight loading for ModelCache.
#include "model_cache.h"

#include <sys/stat.h>

#include <cerrno>
#include <chrono>

#include "errors.h"

namespace torch_serving {
namespace {

std::shared_future<ModelCache::Model> ready(ModelCache::Model model) {
  std::promise<ModelCache::Model> promise;
  promise.set_value(std::move(model));
  return promise.get_future().share();
}

bool is_ready(const std::shared_future<ModelCache::Model>& future) {
  return future.wait_for(std::chrono::seconds(0)) == std::future_status::ready;
}

}  // namespace

FileIdentity identify_file(const std::string& path, const std::string& name) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) {
    throw ModelNotFoundError("no model file " + name + " under the model root");
  }
  return FileIdentity{uint64_t(st.st_dev), uint64_t(st.st_ino), int64_t(st.st_size),
                      int64_t(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec};
}

ModelCache::ModelCache(size_t capacity, size_t buffer, Loader loader)
    : capacity_(capacity), buffer_(buffer), loader_(std::move(loader)) {
  if (capacity_ == 0) throw std::invalid_argument("model cache capacity must be at least 1, got 0");
}

ModelCache::Model ModelCache::get(const std::string& path, const std::string& name, bool reload) {
  const FileIdentity identity = identify_file(path, name);
  std::unique_lock<std::mutex> lock(mutex_);
  auto it = entries_.find(path);
  if (it != entries_.end() && it->second.identity == identity) {
    recency_.splice(recency_.begin(), recency_, it->second.recency);
    ++stats_.hits;
    std::shared_future<Model> cached = it->second.model;
    // A load still in flight is as fresh as a reload would be.
    if (!reload || !is_ready(cached)) {
      lock.unlock();
      return cached.get();
    }
    lock.unlock();
    Model fresh = load(path, name);
    lock.lock();
    it = entries_.find(path);
    if (it != entries_.end() && it->second.identity == identity) it->second.model = ready(fresh);
    return fresh;
  }

  // A miss, or the file changed on disk: the old model (if any) goes, and
  // requests still holding it finish with it.
  if (it != entries_.end()) {
    recency_.erase(it->second.recency);
    entries_.erase(it);
  }
  std::promise<Model> promise;
  const uint64_t generation = next_generation_++;
  recency_.push_front(path);
  entries_.emplace(path, Entry{identity, promise.get_future().share(), recency_.begin(), generation});
  evict_if_full();
  lock.unlock();

  try {
    Model model = load(path, name);
    promise.set_value(model);
    return model;
  } catch (...) {
    promise.set_exception(std::current_exception());
    lock.lock();
    it = entries_.find(path);
    if (it != entries_.end() && it->second.generation == generation) {
      recency_.erase(it->second.recency);
      entries_.erase(it);
    }
    throw;
  }
}

void ModelCache::evict_if_full() {
  if (entries_.size() <= capacity_ + buffer_) return;
  while (entries_.size() > capacity_) {
    entries_.erase(recency_.back());
    recency_.pop_back();
    ++stats_.evictions;
  }
}

ModelCache::Model ModelCache::load(const std::string& path, const std::string& name) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    ++stats_.loads;
  }
  try {
    return loader_(path, name);
  } catch (...) {
    std::lock_guard<std::mutex> lock(mutex_);
    ++stats_.failed_loads;
    throw;
  }
}

CacheStats ModelCache::stats() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return stats_;
}

std::vector<std::string> ModelCache::paths() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return {recency_.begin(), recency_.end()};
}

void ModelCache::clear() {
  std::lock_guard<std::mutex> lock(mutex_);
  entries_.clear();
  recency_.clear();
}

}  // namespace torch_serving
