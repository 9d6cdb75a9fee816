"""The vistoken report of an lmms-eval run: merged over ranks, in lmms-eval's results and a file.

:func:`publish` runs in every rank's ``clean()`` (lmms-eval calls it once all requests are
answered): the ranks' records are gathered (``all_gather_object``), and rank 0

- adds one entry to lmms-eval's throughput log (``log_metrics``): lmms-eval's results file
  then holds, under ``"throughput"``, the run's generated tokens and generate seconds over
  every rank and each vistoken figure as ``avg_vistoken_<name>`` (lmms-eval prefixes
  ``avg_``; its own ``throughput`` is otherwise rank 0's alone);
- writes the JSON report: the setting (method, retention, options, model args), the ranks,
  the figures of :func:`vistoken.lmms.metrics.summarize` and every record. Its path is
  ``vt_report=PATH`` when given, else ``<--output_path>/vistoken/<method>_<retention>_<time>.json``,
  else ``./vistoken_lmms_<method>_<retention>_<time>.json``; the log names it.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from .metrics import summarize

__all__ = ["gather_records", "publish", "report_path"]

log = logging.getLogger(__name__)


def gather_records(records: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int, int]:
    """(every rank's records, rank, world size); a plain copy without a process group."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        world = dist.get_world_size()
        parts: list[Any] = [None] * world
        dist.all_gather_object(parts, records)
        return [r for p in parts for r in p], dist.get_rank(), world
    return list(records), 0, 1


def _output_path() -> str | None:
    """lmms-eval's ``--output_path`` of this command line, if any."""
    import argparse

    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--output_path", default=None)
    known, _ = p.parse_known_args(sys.argv[1:])
    return known.output_path


def report_path(vt_report: str | None, method: str, retention: float | None) -> Path:
    if vt_report:
        return Path(vt_report)
    stamp = time.strftime("%Y%m%d_%H%M%S")
    name = f"{method}_{'default' if retention is None else retention}_{stamp}.json"
    out = _output_path()
    return Path(out) / "vistoken" / name if out else Path(f"vistoken_lmms_{name}")


def publish(lm: Any) -> dict[str, Any] | None:
    """Merge ``lm``'s measurements over ranks; on rank 0 log and write them (returns them)."""
    records, rank, world = gather_records(lm.vt_recorder.dump())
    if rank != 0:
        return None
    import vistoken

    args = lm.vt_args
    figures = summarize(records)
    report = {
        "vistoken_version": vistoken.__version__,
        "lmms_eval_version": _lmms_version(),
        "model": type(lm).__name__,
        "model_args": {k: v for k, v in lm.vt_model_args.items()},
        "setting": args.as_dict(),
        "world_size": world,
        "errors": len(lm.vt_recorder.errors),
        "figures": figures,
        "records": records,
    }
    _log_throughput(records, figures)
    path = report_path(args.report, args.method, args.retention)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1, default=str))
    log.warning("vistoken report: %s", path)
    return report


def _lmms_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("lmms_eval")
    except PackageNotFoundError:
        return None


def _log_throughput(records: list[dict[str, Any]], figures: dict[str, Any]) -> None:
    from lmms_eval.models.model_utils.gen_metrics import log_metrics

    seconds = sum(r["generate_seconds"] / r["rows"] for r in records)
    tokens = sum(r["output_tokens"] for r in records)
    extra = {f"vistoken_{k}": v for k, v in figures.items()
             if isinstance(v, (int, float)) and not isinstance(v, bool)}
    extra["total_requests"] = len(records)
    log_metrics(total_elapsed_time=seconds, total_gen_tokens=tokens,
                avg_speed=tokens / seconds if seconds > 0 else 0.0, additional_metrics=extra)
