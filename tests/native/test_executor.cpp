// The executor without Python: results and errors come back to the caller,
// a caller stops waiting at its deadline while the call runs on, counted
// until it ends, and calls beyond the threads queue.
#include <atomic>
#include <chrono>
#include <future>
#include <stdexcept>
#include <thread>

#include "errors.h"
#include "executor.h"

#include "doctest_after_torch.h"

using torch_serving::CallCount;
using torch_serving::DeadlineError;
using torch_serving::Executor;
using torch_serving::Placement;

namespace {

// Counts as an admission does, without a limit.
struct Count : CallCount {
  std::atomic<int> held{0};
  void hold() override { ++held; }
  void leave() override { --held; }
};

}  // namespace

TEST_CASE("a call runs on a pool thread and its exception reaches the caller") {
  Executor executor(2);
  std::thread::id ran_on;
  executor.run([&] { ran_on = std::this_thread::get_id(); }, 10.0);
  CHECK(ran_on != std::this_thread::get_id());
  CHECK_THROWS_WITH_AS(executor.run([] { throw std::invalid_argument("bad input"); }, 10.0), "bad input",
                       std::invalid_argument);
}

TEST_CASE("a caller stops waiting at its deadline; the call finishes without it, counted until it ends") {
  auto count = std::make_shared<Count>();
  Executor executor(1, count);
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  auto finished = std::make_shared<std::atomic<bool>>(false);
  auto started = std::chrono::steady_clock::now();
  CHECK_THROWS_AS(executor.run(
                      [released, finished] {
                        released.wait();
                        *finished = true;
                      },
                      0.05),
                  DeadlineError);
  CHECK(std::chrono::steady_clock::now() - started < std::chrono::seconds(5));
  CHECK_FALSE(*finished);
  // The abandoned call still takes the only thread: the count holds it.
  CHECK(count->held == 1);
  release.set_value();
  for (int i = 0; i < 500 && count->held != 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(2));
  CHECK(*finished);
  CHECK(count->held == 0);
  int runs = 0;
  executor.run([&] { ++runs; }, 1.0);
  CHECK(runs == 1);
  CHECK(count->held == 0);  // a call that ends in time is never held
}

TEST_CASE("calls beyond the threads queue for them") {
  Executor executor(1);
  std::atomic<int> done{0};
  std::vector<std::thread> callers;
  for (int i = 0; i < 3; ++i) callers.emplace_back([&] {
    executor.run(
        [&] {
          std::this_thread::sleep_for(std::chrono::milliseconds(20));
          ++done;
        },
        10.0);
  });
  for (auto& caller : callers) caller.join();
  CHECK(done == 3);
}

TEST_CASE("a call whose caller gave up while it queued never runs, and is counted until dropped") {
  auto count = std::make_shared<Count>();
  Executor executor(1, count);
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  // Hold the only thread, so that the next call queues.
  std::thread holder([&] { executor.run([released] { released.wait(); }, 10.0); });
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  auto ran = std::make_shared<std::atomic<bool>>(false);
  CHECK_THROWS_AS(executor.run([ran] { *ran = true; }, 0.05), DeadlineError);
  CHECK(count->held == 1);
  release.set_value();
  holder.join();
  // The queue is drained once a later call completes on the single thread.
  executor.run([] {}, 10.0);
  CHECK_FALSE(*ran);
  CHECK(count->held == 0);
}

TEST_CASE("a quick call runs in the caller's thread while a slot is free, and queues otherwise") {
  Executor executor(1);
  std::thread::id ran_on;
  executor.run([&] { ran_on = std::this_thread::get_id(); }, 10.0, Placement::kCallerIfIdle);
  CHECK(ran_on == std::this_thread::get_id());
  CHECK_THROWS_WITH_AS(
      executor.run([] { throw std::invalid_argument("bad input"); }, 10.0, Placement::kCallerIfIdle), "bad input",
      std::invalid_argument);

  // The only slot is taken by a call on the pool: a quick call must queue for it.
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  std::thread holder([&] { executor.run([released] { released.wait(); }, 10.0); });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));  // the holder's call has the slot
  bool ran_inline = true;
  auto queued = std::async(std::launch::async, [&] {
    std::thread::id caller = std::this_thread::get_id();
    executor.run([&] { ran_inline = std::this_thread::get_id() == caller; }, 10.0, Placement::kCallerIfIdle);
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  release.set_value();
  queued.get();
  CHECK_FALSE(ran_inline);
  holder.join();
}

TEST_CASE("a call placed in its caller runs there at once even when every slot is taken") {
  Executor executor(1);
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  std::promise<void> holding;
  std::thread holder([&] {
    executor.run(
        [released, &holding] {
          holding.set_value();
          released.wait();
        },
        10.0);
  });
  holding.get_future().wait();  // the only slot is held
  std::thread::id ran_on;
  executor.run([&] { ran_on = std::this_thread::get_id(); }, 10.0, Placement::kEventLoop);
  CHECK(ran_on == std::this_thread::get_id());
  release.set_value();
  holder.join();
}

TEST_CASE("a quick call whose deadline already passed never runs") {
  Executor executor(1);
  bool ran = false;
  CHECK_THROWS_AS(executor.run([&] { ran = true; }, 0.0, Placement::kCallerIfIdle), DeadlineError);
  CHECK_FALSE(ran);
  executor.run([&] { ran = true; }, 10.0, Placement::kCallerIfIdle);  // the slot was given back
  CHECK(ran);
}

TEST_CASE("a call that waits in a model's queue runs in its caller, and one that ends past its deadline throws then") {
  Executor executor(1);
  std::thread::id ran_on;
  executor.run([&] { ran_on = std::this_thread::get_id(); }, 10.0, Placement::kQueuedCaller);
  CHECK(ran_on == std::this_thread::get_id());
  // Its forward cannot be abandoned: the caller learns of the deadline when it ends.
  bool finished = false;
  CHECK_THROWS_WITH_AS(executor.run(
                           [&] {
                             std::this_thread::sleep_for(std::chrono::milliseconds(100));
                             finished = true;
                           },
                           0.05, Placement::kQueuedCaller),
                       "the call did not finish in time", DeadlineError);
  CHECK(finished);
  executor.run([&] { ran_on = std::this_thread::get_id(); }, 10.0, Placement::kQueuedCaller);  // the slot was given back
  CHECK(ran_on == std::this_thread::get_id());
}
