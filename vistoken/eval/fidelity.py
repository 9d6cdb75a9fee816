"""Fidelity report: how well each method's output tokens stand for the input tokens.

Four numbers per (method, retention), all computed on the same input ``x`` (T, N, D):

* **reconstruction** (:func:`reconstruction`): mean cosine similarity between every input token
  and the output token it maps to (``sources[i]``). A dropped token (``sources[i] == -1``) maps
  to its most cosine-similar output token, so selection methods are judged by how close the
  kept tokens are to what was thrown away. 1.0 means every input is represented exactly.
* **attention error** (:func:`attention_error`): relative error of a softmax-attention readout
  over the compressed tokens against the same readout over all tokens, for a fixed set of
  queries (:func:`fixed_queries`). Outputs are weighted by ``log(size)`` (ToMe's proportional
  attention), so an output that stands for ``s`` inputs gets the attention mass ``s`` identical
  keys would get. 0.0 means the compression is invisible to such an attention layer.
* **coverage** (:func:`coverage`): share of the T frames that hold at least one output token's
  anchor (``positions[:, 0]``), i.e. frames that still get a position id in the LLM sequence.
* **seconds**: median wall time of ``vt.compress`` over ``repeats`` calls.

Attention temperature
---------------------
Queries and keys are normalised to unit norm and the logits are ``cos(q, k) / tau`` with
``tau = 1 / sqrt(D)`` by default (:func:`default_temperature`). This is scaled dot-product
attention ``q.k / sqrt(D)`` with q and k rescaled to norm ``D ** 0.25``: isotropic random
queries and keys give logits of unit variance, the regime of a transformer's attention, so the
softmax is neither one-hot nor uniform whatever the scale of the features. (A fixed ``tau`` such
as 0.1 gives random Gaussian queries a logit spread of only ``~ 10 / sqrt(D)`` - about 0.3 for
D = 1280 - i.e. near-uniform attention that only measures the mean token. Measured on 8
frames of the bundled clip with 64 Gaussian queries, the softmax's effective support
(exp of its entropy) is ~1080 of 1568 tokens at 1/sqrt(D) against ~1520 at 0.1: encoder
features are concentrated, so attention stays broad; pass ``temperature`` for sharper heads.)
Values are the raw tokens in float32 (float64 for float64 input).

Coverage definition
-------------------
The reported coverage is anchor-based: ``|{positions[j, 0] : j < M}| / T``. The source-based
alternative (frames with at least one input token whose ``sources >= 0``) is 1.0 for every merge
method, because merging never drops a token, so it cannot tell a method that keeps one token per
frame from one that folds whole frames into tokens anchored elsewhere; ``coverage(...,
by="sources")`` still computes it.
"""

from __future__ import annotations

import csv
import math
import statistics
import time
from collections.abc import Sequence
from dataclasses import astuple, dataclass, fields
from pathlib import Path

import torch
from torch import Tensor

from ..core import Compressed, check_grid, check_tokens, compress, get_method, methods
from ..ops import nearest, normalize, segment_count, work_dtype

__all__ = [
    "RATIOS",
    "FidelityRow",
    "attention_error",
    "coverage",
    "default_temperature",
    "fixed_queries",
    "reconstruction",
    "run_fidelity",
    "write_report",
]

#: Retention ratios of the report, from light to heavy compression.
RATIOS: tuple[float, ...] = (0.5, 0.35, 0.25, 0.1, 0.05)

#: Number of fixed queries used by :func:`run_fidelity` when none are given.
NUM_QUERIES = 64


@dataclass(frozen=True)
class FidelityRow:
    """One (method, retention) measurement of the report."""

    method: str
    retention: float
    tokens: int
    reconstruction: float
    attention_error: float
    coverage: float
    seconds: float


def _flat(x: Tensor) -> Tensor:
    """(T, N, D) or (N, D) -> (T*N, D) in the work dtype."""
    x = check_tokens(x)
    return x.reshape(-1, x.shape[-1]).to(work_dtype(x.dtype))


