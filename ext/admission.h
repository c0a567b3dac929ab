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

  // The model file (relative to the root) that the request `method target`
  // with a body of `body_size` bytes is answered from when the event loop
  // may answer it itself; none when it takes a thread. Handing a small
  // request to a thread and its connection back to the loop costs more
  // than its own work, so a request whose work is known to be short (its
  // model loaded, unchanged on disk, quick, not batching and not kept off
  // the loop by its time budget; its body small) is answered where it was
  // found (Pipeline::can_answer_in_event_loop, event_loop_model_named).
  // A model whose call ran past the loop's budget there is answered on
  // threads from then on (note_event_loop_call).
  //
  // The target is read as written: a /serve query or a V2 path that Falcon
  // would decode (`%`, `+`), a /serve identifier given twice or with
  // `invalidation_prob`, and a versioned V2 path take a thread, whose
  // answer is the same. So the file found is the one the application
  // would find, and the application serves it without looking it up again.
  std::optional<std::string> event_loop_model(std::string_view method, std::string_view target,
                                              size_t body_size) const;

  // The model file (relative to the root) that the request `method target`
  // with a body of `body_size` bytes may be queued for from the event loop
  // without a thread waiting for it (Pipeline::submit_serve, submit_infer),
  // when the loop does not answer it at once (event_loop_model): its model
  // loaded and unchanged on disk, its body small; a /serve query naming the
  // model once and nothing else, or a V2 inference path without a query,
  // read as event_loop_model reads it. None when it takes a thread. A
  // thread per request, handing its call to a native thread and waking
  // when it ends (for a batch, every request's), cost more than the work
  // around the forward (docs/performance.md).
  std::optional<std::string> event_loop_queue_model(std::string_view method, std::string_view target,
                                                    size_t body_size) const;

  // The same as event_loop_model for a request for the V2 model `name` (a gRPC call).
  std::optional<std::string> event_loop_model_named(const std::string& name, size_t body_size) const {
    return pipeline_->event_loop_model_named(name, body_size);
  }

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
