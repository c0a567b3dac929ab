// Queueing one model's requests for its instances; forming, merging and
// splitting batches of them.
#include "scheduler.h"

#include <ATen/ATen.h>
#include <simdjson.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <exception>
#include <stdexcept>

#include <time.h>

#include "errors.h"

namespace torch_serving {
namespace {

using Clock = std::chrono::steady_clock;

// How long the thread that ends submitted requests at their deadline sleeps
// when none is queued.
constexpr auto kIdleExpiryWait = std::chrono::seconds(1);

constexpr const char* kQueuedPastDeadline = "the deadline passed while the request waited for an instance of the model";

// The CPU time of the calling thread. A forward's cost is measured so, not
// by the clock: under load, other threads on its core would add their time
// to it, the more the longer it runs.
double thread_cpu_seconds() {
  timespec now{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now);
  return double(now.tv_sec) + double(now.tv_nsec) * 1e-9;
}

// Appends every tensor in `value`, however nested, in a fixed order.
void collect_tensors(const c10::IValue& value, std::vector<at::Tensor>& out) {
  if (value.isTensor()) {
    out.push_back(value.toTensor());
  } else if (value.isList()) {
    for (const c10::IValue& item : value.toListRef()) collect_tensors(item, out);
  } else if (value.isTuple()) {
    for (const c10::IValue& item : value.toTupleRef().elements()) collect_tensors(item, out);
  } else if (value.isGenericDict()) {
    for (const auto& entry : value.toGenericDict()) collect_tensors(entry.value(), out);
  }
}

// Returns `value` with its tensors replaced, in collect_tensors' order, by
// those `next` yields.
c10::IValue replace_tensors(const c10::IValue& value, const std::function<at::Tensor()>& next) {
  if (value.isTensor()) return next();
  if (value.isList()) {
    auto list = value.toList();
    c10::impl::GenericList out(list.elementType());
    out.reserve(list.size());
    for (const c10::IValue& item : list) out.push_back(replace_tensors(item, next));
    return out;
  }
  if (value.isTuple()) {
    std::vector<c10::IValue> items;
    for (const c10::IValue& item : value.toTupleRef().elements()) items.push_back(replace_tensors(item, next));
    return c10::ivalue::Tuple::create(std::move(items));
  }
  if (value.isGenericDict()) {
    auto dict = value.toGenericDict();
    c10::impl::GenericDict out(dict.keyType(), dict.valueType());
    for (const auto& entry : dict) out.insert(entry.key(), replace_tensors(entry.value(), next));
    return out;
  }
  return value;
}

// Whether two values that are not tensors or containers are equal.
bool same_plain_value(const c10::IValue& a, const c10::IValue& b) {
  if (a.tagKind() != b.tagKind()) return false;
  if (a.isNone()) return true;
  if (a.isBool()) return a.toBool() == b.toBool();
  if (a.isInt()) return a.toInt() == b.toInt();
  if (a.isDouble()) return a.toDouble() == b.toDouble();
  if (a.isString()) return a.toStringRef() == b.toStringRef();
  return false;  // anything else is never assumed equal
}

bool mergeable(const c10::IValue& a, const c10::IValue& b);

// Whether two sequences (list or tuple items) can share a forward, item by item.
template <typename Items>
bool mergeable_items(const Items& x, const Items& y) {
  if (x.size() != y.size()) return false;
  for (size_t i = 0; i < x.size(); ++i) {
    if (!mergeable(x[i], y[i])) return false;
  }
  return true;
}

// Whether `a` and `b` can share a forward: the same structure, tensors alike
// in all but dimension 0, everything else equal.
bool mergeable(const c10::IValue& a, const c10::IValue& b) {
  if (a.isTensor() != b.isTensor() || a.isList() != b.isList() || a.isTuple() != b.isTuple() ||
      a.isGenericDict() != b.isGenericDict()) {
    return false;
  }
  if (a.isTensor()) {
    const at::Tensor& x = a.toTensor();
    const at::Tensor& y = b.toTensor();
    return x.scalar_type() == y.scalar_type() && x.device() == y.device() && x.dim() == y.dim() &&
           x.sizes().slice(1) == y.sizes().slice(1);
  }
  if (a.isList()) return mergeable_items(a.toListRef(), b.toListRef());
  if (a.isTuple()) return mergeable_items(a.toTupleRef().elements(), b.toTupleRef().elements());
  if (a.isGenericDict()) {
    auto x = a.toGenericDict();
    auto y = b.toGenericDict();
    if (x.size() != y.size()) return false;
    for (auto ix = x.begin(), iy = y.begin(); ix != x.end(); ++ix, ++iy) {
      if (!same_plain_value(ix->key(), iy->key()) || !mergeable(ix->value(), iy->value())) return false;
    }
    return true;
  }
  return same_plain_value(a, b);
}

// Thrown inside split() when an output has a part that is not a tensor
// whose dimension 0 is the batch's.
struct Unsplittable {
  std::string what;
};

// Splits `value`, a batched forward's output, into each request's share:
// `rows[i]` rows of every tensor, in order, and with `share_plain`, every
// other value as it is.
std::vector<c10::IValue> split(const c10::IValue& value, const std::vector<int64_t>& rows, int64_t total,
                               bool share_plain) {
  const size_t n = rows.size();
  std::vector<c10::IValue> out(n);
  if (value.isTensor()) {
    const at::Tensor& t = value.toTensor();
    if (t.dim() == 0 || t.size(0) != total) {
      throw Unsplittable{"a tensor of shape " + c10::str(t.sizes()) + ", whose dimension 0 is not the batch's " +
                         std::to_string(total) + " rows"};
    }
    int64_t offset = 0;
    for (size_t i = 0; i < n; ++i) {
      out[i] = t.narrow(0, offset, rows[i]);
      offset += rows[i];
    }
    return out;
  }
  if (value.isList()) {
    auto list = value.toList();
    // c10 lists share their contents when copied: each share gets its own.
    std::vector<c10::impl::GenericList> parts;
    for (size_t i = 0; i < n; ++i) parts.emplace_back(list.elementType());
    for (const c10::IValue& item : list) {
      std::vector<c10::IValue> shares = split(item, rows, total, share_plain);
      for (size_t i = 0; i < n; ++i) parts[i].push_back(std::move(shares[i]));
    }
    for (size_t i = 0; i < n; ++i) out[i] = std::move(parts[i]);
    return out;
  }
  if (value.isTuple()) {
    std::vector<std::vector<c10::IValue>> parts(n);
    for (const c10::IValue& item : value.toTupleRef().elements()) {
      std::vector<c10::IValue> shares = split(item, rows, total, share_plain);
      for (size_t i = 0; i < n; ++i) parts[i].push_back(std::move(shares[i]));
    }
    for (size_t i = 0; i < n; ++i) out[i] = c10::ivalue::Tuple::create(std::move(parts[i]));
    return out;
  }
  if (value.isGenericDict()) {
    auto dict = value.toGenericDict();
    std::vector<c10::impl::GenericDict> parts;
    for (size_t i = 0; i < n; ++i) parts.emplace_back(dict.keyType(), dict.valueType());
    for (const auto& entry : dict) {
      std::vector<c10::IValue> shares = split(entry.value(), rows, total, share_plain);
      for (size_t i = 0; i < n; ++i) parts[i].insert(entry.key(), std::move(shares[i]));
    }
    for (size_t i = 0; i < n; ++i) out[i] = std::move(parts[i]);
    return out;
  }
  if (share_plain) return std::vector<c10::IValue>(n, value);
  throw Unsplittable{"a value of type " + value.type()->repr_str() + ", which has no batch dimension"};
}

// The rows a request holds: the common dimension 0 of its tensors, or 0
// when it has none or they disagree, and it cannot share a forward.
int64_t batch_rows(const std::vector<at::Tensor>& tensors) {
  if (tensors.empty() || tensors[0].dim() == 0) return 0;
  const int64_t rows = tensors[0].size(0);
  for (const at::Tensor& t : tensors) {
    if (t.dim() == 0 || t.size(0) != rows) return 0;
  }
  return rows;
}

}  // namespace

ServingPolicy parse_serving_policy(std::string_view json) {
  simdjson::dom::parser parser;
  simdjson::padded_string text(json);
  simdjson::dom::element document;
  if (parser.parse(text).get(document) != simdjson::SUCCESS) throw std::invalid_argument("it is not valid JSON");
  simdjson::dom::object fields;
  if (document.get_object().get(fields) != simdjson::SUCCESS) {
    throw std::invalid_argument(
        "it must be a JSON object, like {\"max_batch_size\": 8, \"max_batch_delay_ms\": 0, \"instance_count\": 1}");
  }
  ServingPolicy policy;
  bool has_delay = false;
  for (auto field : fields) {
    if (field.key == "max_batch_size") {
      int64_t size = 0;
      if (field.value.get_int64().get(size) != simdjson::SUCCESS || size < 1) {
        throw std::invalid_argument("max_batch_size must be an integer of at least 1, got " +
                                    simdjson::to_string(field.value));
      }
      policy.max_batch_size = size;
    } else if (field.key == "max_batch_delay_ms") {
      double delay_ms = 0;
      if (field.value.get_double().get(delay_ms) != simdjson::SUCCESS || !(delay_ms >= 0) ||
          !std::isfinite(delay_ms)) {
        throw std::invalid_argument("max_batch_delay_ms must be a number of at least 0, got " +
                                    simdjson::to_string(field.value));
      }
      policy.max_delay_s = delay_ms / 1000.0;
      has_delay = true;
    } else if (field.key == "instance_count") {
      int64_t count = 0;
      if (field.value.get_int64().get(count) != simdjson::SUCCESS || count < 1 || count > kMaxInstances) {
        throw std::invalid_argument("instance_count must be an integer in [1, " + std::to_string(kMaxInstances) +
                                    "], got " + simdjson::to_string(field.value));
      }
      policy.instance_count = count;
    } else {
      throw std::invalid_argument("unknown key \"" + std::string(field.key) +
                                  "\"; the keys are max_batch_size, max_batch_delay_ms and instance_count");
    }
  }
  // A delay means batching: its size was forgotten.
  if (has_delay && policy.max_batch_size == 0) throw std::invalid_argument("max_batch_size is missing");
  return policy;
}

struct Scheduler::Pending {
  std::vector<c10::IValue> args;
  std::vector<at::Tensor> tensors;  // with batching, those in args, in collect_tensors' order
  int64_t rows = 0;                 // 0: runs alone
  bool lead = false;                // holds an instance: forms the next batch
  bool claimed = false;             // a submitted lead one of the scheduler's threads runs
  bool taken = false;               // into a batch that leaves the queue
  bool done = false;
  c10::IValue result;
  std::exception_ptr error;
  bool submitted = false;  // no thread waits for it: on_done is called instead
  Done on_done;            // emptied once called early, at the deadline (take_expired)
  Deadline deadline = Deadline::max();
  // Wakes the thread that waits in run(): it leads, or its batch ran. One
  // per request, so that no other waiting thread wakes for it.
  std::condition_variable woken;
};

Scheduler::Scheduler(ServingPolicy policy, size_t instances, Forward forward, std::string name, Warn warn,
                     bool share_plain_outputs)
    : policy_(policy),
      instances_(std::max<size_t>(instances, 1)),
      forward_(std::move(forward)),
      name_(std::move(name)),
      warn_(std::move(warn)),
      share_plain_outputs_(share_plain_outputs) {}

Scheduler::~Scheduler() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  submitted_changed_.notify_all();
  expiry_changed_.notify_all();
  for (std::thread& thread : threads_) thread.join();
  // Whoever submits keeps the model, and so its scheduler, until the request is done: none is left
  // but when the process ends.
  std::vector<Pending*> left;
  for (Pending* p : queue_) {
    if (p->submitted) {
      p->error = std::make_exception_ptr(ExecutionError("the model was unloaded before the request ran"));
      left.push_back(p);
    }
  }
  finish_submitted(left);
}

