"""The PNG of a run's training curves: loss, validation ranking and throughput per epoch."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

# (title, the history's series drawn in that panel)
_PANELS = (
    ("training loss", ("loss",)),
    ("validation ranking", ("val_recall_at_10", "val_ndcg_at_10")),
    ("training examples/s", ("examples_per_second",)),
)


def write_training_curves(history: Mapping[str, Sequence[float]], path: Path) -> None:
    """Draws the per-epoch `history` (Keras' `History.history`) into a PNG at `path`.

    A panel whose series are absent from `history` is left out; with none, nothing is written.
    """
    panels = [(title, [name for name in names if history.get(name)]) for title, names in _PANELS]
    panels = [(title, names) for title, names in panels if names]
    if not panels:
        return
    import matplotlib

    matplotlib.use("Agg")  # no display: training runs headless
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.4), squeeze=False)
    for axis, (title, names) in zip(axes[0], panels, strict=True):
        for name in names:
            values = history[name]
            axis.plot(range(1, len(values) + 1), values, marker="o", label=name)
        axis.set_title(title)
        axis.set_xlabel("epoch")
        axis.grid(alpha=0.3)
        if len(names) > 1:
            axis.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
