// The executor without Python: results and errors come back to the caller,
// a caller stops waiting at its deadline while the call runs on, and a full
// executor refuses work without running it.
#include <atomic>
#include <chrono>
#include <future>
#include <stdexcept>
#include <thread>

#include "errors.h"
#include "executor.h"

#include "doctest_after_torch.h"

using torch_serving::BusyError;
using torch_serving::DeadlineError;
using torch_serving::Executor;
using torch_serving::Placement;

TEST_CASE("a call runs on a pool thread and its exception reaches the caller") {
  Executor executor(2, 0);
  std::thread::id ran_on;
  executor.run([&] { ran_on = std::this_thread::get_id(); }, 10.0);
  CHECK(ran_on != std::this_thread::get_id());
  CHECK_THROWS_WITH_AS(executor.run([] { throw std::invalid_argument("bad input"); }, 10.0), "bad input",
                       std::invalid_argument);
}

TEST_CASE("a caller stops waiting at its deadline; the call finishes without it") {
  Executor executor(1, 0);
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
  // The abandoned call still holds the only slot.
  CHECK_THROWS_WITH_AS(executor.run([] {}, 1.0), "1 calls are running or queued, the limit", BusyError);
  release.set_value();
  for (int i = 0; i < 500 && !*finished; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(2));
  CHECK(*finished);
  // The slot is free again once the call ends.
  int runs = 0;
  for (int attempt = 0; attempt < 500 && runs == 0; ++attempt) {
    try {
      executor.run([&] { ++runs; }, 1.0);
    } catch (const BusyError&) {
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
  }
  CHECK(runs == 1);
}

TEST_CASE("the backlog queues calls up to the limit") {
  Executor executor(1, 2);
  CHECK(executor.limit() == 3);
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

TEST_CASE("a call whose caller gave up while it queued never runs") {
  Executor executor(1, 1);
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  // Hold the only thread, so that the next call queues.
  std::thread holder([&] { executor.run([released] { released.wait(); }, 10.0); });
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  auto ran = std::make_shared<std::atomic<bool>>(false);
  CHECK_THROWS_AS(executor.run([ran] { *ran = true; }, 0.05), DeadlineError);
  release.set_value();
  holder.join();
  // The queue is drained once a later call completes on the single thread.
  executor.run([] {}, 10.0);
  CHECK_FALSE(*ran);
}

TEST_CASE("a quick call runs in the caller's thread while a slot is free, and queues otherwise") {
  Executor executor(1, 1);
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
  Executor executor(1, 0);
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
  holding.get_future().wait();  // the only slot is held, and no backlog is allowed
  CHECK_THROWS_AS(executor.run([] {}, 10.0, Placement::kCallerIfIdle), BusyError);
  std::thread::id ran_on;
  executor.run([&] { ran_on = std::this_thread::get_id(); }, 10.0, Placement::kEventLoop);
  CHECK(ran_on == std::this_thread::get_id());
  release.set_value();
  holder.join();
}

TEST_CASE("a quick call whose deadline already passed never runs") {
  Executor executor(1, 0);
  bool ran = false;
  CHECK_THROWS_AS(executor.run([&] { ran = true; }, 0.0, Placement::kCallerIfIdle), DeadlineError);
  CHECK_FALSE(ran);
  executor.run([&] { ran = true; }, 10.0, Placement::kCallerIfIdle);  // the slot was given back
  CHECK(ran);
}
