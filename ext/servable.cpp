// What every kind of loaded model shares: counters, timing, and what its
// errors mean.
#include "servable.h"

#include <c10/util/Exception.h>

#include <new>
#include <system_error>
#include <thread>

#include "errors.h"

namespace torch_serving {
namespace {

// Whether `e` says an allocation failed: torch's OutOfMemoryError (CUDA),
// std::bad_alloc, or the CPU allocator's error, which TorchScript and
// AOTInductor rethrow as a plain error carrying its text.
bool is_out_of_memory(const std::exception& e) {
  if (dynamic_cast<const c10::OutOfMemoryError*>(&e) || dynamic_cast<const std::bad_alloc*>(&e)) return true;
  std::string_view what = e.what();
  return what.find("can't allocate memory") != std::string_view::npos ||
         what.find("out of memory") != std::string_view::npos;
}

}  // namespace

std::string message_of(const std::exception& e) {
  const auto* error = dynamic_cast<const c10::Error*>(&e);
  return error ? error->what_without_backtrace() : e.what();
}

c10::IValue Servable::run(std::vector<c10::IValue> args, Deadline deadline) const {
  requests_.fetch_add(1, std::memory_order_relaxed);
  return result_of(scheduler_->run(scheduled_arguments(std::move(args)), deadline));
}

void Servable::submit(std::vector<c10::IValue> args, Deadline deadline, Scheduler::Done done) const {
  requests_.fetch_add(1, std::memory_order_relaxed);
  scheduler_->submit(scheduled_arguments(std::move(args)), deadline,
                     [this, done = std::move(done)](c10::IValue scheduled, std::exception_ptr error) {
                       c10::IValue result;
                       if (!error) {
                         try {
                           result = result_of(std::move(scheduled));
                         } catch (...) {
                           error = std::current_exception();
                         }
                       }
                       done(std::move(result), error);
                     });
}

bool Servable::typically_under(int64_t ns) const {
  const int64_t typical = typical_execution_ns_.load(std::memory_order_relaxed);
  return typical >= 0 && typical < ns;
}

bool Servable::is_quick() const {
  // Past this, a call that cannot be abandoned at its deadline could
  // overrun it noticeably.
  return max_batch_size() == 0 && typically_under(1'000'000);
}

bool Servable::may_wait_in_caller() const { return max_batch_size() > 0 && typically_under(100'000'000); }

void Servable::record_execution_time(std::chrono::steady_clock::duration took) const {
  const int64_t ns = std::chrono::duration_cast<std::chrono::nanoseconds>(took).count();
  const int64_t typical = typical_execution_ns_.load(std::memory_order_relaxed);
  // Racing updates may drop a sample; the average stays an average.
  typical_execution_ns_.store(typical < 0 ? ns : typical + (ns - typical) / 8, std::memory_order_relaxed);
}

std::string essential_message(const std::string& what) {
  auto trimmed = [](std::string s) {
    s.erase(0, s.find_first_not_of(" \t\r\n"));
    s.erase(s.find_last_not_of(" \t\r\n") + 1);
    return s;
  };
  std::string text = trimmed(what);
  if (text.find("Traceback of TorchScript") != std::string::npos) {
    return trimmed(text.substr(text.rfind('\n') + 1));
  }
  return trimmed(text.substr(0, text.find('\n')));
}

void fail_execution(const std::exception& e, const std::string& what) {
  // An allocation failure is the server's state, not the inputs' fault.
  if (is_out_of_memory(e)) throw ResourceError("forward ran out of memory: " + essential_message(what));
  throw ExecutionError("forward raised: " + essential_message(what));
}

void release_without_waiting(std::shared_ptr<const Servable> model) {
  // Not the last: another holder drops that one. Should it drop its own between this check and
  // the return, this one waits here after all: the window is a few instructions wide, within what
  // is already rare (a model dropped from the cache during the forward of a request it queued).
  if (model.use_count() != 1) return;
  try {
    std::thread([model = std::move(model)]() mutable { model.reset(); }).detach();
  } catch (const std::system_error&) {
    // No thread to be had: dropped here, waiting.
  }
}

}  // namespace torch_serving
