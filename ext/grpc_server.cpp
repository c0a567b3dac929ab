#include "grpc_server.h"

#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server_builder.h>

#include <chrono>
#include <cmath>
#include <stdexcept>
#include <utility>

#include "grpc_wire.h"
#include "servable.h"

namespace torch_serving {
namespace {

constexpr const char* kModelInfer = "/inference.GRPCInferenceService/ModelInfer";

double seconds(std::chrono::steady_clock::time_point at) {
  return std::chrono::duration<double>(at.time_since_epoch()).count();
}

std::string_view view(const grpc::Slice& slice) {
  return {reinterpret_cast<const char*>(slice.begin()), slice.size()};
}

// The model a queued call holds until it is answered, since the model's
// scheduler must outlive the call it queued; whichever comes second of the
// answer and the hold lets it go, never waiting for it to be destroyed.
class HeldModel {
 public:
  void keep(ModelCache::Model model) {
    std::lock_guard lock(mutex_);
    if (answered_) {
      release_without_waiting(std::move(model));
    } else {
      model_ = std::move(model);
    }
  }

  void release() {
    std::lock_guard lock(mutex_);
    answered_ = true;
    release_without_waiting(std::move(model_));
  }

 private:
  std::mutex mutex_;
  ModelCache::Model model_;
  bool answered_ = false;
};

}  // namespace

// One call's life in grpc++: its request is read, then it is answered (or
// failed) once, from whichever thread has its answer; grpc++ deletes it
// once the answer is sent.
class GrpcCall::Reactor final : public grpc::ServerGenericBidiReactor {
 public:
  Reactor(GrpcServer& server, grpc::GenericCallbackServerContext* context) : server_(server), context_(*context) {
    StartRead(&message_);
  }

  grpc::GenericCallbackServerContext& context() { return context_; }

  // The request's bytes, in one piece.
  std::string_view message() {
    if (!message_.TrySingleSlice(&flat_).ok()) message_.DumpToSingleSlice(&flat_);
    return view(flat_);
  }

  void reply(std::string response) {
    auto* held = new std::string(std::move(response));
    grpc::Slice slice(held->data(), held->size(), [](void* data) { delete static_cast<std::string*>(data); }, held);
    reply_ = grpc::ByteBuffer(&slice, 1);
    StartWriteAndFinish(&reply_, grpc::WriteOptions(), grpc::Status::OK);
  }

  void fail(int code, const std::string& message) { Finish(grpc::Status(grpc::StatusCode(code), message)); }

  void OnReadDone(bool ok) override {
    if (ok) {
      server_.answer(*this);
    } else {
      Finish(grpc::Status(grpc::StatusCode::CANCELLED, "the call ended before its request was sent"));
    }
  }

  void OnDone() override { delete this; }

 private:
  GrpcServer& server_;
  grpc::GenericCallbackServerContext& context_;
  grpc::ByteBuffer message_;
  grpc::Slice flat_;
  grpc::ByteBuffer reply_;
};

GrpcCall::~GrpcCall() {
  if (!finished_) finish(int(grpc::StatusCode::INTERNAL), "the server dropped the call unanswered", {});
}

void GrpcCall::raise_error() const {
  if (error_) std::rethrow_exception(error_);
}

void GrpcCall::finish(int code, const std::string& message, const std::string& response) {
  if (finished_.exchange(true)) return;
  if (code == 0) {
    reactor_->reply(response);
  } else {
    reactor_->fail(code, message);
  }
}

class GrpcServer::Service final : public grpc::CallbackGenericService {
 public:
  explicit Service(GrpcServer& server) : server_(server) {}

  grpc::ServerGenericBidiReactor* CreateReactor(grpc::GenericCallbackServerContext* context) override {
    return new GrpcCall::Reactor(server_, context);
  }