def _check_out(flat: Tensor, out: Compressed) -> None:
    if out.sources.numel() != flat.shape[0]:
        raise ValueError(
            f"out has {out.sources.numel()} sources but x has {flat.shape[0]} tokens"
        )
    if out.tokens.shape[-1] != flat.shape[-1]:
        raise ValueError(f"out tokens have dim {out.tokens.shape[-1]}, x has {flat.shape[-1]}")


def reconstruction(x: Tensor, out: Compressed) -> float:
    """Mean cosine between each input token and the output token that stands for it.

    Input token i is compared with output ``sources[i]``; a dropped token (-1) with its nearest
    output token by cosine (:func:`vistoken.ops.nearest`). A zero vector has cosine 0 with
    anything.

    Args:
        x: (T, N, D) or (N, D) input tokens.
        out: the compression of ``x``.
    Returns:
        A float in [-1, 1]; 1.0 when every input is represented exactly (up to scale).
    """
    flat = _flat(x)
    _check_out(flat, out)
    xn = normalize(flat)
    on = normalize(out.tokens.to(device=flat.device)).to(xn.dtype)
    target = out.sources.to(flat.device).clone()
    dropped = target < 0
    if bool(dropped.any()):
        target[dropped] = nearest(xn[dropped], on)
    return float((xn * on[target]).sum(dim=1).mean())


def default_temperature(d: int) -> float:
    """The attention temperature on cosine logits: ``1 / sqrt(d)`` (see the module docstring)."""
    return 1.0 / math.sqrt(d)


def fixed_queries(d: int, q: int = NUM_QUERIES, seed: int = 0) -> Tensor:
    """(q, d) float32 standard Gaussian queries from a local generator seeded with ``seed``.

    The same (d, q, seed) always gives the same queries; the global RNG is not touched.
    """
    if d < 1 or q < 1:
        raise ValueError(f"d and q must be positive, got d={d}, q={q}")
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(q, d, generator=gen, dtype=torch.float32)


def output_sizes(out: Compressed) -> Tensor:
    """(M,) number of input tokens each output stands for.

    ``info["sizes"]`` when the method reports it, else the number of inputs with
    ``sources == j`` (1 for a kept token of a selection method).
    """
    sizes = out.info.get("sizes")
    if sizes is not None:
        return torch.as_tensor(sizes)
    src = out.sources
    return segment_count(src[src >= 0], out.num_tokens)


def attention_error(
    x: Tensor,
    out: Compressed,
    queries: Tensor,
    sizes: Tensor | None = None,
    *,
    temperature: float | None = None,
) -> float:
    """Relative error of proportional softmax attention over ``out`` against attention over ``x``.

    For each query q (unit-normalised, as are the keys)::

        full = softmax(cos(q, K) / tau) @ V                    # K = V = the T*N input tokens
        comp = softmax(cos(q, Kc) / tau + log(sizes)) @ Vc     # Kc = Vc = the M output tokens
        err  = ||full - comp|| / ||full||

    and the mean of ``err`` over the queries is returned.

    Args:
        x: (T, N, D) or (N, D) input tokens.
        out: the compression of ``x``.
        queries: (Q, D) queries, e.g. :func:`fixed_queries`.
        sizes: (M,) inputs per output token; ``None`` uses :func:`output_sizes`. Sizes below 1
            are taken as 1 (an output always stands for at least itself).
        temperature: ``tau``; ``None`` means :func:`default_temperature` (``1 / sqrt(D)``).
    """
    flat = _flat(x)
    _check_out(flat, out)
    dt, dev = flat.dtype, flat.device
    d = flat.shape[1]
    if queries.dim() != 2 or queries.shape[1] != d:
        raise ValueError(f"queries must be (Q, {d}), got {tuple(queries.shape)}")
    tau = default_temperature(d) if temperature is None else float(temperature)
    if not tau > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    if sizes is None:
        sizes = output_sizes(out)
    sizes = torch.as_tensor(sizes).to(device=dev, dtype=dt).reshape(-1)
    if sizes.numel() != out.num_tokens:
        raise ValueError(f"sizes has {sizes.numel()} entries for {out.num_tokens} output tokens")
    qn = normalize(queries.to(dev)).to(dt)
    comp_v = out.tokens.to(device=dev, dtype=dt)
    full = torch.softmax(qn @ normalize(flat).T / tau, dim=1) @ flat
    logits = qn @ normalize(comp_v).T / tau + sizes.clamp_min(1).log()
    comp = torch.softmax(logits, dim=1) @ comp_v
    err = (full - comp).norm(dim=1) / full.norm(dim=1).clamp_min(torch.finfo(dt).tiny)
    return float(err.mean())


