// The Open Inference Protocol's gRPC service (inference.GRPCInferenceService)
// of one worker: its calls arrive on grpc++'s threads (grpc_transport.h),
// which never take the GIL.
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

#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "admission.h"
#include "grpc_call.h"
#include "grpc_transport.h"
#include "pipeline.h"

namespace torch_serving {

class GrpcServer final : public GrpcHandler {
 public:
  // Serves on `address` the models of `pipeline`, through the transport
  // library at `transport_library`, admitting calls through the worker's
  // `admission`, taking messages of up to `max_receive` bytes and giving
  // each inference call `timeout` seconds (or its client's deadline, when
  // sooner). With `measured`, every inference call answered here is passed
  // to Python too, for its metrics. Throws std::runtime_error when the
  // library cannot be loaded or the address bound.
  GrpcServer(std::shared_ptr<Pipeline> pipeline, std::shared_ptr<Admission> admission,
             const std::string& transport_library, const std::string& address, int max_receive, double timeout,
             bool measured);
  // Stops as stop() does, without a grace period.
  ~GrpcServer() override;
  GrpcServer(const GrpcServer&) = delete;
  GrpcServer& operator=(const GrpcServer&) = delete;

  void handle(std::shared_ptr<GrpcCall> call, std::string_view message) override;
  // Waits for calls for Python and returns them, oldest first; empty once
  // the server has stopped and none is left.
  std::vector<std::shared_ptr<GrpcCall>> take_calls();
  // Refuses new calls, lets those under way finish for up to `grace`
  // seconds and cancels the rest; returns once every call has ended (at
  // once when called before). Calls handed to Python must go on being
  // taken and finished meanwhile.
  void stop(double grace);

 private:
  // Answers an inference call here, or hands it to Python.
  void infer(std::shared_ptr<GrpcCall> call, std::string_view message);
  // Ends an inference call run here: answered, or failed with `error`.
  void complete(std::shared_ptr<GrpcCall> call, std::exception_ptr error, const std::string& response,
                size_t json_length);
  void hand_to_python(std::shared_ptr<GrpcCall> call);

  std::shared_ptr<Pipeline> pipeline_;
  std::shared_ptr<Admission> admission_;
  const double timeout_;
  const bool measured_;
  std::unique_ptr<GrpcTransport> transport_;
  std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<std::shared_ptr<GrpcCall>> calls_;
  bool stopped_ = false;
};

}  // namespace torch_serving
