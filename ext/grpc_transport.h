// The seam between a worker's native core and grpc++, which lives in a
// library of its own (torch_serving/_grpc_transport*.so, ext/grpc_transport.cpp)
// that only a worker serving gRPC loads: grpc++ brings some fifty shared
// libraries, and loaded they cost every request of the process a few
// percent, gRPC or not (docs/performance.md). The two sides meet through
// virtual calls and the library's one C entry point, so that neither links
// the other.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "grpc_call.h"

namespace torch_serving {

// What takes the calls a transport reads (GrpcServer).
class GrpcHandler {
 public:
  virtual ~GrpcHandler() = default;
  // Takes `call`, whose request is `message` (valid until the call is
  // finished); from the transport's threads, which it must not hold long.
  virtual void handle(std::shared_ptr<GrpcCall> call, std::string_view message) = 0;
};

// A listening grpc++ server that hands every call it reads to its handler.
class GrpcTransport {
 public:
  virtual ~GrpcTransport() = default;
  // Refuses new calls, lets those under way finish for up to `grace`
  // seconds and cancels the rest; returns once every call has ended.
  virtual void stop(double grace) = 0;
};

// The library's entry point, kGrpcListen: listens on `address` (beside the
// other workers: SO_REUSEPORT), taking messages of up to `max_receive`
// bytes, and hands every call to `handler`, which outlives the transport.
// Returns null, with the reason in `error`, when it cannot listen.
using GrpcListen = GrpcTransport* (*)(const char* address, int max_receive, GrpcHandler* handler, std::string* error);
inline constexpr const char* kGrpcListen = "torch_serving_grpc_listen";

}  // namespace torch_serving