size_t Scheduler::peak_running() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return peak_running_;
}

std::vector<std::pair<int64_t, double>> Scheduler::forward_costs() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return costs_.estimates();
}

void Scheduler::prepare(Pending& p) const {
  if (!policy_.batching()) return;
  for (const c10::IValue& arg : p.args) collect_tensors(arg, p.tensors);
  p.rows = batch_rows(p.tensors);
  if (p.rows >= policy_.max_batch_size) p.rows = 0;  // a full batch on its own
}

c10::IValue Scheduler::run(std::vector<c10::IValue> args, Deadline deadline) {
  Pending me;
  me.args = std::move(args);
  prepare(me);

  std::unique_lock<std::mutex> lock(mutex_);
  queue_.push_back(&me);
  hand_out_instances();
  // A leader waiting out its delay counts the rows; a request that queued
  // behind the instances waits for one.
  if (!me.lead) {
    if (policy_.max_delay_s > 0) changed_.notify_all();
    if (!me.woken.wait_until(lock, deadline, [&] { return me.done || me.lead; })) {
      auto queued = std::find(queue_.begin(), queue_.end(), &me);
      if (queued != queue_.end()) {
        queue_.erase(queued);
        throw DeadlineError(kQueuedPastDeadline);
      }
      // Taken into a batch that runs now: its forward cannot be abandoned.
      me.woken.wait(lock, [&] { return me.done; });
    }
  }
  std::vector<Pending*> submitted;
  if (!me.done) submitted = lead_batch(&me, lock);
  lock.unlock();
  finish_submitted(submitted);
  if (me.error) std::rethrow_exception(me.error);
  return std::move(me.result);
}

