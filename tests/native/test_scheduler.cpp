// The scheduler without a model: how many forwards run at once, when a
// batch's first request stops waiting for more, and which requests then
// share its forward.
#include <ATen/ATen.h>

#include <chrono>
#include <condition_variable>
#include <future>
#include <mutex>
#include <thread>
#include <vector>

#include <time.h>

#include "errors.h"
#include "scheduler.h"

#include "doctest_after_torch.h"

using torch_serving::Scheduler;
using torch_serving::ServingPolicy;

namespace {

using namespace std::chrono_literals;

// A forward that records the rows of each call and holds its first call
// until `release` is set.
struct HeldForward {
  std::mutex mutex;
  std::vector<int64_t> rows;
  std::promise<void> entered;
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();

  c10::IValue operator()(std::vector<c10::IValue> args) {
    const at::Tensor x = args[0].toTensor();
    bool first = false;
    {
      std::lock_guard<std::mutex> lock(mutex);
      first = rows.empty();
      rows.push_back(x.size(0));
    }
    if (first) {
      entered.set_value();
      released.wait();
    }
    return x + 1;
  }
};

std::vector<c10::IValue> one_row(float value) { return {at::full({1, 2}, value)}; }

// A scheduler of one instance running `forward` under `policy`.
Scheduler held_by(HeldForward& forward, ServingPolicy policy) {
  return Scheduler(policy, 1, [&forward](std::vector<c10::IValue> args) { return forward(std::move(args)); },
                   "held.pt", [](const std::string&) {}, false);
}

}  // namespace

TEST_CASE("a request queued behind a forward waits the delay from when the model is free, and late ones join it") {
  HeldForward forward;
  // 400 ms: long against thread start-up on a busy machine, short for a test.
  Scheduler batcher = held_by(forward, ServingPolicy{8, 0.4});
  auto first = std::async(std::launch::async, [&] { return batcher.run(one_row(0)).toTensor(); });
  forward.entered.get_future().wait();  // alone after its delay, now running
  auto queued = std::async(std::launch::async, [&] { return batcher.run(one_row(10)).toTensor(); });
  // Held longer than the delay: counted from its arrival, the queued
  // request would run alone the moment the forward ends.
  std::this_thread::sleep_for(600ms);
  forward.release.set_value();
  std::this_thread::sleep_for(100ms);
  auto late = std::async(std::launch::async, [&] { return batcher.run(one_row(20)).toTensor(); });

  CHECK(first.get().equal(at::full({1, 2}, 1.0f)));
  CHECK(queued.get().equal(at::full({1, 2}, 11.0f)));
  CHECK(late.get().equal(at::full({1, 2}, 21.0f)));
  CHECK(forward.rows == std::vector<int64_t>{1, 2});
}

TEST_CASE("without a delay, requests queued behind a forward all run as soon as it ends, up to max_batch_size rows") {
  HeldForward forward;
  Scheduler scheduler = held_by(forward, ServingPolicy{8, 0});
  auto first = std::async(std::launch::async, [&] { return scheduler.run(one_row(0)).toTensor(); });
  forward.entered.get_future().wait();
  std::vector<std::future<at::Tensor>> queued;
  for (int i = 1; i <= 11; ++i) {
    queued.push_back(std::async(std::launch::async, [&scheduler, i] { return scheduler.run(one_row(float(i))).toTensor(); }));
  }
  // Let all eleven queue; none may run before the forward is released.
  std::this_thread::sleep_for(300ms);
  CHECK(forward.rows == std::vector<int64_t>{1});
  forward.release.set_value();
  CHECK(first.get().equal(at::full({1, 2}, 1.0f)));
  for (int i = 1; i <= 11; ++i) CHECK(queued[i - 1].get().equal(at::full({1, 2}, float(i) + 1)));
  // The whole queue up to 8 rows, then the rest.
  CHECK(forward.rows == std::vector<int64_t>{1, 8, 3});
}

namespace {

// A forward that counts how many of its calls run at once, each taking `hold`.
struct ConcurrencyForward {
  std::chrono::milliseconds hold;
  std::mutex mutex;
  int running = 0;
  int peak = 0;
  std::vector<int64_t> rows;

