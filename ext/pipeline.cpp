// The native request pipeline.
#include "pipeline.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <stdexcept>
#include <string_view>
#include <utility>
#include <vector>

#include "errors.h"
#include "package.h"
#include "script_module.h"
#include "serve_codec.h"
#include "v2_binding.h"
#include "v2_request.h"
#include "v2_response.h"

namespace torch_serving {
namespace {

bool draw(double probability) {
  if (probability <= 0) return false;
  thread_local std::mt19937_64 generator{std::random_device{}()};
  return std::uniform_real_distribution<double>(0.0, 1.0)(generator) < probability;
}

// Measures the phases of one request into a PhaseTimes, if there is one.
class PhaseClock {
 public:
  explicit PhaseClock(PhaseTimes* times) : times_(times) {
    if (times_) last_ = std::chrono::steady_clock::now();
  }

  // Adds the time since the previous lap (or the start) to `phase`.
  void lap(double PhaseTimes::*phase) {
    if (!times_) return;
    const auto now = std::chrono::steady_clock::now();
    times_->*phase += std::chrono::duration<double>(now - last_).count();
    last_ = now;
  }

 private:
  PhaseTimes* times_;
  std::chrono::steady_clock::time_point last_;
};

// Decoding a body this size takes well under a millisecond.
constexpr size_t kQuickBodyBytes = 64 * 1024;
bool is_package(std::string_view relative) { return relative.ends_with(".pt2"); }

// Whether `path` is already the path of a file relative to the root as the
// Python look-up writes it: no empty, `.` or `..` component, no NUL.
bool is_plain_relative(std::string_view path) {
  if (path.empty() || path.find('\0') != std::string_view::npos) return false;
  size_t start = 0;
  while (true) {
    const size_t end = std::min(path.find('/', start), path.size());
    const std::string_view part = path.substr(start, end - start);
    if (part.empty() || part == "." || part == "..") return false;
    if (end == path.size()) return true;
    start = end + 1;
  }
}

}  // namespace

Pipeline::Pipeline(const std::string& model_root, size_t capacity, size_t buffer, c10::Device device,
                   int64_t max_model_size, int64_t max_image_pixels, InstanceCounts instances, Warn warn, Warn inform)
    : root_fd_(::open(model_root.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC)),
      device_(device),
      max_model_size_(max_model_size),
      max_image_pixels_(max_image_pixels),
      instances_(instances),
      warn_(std::move(warn)),
      inform_(std::move(inform)),
      cache_(capacity, buffer) {
  if (root_fd_ < 0) throw std::invalid_argument("model root " + model_root + " is not a directory");
  // AOTInductor packages check their inputs' dtypes and sizes only with
  // this set, read once by each package's code; compiled code given a
  // wrong size reads out of bounds. Set before any request thread runs.
  ::setenv("AOTI_RUNTIME_CHECK_INPUTS", "1", /*overwrite=*/1);
}

Pipeline::~Pipeline() { ::close(root_fd_); }

void Pipeline::serve(const std::string& relative, const std::string& name, const RequestBody& body,
                     double invalidation_prob, std::string& response, PhaseTimes* times, Deadline deadline,
                     bool file_checked) {
  PhaseClock clock(times);
  // Decoding first means a bad body never costs a model load.
  std::vector<c10::IValue> args = decode_arguments(body.view(), body.readable(), max_image_pixels_);
  clock.lap(&PhaseTimes::decode);
  c10::IValue result =
      model(relative, name, draw(invalidation_prob), file_checked)->run(std::move(args), deadline);
  clock.lap(&PhaseTimes::forward);
  encode_success(result, response);
  clock.lap(&PhaseTimes::encode);
}

namespace {

// The callback of a forward queued for `call`, since `queued`: `encode` makes
// its answer; past `deadline` it is answered as one that waited.
Scheduler::Done answer_when_run(std::shared_ptr<DeferredCall> call, std::function<void()> answered,
                                Deadline deadline, std::function<void(const c10::IValue&, DeferredCall&)> encode) {
  const auto queued = std::chrono::steady_clock::now();
  return [call = std::move(call), answered = std::move(answered), deadline, encode = std::move(encode),
          queued](c10::IValue result, std::exception_ptr error) {
    const auto ran = std::chrono::steady_clock::now();
    PhaseClock clock(&call->times);
    call->times.forward = std::chrono::duration<double>(ran - queued).count();
    // A forward under way cannot be abandoned: a request whose deadline passed during it is answered
    // as one that waited, as it ends.
    if (!error && ran > deadline) error = std::make_exception_ptr(DeadlineError(kRanPastDeadline));
    if (!error) {
      try {
        encode(result, *call);
      } catch (...) {
        error = std::current_exception();
      }
    }
    call->error = error;
    clock.lap(&PhaseTimes::encode);
    answered();
  };
}

}  // namespace

ModelCache::Model Pipeline::submit_serve(const std::string& relative, const std::string& name,
                                        const RequestBody& body, Deadline deadline,
                                        std::shared_ptr<DeferredCall> call, std::function<void()> answered) {
  ModelCache::Model servable;
  try {
    PhaseClock clock(&call->times);
    std::vector<c10::IValue> args = decode_arguments(body.view(), body.readable(), max_image_pixels_);
    clock.lap(&PhaseTimes::decode);
    servable = model(relative, name, /*reload=*/false, /*file_checked=*/true);
    servable->submit(std::move(args), deadline,
                     answer_when_run(call, answered, deadline, [](const c10::IValue& result, DeferredCall& out) {
                       encode_success(result, out.response);
                     }));
  } catch (...) {
    call->error = std::current_exception();
    answered();
  }
  return servable;
}

ModelCache::Model Pipeline::submit_infer(const std::string& relative, const std::string& name,
                                        const std::shared_ptr<const RequestBody>& body, int64_t header_length,
                                        Deadline deadline, std::shared_ptr<DeferredCall> call,
                                        std::function<void()> answered) {
  ModelCache::Model servable;
  try {
    PhaseClock clock(&call->times);
    // Binary inputs may be views of the body: the request keeps it.
    auto request =
        std::make_shared<v2::Request>(v2::decode_request(body->view(), header_length, body, body->readable()));
    v2::check_model(*request, name);
    clock.lap(&PhaseTimes::decode);
    servable = model(relative, name, /*reload=*/false, /*file_checked=*/true);
    // The caller keeps the model until the answer is made.
    const Servable* outputs = servable.get();
    servable->submit(v2::bind_inputs(*request, *servable), deadline,
                     answer_when_run(call, answered, deadline,
                                     [name, request, outputs](const c10::IValue& result, DeferredCall& out) {
                                       out.json_length = v2::encode_response(
                                           name, *request, v2::named_outputs(result, *outputs), out.response);
                                     }));
  } catch (...) {
    call->error = std::current_exception();
    answered();
  }
  return servable;
}

size_t Pipeline::infer(const std::string& relative, const std::string& name,
                       const std::shared_ptr<const RequestBody>& body, int64_t header_length, std::string& response,
                       PhaseTimes* times, Deadline deadline, bool file_checked) {
  PhaseClock clock(times);
  // Decoding first means a bad body never costs a model load.
  v2::Request request = v2::decode_request(body->view(), header_length, body, body->readable());
  v2::check_model(request, name);
  clock.lap(&PhaseTimes::decode);
  auto servable = model(relative, name, /*reload=*/false, file_checked);
  c10::IValue result = servable->run(v2::bind_inputs(request, *servable), deadline);
  clock.lap(&PhaseTimes::forward);
  const size_t json_length = v2::encode_response(name, request, v2::named_outputs(result, *servable), response);
  clock.lap(&PhaseTimes::encode);
  return json_length;
}

void Pipeline::metadata(const std::string& relative, const std::string& name, std::string& response) {
  v2::encode_metadata(name, v2::describe(*model(relative, name)), response);
}

void Pipeline::config(const std::string& relative, const std::string& name, std::string& response) {
  auto servable = model(relative, name);
  v2::encode_config(name, v2::describe(*servable), servable->max_batch_size(), servable->instances(), device_.is_cuda(),
                    response);
}

Placement Pipeline::placement(const std::string& relative, size_t body_size) const {
  auto servable = cache_.peek(relative);
  if (!servable) return Placement::kPool;
  if (body_size <= kQuickBodyBytes && servable->is_quick()) return Placement::kCallerIfIdle;
  return servable->may_wait_in_caller() ? Placement::kQueuedCaller : Placement::kPool;
}

LoopPlacement Pipeline::event_loop_placement(const std::string& relative, size_t body_size) const {
  // A model the loop would not take whatever its file (not loaded) costs no system call.
  if (loop_placement(relative, body_size) == LoopPlacement::kThread) return LoopPlacement::kThread;
  FileIdentity identity;
  if (ModelFile::identify(root_fd_, relative, identity) != 0) return LoopPlacement::kThread;
  return loop_placement(relative, body_size, &identity);
}

std::optional<std::pair<std::string, LoopPlacement>> Pipeline::event_loop_placement_named(const std::string& name,
                                                                                          size_t body_size) const {
  if (!is_plain_relative(name)) return std::nullopt;
  const bool suffixed = name.ends_with(".pt") || name.ends_with(".pt2");
  const auto candidates =
      suffixed ? std::vector<std::string>{name} : std::vector<std::string>{name, name + ".pt", name + ".pt2"};
  // Whichever candidate the name turns out to be, the loop takes it only if it is cached: when none
  // is, no file need be looked at.
  if (std::all_of(candidates.begin(), candidates.end(), [&](const std::string& candidate) {
        return loop_placement(candidate, body_size) == LoopPlacement::kThread;
      })) {
    return std::nullopt;
  }
  for (const std::string& candidate : candidates) {
    FileIdentity identity;
    const int error = ModelFile::identify(root_fd_, candidate, identity);
    if (error == ENOENT) continue;
    // Refused (a symlink, which the name's look-up may follow within the root; no permission): the
    // request takes a thread, whose look-up finds what the name means.
    if (error != 0) return std::nullopt;
    const LoopPlacement placement = loop_placement(candidate, body_size, &identity);
    if (placement == LoopPlacement::kThread) return std::nullopt;
    return std::make_pair(candidate, placement);
  }
  return std::nullopt;
}

LoopPlacement Pipeline::loop_placement(const std::string& relative, size_t body_size,
                                       const FileIdentity* identity) const {
  if (body_size > kQuickBodyBytes) return LoopPlacement::kThread;
  auto servable = cache_.peek(relative, identity);
  if (!servable) return LoopPlacement::kThread;
  return servable->is_quick() && !servable->kept_off_event_loop() ? LoopPlacement::kAnswer : LoopPlacement::kQueue;
}

ModelCache::Model Pipeline::model(const std::string& relative, const std::string& name, bool reload,
                                   bool file_checked) {
  if (file_checked && !reload) {
    if (auto cached = cache_.use(relative)) return cached;  // else evicted since: looked up as usual
  }
  const ModelFile file = ModelFile::open(root_fd_, relative, name, max_model_size_);
  auto load = [&]() -> ModelCache::Model {
    const auto started = std::chrono::steady_clock::now();
    ModelCache::Model loaded;
    if (is_package(relative)) loaded = Package::load(file, name, device_, instances_.for_policy(ServingPolicy{}));
    else loaded = ScriptModule::load(file, name, device_, instances_, warn_);
    const std::chrono::duration<double> took = std::chrono::steady_clock::now() - started;
    char seconds[32];
    std::snprintf(seconds, sizeof seconds, "%.3f", took.count());
    inform_("loaded " + relative + " in " + seconds + " s");
    return loaded;
  };
  return cache_.get(relative, file.identity(), load, reload);
}

}  // namespace torch_serving
