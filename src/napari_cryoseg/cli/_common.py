"""Helpers shared by the ``cryoseg`` sub-commands: arguments, model loading, progress."""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from napari_cryoseg.core.errors import InputError
from napari_cryoseg.core.tiling import TilingConfig
from napari_cryoseg.engine.device import DEVICE_CHOICES
from napari_cryoseg.engine.events import Message, Progress, TrainStep, Validation
from napari_cryoseg.engine.predict import TTA_CHOICES
from napari_cryoseg.model.bundled import load_default_model
from napari_cryoseg.model.checkpoint import ModelFile

__all__ = [
    "ProgressBar",
    "add_device_argument",
    "add_tiling_arguments",
    "add_tta_argument",
    "echo",
    "format_duration",
    "load_model_arg",
    "tiling_from_args",
]


def echo(text: str = "", *, err: bool = False) -> None:
    """Write one line to stdout (results) or stderr (progress, problems) and flush."""
    stream = sys.stderr if err else sys.stdout
    stream.write(text + "\n")
    stream.flush()


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    """``--device auto|cpu|cuda|mps`` (``cuda:1`` also accepted)."""
    parser.add_argument(
        "--device",
        default="auto",
        metavar="DEVICE",
        help=f"compute device: {', '.join(DEVICE_CHOICES)} or cuda:N (default: auto = "
        "cuda, then mps, then cpu)",
    )


def add_tta_argument(parser: argparse.ArgumentParser) -> None:
    """``--tta N``: test-time augmentation copies averaged per tile."""
    parser.add_argument(
        "--tta", type=int, default=1, choices=TTA_CHOICES, metavar="N",
        help="test-time augmentation: average the predictions of N flipped/rotated copies "
        "of every tile (1 = off, 2, 4, 8; N times slower, usually a little more accurate)",
    )


def add_tiling_arguments(parser: argparse.ArgumentParser) -> None:
    """``--tile``, ``--overlap``, ``--batch-size``; None means the model file's hint."""
    group = parser.add_argument_group("tiling (default: the model file's hint)")
    group.add_argument("--tile", type=int, default=None, metavar="N",
                       help="tile edge in pixels (rounded up to the network stride)")
    group.add_argument("--overlap", type=float, default=None, metavar="F",
                       help="overlap between tiles as a fraction of the tile, 0-0.5")
    group.add_argument("--batch-size", type=int, default=None, metavar="N",
                       help="tiles per forward pass (lower it if the GPU runs out of memory)")


def tiling_from_args(args: argparse.Namespace, model: ModelFile) -> TilingConfig:
    """The model's tiling hint with the values given on the command line replacing it.

    Raises
    ------
    InputError
        A value out of range (TilingConfig validates it).
    """
    hint = model.tiling
    return TilingConfig(
        tile=hint.tile if getattr(args, "tile", None) is None else args.tile,
        overlap=hint.overlap if getattr(args, "overlap", None) is None else args.overlap,
        batch_size=hint.batch_size if getattr(args, "batch_size", None) is None
        else args.batch_size,
    )


def load_model_arg(path: str | Path | None) -> ModelFile:
    """Load ``--model PATH`` (a model file or a bioimage.io package), or the bundled default."""
    if path is None:
        return load_default_model()
    from napari_cryoseg.engine.bioimageio_model import load_any_model

    return load_any_model(Path(path).expanduser())