  c10::IValue operator()(std::vector<c10::IValue> args) {
    const at::Tensor x = args[0].toTensor();
    {
      std::lock_guard<std::mutex> lock(mutex);
      peak = std::max(peak, ++running);
      rows.push_back(x.size(0));
    }
    std::this_thread::sleep_for(hold);
    {
      std::lock_guard<std::mutex> lock(mutex);
      --running;
    }
    return x * 2;
  }
};

// Runs `count` requests of one row each (row i holds i) from as many
// threads at once, and checks that each gets its own rows back.
void run_concurrently(Scheduler& scheduler, int count) {
  std::vector<std::future<at::Tensor>> answers;
  for (int i = 0; i < count; ++i) {
    answers.push_back(std::async(std::launch::async, [&scheduler, i] {
      return scheduler.run(one_row(float(i))).toTensor();
    }));
  }
  for (int i = 0; i < count; ++i) CHECK(answers[i].get().equal(at::full({1, 2}, 2.0f * float(i))));
}

}  // namespace

TEST_CASE("a model without batching runs at most its instances' forwards at once") {
  for (size_t instances : {1, 3}) {
    ConcurrencyForward forward{20ms};
    Scheduler scheduler(ServingPolicy{}, instances,
                        [&](std::vector<c10::IValue> args) { return forward(std::move(args)); }, "alone.pt",
                        [](const std::string&) {}, false);
    run_concurrently(scheduler, 12);
    CHECK(forward.peak <= int(instances));
    CHECK(scheduler.peak_running() == size_t(forward.peak));
    CHECK(forward.rows == std::vector<int64_t>(12, 1));  // no batching: one request per forward
  }
}

TEST_CASE("a model may declare any max_batch_size: nothing is sized by it") {
  ConcurrencyForward forward{5ms};
  Scheduler scheduler(ServingPolicy{int64_t(1) << 40, 0}, 1,
                      [&](std::vector<c10::IValue> args) { return forward(std::move(args)); }, "huge.pt",
                      [](const std::string&) {}, false);
  run_concurrently(scheduler, 8);
  CHECK_FALSE(scheduler.forward_costs().empty());
}

namespace {

// Checks that 24 one-row requests ran two forwards at a time, of at most 4 rows, some sharing one.
void check_two_batches_of_at_most_4(const ConcurrencyForward& forward) {
  CHECK(forward.peak == 2);
  int64_t rows = 0;
  for (int64_t r : forward.rows) {
    CHECK(r <= 4);
    rows += r;
  }
  CHECK(rows == 24);
  CHECK(forward.rows.size() < 24);  // some requests shared a forward
}

}  // namespace

TEST_CASE("a batching model with two instances runs two batches at once, never more") {
  ConcurrencyForward forward{30ms};
  Scheduler scheduler(ServingPolicy{4, 0, 2}, 2,
                      [&](std::vector<c10::IValue> args) { return forward(std::move(args)); }, "pair.pt",
                      [](const std::string&) {}, false);
  run_concurrently(scheduler, 24);
  check_two_batches_of_at_most_4(forward);
}

namespace {

// Submits `args` (Scheduler::submit) and returns the future its `done` fulfils, and which thread called it.
std::future<at::Tensor> submitted(Scheduler& scheduler, std::vector<c10::IValue> args,
                                  torch_serving::Deadline deadline = torch_serving::Deadline::max(),
                                  std::thread::id* caller = nullptr) {
  auto answer = std::make_shared<std::promise<at::Tensor>>();
  auto future = answer->get_future();
  scheduler.submit(std::move(args), deadline, [answer, caller](c10::IValue result, std::exception_ptr error) {
    if (caller) *caller = std::this_thread::get_id();
    if (error) answer->set_exception(error);
    else answer->set_value(result.toTensor());
  });
  return future;
}

}  // namespace

TEST_CASE("submitted requests join the batch of waiting ones, and each gets its own rows from the forward's thread") {
  HeldForward forward;
  Scheduler scheduler = held_by(forward, ServingPolicy{8, 0});
  auto first = std::async(std::launch::async, [&] { return scheduler.run(one_row(0)).toTensor(); });
  forward.entered.get_future().wait();
  std::vector<std::future<at::Tensor>> answers;
  std::vector<std::thread::id> callers(4);
  for (int i = 1; i <= 4; ++i) {
    answers.push_back(submitted(scheduler, one_row(float(i)), torch_serving::Deadline::max(), &callers[i - 1]));
  }
  auto waiting = std::async(std::launch::async, [&] { return scheduler.run(one_row(5)).toTensor(); });
  std::this_thread::sleep_for(200ms);
  CHECK(forward.rows == std::vector<int64_t>{1});  // none runs before the instance is free
  forward.release.set_value();
  CHECK(first.get().equal(at::full({1, 2}, 1.0f)));
  for (int i = 1; i <= 4; ++i) CHECK(answers[i - 1].get().equal(at::full({1, 2}, float(i) + 1)));
  CHECK(waiting.get().equal(at::full({1, 2}, 6.0f)));
  CHECK(forward.rows == std::vector<int64_t>{1, 5});
  // One forward answered the four: its thread called each `done`, and never the submitting one.
  for (const auto& caller : callers) CHECK(caller == callers[0]);
  CHECK(callers[0] != std::this_thread::get_id());
}

