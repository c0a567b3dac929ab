// What a batching model's forwards cost by rows, learnt from the forwards it
// runs, so that its scheduler forms the batch that is cheapest per row.
//
// A forward's cost by rows is a property of the model and the CPU, and it
// need not fall with rows: a matrix product may run its rows three at a
// time, so that 3 rows cost what 1 row costs and 4 rows twice that. Taking
// the whole queue then wastes work; leaving its last requests for the next
// forward does not.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <map>
#include <utility>
#include <vector>

namespace torch_serving {

// Not thread-safe: its scheduler calls it under its own lock.
class BatchCosts {
 public:
  // Forwards of each size whose durations are kept: the estimate is the
  // least of them, since what else runs on the machine (sharing its caches
  // and memory bandwidth) can only slow a forward.
  static constexpr size_t kWindow = 8;
  // Forwards after which the largest reachable size is measured again even
  // if a smaller one looks cheaper, so that an estimate taken while the
  // machine was busy does not stand for good.
  static constexpr uint64_t kRefreshForwards = 64;
  // How much cheaper per row a smaller batch must look to be preferred:
  // more than the forwards' run-to-run noise.
  static constexpr double kMargin = 0.05;

  // Records that one forward of `rows` rows took `seconds` (its scheduler
  // measures the CPU time of the thread that ran it).
  void record(int64_t rows, double seconds);

  // Given the batch sizes a forward can take, ascending (each a number of
  // rows; the last is all that is within reach), returns the index of the
  // one to run: the largest, unless it was never measured or not lately,
  // or a smaller measured size costs at least kMargin less per row.
  size_t choose(const std::vector<int64_t>& sizes) const;

  // Each measured size's rows and estimated seconds, ascending by rows.
  std::vector<std::pair<int64_t, double>> estimates() const;

 private:
  struct Size {
    std::array<double, kWindow> recent{};  // the last `kept` durations, as a ring
    size_t kept = 0;
    size_t next = 0;
    uint64_t measured_at = 0;  // forwards_ when it was last recorded

    double estimate() const;
  };

  // Only the sizes that have run: a model may declare any max_batch_size.
  std::map<int64_t, Size> sizes_;
  uint64_t forwards_ = 0;
};

}  // namespace torch_serving