 private:
  GrpcServer& server_;
};

GrpcServer::GrpcServer(std::shared_ptr<Pipeline> pipeline, std::shared_ptr<Admission> admission,
                       const std::string& address, int max_receive, double timeout, bool measured)
    : pipeline_(std::move(pipeline)),
      admission_(std::move(admission)),
      timeout_(timeout),
      measured_(measured),
      service_(std::make_unique<Service>(*this)) {
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(address, grpc::InsecureServerCredentials(), &port);
  builder.RegisterCallbackGenericService(service_.get());
  builder.SetMaxReceiveMessageSize(max_receive);
  builder.SetMaxSendMessageSize(-1);
  // Every worker listens on the port; the kernel spreads connections over them.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 1);
  server_ = builder.BuildAndStart();
  if (!server_ || port == 0) throw std::runtime_error("Failed to bind to address " + address);
}

GrpcServer::~GrpcServer() { stop(0); }

std::vector<std::shared_ptr<GrpcCall>> GrpcServer::take_calls() {
  std::unique_lock lock(mutex_);
  ready_.wait(lock, [this] { return stopped_ || !calls_.empty(); });
  std::vector<std::shared_ptr<GrpcCall>> calls(std::make_move_iterator(calls_.begin()),
                                               std::make_move_iterator(calls_.end()));
  calls_.clear();
  return calls;
}

void GrpcServer::stop(double grace) {
  if (!stopping_.exchange(true)) {
    const auto deadline =
        std::chrono::system_clock::now() +
        std::chrono::duration_cast<std::chrono::system_clock::duration>(std::chrono::duration<double>(grace));
    server_->Shutdown(deadline);  // returns once every call has ended
  }
  {
    std::lock_guard lock(mutex_);
    stopped_ = true;
  }
  ready_.notify_all();
}

void GrpcServer::hand_to_python(std::shared_ptr<GrpcCall> call) {
  {
    std::lock_guard lock(mutex_);
    calls_.push_back(std::move(call));
  }
  ready_.notify_one();
}

void GrpcServer::answer(GrpcCall::Reactor& reactor) {
  const auto arrived = std::chrono::steady_clock::now();
  std::optional<double> client_deadline;
  const auto deadline = reactor.context().deadline();
  if (deadline != std::chrono::system_clock::time_point::max()) {
    client_deadline = seconds(arrived) + std::chrono::duration<double>(deadline - std::chrono::system_clock::now()).count();
  }
  std::shared_ptr<GrpcCall> call(new GrpcCall(&reactor, reactor.context().method(), seconds(arrived), client_deadline));
  if (call->method() == kModelInfer) {
    infer(reactor, std::move(call));
  } else {
    call->request_ = reactor.message();
    hand_to_python(std::move(call));
  }
}

void GrpcServer::infer(GrpcCall::Reactor& reactor, std::shared_ptr<GrpcCall> call) {
  const std::string_view message = reactor.message();
  std::optional<grpc_wire::RestInferRequest> rest = grpc_wire::rest_infer_request(message);
  std::optional<EventLoopRoute> route;
  if (rest) route = admission_->event_loop_route_named(rest->model_name, size_t(rest->header_length));
  // Python answers what this does not: a model to load, another form, a full worker (503).
  if (!route || !admission_->enter()) {
    call->request_ = message;
    hand_to_python(std::move(call));
    return;
  }
  call->model_ = route->model;
  call->size_ = rest->body->size();
  const auto arrived = std::chrono::steady_clock::time_point(
      std::chrono::duration_cast<std::chrono::steady_clock::duration>(std::chrono::duration<double>(call->arrived_)));
  Deadline deadline = Deadline::max();
  if (std::isfinite(timeout_) && timeout_ < 1e9) {
    deadline = arrived + std::chrono::duration_cast<Deadline::duration>(std::chrono::duration<double>(timeout_));
  }
  if (call->client_deadline_) {
    const auto remaining = std::chrono::duration<double>(*call->client_deadline_ - call->arrived_);
    deadline = std::min(deadline, arrived + std::chrono::duration_cast<Deadline::duration>(remaining));
  }
  PhaseTimes* times = measured_ ? &call->times_ : nullptr;
  if (route->work == EventLoopRoute::Work::kAnswer) {
    std::string response;
    size_t json_length = 0;
    std::exception_ptr error;
    try {
      EventLoopCall timed(admission_.get(), route->model);
      json_length = pipeline_->infer(route->model, route->name, rest->body, rest->header_length, response, times,
                                     deadline, /*file_checked=*/true);
    } catch (...) {
      error = std::current_exception();
    }
    complete(reactor, std::move(call), error, response, json_length);
    return;
  }
  auto deferred = std::make_shared<DeferredCall>();
  auto held = std::make_shared<HeldModel>();
  held->keep(pipeline_->submit_infer(route->model, route->name, rest->body, rest->header_length, deadline, deferred,
                                     [this, &reactor, call, deferred, held] {
                                       if (measured_) call->times_ = deferred->times;
                                       complete(reactor, call, deferred->error, deferred->response,
                                                deferred->json_length);
                                       held->release();
                                     }));
}

void GrpcServer::complete(GrpcCall::Reactor& reactor, std::shared_ptr<GrpcCall> call, std::exception_ptr error,
                          const std::string& response, size_t json_length) {
  admission_->leave();
  call->elapsed_ = seconds(std::chrono::steady_clock::now()) - call->arrived_;
  std::string reply;
  if (!error) {
    try {
      reply = grpc_wire::infer_response_message(response, json_length);
    } catch (...) {
      error = std::current_exception();
    }
  }
  if (error) {
    call->error_ = error;  // Python makes its status, as it makes REST's
    hand_to_python(std::move(call));
    return;
  }
  call->answered_ = true;
  call->finished_ = true;
  reactor.reply(std::move(reply));
  if (measured_) hand_to_python(std::move(call));
}

}  // namespace torch_serving