def coverage(out: Compressed, t: int, n: int, *, by: str = "anchor") -> float:
    """Share of the ``t`` frames still represented in the output.

    Args:
        out: a compression of ``t`` frames of ``n`` tokens.
        by: ``"anchor"`` (reported): frames holding at least one output token's anchor
            ``positions[:, 0]``. ``"sources"``: frames with at least one input token that maps
            to an output (``sources >= 0``); always 1.0 for merge methods.
    """
    if out.sources.numel() != t * n:
        raise ValueError(f"out has {out.sources.numel()} sources, expected t*n = {t * n}")
    if by == "anchor":
        frames = out.positions[:, 0]
        frames = frames[(frames >= 0) & (frames < t)]
        return int(torch.unique(frames).numel()) / t
    if by == "sources":
        kept = (out.sources.reshape(t, n) >= 0).any(dim=1)
        return int(kept.sum()) / t
    raise ValueError(f"by must be 'anchor' or 'sources', got {by!r}")


def _pre_llm_methods(grid: tuple[int, int] | None) -> list[str]:
    names = []
    for m in methods():
        spec = get_method(m)
        if spec.stage != "tokens" or (spec.needs_grid and grid is None):
            continue
        names.append(m)
    return names


def run_fidelity(
    x: Tensor,
    grid: tuple[int, int] | None,
    methods: Sequence[str] | None = None,
    ratios: Sequence[float] = RATIOS,
    queries: Tensor | None = None,
    repeats: int = 1,
    progress: bool = False,
) -> list[FidelityRow]:
    """Measure every method at every retention ratio on ``x``.

    Args:
        x: (T, N, D) or (N, D) tokens.
        grid: (H, W) with H * W == N, or ``None`` (square default when N is a perfect square).
        methods: names to run; ``None`` runs every registered method that works on bare tokens
            (methods that need a model are skipped, as are grid methods when there is no grid).
            Methods that need a model are skipped even when named.
        ratios: retention ratios in (0, 1].
        queries: (Q, D) attention queries; ``None`` uses ``fixed_queries(D)``.
        repeats: calls per (method, ratio); ``seconds`` is the median of their times.
        progress: show a tqdm bar over the (method, ratio) pairs.
    Returns:
        One :class:`FidelityRow` per (method, ratio), methods outer, ratios inner.
    """
    xt = check_tokens(x)
    t, n, d = xt.shape
    g = check_grid(grid, n)
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    names = _pre_llm_methods(g) if methods is None else [
        m for m in methods if get_method(m).stage == "tokens"
    ]
    if queries is None:
        queries = fixed_queries(d)
    pairs = [(m, float(r)) for m in names for r in ratios]
    it = pairs
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(pairs, desc="fidelity", unit="run")
    rows = []
    for m, r in it:
        times = []
        for _ in range(repeats):
            if xt.is_cuda:
                torch.cuda.synchronize(xt.device)
            t0 = time.perf_counter()
            out = compress(xt, m, retention=r, grid=g)
            if xt.is_cuda:
                torch.cuda.synchronize(xt.device)
            times.append(time.perf_counter() - t0)
        rows.append(
            FidelityRow(
                method=m,
                retention=r,
                tokens=out.num_tokens,
                reconstruction=reconstruction(xt, out),
                attention_error=attention_error(xt, out, queries),
                coverage=coverage(out, t, n),
                seconds=statistics.median(times),
            )
        )
    return rows


