// grpc++'s side of the gRPC service (grpc_transport.h): a generic callback
// service that reads each call's one request message and hands the call to
// the core, which ends it from whichever thread has its answer. Built into
// a library of its own, which links grpc++ and nothing of torch.
#include "grpc_transport.h"

#include <grpcpp/generic/async_generic_service.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server.h>
#include <grpcpp/server_builder.h>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <utility>

namespace torch_serving {
namespace {

// One call's life in grpc++: its request is read and handed over; it is
// answered (or failed) once, from any thread; grpc++ deletes it once the
// answer is sent.
class Reactor final : public grpc::ServerGenericBidiReactor {
 public:
  Reactor(GrpcHandler& handler, grpc::GenericCallbackServerContext* context)
      : handler_(handler), context_(*context) {
    StartRead(&message_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      Finish(grpc::Status(grpc::StatusCode::CANCELLED, "the call ended before its request was sent"));
      return;
    }
    const auto arrived = std::chrono::steady_clock::now();
    std::optional<double> client_deadline;
    const auto deadline = context_.deadline();
    if (deadline != std::chrono::system_clock::time_point::max()) {
      const std::chrono::duration<double> remaining = deadline - std::chrono::system_clock::now();
      client_deadline = steady_seconds(arrived) + remaining.count();
    }
    auto end = [this](int code, const std::string& message, std::string reply) {
      if (code == 0) {
        answer(std::move(reply));
      } else {
        Finish(grpc::Status(grpc::StatusCode(code), message));
      }
    };
    if (!message_.TrySingleSlice(&flat_).ok()) message_.DumpToSingleSlice(&flat_);
    const std::string_view message(reinterpret_cast<const char*>(flat_.begin()), flat_.size());
    handler_.handle(std::make_shared<GrpcCall>(context_.method(), steady_seconds(arrived), client_deadline, end),
                    message);
  }

  void OnDone() override { delete this; }

 private:
  void answer(std::string reply) {
    // The reply's bytes become the message's slice without a copy.
    auto* held = new std::string(std::move(reply));
    grpc::Slice slice(
        held->data(), held->size(), [](void* bytes) { delete static_cast<std::string*>(bytes); }, held);
    reply_ = grpc::ByteBuffer(&slice, 1);
    StartWriteAndFinish(&reply_, grpc::WriteOptions(), grpc::Status::OK);
  }

  GrpcHandler& handler_;
  grpc::GenericCallbackServerContext& context_;
  grpc::ByteBuffer message_;
  grpc::Slice flat_;  // the request in one piece, alive until the call ends
  grpc::ByteBuffer reply_;
};

class Service final : public grpc::CallbackGenericService {
 public:
  explicit Service(GrpcHandler& handler) : handler_(handler) {}

  grpc::ServerGenericBidiReactor* CreateReactor(grpc::GenericCallbackServerContext* context) override {
    return new Reactor(handler_, context);
  }

 private:
  GrpcHandler& handler_;
};

class Transport final : public GrpcTransport {
 public:
  explicit Transport(GrpcHandler& handler) : service_(handler) {}

  // False, with the reason in `error`, when the address cannot be bound.
  bool listen(const std::string& address, int max_receive, std::string& error) {
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort(address, grpc::InsecureServerCredentials(), &port);
    builder.RegisterCallbackGenericService(&service_);
    builder.SetMaxReceiveMessageSize(max_receive);
    builder.SetMaxSendMessageSize(-1);
    // Every worker listens on the port; the kernel spreads connections over them.
    builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 1);
    server_ = builder.BuildAndStart();
    if (server_ && port != 0) return true;
    error = "Failed to bind to address " + address;
    return false;
  }

  void stop(double grace) override {
    if (!server_) return;
    const auto after = std::chrono::duration_cast<std::chrono::system_clock::duration>(std::chrono::duration<double>(grace));
    server_->Shutdown(std::chrono::system_clock::now() + after);  // returns once every call has ended
    server_.reset();
  }

  ~Transport() override { stop(0); }

 private:
  Service service_;
  std::unique_ptr<grpc::Server> server_;
};

}  // namespace
}  // namespace torch_serving

extern "C" __attribute__((visibility("default"))) torch_serving::GrpcTransport* torch_serving_grpc_listen(
    const char* address, int max_receive, torch_serving::GrpcHandler* handler, std::string* error) {
  auto transport = std::make_unique<torch_serving::Transport>(*handler);
  if (!transport->listen(address, max_receive, *error)) return nullptr;
  return transport.release();
}
