// The native request pipeline behind one call per request, whatever the
// protocol (/serve, the Open Inference Protocol over REST and gRPC): decode
// the body, fetch the model from the cache, run it, encode the answer.
#pragma once

#include <c10/core/Device.h>

#include <chrono>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "executor.h"
#include "model_cache.h"
#include "phase_times.h"
#include "request_body.h"
#include "scheduler.h"
#include "v2.h"

namespace torch_serving {

// Where a worker's event loop takes a request (Pipeline::event_loop_placement).
enum class LoopPlacement {
  kThread,  // it takes a thread
  kAnswer,  // the loop answers it at once
  kQueue,   // the loop queues it, and answers it once it has run (Pipeline::submit_serve, submit_infer)
};

// A request queued without a thread waiting for it (Pipeline::submit_serve):
// its answer, or the error that ended it, once it ran.
struct DeferredCall {
  std::string response;
  size_t json_length = 0;  // of an inference response: its JSON part (see infer)
  std::exception_ptr error;
  PhaseTimes times;
};

class Pipeline {
 public:
  // Serves the models beneath the directory `model_root`, refusing files
  // over `max_model_size` bytes (0: no limit) and images of more than
  // `max_image_pixels` pixels. Each model runs on as many model instances
  // as `instances` gives for its serving policy. Warnings about models (a malformed batch policy) go to
  // `warn`; each load that succeeds is told to `inform`, with its time.
  Pipeline(const std::string& model_root, size_t capacity, size_t buffer, c10::Device device, int64_t max_model_size,
           int64_t max_image_pixels, InstanceCounts instances, Warn warn, Warn inform);
  ~Pipeline();
  Pipeline(const Pipeline&) = delete;
  Pipeline& operator=(const Pipeline&) = delete;

  // Answers one request for the model file `relative` to the model root
  // (an AOTInductor package when its name ends in `.pt2`, else TorchScript)
  // (called `name` in errors), writing the success envelope's JSON into
  // `response`.
  //
  // With probability `invalidation_prob` the cached model is loaded again
  // from disk first. Records its phases in `times` when given. Throws the
  // errors of errors.h; DeadlineError when `deadline` passes while the
  // request waits for an instance of the model. With `file_checked`, the
  // caller checked the model's file a moment ago (event_loop_placement):
  // the cached model serves without the file being opened again.
  void serve(const std::string& relative, const std::string& name, const RequestBody& body,
             double invalidation_prob, std::string& response, PhaseTimes* times = nullptr,
             Deadline deadline = Deadline::max(), bool file_checked = false);

  // Queues one /serve request for the model file `relative` without waiting
  // for it (from a worker's event loop: event_loop_placement): decodes
  // `body` and queues its forward, to be answered as serve() answers it
  // without an invalidation. `answered` is called once `call` holds the
  // answer or the error serve() would throw: from the thread that ran the
  // forward, at once when the body or its arguments are refused, or at the
  // deadline (DeadlineError) from the model's scheduler, even while its
  // forward runs on (Scheduler::submit). Returns the model, or null when
  // none was found; the caller keeps it until then.
  ModelCache::Model submit_serve(const std::string& relative, const std::string& name, const RequestBody& body,
                                 Deadline deadline, std::shared_ptr<DeferredCall> call,
                                 std::function<void()> answered);

  // Queues one Open Inference Protocol inference request as submit_serve
  // does, to be answered as infer() answers it.
  ModelCache::Model submit_infer(const std::string& relative, const std::string& name,
                                 const std::shared_ptr<const RequestBody>& body, int64_t header_length,
                                 Deadline deadline, std::shared_ptr<DeferredCall> call,
                                 std::function<void()> answered);

  // Answers one Open Inference Protocol inference request for the model
  // file `relative`, whose V2 name is `name`: `body` holds the request's
  // JSON in its first `header_length` bytes (all of it when negative) and
  // the inputs' binary data after it. Writes the response, JSON first, into
  // `response` and returns the length of its JSON part.
  //
  // Binary inputs may be views of `body`, which they keep alive. Throws the
  // errors of errors.h, and takes `file_checked`, as serve() does.
  size_t infer(const std::string& relative, const std::string& name, const std::shared_ptr<const RequestBody>& body,
               int64_t header_length, std::string& response, PhaseTimes* times = nullptr,
               Deadline deadline = Deadline::max(), bool file_checked = false);

  // Writes the V2 metadata of the model file `relative` into `response`,
  // loading the model if it is not cached.
  void metadata(const std::string& relative, const std::string& name, std::string& response);

  // Writes the model's configuration, as Triton's model configuration
  // extension answers it, into `response`, loading the model if it is not
  // cached.
  void config(const std::string& relative, const std::string& name, std::string& response);

  // Where a request with a body of `body_size` bytes for the model file
  // `relative` runs, when no event loop makes it and it need not reload the
  // model: in its caller's thread if the model is loaded and either quick
  // (Servable::is_quick) with a small body, or batching with short
  // forwards (Servable::may_wait_in_caller); else on the executor's pool.
  Placement placement(const std::string& relative, size_t body_size) const;

  // Where a worker's event loop may take a request with a body of
  // `body_size` bytes for the model file `relative`: answered at once when
  // the model is loaded and quick (Servable::is_quick, not kept off the
  // loop), queued (submit_serve, submit_infer) when it is loaded and not
  // quick; either only with a small body and the file on disk the one the
  // cached model was loaded from, so that the loop neither loads a model
  // nor runs long. Never throws: a file that cannot be opened takes a thread.
  LoopPlacement event_loop_placement(const std::string& relative, size_t body_size) const;

  // The model file the V2 model `name` is, and where a worker's event loop
  // may take an inference request for it with a body of `body_size` bytes
  // (event_loop_placement): the first of `name`, `name.pt` and `name.pt2`
  // (only `name` when it has a suffix) that is a regular file, as the V2
  // routes look a name up. None when the request must take a thread, whose
  // look-up then answers it: a name that is not already a plain relative
  // path, or a candidate that is refused (a symlink).
  std::optional<std::pair<std::string, LoopPlacement>> event_loop_placement_named(const std::string& name,
                                                                                  size_t body_size) const;

  ModelCache& cache() { return cache_; }
  const ModelCache& cache() const { return cache_; }
  c10::Device device() const { return device_; }

 private:
  // Returns the model in `relative`, from the cache or loaded now; with
  // `reload`, loaded again whether cached or not. With `file_checked` (see
  // serve), a cached model is taken without opening its file.
  ModelCache::Model model(const std::string& relative, const std::string& name, bool reload = false,
                          bool file_checked = false);

  // event_loop_placement for the cached model of `relative` loaded from
  // the file `identity` names (from whichever file, without one).
  LoopPlacement loop_placement(const std::string& relative, size_t body_size,
                               const FileIdentity* identity = nullptr) const;

  int root_fd_;
  c10::Device device_;
  int64_t max_model_size_;
  int64_t max_image_pixels_;
  InstanceCounts instances_;
  Warn warn_;
  Warn inform_;
  ModelCache cache_;
};

}  // namespace torch_serving
