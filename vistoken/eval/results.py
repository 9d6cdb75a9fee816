"""The outputs of ``vistoken eval``: results.json, results.csv, results.png and a text table.

``results.json`` (:func:`build_results`)::

    {"benchmark": "synthetic", "split": "test", "seed": 0, "samples": 200,
     "model": "<path>", "model_sha256": "<hex>",
     "versions": {"vistoken", "torch", "transformers", "numpy", "python"},
     "date": "<UTC, ISO 8601>", "batch_size": 16, "processes": 1, "device": "cpu",
     "flops_formula": "fastv",
     "full": <row>, "rows": [<row>, ...],
     "truth": [answer per sample], "qtypes": [qtype per sample],
     "timing": {"prepare", "vision_tower", "total"}}

A row: ``method``, ``retention``, ``accuracy``, ``ci95`` ([low, high], the Wilson score
interval at 95%), ``loyalty`` (share of answers equal to the full model's), ``samples``,
``visual_tokens`` (mean per sample of the visual positions the LLM sees after compression;
for FastV the count its layers >= K keep), ``prefill_tflops`` (mean per sample of
:func:`vistoken.flops.prefill_flops`, one multiply-add = 1 FLOP, formula ``"fastv"``, LLM
only), ``seconds`` (this setting's prefills, compression included; the shared prompt
building and vision tower are in ``timing``), ``per_type`` ({qtype: {accuracy, loyalty,
samples}}), ``computed`` (``"vt.apply"``; ``"full"`` for a retention 1.0 row, which is the
uncompressed model; see :mod:`vistoken.eval.runner`), ``uncompressed_types`` (question types
a method could not compress and that were answered uncompressed) and ``answers`` (one per
sample, in sample order).

The model hash (:func:`weights_sha256`) is the SHA-256 of the weight file when there is one
(``sha256sum model.safetensors`` gives the same), else of the lines ``"<sha256>  <name>\\n"``
of every weight file in name order.
"""

from __future__ import annotations

import csv
import hashlib
import platform
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .synthetic import CHANCE, QTYPES, Sample

__all__ = [
    "NAMES",
    "build_results",
    "format_table",
    "versions",
    "weights_sha256",
    "write_results",
]

#: The files ``vistoken eval`` writes.
NAMES = ("results.json", "results.csv", "results.png")

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")

#: Short column names of the question types in the printed table.
_SHORT = {
    "detail": "detail",
    "colour_at_time": "colour",
    "order": "order",
    "count": "count",
    "motion": "motion",
    "image_detail": "image",
}


def weights_sha256(path: str | Path) -> str:
    """SHA-256 of a checkpoint folder's weight files (see the module docstring)."""
    path = Path(path)
    files = sorted(
        p for p in path.iterdir() if p.is_file() and p.name.endswith(_WEIGHT_SUFFIXES)
    )
    if not files:
        raise FileNotFoundError(f"no weight files (*.safetensors, *.bin) in {path}")

    def digest(p: Path) -> str:
        h = hashlib.sha256()
        with p.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        return h.hexdigest()

    if len(files) == 1:
        return digest(files[0])
    lines = "".join(f"{digest(p)}  {p.name}\n" for p in files)
    return hashlib.sha256(lines.encode()).hexdigest()


def versions() -> dict[str, str]:
    """Versions of vistoken, torch, transformers, numpy and Python."""
    import numpy
    import torch
    import transformers

    from .. import __version__

    return {
        "vistoken": __version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
    }


