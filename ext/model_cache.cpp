// LRU bookkeeping and single-flight loading for ModelCache.
#include "model_cache.h"

#include <chrono>
#include <stdexcept>

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

// The model a finished load made; null while it loads, or if it failed
// (such an entry is about to be dropped).
ModelCache::Model loaded(const std::shared_future<ModelCache::Model>& future) {
  if (!is_ready(future)) return nullptr;
  try {
    return future.get();
  } catch (...) {
    return nullptr;
  }
}

}  // namespace

ModelCache::ModelCache(size_t capacity, size_t buffer) : capacity_(capacity), buffer_(buffer) {
  if (capacity_ == 0) throw std::invalid_argument("model cache capacity must be at least 1, got 0");
}

ModelCache::Model ModelCache::get(const std::string& key, const FileIdentity& identity, const Loader& load,
                                  bool reload) {
  std::unique_lock<std::mutex> lock(mutex_);
  auto it = entries_.find(key);
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
    Model fresh = counted_load(key, load);
    lock.lock();
    it = entries_.find(key);
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
  recency_.push_front(key);
  entries_.emplace(key, Entry{identity, promise.get_future().share(), recency_.begin(), generation});
  lock.unlock();

  try {
    Model model = counted_load(key, load);
    promise.set_value(model);
    // Evicting only now means a file that fails to load never costs a
    // healthy model its place.
    lock.lock();
    evict_if_full();
    return model;
  } catch (...) {
    promise.set_exception(std::current_exception());
    lock.lock();
    it = entries_.find(key);
    if (it != entries_.end() && it->second.generation == generation) {
      recency_.erase(it->second.recency);
      entries_.erase(it);
    }
    throw;
  }
}

ModelCache::Model ModelCache::use(const std::string& key) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = entries_.find(key);
  if (it == entries_.end()) return nullptr;
  Model model = loaded(it->second.model);
  if (!model) return nullptr;
  recency_.splice(recency_.begin(), recency_, it->second.recency);
  ++stats_.hits;
  return model;
}

void ModelCache::evict_if_full() {
  if (entries_.size() <= capacity_ + buffer_) return;
  while (entries_.size() > capacity_) {
    entries_.erase(recency_.back());
    recency_.pop_back();
    ++stats_.evictions;
  }
}

ModelCache::Model ModelCache::counted_load(const std::string& key, const Loader& load) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    ++stats_.loads;
  }
  Model model;
  try {
    model = load();
  } catch (const std::exception& e) {
    std::lock_guard<std::mutex> lock(mutex_);
    ++stats_.failed_loads;
    load_failures_[key] = e.what();
    throw;
  } catch (...) {
    std::lock_guard<std::mutex> lock(mutex_);
    ++stats_.failed_loads;
    throw;
  }
  std::lock_guard<std::mutex> lock(mutex_);
  load_failures_.erase(key);
  auto& total = execution_totals_[key];
  if (!total) total = std::make_shared<std::atomic<uint64_t>>(0);
  model->count_executions_in(total);
  return model;
}

std::vector<std::pair<std::string, std::string>> ModelCache::load_failures() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return {load_failures_.begin(), load_failures_.end()};
}

CacheStats ModelCache::stats() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return stats_;
}

std::vector<std::pair<std::string, uint64_t>> ModelCache::execution_totals() const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<std::pair<std::string, uint64_t>> out;
  for (const auto& [key, total] : execution_totals_) out.emplace_back(key, total->load(std::memory_order_relaxed));
  return out;
}

ModelCache::Model ModelCache::peek(const std::string& key, const FileIdentity* identity) const {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = entries_.find(key);
  if (it == entries_.end() || (identity && !(it->second.identity == *identity))) return nullptr;
  return loaded(it->second.model);
}

std::vector<std::pair<std::string, ModelCache::Model>> ModelCache::models() const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<std::pair<std::string, Model>> out;
  for (const std::string& key : recency_) {
    if (Model model = loaded(entries_.at(key).model)) out.emplace_back(key, std::move(model));
  }
  return out;
}

std::vector<std::string> ModelCache::paths() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return {recency_.begin(), recency_.end()};
}

bool ModelCache::erase(const std::string& key) {
  std::lock_guard<std::mutex> lock(mutex_);
  load_failures_.erase(key);
  auto it = entries_.find(key);
  if (it == entries_.end()) return false;
  recency_.erase(it->second.recency);
  entries_.erase(it);
  return true;
}

void ModelCache::clear() {
  std::lock_guard<std::mutex> lock(mutex_);
  load_failures_.clear();
  entries_.clear();
  recency_.clear();
}

}  // namespace torch_serving
