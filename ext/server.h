// The whole /serve request path behind one call: decode, fetch the model,
// run it, encode the answer.
#pragma once

#include <c10/core/Device.h>

#include <string>
#include <string_view>

#include "model_cache.h"

namespace torch_serving {

class Server {
 public:
  Server(size_t capacity, size_t buffer, c10::Device device);

  // Answers one request for the model file at `path` (called `name` in
  // errors) and returns the success envelope as JSON bytes.
  //
  // With probability `invalidation_prob` the cached model is loaded again
  // from disk first. Throws the errors of errors.h.
  std::string serve(const std::string& path, const std::string& name, std::string_view body,
                    double invalidation_prob);

  ModelCache& cache() { return cache_; }

 private:
  ModelCache cache_;
};

}  // namespace torch_serving