void Scheduler::submit(std::vector<c10::IValue> args, Deadline deadline, Done done) {
  auto request = std::make_unique<Pending>();
  request->args = std::move(args);
  request->submitted = true;
  request->on_done = std::move(done);
  request->deadline = deadline;
  prepare(*request);

  std::lock_guard<std::mutex> lock(mutex_);
  if (threads_.empty()) {
    for (size_t i = 0; i < instances_; ++i) threads_.emplace_back(&Scheduler::lead_submitted, this);
    threads_.emplace_back(&Scheduler::expire_submitted, this);
  }
  queue_.push_back(request.release());
  hand_out_instances();
  if (policy_.max_delay_s > 0) changed_.notify_all();
  if (deadline < next_expiry_) expiry_changed_.notify_one();
}

std::vector<Scheduler::Pending*> Scheduler::lead_batch(Pending* lead, std::unique_lock<std::mutex>& lock) {
  if (lead->rows > 0 && policy_.max_delay_s > 0) {
    // Counted from now, when an instance is free, not from this request's
    // arrival: a request that waited out a forward would otherwise take
    // only those that queued meanwhile, and under steady load batches
    // would alternate between a few requests and the rest.
    auto until = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                    std::chrono::duration<double>(policy_.max_delay_s));
    changed_.wait_until(lock, until, [&] { return rows_within_reach(lead) >= policy_.max_batch_size; });
  }
  std::vector<Pending*> batch = take_batch(lead);
  for (Pending* p : batch) {
    if (p->submitted) in_forward_.push_back(p);
  }
  peak_running_ = std::max(peak_running_, ++running_);
  lock.unlock();
  const std::optional<double> seconds = execute(batch);
  lock.lock();
  if (seconds) {
    int64_t rows = 0;
    for (const Pending* p : batch) rows += p->rows;
    costs_.record(rows, *seconds);
  }
  --running_;
  std::vector<Pending*> submitted;
  for (Pending* p : batch) {
    p->done = true;
    if (p->submitted) submitted.push_back(p);
    else if (p != lead) p->woken.notify_one();
  }
  in_forward_.erase(std::remove_if(in_forward_.begin(), in_forward_.end(), [](const Pending* p) { return p->done; }),
                    in_forward_.end());
  --leading_;
  hand_out_instances();
  return submitted;
}

