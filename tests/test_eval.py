"""``vistoken eval`` and its parts: the runner, the results files, several processes.

The model is the reference architecture with random weights. Drawn at the default scale its
answers hardly depend on the pixels (nearly every prompt gets the same word), so tests of
"same answers" could not fail; the text model is drawn at ``initializer_range=1.0`` instead,
which makes the answer a sensitive function of every visual token (checked below).
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from cli_helpers import assert_one_error, run

import vistoken as vt
from vistoken.cli import main
from vistoken.core import budget_for
from vistoken.eval import distributed, runner
from vistoken.eval import synthetic as syn
from vistoken.eval.reference import FRAMES, SIZE, build_reference, decode_answers
from vistoken.eval.results import NAMES, weights_sha256
from vistoken.flops import prefill_flops

LIMIT = 12
ARGS = ["--limit", LIMIT, "--methods", "random,pool,fastv,visionzip", "--retention",
        "1.0,0.25", "--batch-size", 4, "--device", "cpu", "-q"]
ROW_KEYS = {"method", "retention", "accuracy", "ci95", "loyalty", "samples", "visual_tokens",
            "prefill_tflops", "seconds", "per_type", "computed", "uncompressed_types",
            "answers"}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("reference")
    model, processor = build_reference(0, text={"initializer_range": 1.0})
    model.save_pretrained(d)
    processor.save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def model(model_dir):
    from vistoken.eval.reference import load_reference

    return load_reference(model_dir)


@pytest.fixture(scope="module")
def samples():
    return syn.dataset("test", LIMIT, frames=FRAMES, size=SIZE)


def _cli(out: Path, model_dir: Path, *extra) -> tuple[int, str, dict]:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(["eval", "--model", str(model_dir), "--out", str(out),
                     *map(str, ARGS), *map(str, extra)])
    results = json.loads((out / "results.json").read_text()) if code == 0 else {}
    return code, buf.getvalue(), results


@pytest.fixture(scope="module")
def cli_run(model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval")
    code, text, results = _cli(out, model_dir)
    assert code == 0, text
    return out, text, results


def _numbers(results: dict) -> list[dict]:
    """Every row without its seconds: what must not change between runs."""
    return [{k: v for k, v in r.items() if k != "seconds"}
            for r in [results["full"], *results["rows"]]]


# --------------------------------------------------------------------------------------------
# results


def test_results_json_has_the_documented_shape(cli_run, model_dir, samples):
    out, text, res = cli_run
    assert {"benchmark", "model", "seed", "versions", "model_sha256", "date", "split", "full",
            "rows", "samples", "truth", "qtypes", "timing"} <= set(res)
    assert res["benchmark"] == "synthetic" and res["split"] == "test" and res["seed"] == 0
    assert set(res["versions"]) == {"vistoken", "torch", "transformers", "numpy", "python"}
    assert res["versions"]["torch"] == torch.__version__
    weights = (model_dir / "model.safetensors").read_bytes()
    assert res["model_sha256"] == hashlib.sha256(weights).hexdigest()
    assert res["model"] == str(model_dir) and res["processes"] == 1
    assert res["truth"] == [s.answer for s in samples]
    assert res["samples"] == LIMIT
    # one row per method x retention, in the order given
    assert [(r["method"], r["retention"]) for r in res["rows"]] == [
        (m, q) for m in ("random", "pool", "fastv", "visionzip") for q in (1.0, 0.25)
    ]
    full = res["full"]
    assert full["method"] == "full" and full["loyalty"] == 1.0
    for r in [full, *res["rows"]]:
        assert set(r) == ROW_KEYS
        assert r["samples"] == LIMIT and len(r["answers"]) == LIMIT
        right = sum(a == s.answer for a, s in zip(r["answers"], samples, strict=True))
        assert r["accuracy"] == right / LIMIT
        assert r["loyalty"] == sum(
            a == f for a, f in zip(r["answers"], full["answers"], strict=True)
        ) / LIMIT
        lo, hi = r["ci95"]
        assert 0 <= lo <= r["accuracy"] <= hi <= 1 and hi - lo > 0.1
        assert sum(t["samples"] for t in r["per_type"].values()) == LIMIT
        assert set(r["per_type"]) == set(syn.QTYPES)
        assert r["seconds"] >= 0
    # the model answers differently for different inputs, so loyalty can drop
    assert len(set(full["answers"])) >= 4
    assert any(r["loyalty"] < 1 for r in res["rows"])

    videos, images = 10, 2  # 12 samples round-robin over 6 types: 2 image_detail
    by = {(r["method"], r["retention"]): r for r in res["rows"]}
    # visual tokens: 16 x 49 + 1 newline per video, 196 + 196 + 14 row newlines per image
    assert full["visual_tokens"] == (videos * 785 + images * 406) / LIMIT
    kept = (videos * (budget_for(0.25, 784) + 1) + images * (budget_for(0.25, 392) + 14))
    assert by["random", 0.25]["visual_tokens"] == kept / LIMIT
    fastv = videos * budget_for(0.25, 785) + images * budget_for(0.25, 406)
    assert by["fastv", 0.25]["visual_tokens"] == fastv / LIMIT
    # pool and visionzip cannot compress the image units: those are answered uncompressed
    for m in ("pool", "visionzip"):
        assert by[m, 0.25]["uncompressed_types"] == ["image_detail"]
        assert by[m, 0.25]["visual_tokens"] == (kept + images * (406 - 112)) / LIMIT
        imgs = [i for i, s in enumerate(samples) if s.qtype == "image_detail"]
        assert all(by[m, 0.25]["answers"][i] == full["answers"][i] for i in imgs)
    assert by["random", 0.25]["uncompressed_types"] == []
    # prefill TFLOPs: mean over samples of the cost model, FastV between pre-LLM and full
    assert (by["random", 0.25]["prefill_tflops"] < by["fastv", 0.25]["prefill_tflops"]
            < full["prefill_tflops"])

    # the CSV: a header, the full row, one per setting
    with (out / "results.csv").open() as f:
        table = list(csv.DictReader(f))
    assert [r["method"] for r in table] == ["full"] + [r["method"] for r in res["rows"]]
    assert float(table[1]["accuracy"]) == res["rows"][0]["accuracy"]
    assert table[-1]["uncompressed_types"] == "image_detail"
    assert (out / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the printed table: every row, the marked ones, the files
    assert text.count("\nrandom ") == 2 and "visionzip* " in text
    assert all(f"wrote {out / name}" in text for name in NAMES)


def test_the_model_hash_covers_every_weight_file(tmp_path):
    (tmp_path / "a.safetensors").write_bytes(b"one")
    assert weights_sha256(tmp_path) == hashlib.sha256(b"one").hexdigest()
    (tmp_path / "b.safetensors").write_bytes(b"two")
    lines = "".join(f"{hashlib.sha256(c).hexdigest()}  {n}\n"
                    for n, c in (("a.safetensors", b"one"), ("b.safetensors", b"two")))
    assert weights_sha256(tmp_path) == hashlib.sha256(lines.encode()).hexdigest()


def test_wilson_interval_matches_known_values():
    lo, hi = runner.wilson(5, 10)
    assert (round(lo, 4), round(hi, 4)) == (0.2366, 0.7634)
    lo, hi = runner.wilson(0, 10)
    assert lo == 0.0 and round(hi, 4) == 0.2775
    lo, hi = runner.wilson(10, 10)
    assert round(lo, 4) == 0.7225 and hi == 1.0
    assert runner.wilson(0, 0) == (0.0, 1.0)


# --------------------------------------------------------------------------------------------
# the runner


def test_batches_never_mix_videos_and_images(samples):
    plan = runner.plan_batches(samples, 4)
    assert sorted(i for b in plan for i in b) == list(range(LIMIT))
    assert all(len(b) <= 4 for b in plan)
    kinds = [{samples[i].qtype == "image_detail" for i in b} for b in plan]
    assert all(len(k) == 1 for k in kinds)
    assert [len(b) for b in plan] == [4, 4, 2, 2]


def test_retention_one_gives_the_full_answers_for_every_method(model, samples):
    m, processor = model
    settings = [(name, 1.0) for name in vt.methods()]
    # through vt.apply: every method at 1.0 answers as the uncompressed model
    out = runner.evaluate(m, processor, samples[:8], settings, batch_size=4, full_at_one=False)
    full = out["full"]["answers"]
    assert len(set(full)) >= 3  # answers that could differ
    for r in out["rows"]:
        assert r["computed"] == "vt.apply"
        assert r["answers"] == full, r["method"]
        assert r["loyalty"] == 1.0
    # the default: a 1.0 row is the full model's, not recomputed
    out = runner.evaluate(m, processor, samples[:8], settings[:3], batch_size=4)
    assert all(r["computed"] == "full" and r["answers"] == out["full"]["answers"]
               and r["visual_tokens"] == out["full"]["visual_tokens"] for r in out["rows"])


def _logits(m, **kwargs):
    return m(**kwargs, logits_to_keep=1).logits[:, -1]


def test_precomputed_tower_outputs_equal_the_pixel_path(model, samples):
    m, processor = model
    for kind in ("video", "image"):
        batch = [s for s in samples if (s.qtype == "image_detail") == (kind == "image")][:3]
        b = runner._Batch(m, processor, batch, "cpu")
        x = b.inputs
        with torch.inference_mode():
            mm = b.tower()
            assert set(mm) == {kind}
            by_mm = dict(input_ids=x["input_ids"], attention_mask=x["attention_mask"])
            assert torch.equal(_logits(m, **x), _logits(m, **by_mm, mm_encoder_outputs=dict(mm)))
            with vt.apply(m, "random", retention=0.25):
                assert torch.equal(
                    _logits(m, **x), _logits(m, **by_mm, mm_encoder_outputs=dict(mm))
                )
            if kind == "video":  # VisionZip from the tower's kept attention input
                b.tower(probe_layer=-2)
                with vt.apply(m, "visionzip", retention=0.25):
                    want = _logits(m, **x)
                    b.replay_probe_input()
                    assert torch.equal(
                        want, _logits(m, **by_mm, mm_encoder_outputs=dict(b.mm))
                    )
                    # without the replay the probe has nothing: the statistics come from it
                    with pytest.raises(RuntimeError, match="captured nothing"):
                        _logits(m, **by_mm, mm_encoder_outputs=dict(b.mm))
            # the runner's answers are generate()'s on the pixels
            gen = m.generate(**x, max_new_tokens=1, do_sample=False,
                             pad_token_id=processor.tokenizer.pad_token_id)
            assert b.generate(processor) == decode_answers(
                processor, gen[:, x["input_ids"].shape[1]:]
            )


def test_flops_follow_the_cost_model(model, samples):
    m, processor = model
    out = runner.evaluate(m, processor, samples[:2], [("uniform", 0.5)], batch_size=2)
    b = runner._Batch(m, processor, samples[:2], "cpu")
    want = [prefill_flops(m.config, v, t) / 1e12 for v, t in zip(b.placeholders, b.text,
                                                                  strict=True)]
    assert out["full"]["prefill_tflops"] == pytest.approx(sum(want) / 2, rel=1e-12)
    kept = [budget_for(0.5, 784) + 1] * 2
    want = [prefill_flops(m.config, v, t) / 1e12 for v, t in zip(kept, b.text, strict=True)]
    assert out["rows"][0]["prefill_tflops"] == pytest.approx(sum(want) / 2, rel=1e-12)


# --------------------------------------------------------------------------------------------
# same numbers: twice, and over two processes


def test_same_command_same_numbers(cli_run, model_dir, tmp_path):
    _, _, first = cli_run
    code, _, again = _cli(tmp_path, model_dir)
    assert code == 0
    assert _numbers(again) == _numbers(first)
    assert again["model_sha256"] == first["model_sha256"]


def test_two_processes_give_the_numbers_of_one(cli_run, model_dir, tmp_path):
    _, _, single = cli_run
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           "--nproc_per_node", "2", "-m", "vistoken", "eval", "--model", str(model_dir),
           "--out", str(tmp_path), *map(str, ARGS)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["processes"] == 2
    assert _numbers(res) == _numbers(single)
    assert proc.stdout.count("wrote ") == len(NAMES)  # written once, by rank 0


def test_shard_and_gather_in_one_process():
    ctx = distributed.Context(0, 1, 0, torch.device("cpu"), None)
    assert distributed.shard(5, ctx) == [0, 1, 2, 3, 4]
    assert distributed.shard(5, distributed.Context(1, 2, 1, torch.device("cpu"), "gloo")) == [
        1, 3
    ]
    assert distributed.gather({0: "a"}, ctx) == {0: "a"}


# --------------------------------------------------------------------------------------------
# bad arguments: one line


@pytest.mark.parametrize(
    "argv, code, needle",
    [
        (["--methods", "random,nope"], 2, "unknown method 'nope'"),
        (["--retention", "0.5,1.5"], 2, "argument --retention"),
        (["--retention", "0"], 2, "argument --retention"),
        (["--limit", "0"], 2, "argument --limit: must be >= 1"),
        (["--benchmark", "mvbench"], 2, "unknown benchmark 'mvbench'"),
        (["--batch-size", "0"], 2, "argument --batch-size"),
        (["--split", "dev"], 2, "argument --split"),
        (["--model", "/nonexistent/model"], 1, "/nonexistent/model"),
    ],
)
def test_bad_arguments_exit_with_one_line(argv, code, needle, tmp_path, capsys):
    got, out, err = run(capsys, "eval", "--out", tmp_path / "o", *argv)
    assert got == code
    assert needle in assert_one_error(err)
    assert not (tmp_path / "o").exists()


def test_a_folder_without_a_model_is_one_line(tmp_path, capsys):
    got, _, err = run(capsys, "eval", "--model", tmp_path, "--out", tmp_path / "o")
    assert got == 1
    assert "no reference model at" in assert_one_error(err)


def test_python_dash_m_vistoken_runs_the_cli(monkeypatch, capsys):
    import runpy

    monkeypatch.setattr(sys, "argv", ["vistoken", "eval", "--help"])
    with pytest.raises(SystemExit) as exc:
        runpy.run_module("vistoken", run_name="__main__", alter_sys=True)
    assert exc.value.code == 0
    assert "--retention" in capsys.readouterr().out


def test_progress_bar_when_asked(model, samples, capsys):
    m, processor = model
    plan = runner.plan_batches(samples[:2], 2)
    runner.run_batches(m, processor, samples[:2], [], plan, progress=True)
    assert "eval: 100%" in capsys.readouterr().err
    runner.run_batches(m, processor, samples[:2], [], plan, progress=False)
    assert capsys.readouterr().err == ""
