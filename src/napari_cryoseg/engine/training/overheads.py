"""Fine-tuning's overheads sized to its time budget.

Before a fine-tuning step is made the parent is scored on the held-out corrections, the
BatchNorm statistics may be re-estimated on the user's images (and the result scored
again), and after training the blends with the parent are scored. On a 2-core CPU with
a 60 s budget those checks took about 50 s and left one optimiser step. Here they get at
most :data:`OVERHEAD_SHARE` of the budget: the re-estimation stops early (it averages
the batches it saw, so fewer batches give a noisier but valid estimate) or is skipped,
and blends that no longer fit are not scored.
"""

from __future__ import annotations

__all__ = ["OVERHEAD_SHARE", "adapt_time_limit", "affordable_blends", "overhead_budget_s"]

#: Most of a fine-tuning budget that scoring and BatchNorm re-estimation may use.
OVERHEAD_SHARE = 0.25
#: Re-estimating BatchNorm statistics on less time than this is not worth starting.
MIN_ADAPT_S = 0.5


def overhead_budget_s(budget_s: float | None) -> float:
    """Seconds of ``budget_s`` that checks may use (no limit without a budget)."""
    return float("inf") if budget_s is None else OVERHEAD_SHARE * float(budget_s)


def adapt_time_limit(budget_s: float | None, spent_s: float, score_s: float) -> float | None:
    """Seconds the BatchNorm re-estimation may take; None = no limit; 0 = skip it.

    ``spent_s`` is the overhead already spent (scoring the parent), ``score_s`` what one
    held-out scoring costs: the adapted start is scored once more afterwards.
    """
    if budget_s is None:
        return None
    left = overhead_budget_s(budget_s) - spent_s - score_s
    return left if left >= MIN_ADAPT_S else 0.0


def affordable_blends(blends: tuple[float, ...] | list[float], budget_s: float | None,
                      spent_s: float, score_s: float) -> tuple[float, ...]:
    """The blend weights that can still be scored within the overhead share.

    Weight 1.0 (the trained weights, scored during training) is always kept; the others
    cost one held-out scoring each and are dropped from the nearest-the-parent end last
    (the smallest weights are the most conservative choices and are kept first).
    """
    if budget_s is None or score_s <= 0:
        return tuple(blends)
    left = overhead_budget_s(budget_s) - spent_s
    kept = []
    for weight in sorted(blends):
        if weight >= 1.0:
            kept.append(weight)
        elif left >= score_s:
            kept.append(weight)
            left -= score_s
    return tuple(sorted(kept)) or (1.0,)


def validation_share(budget_s: float | None, spent_s: float, reserve_s: float,
                     train_s: float, *, most: float = 0.25, least: float = 0.05) -> float:
    """Share of the training time the held-out checks during training may take.

    What is left of the overhead share after the checks before (``spent_s``) and after
    (``reserve_s``) training, as a share of the ``train_s`` seconds left to train,
    between ``least`` (a check now and then always) and ``most``.
    """
    if budget_s is None or train_s <= 0:
        return most
    left = overhead_budget_s(budget_s) - spent_s - reserve_s
    return float(min(max(left / train_s, least), most))
