"""benchmarks.stats: the one percentile definition of the index and serve benchmarks, by hand."""

import pytest

from benchmarks.serve import summarize
from benchmarks.stats import latency_ms, percentile, percentiles

# Linear interpolation: for n sorted values the q-th percentile sits at h = (n - 1) * q / 100,
# between x[floor(h)] and x[floor(h) + 1].


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        ([1, 2, 3, 4], 50, 2.5),  # h = 1.5: halfway between 2 and 3
        ([1, 2, 3, 4], 25, 1.75),  # h = 0.75
        ([1, 2, 3, 4], 95, 3.85),  # h = 2.85
        ([4, 1, 3, 2], 50, 2.5),  # order does not matter
        ([1, 3], 50, 2.0),
        ([15, 20, 35, 40, 50], 5, 16.0),  # h = 0.2: 15 + 0.2 * 5
        ([15, 20, 35, 40, 50], 30, 23.0),  # h = 1.2: 20 + 0.2 * 15
        ([15, 20, 35, 40, 50], 40, 29.0),  # h = 1.6: 20 + 0.6 * 15
        ([15, 20, 35, 40, 50], 50, 35.0),  # h = 2: the middle value
        ([15, 20, 35, 40, 50], 100, 50.0),
        ([15, 20, 35, 40, 50], 0, 15.0),
        (list(range(1, 101)), 50, 50.5),  # h = 49.5
        (list(range(1, 101)), 95, 95.05),  # h = 94.05
        (list(range(1, 101)), 99, 99.01),  # h = 98.01
        (list(range(1, 1001)), 99.9, 999.001),  # h = 998.001
        ([7.5], 99, 7.5),
    ],
)
def test_percentile_known_answers(values, q, expected):
    assert percentile(values, q) == pytest.approx(expected)


def test_percentiles_answer_each_quantile_in_order():
    assert percentiles([1, 2, 3, 4], (0, 50, 100)) == pytest.approx([1.0, 2.5, 4.0])


@pytest.mark.parametrize(("values", "q"), [([], 50), ([1.0], -1), ([1.0], 100.5)])
def test_percentile_rejects_bad_input(values, q):
    with pytest.raises(ValueError):
        percentile(values, q)


def test_latency_ms_known_answers():
    # 1..101 ms: the median is 51 ms, p90 is 91 ms, p99 is 100 ms, mean 51 ms.
    summary = latency_ms([v / 1000 for v in range(1, 102)])
    assert summary == pytest.approx({"p50": 51.0, "p90": 91.0, "p99": 100.0, "mean": 51.0})
    # Linear interpolation between two samples: p50 of 1 ms and 3 ms is 2 ms.
    assert latency_ms([0.001, 0.003], quantiles=(50,))["p50"] == pytest.approx(2.0)
    with pytest.raises(ValueError):
        latency_ms([])


def test_index_and_serve_summaries_agree():
    # The index benchmark reports latency_ms, the serve benchmark summarize: same p50 and p99.
    latencies_s = [0.004, 0.001, 0.003, 0.002, 0.010]
    index = latency_ms(latencies_s, quantiles=(50, 99))
    serve = summarize(latencies_s)
    assert serve.p50_ms == pytest.approx(index["p50"]) == pytest.approx(3.0)
    # h = 3.96: 4 + 0.96 * (10 - 4)
    assert serve.p99_ms == pytest.approx(index["p99"]) == pytest.approx(9.76)
    assert serve.mean_ms == pytest.approx(index["mean"]) == pytest.approx(4.0)