TEST_CASE("submitted requests without a waiting thread run on the scheduler's threads, at most one per instance") {
  ConcurrencyForward forward{20ms};
  Scheduler scheduler(ServingPolicy{4, 0, 2}, 2,
                      [&](std::vector<c10::IValue> args) { return forward(std::move(args)); }, "pair.pt",
                      [](const std::string&) {}, false);
  std::vector<std::future<at::Tensor>> answers;
  for (int i = 0; i < 24; ++i) answers.push_back(submitted(scheduler, one_row(float(i))));
  for (int i = 0; i < 24; ++i) CHECK(answers[i].get().equal(at::full({1, 2}, 2.0f * float(i))));
  check_two_batches_of_at_most_4(forward);
}

TEST_CASE("a submitted request still queued at its deadline gets DeadlineError then, and its forward never runs") {
  HeldForward forward;
  Scheduler scheduler = held_by(forward, ServingPolicy{8, 0});
  auto first = submitted(scheduler, one_row(0));
  forward.entered.get_future().wait();
  const auto deadline = std::chrono::steady_clock::now() + 100ms;
  auto late = submitted(scheduler, one_row(1), deadline);
  // Answered while the forward ahead of it still runs.
  REQUIRE(late.wait_for(5s) == std::future_status::ready);
  CHECK(std::chrono::steady_clock::now() >= deadline);
  CHECK_THROWS_AS(late.get(), torch_serving::DeadlineError);
  forward.release.set_value();
  CHECK(first.get().equal(at::full({1, 2}, 1.0f)));
  CHECK(forward.rows == std::vector<int64_t>{1});
}

TEST_CASE("a submitted request whose forward runs at its deadline gets DeadlineError then, and the next still runs") {
  HeldForward forward;
  Scheduler scheduler = held_by(forward, ServingPolicy{});
  const auto deadline = std::chrono::steady_clock::now() + 100ms;
  auto running = submitted(scheduler, one_row(0), deadline);
  forward.entered.get_future().wait();
  auto next = submitted(scheduler, one_row(1));
  // Answered while its forward is held: it cannot be abandoned, but need not be waited for.
  REQUIRE(running.wait_for(5s) == std::future_status::ready);
  CHECK(std::chrono::steady_clock::now() >= deadline);
  CHECK_THROWS_AS(running.get(), torch_serving::DeadlineError);
  CHECK(next.wait_for(100ms) == std::future_status::timeout);
  forward.release.set_value();
  CHECK(next.get().equal(at::full({1, 2}, 2.0f)));
  CHECK(forward.rows == std::vector<int64_t>{1, 1});
}

TEST_CASE("the serving policy names its keys and their ranges") {
  auto policy = torch_serving::parse_serving_policy(R"({"max_batch_size": 8, "max_batch_delay_ms": 2, "instance_count": 3})");
  CHECK(policy.max_batch_size == 8);
  CHECK(policy.max_delay_s == doctest::Approx(0.002));
  CHECK(policy.instance_count == 3);
  CHECK(torch_serving::parse_serving_policy(R"({"instance_count": 1})").batching() == false);
  CHECK_THROWS_WITH_AS(torch_serving::parse_serving_policy(R"({"instance_count": 0})"),
                       "instance_count must be an integer in [1, 256], got 0", std::invalid_argument);
  CHECK_THROWS_WITH_AS(torch_serving::parse_serving_policy(R"({"instances": 2})"),
                       "unknown key \"instances\"; the keys are max_batch_size, max_batch_delay_ms and instance_count",
                       std::invalid_argument);
}

