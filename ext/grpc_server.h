// The Open Inference Protocol's gRPC service (inference.GRPCInferenceService)
// of one worker, served by grpc++ on threads that never take the GIL.
//
// An inference call in the form stock clients send (grpc_wire) for a loaded
// model is answered here, as a worker's HTTP event loop answers a V2
// request: at once for a quick model, else queued to the model's scheduler
// (Pipeline::submit_infer), batched with the HTTP requests it waits beside.
// Every other call, and every such call that fails, is handed to Python
// (GrpcServer::take_calls), which answers it through the REST endpoints'
// code: one implementation behind both transports, and one mapping of
// errors to statuses.
#pragma once

#include <grpcpp/generic/async_generic_service.h>
#include <grpcpp/server.h>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "admission.h"
#include "pipeline.h"

namespace torch_serving {

class GrpcServer;

// One call that Python sees: one to answer (its method and request), or an
// inference call answered here, for its metrics (answered()), or one that
// failed here, whose error Python turns into a status (answer()).
class GrpcCall {
 public:
  GrpcCall(const GrpcCall&) = delete;
  GrpcCall& operator=(const GrpcCall&) = delete;
  // Ends a call never finished with INTERNAL: whoever took it dropped it.
  ~GrpcCall();

  // The method's full name, e.g. "/inference.GRPCInferenceService/ModelInfer".
  const std::string& method() const { return method_; }
  // The serialized request.
  const std::string& request() const { return request_; }
  // When the call arrived, and the client's deadline if it gave one, in
  // seconds of the steady clock (Python's time.monotonic()).
  double arrived() const { return arrived_; }
  std::optional<double> client_deadline() const { return client_deadline_; }
  // Of an inference call run here: its model file (relative to the root), its
  // body's size in the REST form, and its phases.
  const std::string& model() const { return model_; }
  size_t size() const { return size_; }
  const PhaseTimes& times() const { return times_; }
  // Whether this server answered it (successfully), and in how many seconds.
  bool answered() const { return answered_; }
  double elapsed() const { return elapsed_; }
  // Throws the error that ended an inference call run here, as
  // Pipeline::infer would have thrown it.
  void raise_error() const;
  // Ends the call with the gRPC status `code` (0, OK: `response` is the
  // serialized reply) and its `message`. Only the first finish counts.
  void finish(int code, const std::string& message, const std::string& response);

 private:
  friend class GrpcServer;
  class Reactor;
  explicit GrpcCall(Reactor* reactor, std::string method, double arrived, std::optional<double> client_deadline)
      : reactor_(reactor), method_(std::move(method)), arrived_(arrived), client_deadline_(client_deadline) {}

  Reactor* reactor_;  // alive until finished: grpc++ ends a call only once it is finished
  std::atomic<bool> finished_{false};
  std::string method_;
  std::string request_;
  double arrived_;
  std::optional<double> client_deadline_;
  std::string model_;
  size_t size_ = 0;
  PhaseTimes times_;
  bool answered_ = false;
  double elapsed_ = 0;
  std::exception_ptr error_;
};

class GrpcServer {
 public:
  // Serves on `address` (beside other workers: SO_REUSEPORT) the models of
  // `pipeline`, admitting calls through the worker's `admission`, taking
  // messages of up to `max_receive` bytes and giving each inference call
  // `timeout` seconds (or its client's deadline, when sooner). With
  // `measured`, every inference call answered here is passed to Python too,
  // for its metrics. Throws std::runtime_error when the address cannot be
  // bound.
  GrpcServer(std::shared_ptr<Pipeline> pipeline, std::shared_ptr<Admission> admission, const std::string& address,
             int max_receive, double timeout, bool measured);
  // Stops as stop() does, without a grace period.
  ~GrpcServer();
  GrpcServer(const GrpcServer&) = delete;
  GrpcServer& operator=(const GrpcServer&) = delete;

  // Waits for calls for Python (GrpcCall) and returns them, oldest first;
  // empty once the server has stopped and none is left.
  std::vector<std::shared_ptr<GrpcCall>> take_calls();
  // Refuses new calls, lets those under way finish for up to `grace`
  // seconds and cancels the rest; returns once every call has ended (at
  // once when called before). Calls handed to Python must go on being
  // taken and finished meanwhile.
  void stop(double grace);

 private:
  friend class GrpcCall::Reactor;
  class Service;

  // Answers the call `reactor` read.
  void answer(GrpcCall::Reactor& reactor);
  // Answers an inference call here, or hands it to Python.
  void infer(GrpcCall::Reactor& reactor, std::shared_ptr<GrpcCall> call);
  // Ends an inference call run here: answered, or failed with `error`.
  void complete(GrpcCall::Reactor& reactor, std::shared_ptr<GrpcCall> call, std::exception_ptr error,
                const std::string& response, size_t json_length);
  void hand_to_python(std::shared_ptr<GrpcCall> call);

  std::shared_ptr<Pipeline> pipeline_;
  std::shared_ptr<Admission> admission_;
  const double timeout_;
  const bool measured_;
  std::unique_ptr<Service> service_;
  std::unique_ptr<grpc::Server> server_;
  std::atomic<bool> stopping_{false};
  std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<std::shared_ptr<GrpcCall>> calls_;
  bool stopped_ = false;
};

}  // namespace torch_serving
