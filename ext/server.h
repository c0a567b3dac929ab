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
  // Serves the models beneath the directory `model_root`, refusing files
  // over `max_model_size` bytes (0: no limit).
  Server(const std::string& model_root, size_t capacity, size_t buffer, c10::Device device, int64_t max_model_size);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Answers one request for the model file `relative` to the model root
  // (called `name` in errors), writing the success envelope's JSON into
  // `response`.
  //
  // With probability `invalidation_prob` the cached model is loaded again
  // from disk first. Throws the errors of errors.h.
  void serve(const std::string& relative, const std::string& name, std::string_view body, double invalidation_prob,
             std::string& response);

  ModelCache& cache() { return cache_; }

 private:
  int root_fd_;
  c10::Device device_;
  int64_t max_model_size_;
  ModelCache cache_;
};

}  // namespace torch_serving
