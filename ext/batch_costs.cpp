// Learning a model's forward cost by rows, and choosing a batch size from it.
#include "batch_costs.h"

#include <algorithm>

namespace torch_serving {

double BatchCosts::Size::estimate() const { return *std::min_element(recent.begin(), recent.begin() + kept); }

void BatchCosts::record(int64_t rows, double seconds) {
  Size& size = sizes_[rows];
  size.recent[size.next] = seconds;
  size.next = (size.next + 1) % kWindow;
  size.kept = std::min(size.kept + 1, kWindow);
  size.measured_at = ++forwards_;
}

size_t BatchCosts::choose(const std::vector<int64_t>& sizes) const {
  const size_t largest = sizes.size() - 1;
  auto known = [&](int64_t rows) -> const Size* {
    auto found = sizes_.find(rows);
    return found == sizes_.end() ? nullptr : &found->second;
  };
  const Size* full = known(sizes[largest]);
  if (full == nullptr || forwards_ - full->measured_at >= kRefreshForwards) return largest;
  size_t best = largest;
  double best_per_row = full->estimate() / double(sizes[largest]);
  for (size_t i = largest; i-- > 0;) {
    const Size* size = known(sizes[i]);
    if (size == nullptr) continue;
    const double per_row = size->estimate() / double(sizes[i]);
    if (per_row < best_per_row * (1 - kMargin)) {
      best = i;
      best_per_row = per_row;
    }
  }
  return best;
}

std::vector<std::pair<int64_t, double>> BatchCosts::estimates() const {
  std::vector<std::pair<int64_t, double>> out;
  for (const auto& [rows, size] : sizes_) out.emplace_back(rows, size.estimate());
  return out;
}

}  // namespace torch_serving
