// Which requests a worker holds, which of them its event loop answers
// itself, and the loop's time budget: one authority, shared by the worker's
// HTTP event loop and its gRPC service.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "executor.h"
#include "pipeline.h"

namespace torch_serving {

// How a worker's event loop takes a request without a thread (Admission::event_loop_route).
struct EventLoopRoute {
  enum class Work {
    kAnswer,      // answered at once
    kQueueServe,  // queued: Pipeline::submit_serve
    kQueueInfer,  // queued: Pipeline::submit_infer
  };
  std::string model;  // the model file, relative to the root
  std::string name;   // the model's name in its errors: the /serve identifier, or the V2 name
  Work work;
};

class Admission : public CallCount {
 public:
  // Admits at most `limit` requests at once, HTTP and gRPC together, for the
  // models `pipeline` serves, counting the calls abandoned at their deadline
  // that still run; tells `warn` when a model leaves the loop.
  Admission(std::shared_ptr<const Pipeline> pipeline, size_t limit, Warn warn);

  size_t limit() const { return limit_; }

  // Counts one more request and returns true, or returns false when the
  // worker holds its limit (the caller answers 503 at once: a request
  // queued beyond it would wait without a bound).
  bool enter();
  // Counts a call its request abandoned at the deadline (Executor), which
  // still takes a thread until it ends.
  void hold() override;
  // Stops counting a request that entered, or a call that was held.
  void leave() override;

  // How a worker's event loop takes the request `method target` with a
  // body of `body_size` bytes, when it takes it without a thread: answered
  // at once (its model loaded, unchanged on disk, quick and not kept off
  // the loop by its time budget, its body small), or queued (its model
  // loaded and unchanged, its body small; a /serve query naming the model
  // once and nothing else, or a V2 inference path without a query: a
  // queued request runs before the application reads its target). None
  // when it takes a thread. Handing a small request to a thread and its
  // connection back to the loop costs more than its own work, and so does
  // a thread per request waiting for a forward (docs/performance.md).
  //
  // The target is read as written: a /serve query or a V2 path that Falcon
  // would decode (`%`, `+`), a /serve identifier given twice or with
  // `invalidation_prob`, and a versioned V2 path take a thread, whose
  // answer is the same. So the file found is the one the application
  // would find, and the application serves it without looking it up again.
  std::optional<EventLoopRoute> event_loop_route(std::string_view method, std::string_view target,
                                                 size_t body_size) const;

  // How the gRPC server (GrpcServer) takes an inference call for the V2 model `name`
  // with `body_size` bytes of JSON, as event_loop_route takes a V2
  // inference request: answered at once, or queued (Work::kQueueInfer).
  // None when it takes a thread.
  std::optional<EventLoopRoute> event_loop_route_named(const std::string& name, size_t body_size) const;

  // Records that a call for the model file `relative` took `wall` in a
  // worker's event loop, `cpu` of it running. Past the budget, the model's
  // requests are no longer answered there (logged once): its forward is
  // quick on average, but some inputs (a large image in a small body, an
  // argument that sets a loop's length) make it long, and the loop serves
  // every other connection.
  void note_event_loop_call(const std::string& relative, std::chrono::nanoseconds wall,
                            std::chrono::nanoseconds cpu) const;

 private:
  std::shared_ptr<const Pipeline> pipeline_;
  const size_t limit_;
  Warn warn_;
  std::atomic<size_t> held_{0};
};

// Times a call made in a worker's event loop, however it ends, for
// Admission::note_event_loop_call; times nothing for a call made elsewhere
// (no admission).
class EventLoopCall {
 public:
  EventLoopCall(const Admission* admission, const std::string& relative);
  ~EventLoopCall();
  EventLoopCall(const EventLoopCall&) = delete;
  EventLoopCall& operator=(const EventLoopCall&) = delete;

 private:
  const Admission* admission_;
  const std::string& relative_;
  std::chrono::steady_clock::time_point wall_started_;
  std::chrono::nanoseconds cpu_started_{0};
};

}  // namespace torch_serving
