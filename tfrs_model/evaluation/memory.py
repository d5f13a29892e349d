"""Memory bounds of offline evaluation: score blocks, EASE's item x item matrices, and errors.

Scoring ranks the whole catalog for every evaluated user, a block of users at a time. One scored
(user, item) pair costs `BYTES_PER_SCORE` bytes of working memory in the block: the score (at
most 8 bytes: float64 for the random baseline, float32 otherwise, plus the copy `top_k_excluding`
makes of a caller's array) and the int64 index `argpartition` returns for it (8 bytes).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from tfrs_model.errors import ConfigError, TwoTowerError

GIB = 1 << 30
BYTES_PER_SCORE = 16
# Blocks larger than this many scores are no faster (the top-k is per row) and each fresh
# allocation of hundreds of MB costs its page faults again: 2^22 float32 scores are 16 MiB.
MAX_BLOCK_SCORES = 1 << 22
BUDGET_FLAG = "--memory-budget-gb"


class EvaluationMemoryError(TwoTowerError, MemoryError):
    """Evaluation needed more memory than the machine had, within its configured budget."""


def budget_bytes(memory_budget_gb: float) -> int:
    """The budget in bytes."""
    return round(memory_budget_gb * GIB)


def users_per_block(num_items: int, memory_budget_gb: float) -> int:
    """How many users' `[users, num_items]` scores one block holds within the budget.

    At least 1, and at most `MAX_BLOCK_SCORES // num_items` (also at least 1).

    Raises:
      ConfigError: even one user's scores exceed `memory_budget_gb`.
    """
    per_user = max(1, num_items) * BYTES_PER_SCORE
    fitting = budget_bytes(memory_budget_gb) // per_user
    if fitting < 1:
        raise ConfigError(
            f"scoring one user against {num_items:,} items needs {per_user / GIB:.2f} GiB of "
            f"working memory, over evaluation.memory_budget_gb = {memory_budget_gb:g}; raise "
            f"it ({BUDGET_FLAG}) or evaluate a smaller catalog"
        )
    return int(max(1, min(fitting, MAX_BLOCK_SCORES // max(1, num_items))))


def ease_bytes(num_items: int) -> int:
    """Peak bytes of EASE's fit: the float64 Gram matrix, its inverse and LAPACK's working copy
    (then the weights, computed in place), `3 * 8 * I^2`."""
    return 3 * 8 * num_items * num_items


def ease_skip_reason(num_items: int, memory_budget_gb: float) -> str | None:
    """Why EASE cannot run within the budget on `num_items` items; None when it fits."""
    needed = ease_bytes(num_items)
    if needed <= budget_bytes(memory_budget_gb):
        return None
    return (
        f"its {num_items:,} x {num_items:,} item matrices need {needed / GIB:,.1f} GiB, over "
        f"evaluation.memory_budget_gb = {memory_budget_gb:g} (raise it with {BUDGET_FLAG} to "
        "include EASE)"
    )


@contextmanager
def memory_errors(memory_budget_gb: float) -> Iterator[None]:
    """Turns a `MemoryError` raised inside into an `EvaluationMemoryError` naming the budget.

    Raises:
      EvaluationMemoryError: the block inside ran out of memory.
    """
    try:
        yield
    except EvaluationMemoryError:
        raise
    except MemoryError as error:
        raise EvaluationMemoryError(
            f"evaluation ran out of memory ({error}) with evaluation.memory_budget_gb = "
            f"{memory_budget_gb:g}; lower it ({BUDGET_FLAG}) to score smaller blocks and skip "
            "EASE, score a seeded sample of users (--eval-users N), or use a machine with more "
            "memory"
        ) from error
