// The batcher without a model: when a batch's first request stops waiting
// for more, and which requests then share its forward.
#include <ATen/ATen.h>

#include <chrono>
#include <future>
#include <mutex>
#include <thread>
#include <vector>

#include "batching.h"

#include "doctest_after_torch.h"

using torch_serving::BatchPolicy;
using torch_serving::Batcher;

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
  Batcher batcher(BatchPolicy{8, 0.4}, [&](std::vector<c10::IValue> args) { return forward(std::move(args)); },
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

TEST_CASE("without a delay, requests queued behind a forward run as soon as it ends") {
  HeldForward forward;
  Batcher batcher(BatchPolicy{8, 0}, [&](std::vector<c10::IValue> args) { return forward(std::move(args)); },
                  "held.pt", [](const std::string&) {}, false);
  auto first = std::async(std::launch::async, [&] { return batcher.run(one_row(0)).toTensor(); });
  forward.entered.get_future().wait();
  std::vector<std::future<at::Tensor>> queued;
  for (float value : {10.0f, 20.0f, 30.0f}) {
    queued.push_back(std::async(std::launch::async, [&batcher, value] { return batcher.run(one_row(value)).toTensor(); }));
  }
  // Let all three queue; none may run before the forward is released.
  std::this_thread::sleep_for(300ms);
  CHECK(forward.rows == std::vector<int64_t>{1});
  forward.release.set_value();
  CHECK(first.get().equal(at::full({1, 2}, 1.0f)));
  for (size_t i = 0; i < queued.size(); ++i) {
    CHECK(queued[i].get().equal(at::full({1, 2}, 10.0f * float(i + 1) + 1)));
  }
  CHECK(forward.rows == std::vector<int64_t>{1, 3});
}
