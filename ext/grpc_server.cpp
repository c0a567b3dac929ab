#include "grpc_server.h"

#include <dlfcn.h>

#include <chrono>
#include <stdexcept>
#include <utility>

#include "grpc_wire.h"
#include "servable.h"

namespace torch_serving {
namespace {

constexpr std::string_view kModelInfer = "/inference.GRPCInferenceService/ModelInfer";

Deadline steady_at(double seconds) {
  return Deadline(std::chrono::duration_cast<Deadline::duration>(std::chrono::duration<double>(seconds)));
}

// The transport library's server listening on `address`, or a
// std::runtime_error saying why not. The library stays loaded: its code
// ends the calls it made, whoever holds them.
std::unique_ptr<GrpcTransport> listen(const std::string& library, const std::string& address, int max_receive,
                                      GrpcHandler& handler) {
  // Local: grpc++'s symbols stay its own, never interposed on the process's.
  void* loaded = dlopen(library.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!loaded) throw std::runtime_error(std::string("cannot load the gRPC transport: ") + dlerror());
  auto entry = reinterpret_cast<GrpcListen>(dlsym(loaded, kGrpcListen));
  if (!entry) throw std::runtime_error(library + " has no " + kGrpcListen);
  std::string error;
  std::unique_ptr<GrpcTransport> transport(entry(address.c_str(), max_receive, &handler, &error));
  if (!transport) throw std::runtime_error(error);
  return transport;
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

GrpcServer::GrpcServer(std::shared_ptr<Pipeline> pipeline, std::shared_ptr<Admission> admission,
                       const std::string& transport_library, const std::string& address, int max_receive,
                       double timeout, bool measured)
    : pipeline_(std::move(pipeline)), admission_(std::move(admission)), timeout_(timeout), measured_(measured) {
  transport_ = listen(transport_library, address, max_receive, *this);
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
  transport_->stop(grace);
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

void GrpcServer::handle(std::shared_ptr<GrpcCall> call, std::string_view message) {
  if (call->method() == kModelInfer) {
    infer(std::move(call), message);
  } else {
    call->request_ = message;
    hand_to_python(std::move(call));
  }
}

void GrpcServer::infer(std::shared_ptr<GrpcCall> call, std::string_view message) {
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
  // The sooner of the server's own deadline and the client's, as NativeRunner.deadline gives it.
  Deadline deadline = deadline_after(steady_at(call->arrived_), timeout_);
  if (call->client_deadline_) deadline = std::min(deadline, steady_at(*call->client_deadline_));
  if (route->work == EventLoopRoute::Work::kAnswer) {
    std::string response;
    size_t json_length = 0;
    std::exception_ptr error;
    try {
      EventLoopCall timed(admission_.get(), route->model);
      json_length = pipeline_->infer(route->model, route->name, rest->body, rest->header_length, response,
                                     measured_ ? &call->times_ : nullptr, deadline, /*file_checked=*/true);
    } catch (...) {
      error = std::current_exception();
    }
    complete(std::move(call), error, response, json_length);
    return;
  }
  auto deferred = std::make_shared<DeferredCall>();
  auto held = std::make_shared<HeldModel>();
  held->keep(pipeline_->submit_infer(route->model, route->name, rest->body, rest->header_length, deadline, deferred,
                                     [this, call, deferred, held] {
                                       if (measured_) call->times_ = deferred->times;
                                       complete(call, deferred->error, deferred->response, deferred->json_length);
                                       held->release();
                                     }));
}

void GrpcServer::complete(std::shared_ptr<GrpcCall> call, std::exception_ptr error, const std::string& response,
                          size_t json_length) {
  admission_->leave();
  call->elapsed_ = steady_seconds(std::chrono::steady_clock::now()) - call->arrived_;
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
  call->finish(0, {}, std::move(reply));
  if (measured_) hand_to_python(std::move(call));
}

}  // namespace torch_serving
