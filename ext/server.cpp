// The native request pipeline.
#include "server.h"

#include <fcntl.h>
#include <unistd.h>

#include <random>
#include <stdexcept>

#include "codec.h"

namespace torch_serving {
namespace {

bool draw(double probability) {
  if (probability <= 0) return false;
  thread_local std::mt19937_64 generator{std::random_device{}()};
  return std::uniform_real_distribution<double>(0.0, 1.0)(generator) < probability;
}

}  // namespace

Server::Server(const std::string& model_root, size_t capacity, size_t buffer, c10::Device device,
               int64_t max_model_size)
    : root_fd_(::open(model_root.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC)),
      device_(device),
      max_model_size_(max_model_size),
      cache_(capacity, buffer) {
  if (root_fd_ < 0) throw std::invalid_argument("model root " + model_root + " is not a directory");
}

Server::~Server() { ::close(root_fd_); }

void Server::serve(const std::string& relative, const std::string& name, std::string_view body,
                   double invalidation_prob, std::string& response) {
  // Decoding first means a bad body never costs a model load.
  std::vector<c10::IValue> args = decode_request(body);
  const ModelFile file = ModelFile::open(root_fd_, relative, name, max_model_size_);
  auto load = [&] { return Servable::load(file, name, device_); };
  auto model = cache_.get(relative, file.identity(), load, draw(invalidation_prob));
  encode_success(model->run(std::move(args)), response);
}

}  // namespace torch_serving
