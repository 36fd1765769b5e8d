"""Progress of engine events on stderr: a tqdm bar on a terminal, sparse lines in logs."""

from __future__ import annotations

import math
import sys
import time
from typing import Any, TextIO

from tqdm import tqdm

from napari_cryoseg.engine.events import Message, Progress, TrainStep, Validation

__all__ = ["ProgressBar", "format_duration"]


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
    """Progress for engine events, on stderr; pass it as ``drain(gen, on_event=bar)``.

    On a terminal a :mod:`tqdm` bar is redrawn in place (done/total, rate, ETA and, for
    training steps, the loss and learning rate). Elsewhere (log files, pipes, CI) a bar
    of carriage returns would fill the log, so a plain line is written every ~5 % instead.
    Validation results and messages get a line of their own in both cases.

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
        self._bar: tqdm | None = None
        self._last_step = -1  # last 5 % step written (non-TTY)
        self._started = time.perf_counter()

    # -- terminal: tqdm -------------------------------------------------------------
    def _draw(self, done: int, total: int | None, extra: str, final: bool) -> None:
        total = total or None
        if self._bar is not None and self._bar.total != total:
            self._close_bar()
        if self._bar is None:
            self._bar = tqdm(total=total, desc=self.label or None, unit=self.unit or "it",
                             file=self.stream, leave=True, dynamic_ncols=True,
                             mininterval=0.2, smoothing=0.1)
        if extra:
            self._bar.set_postfix_str(extra, refresh=False)
        self._bar.update(max(done - self._bar.n, 0))
        if final:
            self._close_bar()

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    # -- logs: a line every 5 % ------------------------------------------------------
    def _line(self, done: int, total: int | None, elapsed: float, eta: float | None,
              extra: str = "") -> str:
        unit = f" {self.unit}" if self.unit else ""
        rate = done / elapsed if elapsed > 0 else 0.0
        head = f"{done}/{total}{unit} ({100.0 * done / total:3.0f}%)" if total else (
            f"{done}{unit}")
        parts = [head, f"{rate:.1f}{unit or ' it'}/s", f"ETA {format_duration(eta)}"]
        if extra:
            parts.append(extra)
        prefix = f"{self.label}: " if self.label else ""
        return prefix + ", ".join(parts)

    def _log(self, fraction: float, line: str, final: bool) -> None:
        step = int(fraction * 20 + 1e-9)  # 5 % steps
        if step > self._last_step or final:
            self._last_step = step
            self.stream.write(line + "\n")
            self.stream.flush()

    def _write_line(self, text: str) -> None:
        """A full line of its own (above the bar on a terminal)."""
        if self._bar is not None:
            self._bar.write(text, file=self.stream)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    # -- events ---------------------------------------------------------------------
    def __call__(self, event: Any) -> None:
        """Show one engine event."""
        prefix = f"{self.label}: " if self.label else ""
        if isinstance(event, Progress):
            final = bool(event.total) and event.done >= event.total
            if self.tty:
                self._draw(event.done, event.total, "", final)
                return
            elapsed = event.elapsed_s or time.perf_counter() - self._started
            line = self._line(event.done, event.total, elapsed, event.eta_s)
            self._log(event.fraction, line, final)
        elif isinstance(event, TrainStep):
            total = event.total_steps
            final = bool(total) and event.step >= total
            extra = f"loss {event.loss:.4f}, lr {event.lr:.2g}"
            if self.tty:
                self._draw(event.step, total, extra, final)
                return
            if total:
                fraction = event.step / total
            elif event.time_budget_s:
                fraction = min(event.elapsed_s / event.time_budget_s, 1.0)
            else:
                fraction = 0.0
            line = self._line(event.step, total, event.elapsed_s, event.eta_s, extra)
            self._log(fraction, line, final)
        elif isinstance(event, Validation):
            best = " (best)" if event.is_best else ""
            self._write_line(f"{prefix}step {event.step}: validation dice {event.dice:.4f}, "
                             f"loss {event.loss:.4f}{best}")
        elif isinstance(event, Message):
            self._write_line(f"{prefix}{event.text}")

    def close(self) -> None:
        """End an unfinished bar (e.g. after an error or cancel) so the next line is clean."""
        self._close_bar()
