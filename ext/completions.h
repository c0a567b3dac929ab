// The keys of calls that ended without a thread waiting for them, for a
// worker's event loop to collect: an eventfd it polls is readable while
// there are some.
#pragma once

#include <cstdint>
#include <mutex>
#include <vector>

namespace torch_serving {

class Completions {
 public:
  // Throws std::system_error when no eventfd can be made.
  Completions();
  ~Completions();
  Completions(const Completions&) = delete;
  Completions& operator=(const Completions&) = delete;

  // The eventfd, readable while keys wait to be taken.
  int fd() const { return fd_; }
  // Adds the key of a call that ended; from any thread.
  void add(uint64_t key);
  // Returns the keys added since the last take, oldest first.
  std::vector<uint64_t> take();

 private:
  const int fd_;
  std::mutex mutex_;
  std::vector<uint64_t> keys_;
};

}  // namespace torch_serving
