"""``cryoseg info``: describe a model file and the compute devices found."""

from __future__ import annotations

import argparse
import json
from typing import Any

from napari_cryoseg.cli._args import path_text
from napari_cryoseg.cli._common import echo, load_model_arg
from napari_cryoseg.engine.device import describe_devices
from napari_cryoseg.model.checkpoint import ModelFile
from napari_cryoseg.model.provenance import Provenance


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``cryoseg info``."""
    parser = subparsers.add_parser(
        "info",
        help="show what a model file contains and which devices are available",
        description="Show a model file's classes, architecture, parameter count, "
        "normalization, tiling hint, pixel size and provenance, and the devices found.",
    )
    parser.add_argument("model", nargs="?", default=None, type=path_text, metavar="MODEL",
                        help="model file (.pt); default: the bundled model")
    parser.add_argument("--json", action="store_true",
                        help="print machine-readable JSON (with the whole loss history)")
    parser.add_argument("--full", action="store_true",
                        help="print every point of the loss history, not its summary")
    parser.set_defaults(func=run)
    return parser


def _value(value: Any) -> str:
    if isinstance(value, dict | list):
        return json.dumps(value, default=str)
    return str(value)


def _is_history(value: Any) -> bool:
    """A stored loss curve: ``[[step, loss], ...]``."""
    return (isinstance(value, list) and bool(value)
            and all(isinstance(p, list | tuple) and len(p) == 2 for p in value))


def summarise_history(history: list) -> str:
    """One line for a loss curve: steps, first / last / lowest loss (where)."""
    steps = [int(p[0]) for p in history]
    losses = [float(p[1]) for p in history]
    low = min(range(len(losses)), key=losses.__getitem__)
    return (f"steps {steps[0]}-{steps[-1]} ({len(history)} points), loss first "
            f"{losses[0]:.4g}, last {losses[-1]:.4g}, min {losses[low]:.4g} at step "
            f"{steps[low]} (--full or --json for every point)")


def _summarised(value: Any) -> Any:
    """``value`` with every ``history`` curve inside it replaced by its summary line."""
    if isinstance(value, dict):
        return {key: summarise_history(item) if key == "history" and _is_history(item)
                else _summarised(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_summarised(item) for item in value]
    return value


def describe(model: ModelFile, full: bool = False) -> list[str]:
    """Human-readable lines describing ``model`` (what ``cryoseg info`` prints).

    Loss histories are summarised (first / last / lowest, steps) unless ``full``.
    """
    if getattr(model, "foreign", False):
        return _describe_foreign(model)
    summary = model.summary()
    cfg = model.config
    arch = (
        f"U-Net, depth {cfg.depth} (tiles multiple of {cfg.stride}), base {cfg.base_channels} "
        f"channels, {cfg.in_channels} input channel(s), upsampling {cfg.upsampling}, "
        f"batch norm {'on' if cfg.batch_norm else 'off'}, dropout {cfg.dropout}, "
        f"skip connections {'on' if cfg.skip_connections else 'off'}, "
        f"{'sigmoid (binary)' if cfg.out_channels == 1 else 'softmax'} output"
    )
    norm = model.normalization
    pixel = summary["pixel size (nm)"]
    lines = [
        f"model: {summary['name']}"
        + (f" ({model.source_path})" if model.source_path is not None else ""),
        "classes: " + ", ".join(f"{i} {name}" for i, name in summary["classes"].items()),
        f"architecture: {arch}",
        f"parameters: {summary['parameters']:,} ({summary['parameters']})",
        f"normalization: percentiles {norm.low:g}-{norm.high:g} -> [0, 1], clipped to "
        f"[-{norm.clip:g}, {1 + norm.clip:g}]",
        f"tile hint: {model.tiling.tile} px, overlap {model.tiling.overlap:g}, "
        f"batch {model.tiling.batch_size}",
        f"pixel size: {'unknown' if pixel is None else f'{pixel:g} nm'}",
        f"temporal context: {summary['temporal context']}",
        f"background subtraction: {summary.get('background subtraction', 'none')}",
        f"history: {Provenance.of(model).describe()}",
        "provenance:",
    ]
    provenance = summary["provenance"] or {}
    if not full:
        provenance = _summarised(provenance)
    lines += [f"  {key}: {_value(value)}" for key, value in provenance.items()]
    if not provenance:
        lines.append("  (none)")
    return lines


def _describe_foreign(model: Any) -> list[str]:
    """A bioimage.io model of another architecture: what its description says."""
    summary = model.summary()
    arch = summary["architecture"]
    weights = ", ".join(arch.get("weights", [])) or "none"
    return [f"model: {summary['name']} ({model.source_path})",
            "classes: " + ", ".join(f"{i} {name}" for i, name in
                                    enumerate(summary["classes"])),
            f"architecture: {arch.get('type')} (weights: {weights}); segments only, "
            "cannot be fine-tuned",
            f"input: {model.config.in_channels} channel(s), Y and X steps of "
            f"{model.config.stride} px"]


def run(args: argparse.Namespace) -> int:
    """Print the description (or JSON) of the model and the devices."""
    model = load_model_arg(args.model, check_trust=False)  # describes; runs nothing
    devices = describe_devices()
    if args.json:
        data = {
            **model.summary(),
            "path": None if model.source_path is None else str(model.source_path),
            "devices": devices,
        }
        echo(json.dumps(data, indent=2, default=str))
        return 0
    for line in describe(model, full=args.full):
        echo(line)
    echo(f"devices: {devices}")
    return 0
