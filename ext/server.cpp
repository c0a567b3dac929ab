// The native request pipeline.
#include "server.h"

#include <random>

#include "codec.h"

namespace torch_serving {
namespace {

bool draw(double probability) {
  if (probability <= 0) return false;
  thread_local std::mt19937_64 generator{std::random_device{}()};
  return std::uniform_real_distribution<double>(0.0, 1.0)(generator) < probability;
}

}  // namespace

Server::Server(size_t capacity, size_t buffer, c10::Device device)
    : cache_(capacity, buffer, [device](const std::string& path, const std::string& name) {
        return Servable::load(path, name, device);
      }) {}

void Server::serve(const std::string& path, const std::string& name, std::string_view body,
                   double invalidation_prob, std::string& response) {
  // Decoding first means a bad body never costs a model load.
  std::vector<c10::IValue> args = decode_request(body);
  auto model = cache_.get(path, name, draw(invalidation_prob));
  encode_success(model->run(std::move(args)), response);
}

}  // namespace torch_serving
