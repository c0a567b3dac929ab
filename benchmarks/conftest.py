"""Print, after the codec benchmarks, each case's ratio to its floor."""

from __future__ import annotations

import pytest

_MEDIANS: dict[tuple[str, str], float] = {}


@pytest.fixture
def measure(benchmark, request):
    """Benchmark ``fn`` and remember its median under (group, role)."""

    def run(group: str, role: str, fn, *args):
        benchmark.group = group
        benchmark.extra_info["role"] = role
        result = benchmark(fn, *args)
        _MEDIANS[(group, role)] = benchmark.stats.stats.median
        return result

    return run


def pytest_terminal_summary(terminalreporter):
    groups = sorted({group for group, _ in _MEDIANS})
    if not groups:
        return
    write = terminalreporter.write_line
    write("")
    write("codec ratios (median time / floor's median time; lower is better):")
    write(f"{'group':<28}{'ours':>10}{'naive':>10}")
    for group in groups:
        floor = _MEDIANS.get((group, "floor"))
        if not floor:
            continue
        ours = _MEDIANS.get((group, "ours"), float("nan")) / floor
        naive = _MEDIANS.get((group, "naive"), float("nan")) / floor
        write(f"{group:<28}{ours:>10.2f}{naive:>10.2f}")
