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
  // errors), writing the success envelope's JSON into `response`.
  //
  // With probability `invalidation_prob` the cached model is loaded again
  // from disk first. Throws the errors of errors.h.
  void serve(const std::string& path, const std::string& name, std::string_view body, double invalidation_prob,
             std::string& response);

  ModelCache& cache() { return cache_; }

 private:
  ModelCache cache_;
};

}  // namespace torch_serving
