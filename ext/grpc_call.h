// One gRPC call as the worker's native core sees it, whichever side holds
// it: the transport that carries it (grpc_transport.h), the core's server
// (grpc_server.h), or Python, which answers what the core does not.
#pragma once

#include <atomic>
#include <chrono>
#include <exception>
#include <functional>
#include <optional>
#include <string>
#include <utility>

#include "phase_times.h"

namespace torch_serving {

// gRPC's status code for a call its server dropped unanswered.
inline constexpr int kGrpcInternal = 13;

// `at` in the seconds a call's times are given in: the steady clock's, which
// are Python's time.monotonic()'s.
inline double steady_seconds(std::chrono::steady_clock::time_point at) {
  return std::chrono::duration<double>(at.time_since_epoch()).count();
}

// A call: what it asks, and the one way to end it. Python sees one to answer
// (its method and request), an inference call the core answered (for its
// metrics: answered()), or one the core ran that failed (raise_error()).
class GrpcCall {
 public:
  // Ends the call on the transport: a status code, its message, and the
  // serialized reply when the code is 0 (OK).
  using End = std::function<void(int code, const std::string& message, std::string reply)>;

  GrpcCall(std::string method, double arrived, std::optional<double> client_deadline, End end)
      : method_(std::move(method)), arrived_(arrived), client_deadline_(client_deadline), end_(std::move(end)) {}
  // Ends a call never finished with INTERNAL: whoever held it last dropped it.
  ~GrpcCall() { finish(kGrpcInternal, "the server dropped the call unanswered", {}); }
  GrpcCall(const GrpcCall&) = delete;
  GrpcCall& operator=(const GrpcCall&) = delete;

  // The method's full name, e.g. "/inference.GRPCInferenceService/ModelInfer".
  const std::string& method() const { return method_; }
  // The serialized request, of a call handed to Python.
  const std::string& request() const { return request_; }
  // When the call arrived, and the client's deadline if it gave one, in
  // seconds of the steady clock (Python's time.monotonic()).
  double arrived() const { return arrived_; }
  std::optional<double> client_deadline() const { return client_deadline_; }
  // Of an inference call the core ran: its model file (relative to the
  // root; empty for any other call), its body's size in the REST form, and
  // its phases.
  const std::string& model() const { return model_; }
  size_t size() const { return size_; }
  const PhaseTimes& times() const { return times_; }
  // Whether the core answered it (successfully), and in how many seconds.
  bool answered() const { return answered_; }
  double elapsed() const { return elapsed_; }
  // Throws the error that ended an inference call the core ran, as
  // Pipeline::infer would have thrown it; nothing for any other call.
  void raise_error() const {
    if (error_) std::rethrow_exception(error_);
  }
  // Ends the call with the gRPC status `code` (0: `reply` is the serialized
  // reply) and its `message`. Only the first finish counts.
  void finish(int code, const std::string& message, std::string reply) {
    if (!finished_.exchange(true)) end_(code, message, std::move(reply));
  }

 private:
  friend class GrpcServer;

  std::string method_;
  double arrived_;
  std::optional<double> client_deadline_;
  End end_;
  std::atomic<bool> finished_{false};
  std::string request_;
  std::string model_;
  size_t size_ = 0;
  PhaseTimes times_;
  bool answered_ = false;
  double elapsed_ = 0;
  std::exception_ptr error_;
};

}  // namespace torch_serving