void Scheduler::lead_submitted() {
  std::unique_lock<std::mutex> lock(mutex_);
  while (true) {
    std::deque<Pending*>::iterator lead;
    submitted_changed_.wait(lock, [&] {
      lead = std::find_if(queue_.begin(), queue_.end(),
                          [](const Pending* p) { return p->submitted && p->lead && !p->claimed; });
      return stopping_ || lead != queue_.end();
    });
    if (stopping_) return;
    (*lead)->claimed = true;
    std::vector<Pending*> finished = lead_batch(*lead, lock);
    lock.unlock();
    finish_submitted(finished);
    lock.lock();
  }
}

void Scheduler::expire_submitted() {
  std::unique_lock<std::mutex> lock(mutex_);
  while (!stopping_) {
    std::vector<Pending*> dropped;
    std::vector<Done> answered;
    take_expired(Clock::now(), dropped, answered);
    if (!dropped.empty() || !answered.empty()) {
      lock.unlock();
      finish_submitted(dropped);
      for (Done& done : answered) done(c10::IValue(), std::make_exception_ptr(DeadlineError(kRanPastDeadline)));
      lock.lock();
      continue;
    }
    // With nothing to expire, wake within a while anyway: a request submitted meanwhile whose deadline
    // is later (any, under a timeout over it) then needs no wake-up of this thread.
    next_expiry_ = Clock::now() + kIdleExpiryWait;
    auto watch = [&](const Pending* p) {
      if (p->submitted && p->on_done) next_expiry_ = std::min(next_expiry_, p->deadline);
    };
    std::for_each(queue_.begin(), queue_.end(), watch);
    std::for_each(in_forward_.begin(), in_forward_.end(), watch);
    expiry_changed_.wait_until(lock, next_expiry_);
  }
}

