// The scheduler without a model: how many forwards run at once, when a
// batch's first request stops waiting for more, and which requests then
// share its forward.
#include <ATen/ATen.h>

#include <chrono>
#include <future>
#include <mutex>
#include <thread>
#include <vector>

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

}  // namespace

TEST_CASE("a request queued behind a forward waits the delay from when the model is free, and late ones join it") {
  HeldForward forward;
  // 400 ms: long against thread start-up on a busy machine, short for a test.
  Scheduler batcher(ServingPolicy{8, 0.4}, 1, [&](std::vector<c10::IValue> args) { return forward(std::move(args)); },
                    "held.pt", [](const std::string&) {}, false);
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
  Scheduler scheduler(ServingPolicy{8, 0}, 1, [&](std::vector<c10::IValue> args) { return forward(std::move(args)); },
                      "held.pt", [](const std::string&) {}, false);
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

TEST_CASE("a batching model with two instances runs two batches at once, never more") {
  ConcurrencyForward forward{30ms};
  Scheduler scheduler(ServingPolicy{4, 0, 2}, 2,
                      [&](std::vector<c10::IValue> args) { return forward(std::move(args)); }, "pair.pt",
                      [](const std::string&) {}, false);
  run_concurrently(scheduler, 24);
  CHECK(forward.peak == 2);
  int64_t rows = 0;
  for (int64_t r : forward.rows) {
    CHECK(r <= 4);
    rows += r;
  }
  CHECK(rows == 24);
  CHECK(forward.rows.size() < 24);  // some requests shared a forward
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