def format_duration(seconds: float | None) -> str:
    """``"42s"``, ``"3m05s"``, ``"1h02m"``; ``"?"`` when unknown."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "?"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class ProgressBar:
    """Plain-text progress for engine events, on stderr; pass it as ``drain(gen, on_event=bar)``.

    On a terminal one line is redrawn in place (``\\r``); otherwise (logs, pipes, CI) a
    line is written every ~5 % so log files stay short. Shows done/total, rate, ETA and,
    for training steps, the loss; validation results and messages get their own line.

    Parameters
    ----------
    label : str
        Prefix of each line, e.g. the input's file name.
    stream : text file, optional
        Default ``sys.stderr``.
    unit : str
        What ``done``/``total`` count in :class:`Progress` events (tiles, steps, ...).
    """

    def __init__(self, label: str = "", stream: TextIO | None = None, unit: str = "") -> None:
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.unit = unit
        isatty = getattr(self.stream, "isatty", None)
        self.tty = bool(isatty and isatty())
        self._last_step = -1  # last 5 % step written (non-TTY)
        self._width = 0  # length of the line drawn last (TTY), to blank leftovers
        self._started = time.perf_counter()

    # -- formatting -----------------------------------------------------------------
    def _line(self, done: int, total: int | None, elapsed: float, eta: float | None,
              extra: str = "") -> str:
        unit = f" {self.unit}" if self.unit else ""
        rate = done / elapsed if elapsed > 0 else 0.0
        if total:
            pct = 100.0 * done / total
            head = f"{done}/{total}{unit} ({pct:3.0f}%)"
        else:
            head = f"{done}{unit}"
        parts = [head, f"{rate:.1f}{unit or ' it'}/s", f"ETA {format_duration(eta)}"]
        if extra:
            parts.append(extra)
        prefix = f"{self.label}: " if self.label else ""
        return prefix + ", ".join(parts)

    def _write_progress(self, fraction: float, line: str, final: bool) -> None:
        if self.tty:
            pad = " " * max(self._width - len(line), 0)
            self._width = len(line)
            self.stream.write("\r" + line + pad + ("\n" if final else ""))
            if final:
                self._width = 0
            self.stream.flush()
            return
        step = int(fraction * 20 + 1e-9)  # 5 % steps
        if step > self._last_step or final:
            self._last_step = step
            self.stream.write(line + "\n")
            self.stream.flush()

    def _write_line(self, text: str) -> None:
        """A full line of its own (ends any in-place line first)."""
        if self.tty and self._width:
            self.stream.write("\n")
            self._width = 0
        self.stream.write(text + "\n")
        self.stream.flush()

    # -- events ---------------------------------------------------------------------
    def __call__(self, event: Any) -> None:
        """Show one engine event."""
        if isinstance(event, Progress):
            elapsed = event.elapsed_s or time.perf_counter() - self._started
            final = bool(event.total) and event.done >= event.total
            line = self._line(event.done, event.total, elapsed, event.eta_s)
            self._write_progress(event.fraction, line, final)
        elif isinstance(event, TrainStep):
            total = event.total_steps
            if total:
                fraction = event.step / total
            elif event.time_budget_s:
                fraction = min(event.elapsed_s / event.time_budget_s, 1.0)
            else:
                fraction = 0.0
            final = bool(total) and event.step >= total
            extra = f"loss {event.loss:.4f}, lr {event.lr:.2g}"
            line = self._line(event.step, total, event.elapsed_s, event.eta_s, extra)
            self._write_progress(fraction, line, final)
        elif isinstance(event, Validation):
            best = " (best)" if event.is_best else ""
            self._write_line(
                f"{self.label + ': ' if self.label else ''}step {event.step}: validation "
                f"dice {event.dice:.4f}, loss {event.loss:.4f}{best}"
            )
        elif isinstance(event, Message):
            self._write_line(f"{self.label + ': ' if self.label else ''}{event.text}")

    def close(self) -> None:
        """End an unfinished in-place line (e.g. after an error or cancel)."""
        if self.tty and self._width:
            self.stream.write("\n")
            self.stream.flush()
            self._width = 0


def check_positive(value: float | None, what: str) -> float | None:
    """Raise :class:`InputError` unless ``value`` is None or > 0."""
    if value is not None and not (math.isfinite(value) and value > 0):
        raise InputError(f"{what} must be a positive number, got {value}")
    return value
