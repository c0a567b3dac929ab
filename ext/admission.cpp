// Admission and the event loop's verdict.
#include "admission.h"

#include <time.h>

#include <utility>

namespace torch_serving {
namespace {

using Work = EventLoopRoute::Work;

constexpr std::string_view kServe = "/serve";
constexpr std::string_view kIdentifierParameter = "servable_identifier=";
constexpr std::string_view kV2Models = "/v2/models/";
constexpr std::string_view kInfer = "/infer";
constexpr std::string_view kVersions = "/versions/";
// The longest a call may hold up a worker's event loop before its model's
// requests take threads.
constexpr auto kEventLoopBudget = std::chrono::milliseconds(20);

std::chrono::nanoseconds thread_cpu_time() {
  timespec now{};
  ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now);
  return std::chrono::seconds(now.tv_sec) + std::chrono::nanoseconds(now.tv_nsec);
}

// The servable identifier a /serve query names when the event loop may take
// it as written: given once, without `invalidation_prob` (a reload is not
// short), and nothing in the query that Falcon would decode.
std::optional<std::string> plain_identifier(std::string_view query) {
  if (query.find_first_of("%+") != std::string_view::npos) return std::nullopt;
  std::optional<std::string> identifier;
  while (!query.empty()) {
    const size_t end = std::min(query.find('&'), query.size());
    const std::string_view part = query.substr(0, end);
    query.remove_prefix(std::min(end + 1, query.size()));
    const std::string_view key = part.substr(0, part.find('='));
    if (key == "invalidation_prob") return std::nullopt;
    if (key == "servable_identifier") {
      if (identifier) return std::nullopt;  // Falcon makes a list of it
      identifier = std::string(key.size() < part.size() ? part.substr(key.size() + 1) : std::string_view());
    }
  }
  return identifier;
}

// The V2 model name of an inference path the event loop may take as
// written: Falcon decodes the path before the V2 routes read the name, and a
// versioned one the routes read differently.
std::optional<std::string> v2_infer_name(std::string_view path) {
  if (path.starts_with(kV2Models) && path.ends_with(kInfer) && path.size() > kV2Models.size() + kInfer.size() &&
      path.find('%') == std::string_view::npos && path.find(kVersions) == std::string_view::npos) {
    return std::string(path.substr(kV2Models.size(), path.size() - kV2Models.size() - kInfer.size()));
  }
  return std::nullopt;
}

}  // namespace

Admission::Admission(std::shared_ptr<const Pipeline> pipeline, size_t limit, Warn warn)
    : pipeline_(std::move(pipeline)), limit_(limit), warn_(std::move(warn)) {}

bool Admission::enter() {
  size_t held = held_.load(std::memory_order_relaxed);
  do {
    if (held >= limit_) return false;
  } while (!held_.compare_exchange_weak(held, held + 1, std::memory_order_relaxed));
  return true;
}

void Admission::hold() { held_.fetch_add(1, std::memory_order_relaxed); }

void Admission::leave() { held_.fetch_sub(1, std::memory_order_relaxed); }

std::optional<EventLoopRoute> Admission::event_loop_route(std::string_view method, std::string_view target,
                                                          size_t body_size) const {
  if (method != "POST") return std::nullopt;
  const size_t mark = std::min(target.find('?'), target.size());
  const std::string_view path = target.substr(0, mark);
  const std::string_view query = target.substr(std::min(mark + 1, target.size()));
  if (path == kServe) {
    auto identifier = plain_identifier(query);
    if (!identifier) return std::nullopt;
    const LoopPlacement placement = pipeline_->event_loop_placement(*identifier, body_size);
    if (placement == LoopPlacement::kAnswer) return EventLoopRoute{*identifier, *identifier, Work::kAnswer};
    // A queued request runs before the application reads its query, which must then hold nothing it
    // would refuse: the identifier alone, as written.
    if (placement == LoopPlacement::kQueue && query.starts_with(kIdentifierParameter) &&
        query.find('&') == std::string_view::npos) {
      return EventLoopRoute{*identifier, *identifier, Work::kQueueServe};
    }
    return std::nullopt;
  }
  auto name = v2_infer_name(path);
  if (!name) return std::nullopt;
  auto route = event_loop_route_named(*name, body_size);
  // The V2 routes take no query parameter.
  if (route && route->work == Work::kQueueInfer && mark != target.size()) return std::nullopt;
  return route;
}

std::optional<EventLoopRoute> Admission::event_loop_route_named(const std::string& name, size_t body_size) const {
  auto found = pipeline_->event_loop_placement_named(name, body_size);
  if (!found) return std::nullopt;
  const Work work = found->second == LoopPlacement::kAnswer ? Work::kAnswer : Work::kQueueInfer;
  return EventLoopRoute{std::move(found->first), name, work};
}

void Admission::note_event_loop_call(const std::string& relative, std::chrono::nanoseconds wall,
                                     std::chrono::nanoseconds cpu) const {
  // On the CPU a forward's cost is its running time: the rest of its wall
  // time is the machine running others (a loaded host preempts the loop for
  // tens of milliseconds), which moving the model to threads would not
  // change. A GPU forward's cost is mostly waiting, so there wall time counts.
  const auto took = pipeline_->device().is_cpu() ? cpu : wall;
  if (took < kEventLoopBudget) return;
  auto servable = pipeline_->cache().peek(relative);
  if (servable && servable->keep_off_event_loop()) {
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(took).count();
    warn_("a request for " + relative + " took " + std::to_string(ms) + " ms in a worker's event loop, over its " +
          std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(kEventLoopBudget).count()) +
          " ms; this worker answers the model's requests on threads from now on");
  }
}

EventLoopCall::EventLoopCall(const Admission* admission, const std::string& relative)
    : admission_(admission), relative_(relative) {
  if (!admission_) return;
  wall_started_ = std::chrono::steady_clock::now();
  cpu_started_ = thread_cpu_time();
}

EventLoopCall::~EventLoopCall() {
  if (!admission_) return;
  admission_->note_event_loop_call(relative_, std::chrono::steady_clock::now() - wall_started_,
                                   thread_cpu_time() - cpu_started_);
}

}  // namespace torch_serving