def build_results(
    evaluation: dict[str, Any],
    samples: Sequence[Sample],
    *,
    benchmark: str,
    split: str,
    seed: int,
    model: str,
    model_sha256: str,
    batch_size: int,
    processes: int = 1,
    device: str = "cpu",
) -> dict[str, Any]:
    """results.json's content from :func:`vistoken.eval.runner.evaluate`'s output."""
    return {
        "benchmark": benchmark,
        "split": split,
        "seed": seed,
        "samples": len(samples),
        "model": model,
        "model_sha256": model_sha256,
        "versions": versions(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "batch_size": batch_size,
        "processes": processes,
        "device": device,
        "flops_formula": "fastv",
        "full": evaluation["full"],
        "rows": evaluation["rows"],
        "truth": [s.answer for s in samples],
        "qtypes": [s.qtype for s in samples],
        "timing": evaluation["timing"],
    }


def _types(results: dict[str, Any]) -> list[str]:
    return [q for q in QTYPES if q in results["full"]["per_type"]]


def _chance(results: dict[str, Any]) -> float:
    """Expected accuracy of a uniform guess over each sample's answer set."""
    qtypes = results["qtypes"]
    return sum(CHANCE[q] for q in qtypes) / len(qtypes)


def _all_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    return [results["full"], *results["rows"]]


def format_table(results: dict[str, Any]) -> str:
    """The rows as an aligned text table (accuracy and loyalty in %, per-type accuracy)."""
    types = _types(results)
    # TFLOPs, or GFLOPs for a model as small as the reference one
    scale, unit = (1.0, "TFLOPs") if results["full"]["prefill_tflops"] >= 0.1 else (1e3, "GFLOPs")
    head = ["method", "ret", "acc%", "ci95%", "loyal%", "tokens", unit, "sec",
            *(_SHORT.get(q, q) for q in types)]
    lines = []
    marked = False
    for r in _all_rows(results):
        name = r["method"] + ("*" if r["uncompressed_types"] else "")
        marked |= bool(r["uncompressed_types"])
        lo, hi = r["ci95"]
        lines.append([
            name,
            f"{r['retention']:g}",
            f"{100 * r['accuracy']:.1f}",
            f"{100 * lo:.0f}-{100 * hi:.0f}",
            f"{100 * r['loyalty']:.1f}",
            f"{r['visual_tokens']:.0f}",
            f"{scale * r['prefill_tflops']:.3g}",
            f"{r['seconds']:.1f}",
            *(f"{100 * r['per_type'][q]['accuracy']:.0f}" for q in types),
        ])
    widths = [max(len(h), *(len(x[i]) for x in lines)) for i, h in enumerate(head)]

    def fmt(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    out = [fmt(head), fmt(["-" * w for w in widths]), *(fmt(x) for x in lines)]
    out.append(
        f"{results['samples']} samples of {results['benchmark']}/{results['split']} "
        f"(seed {results['seed']}); chance {100 * _chance(results):.1f}%; tokens = mean "
        "visual tokens per sample the LLM sees; a retention 1.0 row is the full model"
    )
    if marked:
        out.append("* image samples answered uncompressed (this method cannot compress "
                   "LLaVA-OneVision image units)")
    return "\n".join(out)


def _csv(results: dict[str, Any], path: Path) -> None:
    types = _types(results)
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow([
            "method", "retention", "accuracy", "ci95_low", "ci95_high", "loyalty", "samples",
            "visual_tokens", "prefill_tflops", "seconds", "computed", "uncompressed_types",
            *(f"accuracy_{q}" for q in types),
        ])
        for r in _all_rows(results):
            w.writerow([
                r["method"], r["retention"], r["accuracy"], r["ci95"][0], r["ci95"][1],
                r["loyalty"], r["samples"], r["visual_tokens"], r["prefill_tflops"],
                r["seconds"], r["computed"], ";".join(r["uncompressed_types"]),
                *(r["per_type"][q]["accuracy"] for q in types),
            ])


def _plot(results: dict[str, Any], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullLocator

    fig = Figure(figsize=(9, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    full = results["full"]
    ax.axhline(100 * full["accuracy"], color="black", lw=1.2, label="full model")
    ax.axhspan(100 * full["ci95"][0], 100 * full["ci95"][1], color="black", alpha=0.08)
    ax.axhline(100 * _chance(results), color="grey", lw=1, ls=":", label="chance")
    methods = list(dict.fromkeys(r["method"] for r in results["rows"]))
    for m in methods:
        pts = sorted(
            (r["retention"], r["accuracy"], *r["ci95"], bool(r["uncompressed_types"]))
            for r in results["rows"] if r["method"] == m
        )
        x = [p[0] for p in pts]
        label = m + (" (images uncompressed)" if any(p[4] for p in pts) else "")
        (line,) = ax.plot(x, [100 * p[1] for p in pts], marker="o", label=label)
        ax.fill_between(x, [100 * p[2] for p in pts], [100 * p[3] for p in pts],
                        color=line.get_color(), alpha=0.12, lw=0)
    ticks = sorted({r["retention"] for r in results["rows"]})
    ax.set_xscale("log")
    if ticks:
        ax.set_xticks(ticks, [f"{q:g}" for q in ticks])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_ylim(0, 100)
    ax.set_xlabel("retention (share of visual tokens kept)")
    ax.set_ylabel("accuracy (%)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.02, 0.5))
    ax.set_title(
        f"{results['benchmark']}/{results['split']}: {results['samples']} samples "
        "(bands: 95% Wilson intervals)", fontsize="medium"
    )
    fig.tight_layout()
    fig.savefig(path, format="png")


def write_results(results: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """Write results.json, results.csv and results.png into ``out_dir``, all or none (the
    rule of :mod:`vistoken._outputs`); file name -> path."""
    from .._outputs import write_outputs
    from ..cli.common import dumps

    def write_json(path: Path) -> None:
        path.write_text(dumps(results) + "\n", encoding="utf-8")

    return write_outputs(
        Path(out_dir),
        {
            "results.json": write_json,
            "results.csv": lambda p: _csv(results, p),
            "results.png": lambda p: _plot(results, p),
        },
    )
