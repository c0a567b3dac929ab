// Admission and the event loop's verdict.
#include "admission.h"

#include <utility>

namespace torch_serving {
namespace {

constexpr std::string_view kServe = "/serve";
constexpr std::string_view kV2Models = "/v2/models/";
constexpr std::string_view kInfer = "/infer";
constexpr std::string_view kVersions = "/versions/";

bool starts_with(std::string_view text, std::string_view prefix) { return text.substr(0, prefix.size()) == prefix; }

bool ends_with(std::string_view text, std::string_view suffix) {
  return text.size() >= suffix.size() && text.substr(text.size() - suffix.size()) == suffix;
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

}  // namespace

Admission::Admission(std::shared_ptr<const Server> server, size_t limit) : server_(std::move(server)), limit_(limit) {}

bool Admission::enter() {
  size_t held = held_.load(std::memory_order_relaxed);
  do {
    if (held >= limit_) return false;
  } while (!held_.compare_exchange_weak(held, held + 1, std::memory_order_relaxed));
  return true;
}

void Admission::leave() { held_.fetch_sub(1, std::memory_order_relaxed); }

std::optional<std::string> Admission::event_loop_model(std::string_view method, std::string_view target,
                                                       size_t body_size) const {
  if (method != "POST") return std::nullopt;
  const size_t mark = std::min(target.find('?'), target.size());
  const std::string_view path = target.substr(0, mark);
  if (path == kServe) {
    const auto identifier = plain_identifier(target.substr(std::min(mark + 1, target.size())));
    if (!identifier || !server_->can_answer_in_event_loop(*identifier, body_size)) return std::nullopt;
    return identifier;
  }
  // Falcon decodes the path before the V2 routes read the name; a versioned
  // one the routes read differently.
  if (starts_with(path, kV2Models) && ends_with(path, kInfer) && path.size() > kV2Models.size() + kInfer.size() &&
      path.find('%') == std::string_view::npos && path.find(kVersions) == std::string_view::npos) {
    return server_->event_loop_model_named(
        std::string(path.substr(kV2Models.size(), path.size() - kV2Models.size() - kInfer.size())), body_size);
  }
  return std::nullopt;
}

}  // namespace torch_serving