# --------------------------------------------------------------------------------------------
# report


def _table(rows: Sequence[FidelityRow], field: str, fmt: str) -> list[str]:
    methods_ = list(dict.fromkeys(r.method for r in rows))
    ratios = sorted({r.retention for r in rows}, reverse=True)
    cell = {(r.method, r.retention): getattr(r, field) for r in rows}
    lines = [
        "| method | " + " | ".join(f"{q:g}" for q in ratios) + " |",
        "|---|" + "---:|" * len(ratios),
    ]
    for m in methods_:
        vals = [
            format(cell[(m, q)], fmt) if (m, q) in cell else "-" for q in ratios
        ]
        lines.append(f"| {m} | " + " | ".join(vals) + " |")
    return lines


_SECTIONS = (
    ("reconstruction", "Reconstruction (mean cosine to the representing output, higher is better)",
     ".4f"),
    ("attention_error", "Attention error (relative, proportional attention, lower is better)",
     ".4f"),
    ("coverage", "Coverage (share of frames holding an output anchor)", ".3f"),
    ("seconds", "Time per call (seconds, median)", ".4f"),
    ("tokens", "Output tokens", "d"),
)


def _markdown(rows: Sequence[FidelityRow], title: str) -> str:
    lines = [f"# {title}", ""]
    lines.append(
        "Columns are retention ratios (output tokens / input tokens). Attention logits are "
        "cos(q, k) / tau with tau = 1/sqrt(D) and log(size) added for merged tokens; "
        "coverage counts frames that hold at least one output token's anchor position."
    )
    for field, heading, fmt in _SECTIONS:
        lines += ["", f"## {heading}", ""]
        lines += _table(rows, field, fmt)
    return "\n".join(lines) + "\n"


def _plot(rows: Sequence[FidelityRow], title: str, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullLocator

    panels = (
        ("reconstruction", "reconstruction (cosine)"),
        ("attention_error", "attention error (relative)"),
        ("coverage", "frame coverage"),
    )
    fig = Figure(figsize=(5 * len(panels), 4.2), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(panels))
    methods_ = list(dict.fromkeys(r.method for r in rows))
    ticks = sorted({r.retention for r in rows})
    for ax, (field, label) in zip(axes, panels, strict=True):
        for m in methods_:
            pts = sorted((r.retention, getattr(r, field)) for r in rows if r.method == m)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=m)
        ax.set_xscale("log")
        ax.set_xticks(ticks, [f"{q:g}" for q in ticks])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xlabel("retention")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    if methods_:
        axes[0].legend(fontsize="small")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, format="png")


def write_report(rows: Sequence[FidelityRow], out_dir: Path, title: str) -> dict[str, Path]:
    """Write ``fidelity.md``, ``fidelity.csv`` and ``fidelity.png`` into ``out_dir``, all or
    none.

    ``out_dir`` is created if missing; no other file in it is touched. Each file is written
    to a temporary file in ``out_dir`` and the three are renamed into place only once all
    were written, so on an error the earlier report is kept whole; a report name that is a
    symbolic link is refused, never written through (the rule of ``vistoken._outputs``).

    Returns:
        ``{"md": ..., "csv": ..., "png": ...}`` paths of the written files.

    Raises:
        NotADirectoryError: ``out_dir`` is a file.
        vistoken._outputs.OutputError: a report name in ``out_dir`` is a symbolic link or not
            a regular file.
    """
    from .._outputs import write_outputs

    def write_md(path: Path) -> None:
        path.write_text(_markdown(rows, title), encoding="utf-8")

    def write_csv(path: Path) -> None:
        with path.open("w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow([fl.name for fl in fields(FidelityRow)])
            for r in rows:
                w.writerow(astuple(r))

    def write_png(path: Path) -> None:
        _plot(rows, title, path)

    writers = {"fidelity.md": write_md, "fidelity.csv": write_csv, "fidelity.png": write_png}
    paths = write_outputs(Path(out_dir), writers)
    return {name.rsplit(".", 1)[1]: path for name, path in paths.items()}