void Scheduler::take_expired(Deadline now, std::vector<Pending*>& dropped, std::vector<Done>& answered) {
  // A forward under way (or about to be) cannot be abandoned, but its requests need not wait for it:
  // each is answered now, and freed when its batch ends.
  auto answer_early = [&](Pending* p) {
    answered.push_back(std::move(p->on_done));
    p->on_done = nullptr;
  };
  for (Pending* p : queue_) {
    if (!p->submitted || !p->on_done || p->deadline > now) continue;
    if (p->lead) {
      answer_early(p);
    } else {
      p->error = std::make_exception_ptr(DeadlineError(kQueuedPastDeadline));
      p->taken = true;
      dropped.push_back(p);
    }
  }
  if (!dropped.empty()) {
    queue_.erase(std::remove_if(queue_.begin(), queue_.end(), [](const Pending* p) { return p->taken; }),
                 queue_.end());
  }
  for (Pending* p : in_forward_) {
    if (p->on_done && p->deadline <= now) answer_early(p);
  }
}

void Scheduler::finish_submitted(const std::vector<Pending*>& finished) {
  for (Pending* p : finished) {
    std::unique_ptr<Pending> owned(p);
    if (owned->on_done) owned->on_done(std::move(owned->result), owned->error);
  }
}

void Scheduler::hand_out_instances() {
  for (auto it = queue_.begin(); leading_ < instances_ && it != queue_.end(); ++it) {
    if (!(*it)->lead) {
      (*it)->lead = true;
      ++leading_;
      if ((*it)->submitted) submitted_changed_.notify_one();
      else (*it)->woken.notify_one();
    }
  }
}