TEST_CASE("batch costs: the largest size until a smaller one is measured cheaper per row by the margin") {
  torch_serving::BatchCosts costs;
  const std::vector<int64_t> sizes{1, 2, 3, 4};
  CHECK(costs.choose(sizes) == 3);  // nothing measured
  costs.record(3, 0.030);
  CHECK(costs.choose(sizes) == 3);  // 4 rows never measured: tried
  costs.record(4, 0.060);
  CHECK(costs.choose(sizes) == 2);  // 10 ms a row against 15
  // A slower forward of 3 rows does not raise the estimate: the least counts.
  costs.record(3, 0.090);
  CHECK(costs.choose(sizes) == 2);
  CHECK(costs.estimates() == std::vector<std::pair<int64_t, double>>{{3, 0.030}, {4, 0.060}});
  // Within the margin, the larger batch.
  costs.record(4, 0.0405);
  CHECK(costs.choose(sizes) == 3);
  CHECK(costs.choose({1, 2, 3}) == 2);
}

TEST_CASE("batch costs: the largest size is measured again after a while, and an old estimate leaves the window") {
  torch_serving::BatchCosts costs;
  costs.record(4, 0.001);  // taken while nothing else ran
  for (size_t i = 0; i < torch_serving::BatchCosts::kWindow; ++i) costs.record(4, 0.060);
  costs.record(2, 0.010);
  CHECK(costs.choose({2, 4}) == 0);
  for (uint64_t i = 1; i < torch_serving::BatchCosts::kRefreshForwards; ++i) costs.record(2, 0.010);
  CHECK(costs.choose({2, 4}) == 1);  // 4 rows last ran 64 forwards ago
  costs.record(4, 0.060);
  CHECK(costs.choose({2, 4}) == 0);
}

namespace {

// Keeps the calling thread busy until it has had `cpu` of CPU time: the
// scheduler measures forwards by their thread's CPU time.
void burn(std::chrono::milliseconds cpu) {
  auto used = [] {
    timespec now{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now);
    return std::chrono::seconds(now.tv_sec) + std::chrono::nanoseconds(now.tv_nsec);
  };
  const auto until = used() + cpu;
  while (used() < until) {
  }
}

// A forward whose cost falls per row only in steps of three rows, as a
// matrix product that runs its rows three at a time: `step` of CPU time
// for 1 to 3 rows, twice that for 4 to 6; its first call takes `first`
// whatever its rows. Counts the calls that have begun.
struct SteppedForward {
  std::chrono::milliseconds step;
  std::chrono::milliseconds first;
  std::mutex mutex;
  std::condition_variable changed;
  std::vector<int64_t> rows;

  c10::IValue operator()(std::vector<c10::IValue> args) {
    const at::Tensor x = args[0].toTensor();
    bool is_first = false;
    {
      std::lock_guard<std::mutex> lock(mutex);
      is_first = rows.empty();
      rows.push_back(x.size(0));
    }
    changed.notify_all();
    burn(is_first ? first : step * ((x.size(0) + 2) / 3));
    return x + 1;
  }

  void wait_for_calls(size_t count) {
    std::unique_lock<std::mutex> lock(mutex);
    changed.wait(lock, [&] { return rows.size() >= count; });
  }
};

}  // namespace

TEST_CASE("a batching model takes fewer requests than are queued when its forwards show fewer rows cost less per row") {
  SteppedForward forward{150ms, 300ms};
  Scheduler scheduler(ServingPolicy{8, 0}, 1, [&](std::vector<c10::IValue> args) { return forward(std::move(args)); },
                      "stepped.pt", [](const std::string&) {}, false);
  std::vector<std::future<at::Tensor>> answers;
  auto send = [&](int count) {
    for (int i = 0; i < count; ++i) {
      const float value = float(answers.size());
      answers.push_back(std::async(std::launch::async, [&scheduler, value] { return scheduler.run(one_row(value)).toTensor(); }));
    }
  };
  send(1);
  forward.wait_for_calls(1);
  send(3);  // queued behind the first forward: 3 rows, measured
  forward.wait_for_calls(2);
  send(4);  // queued behind it: 4 rows, never measured, so tried
  forward.wait_for_calls(3);
  send(4);  // 4 rows cost twice what 3 do: 3 run, and the last waits for the next forward
  for (size_t i = 0; i < answers.size(); ++i) CHECK(answers[i].get().equal(at::full({1, 2}, float(i) + 1)));
  CHECK(forward.rows == std::vector<int64_t>{1, 3, 4, 3, 1});
  const auto costs = scheduler.forward_costs();
  REQUIRE(costs.size() == 3);
  CHECK(costs[1].first == 3);
  CHECK(costs[1].second >= 0.150);
  CHECK(costs[2].first == 4);
  CHECK(costs[2].second >= 0.300);
}
