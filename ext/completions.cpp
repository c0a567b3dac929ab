// Ended calls' keys, signalled through an eventfd.
#include "completions.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <system_error>

namespace torch_serving {

Completions::Completions() : fd_(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {
  if (fd_ < 0) throw std::system_error(errno, std::generic_category(), "eventfd");
}

Completions::~Completions() { ::close(fd_); }

void Completions::add(uint64_t key) {
  std::lock_guard<std::mutex> lock(mutex_);
  keys_.push_back(key);
  // Readable exactly while keys wait: one write for the first, one read as they are taken.
  if (keys_.size() == 1) {
    const uint64_t one = 1;
    [[maybe_unused]] const ssize_t written = ::write(fd_, &one, sizeof one);
  }
}

std::vector<uint64_t> Completions::take() {
  std::lock_guard<std::mutex> lock(mutex_);
  uint64_t count = 0;
  [[maybe_unused]] const ssize_t read = ::read(fd_, &count, sizeof count);
  std::vector<uint64_t> keys;
  keys.swap(keys_);
  return keys;
}

}  // namespace torch_serving