int64_t Scheduler::rows_within_reach(const Pending* lead) const {
  int64_t rows = 0;
  for (const Pending* p : queue_) {
    if (p == lead || (!p->lead && p->rows > 0)) rows += p->rows;
  }
  return rows;
}

std::vector<Scheduler::Pending*> Scheduler::take_batch(Pending* lead) {
  std::vector<Pending*> batch{lead};
  std::vector<int64_t> sizes{lead->rows};  // rows of each prefix of `batch`
  if (lead->rows > 0) {
    for (Pending* p : queue_) {
      bool fits = p != lead && !p->lead && p->rows > 0 && sizes.back() + p->rows <= policy_.max_batch_size &&
                  p->args.size() == lead->args.size();
      for (size_t i = 0; fits && i < p->args.size(); ++i) fits = mergeable(lead->args[i], p->args[i]);
      if (fits) {
        batch.push_back(p);
        sizes.push_back(sizes.back() + p->rows);
      }
    }
    if (batch.size() > 1) batch.resize(costs_.choose(sizes) + 1);
  }
  for (Pending* p : batch) p->taken = true;
  queue_.erase(std::remove_if(queue_.begin(), queue_.end(), [](const Pending* p) { return p->taken; }), queue_.end());
  return batch;
}

std::optional<double> Scheduler::execute(const std::vector<Pending*>& batch) {
  if (batch.size() == 1) {
    // Only a request that could have shared its forward tells what a batch of its rows costs.
    if (batch[0]->rows == 0) {
      execute_alone(batch);
      return std::nullopt;
    }
    const double started = thread_cpu_seconds();
    execute_alone(batch);
    if (batch[0]->error) return std::nullopt;
    return thread_cpu_seconds() - started;
  }
  std::vector<int64_t> rows;
  int64_t total = 0;
  for (Pending* p : batch) {
    rows.push_back(p->rows);
    total += p->rows;
  }
  c10::IValue output;
  double seconds = 0;
  try {
    std::vector<at::Tensor> merged;
    const size_t count = batch[0]->tensors.size();
    for (size_t k = 0; k < count; ++k) {
      std::vector<at::Tensor> parts;
      parts.reserve(batch.size());
      for (Pending* p : batch) parts.push_back(p->tensors[k]);
      merged.push_back(at::cat(parts, 0));
    }
    size_t next = 0;
    auto take = [&] { return merged[next++]; };
    std::vector<c10::IValue> args;
    for (const c10::IValue& arg : batch[0]->args) args.push_back(replace_tensors(arg, take));
    const double started = thread_cpu_seconds();
    output = forward_(std::move(args));
    seconds = thread_cpu_seconds() - started;
  } catch (...) {
    // One request's data may have made the merged forward fail: each runs
    // alone and gets its own answer.
    execute_alone(batch);
    return std::nullopt;
  }
  std::vector<c10::IValue> shares;
  try {
    shares = split(output, rows, total, share_plain_outputs_);
  } catch (const Unsplittable& e) {
    if (!warned_unsplittable_.exchange(true)) {
      warn_("model " + name_ + " declares batching, but its output holds " + e.what +
            "; its batches are answered one request at a time");
    }
    execute_alone(batch);
    return std::nullopt;
  }
  for (size_t i = 0; i < batch.size(); ++i) batch[i]->result = std::move(shares[i]);
  return seconds;
}

void Scheduler::execute_alone(const std::vector<Pending*>& batch) {
  for (Pending* p : batch) {
    try {
      p->result = forward_(p->args);
    } catch (...) {
      p->error = std::current_exception();
    }
  }
}

}  // namespace torch_serving
