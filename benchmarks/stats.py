"""Summary statistics of the benchmarks: one percentile definition for every latency they report.

Percentiles interpolate linearly between the two nearest ranks, numpy's default
(`np.percentile(values, q, method="linear")`, type 7 of Hyndman and Fan). For n values sorted
ascending, x[0] <= ... <= x[n - 1], the q-th percentile sits at position h = (n - 1) * q / 100:

    percentile = x[floor(h)] + (h - floor(h)) * (x[floor(h) + 1] - x[floor(h)])

so p0 is the minimum, p100 the maximum, p50 of [1, 2, 3, 4] is 2.5 and p50 of [1, 3] is 2. The
index benchmark (`benchmarks.index`) and the serve benchmark (`benchmarks.serve`) both summarize
through this module, so a p50 in one is comparable with a p50 in the other. A percentile need not
be one of the values measured.

Pure numpy: imports no TensorFlow.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

METHOD = "linear"
LATENCY_QUANTILES = (50, 90, 99)


def percentiles(values: Sequence[float], quantiles: Sequence[float]) -> list[float]:
    """The `quantiles` (percents in [0, 100]) of `values`, in any order, one float per quantile.

    Raises:
      ValueError: no values, or a quantile outside [0, 100].
    """
    array = np.asarray(values, dtype=np.float64)
    if array.size == 0:
        raise ValueError("percentile of no values")
    for q in quantiles:
        if not 0 <= q <= 100:
            raise ValueError(f"q must be in [0, 100], not {q}")
    return [float(v) for v in np.percentile(array, list(quantiles), method=METHOD)]


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile of `values` (any order); see the module docstring.

    Raises:
      ValueError: no values, or q outside [0, 100].
    """
    return percentiles(values, (q,))[0]


def latency_ms(
    latencies_s: Sequence[float], quantiles: Sequence[float] = LATENCY_QUANTILES
) -> dict[str, float]:
    """Latencies given in seconds summarized in milliseconds: {"p50": ..., "p90": ..., "mean": ...}.

    Raises:
      ValueError: no latencies, or a quantile outside [0, 100].
    """
    values = np.asarray(latencies_s, dtype=np.float64) * 1e3
    if values.size == 0:
        raise ValueError("no latencies to summarize")
    summary = {f"p{q:g}": v for q, v in zip(quantiles, percentiles(values, quantiles), strict=True)}
    summary["mean"] = float(values.mean())
    return summary
