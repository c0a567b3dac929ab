// Which requests a worker holds, and which of them its event loop answers
// itself: one authority for both, shared by the worker's HTTP event loop
// and its gRPC service.
#pragma once

#include <atomic>
#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "server.h"

namespace torch_serving {

class Admission {
 public:
  // Admits at most `limit` requests at once, HTTP and gRPC together, for the
  // models `server` serves.
  Admission(std::shared_ptr<const Server> server, size_t limit);

  size_t limit() const { return limit_; }

  // Counts one more request and returns true, or returns false when the
  // worker holds its limit (the caller answers 503 at once: a request
  // queued beyond it would wait without a bound).
  bool enter();
  // Stops counting a request that entered.
  void leave();

  // The model file (relative to the root) that the request `method target`
  // with a body of `body_size` bytes is answered from when the event loop
  // may answer it itself; none when it takes a thread. Handing a small
  // request to a thread and its connection back to the loop costs more
  // than its own work, so a request whose work is known to be short (its
  // model loaded, unchanged on disk, quick, not batching and not kept off
  // the loop by its time budget; its body small) is answered where it was
  // found (Server::can_answer_in_event_loop, event_loop_model_named).
  //
  // The target is read as written: a /serve query or a V2 path that Falcon
  // would decode (`%`, `+`), a /serve identifier given twice or with
  // `invalidation_prob`, and a versioned V2 path take a thread, whose
  // answer is the same. So the file found is the one the application
  // would find, and the application serves it without looking it up again.
  std::optional<std::string> event_loop_model(std::string_view method, std::string_view target,
                                              size_t body_size) const;

  // The same for a request for the V2 model `name` (a gRPC call).
  std::optional<std::string> event_loop_model_named(const std::string& name, size_t body_size) const {
    return server_->event_loop_model_named(name, body_size);
  }

 private:
  std::shared_ptr<const Server> server_;
  const size_t limit_;
  std::atomic<size_t> held_{0};
};

}  // namespace torch_serving
