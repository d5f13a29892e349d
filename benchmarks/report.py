"""Records benchmark results: one JSON file per benchmark and one Markdown section per benchmark.

`benchmarks/results/<name>.json` holds the latest full result; `docs/benchmarks.md` holds one
section per benchmark between HTML comment markers, replaced on each run so the page stays current
while the other sections are kept.

Both live in the source tree this package belongs to (the project is installed editable), not in
the working directory: `RESULTS_DIR` and `DOC_PATH` are absolute, and `record` reads them when it
is called unless its `results_dir` and `doc_path` arguments say otherwise.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"
DOC_PATH = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
_DOC_HEADER = (
    "# Benchmarks\n\n"
    "Numbers measured by `twotower bench ...`; each section is rewritten by its benchmark. "
    "Raw results: `benchmarks/results/*.json`. Latency percentiles (p50, p90, p95, p99) "
    "interpolate linearly between the nearest measured values, numpy's default "
    "(`benchmarks/stats.py`), in every section.\n"
)


def machine_info() -> dict[str, Any]:
    """Facts about the machine a result was measured on."""
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def atomic_write_text(path: Path, text: str) -> None:
    """Writes `text` to `path` through a temporary file and a rename, so readers never see half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; results are meant to be read by anyone
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Renders a Markdown table; floats get 4 significant decimals."""

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.4f}" if abs(value) < 1000 else f"{value:,.0f}"
        return str(value)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def record(
    name: str,
    result: dict[str, Any],
    markdown: str,
    results_dir: Path | None = None,
    doc_path: Path | None = None,
) -> Path:
    """Writes `result` to `<results_dir>/<name>.json` and `markdown` as section `name` of the doc.

    Args:
      results_dir: where the JSON goes; None: `RESULTS_DIR`, the source tree's benchmarks/results.
      doc_path: the Markdown page; None: `DOC_PATH`, the source tree's docs/benchmarks.md.

    Returns:
      The path of the JSON file.
    """
    results_dir = RESULTS_DIR if results_dir is None else Path(results_dir)
    doc_path = DOC_PATH if doc_path is None else Path(doc_path)
    payload = {"benchmark": name, "machine": machine_info(), **result}
    json_path = results_dir / f"{name}.json"
    atomic_write_text(json_path, json.dumps(payload, indent=2, sort_keys=False) + "\n")
    begin, end = f"<!-- bench:{name}:begin -->", f"<!-- bench:{name}:end -->"
    section = f"{begin}\n{markdown.rstrip()}\n{end}"
    doc = doc_path.read_text() if doc_path.exists() else _DOC_HEADER
    if begin in doc and end in doc:
        head, rest = doc.split(begin, 1)
        doc = head + section + rest.split(end, 1)[1]
    else:
        doc = doc.rstrip() + "\n\n" + section + "\n"
    atomic_write_text(doc_path, doc)
    return json_path
