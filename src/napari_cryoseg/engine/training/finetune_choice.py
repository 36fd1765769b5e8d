"""Which weights a fine-tune returns, and the one line that says what came of it.

After training, the best weights by held-out Dice are averaged with the start (a blend
chosen on the held-out corrections, nearest the start unless moving further is clearly
better). Weights that forget the objects the user confirmed, of a class the corrections
shrink (``FinetuneConfig.keep_confirmed``), are not candidates.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence

import torch

from napari_cryoseg.engine.events import Message
from napari_cryoseg.engine.training.adapt import blend_states, choose_blend
from napari_cryoseg.engine.training.finetune_settings import FORGETFUL_BLEND, FinetuneConfig
from napari_cryoseg.engine.training.fitting import FitState

__all__ = ["choose_weights", "describe_outcome"]


def choose_weights(
    config: FinetuneConfig,
    state: FitState,
    start_state: dict[str, torch.Tensor],
    final_state: dict[str, torch.Tensor],
    start_metrics: dict[str, float],
    blends: Sequence[float],
    few_images: bool,
    score: Callable[[dict[str, torch.Tensor]], dict[str, float]],
    forgot: list[str],
    shrinking: Sequence[str] = (),
) -> Generator[Message, None, tuple[dict[str, torch.Tensor], dict[str, float], float,
                                 dict[float, float]]]:
    """The returned weights: the best (or last) trained weights blended with the start.

    Returns the weights, their held-out metrics, the blend weight and the held-out Dice
    of every blend scored. When every candidate forgets what the user confirmed of the
    ``shrinking`` classes (``config.keep_confirmed``) the start is returned and
    ``forgot`` gets why.
    """
    if score is None:  # no holdout: the last weights, blended as asked (or not at all)
        weight = config.parent_blend if config.parent_blend is not None else 1.0
        return blend_states(start_state, final_state, weight), {}, weight, {}
    if state.best_step == 0 or state.best_state is None:  # nothing beat the start
        return start_state, dict(start_metrics), 1.0, {}
    best_validation = next(v for v in state.validations if v["step"] == state.best_step)
    scores = {1.0: best_validation["metrics"]}

    def kept(weight: float) -> float:
        return min((scores[weight].get(f"kept/{name}", 1.0) for name in shrinking),
                   default=1.0)

    def keeps(weight: float) -> bool:
        return kept(weight) >= config.keep_confirmed

    # Weights that forget what the user confirmed are not candidates; averaging with
    # the start brings some of it back, so one more blend is tried when they do.
    tried = tuple(blends) if keeps(1.0) or not len(blends) > 1 else (
        *blends, FORGETFUL_BLEND)
    for weight in tried:
        if weight < 1.0:
            yield Message(f"scoring the average with the start (blend {weight:g}) on the "
                          "held-out corrections")
            scores[weight] = score(blend_states(start_state, state.best_state, weight))
    keeping = [w for w in scores if keeps(w)]
    if not keeps(1.0):
        forgot.append(f"the fine-tuned weights keep {kept(1.0):.0%} of the held-out "
                      f"objects you left as they were ({config.keep_confirmed:.0%} needed)")
        yield Message(forgot[-1] + ("; averages nearer the start are used instead"
                                    if keeping else "; the start is kept"))
    if not keeping:
        return start_state, dict(start_metrics), 1.0, {w: m["dice"] for w, m in
                                                        scores.items()}
    if config.parent_blend is None:  # chosen on the held-out corrections
        tolerance = config.blend_tolerance if few_images else 0.0
        weight = choose_blend({w: scores[w]["dice"] for w in keeping}, tolerance)
    elif few_images:  # a fixed blend is what was asked for
        weight = config.parent_blend if config.parent_blend in keeping else min(keeping)
    else:  # many images: their held-out images are independent, so they may refuse it
        weight = choose_blend({w: scores[w]["dice"] for w in keeping}, 0.0)
    chosen = (state.best_state if weight == 1.0
              else blend_states(start_state, state.best_state, weight))
    return chosen, scores[weight], weight, {w: m["dice"] for w, m in scores.items()}


def describe_outcome(holdout: list, improved: bool, before: dict[str, float],
              after: dict[str, float], state: FitState, blend: float, adapted: bool) -> str:
    """One line on the outcome."""
    extras = []
    if adapted:
        extras.append("BatchNorm statistics adapted")
    if blend < 1:
        extras.append(f"averaged with the start, blend {blend:g}")
    extra = ("; " + ", ".join(extras)) if extras else ""
    if not holdout:
        return f"fine-tuned for {state.steps} steps (no holdout: not checked{extra})"
    if not improved:
        return ("fine-tuning did not beat the parent on the held-out corrections "
                f"(Dice {before['dice']:.4f}); the parent's weights are kept")
    kept = (f"kept step {state.best_step} of {state.steps}" if state.best_step
            else f"no training step beat the start after {state.steps} steps")
    confirmed = ""
    shares = {k.split("/", 1)[1]: v for k, v in after.items() if k.startswith("kept/")}
    if shares:
        name = min(shares, key=shares.get)
        confirmed = (f"; keeps {shares[name]:.0%} of the held-out {name} pixels you left "
                     "as they were")
    return (f"held-out Dice {before['dice']:.4f} -> {after['dice']:.4f} "
            f"({kept}{extra}){confirmed}")
