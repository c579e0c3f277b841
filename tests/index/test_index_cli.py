"""`grass-rs build` / `grass-rs query` end to end on tiny GPT-2 and Llama models built offline."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("datasets")

import hfmodels

import grass_rs
from grass_rs.cli import main
from grass_rs.index import Index

PYTHON = Path(grass_rs.__file__).parents[1]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(PYTHON), env.get("PYTHONPATH", "")])
    env["OMP_NUM_THREADS"] = "1"
    return env


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "grass_rs", *args], env=_env(), capture_output=True, text=True
    )


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hfidx")
    texts = hfmodels.texts(48, seed=3)
    out = {
        "texts": texts,  # type: ignore[dict-item]
        "gpt2": hfmodels.model_dir(root / "gpt2", "gpt2", texts, seed=0),
        "gpt2b": hfmodels.model_dir(root / "gpt2b", "gpt2", texts, seed=1),
        "llama": hfmodels.model_dir(root / "llama", "llama", texts, seed=0),
        "jsonl": hfmodels.write_jsonl(root / "train.jsonl", [{"text": t} for t in texts]),
        "queries": hfmodels.write_jsonl(root / "q.jsonl", [{"text": texts[5]}, {"text": texts[30]}]),
        "root": root,
    }
    import datasets

    datasets.Dataset.from_list([{"body": t} for t in texts]).to_parquet(str(root / "train.parquet"))
    out["parquet"] = root / "train.parquet"
    out["idx"] = root / "idx-gpt2"
    assert main(["build", str(out["idx"]), "--model", str(out["gpt2"]), "--dataset", str(out["jsonl"]),
                 "--k", "16", "--batch-size", "4", "--no-progress"]) == 0  # fmt: skip
    return out


def test_build_then_query_duplicate_ranks_first(work, capsys) -> None:  # type: ignore[no-untyped-def]
    out = work["root"] / "q-out"
    assert (
        main(["query", str(work["idx"]), "--queries", str(work["queries"]), "--top", "3", "--out", str(out)])
        == 0
    )
    res = json.loads((out / "results.json").read_text())
    assert [q["helpful"][0]["row"] for q in res["queries"]] == [5, 30]
    assert res["queries"][0]["helpful"][0]["text"] == work["texts"][5]
    assert all(
        len(q["harmful"]) == 3 and q["harmful"][0]["score"] <= q["harmful"][1]["score"]
        for q in res["queries"]
    )
    md = (out / "report.md").read_text()
    assert "Most helpful" in md and work["texts"][30][:40] in md
    # the Python API answers the same, and html works
    r = Index.open(work["idx"]).query([work["texts"][5]], top=3)
    assert int(r.topk.helpful[0, 0]) == 5
    assert "<table>" in r.to_html()


def test_llama_parquet_with_a_named_field_and_left_padding(work) -> None:  # type: ignore[no-untyped-def]
    idx = work["root"] / "idx-llama"
    assert main(["build", str(idx), "--model", str(work["llama"]), "--dataset", str(work["parquet"]),
                 "--text-field", "body", "--k", "16", "--batch-size", "4", "--padding-side", "left",
                 "--dtype", "bfloat16", "--no-progress"]) == 0  # fmt: skip
    index = Index.open(idx)
    assert index.meta["dtype"] == "bfloat16" and index.rows == 48
    r = index.query([{"body": work["texts"][11]}, {"body": work["texts"][40]}], top=2, budget="64KB")
    assert r.topk.helpful[:, 0].tolist() == [11, 40]


def test_query_with_another_model_is_a_clear_error(work, capsys) -> None:  # type: ignore[no-untyped-def]
    rc = main(["query", str(work["idx"]), "--text", "the cat", "--model", str(work["gpt2b"])])
    assert rc == 2
    assert "built with another model" in capsys.readouterr().err
    with pytest.raises(grass_rs.StoreMismatchError, match="another model"):
        Index.open(work["idx"]).query(["the cat"], model=str(work["llama"]))


def test_rebuild_with_other_settings_is_refused(work, capsys) -> None:  # type: ignore[no-untyped-def]
    rc = main(["build", str(work["idx"]), "--model", str(work["gpt2"]), "--dataset", str(work["jsonl"]),
               "--k", "32", "--batch-size", "4", "--no-progress"])  # fmt: skip
    assert rc == 2 and "other settings" in capsys.readouterr().err


def test_corrupt_index_is_a_clear_error(work, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import shutil

    def copy() -> Path:
        dst = tmp_path / f"c{len(list(tmp_path.iterdir()))}"
        shutil.copytree(work["idx"], dst)
        return dst

    p = copy()
    (p / "index.json").write_text("{not json")
    with pytest.raises(grass_rs.StoreError, match="not valid JSON"):
        Index.open(p)
    p = copy()
    with open(p / "vectors.bin", "r+b") as f:
        f.truncate(100)
    with pytest.raises(grass_rs.StoreError, match="truncated"):
        Index.open(p)
    p = copy()
    (p / "fisher.npz").write_bytes(b"garbage")
    with pytest.raises(grass_rs.StoreError, match="corrupt"):
        Index.open(p)
    p = copy()
    with open(p / "vectors.bin", "r+b") as f:
        f.seek(64)
        f.write(b"\x7f" * 8)
    with pytest.raises(grass_rs.StoreError, match="checksum"):
        Index.open(p).verify()
    assert main(["query", str(p), "--text", "the cat", "--verify"]) == 2
    with pytest.raises(grass_rs.StoreError, match="not a grass-rs index"):
        Index.open(tmp_path)


def test_arguments_are_checked_before_any_work(work, capsys) -> None:  # type: ignore[no-untyped-def]
    base = [
        "build",
        str(work["root"] / "never"),
        "--model",
        str(work["gpt2"]),
        "--dataset",
        str(work["jsonl"]),
    ]
    for extra, msg in [
        (["--k", "0"], "positive integer"),
        (["--compressor", "nope"], "compressor"),
        (
            ["--device", "cuda:7"] if not __import__("torch").cuda.is_available() else ["--k", "-1"],
            "CUDA|positive",
        ),
    ]:
        assert main([*base, *extra]) == 2
        err = capsys.readouterr().err
        assert any(m in err for m in msg.split("|")), err
    assert (
        main(["build", str(work["root"] / "never"), "--model", "./nope", "--dataset", str(work["jsonl"])])
        == 2
    )
    assert "no such folder" in capsys.readouterr().err
    assert not (work["root"] / "never").exists()
    assert main(["query", str(work["idx"]), "--text", "x", "--budget", "lots"]) == 2


def _build_args(work, idx: Path, *extra: str) -> list[str]:  # type: ignore[no-untyped-def]
    return ["build", str(idx), "--model", str(work["gpt2"]), "--dataset", str(work["jsonl"]), "--k", "16",
            "--batch-size", "2", "--no-progress", *extra]  # fmt: skip


def _same_index(a: Path, b: Path, exact: bool = True) -> None:
    for name in ("vectors.bin", "fisher.npz", "texts.jsonl"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert json.loads((a / "index.json").read_text()) == json.loads((b / "index.json").read_text())


def _ref_b2(work) -> Path:  # type: ignore[no-untyped-def]
    """One process, one thread (bit-identical results need the same thread count per process)."""
    ref = work["root"] / "ref-b2"
    if not (ref / "index.json").exists():
        r = _cli(*_build_args(work, ref))
        assert r.returncode == 0, r.stderr[-3000:]
    return ref


def test_kill_9_during_build_then_resume_gives_the_same_index(work) -> None:  # type: ignore[no-untyped-def]
    ref = _ref_b2(work)
    idx = work["root"] / "killed"
    rng = random.Random(13)
    shard = idx / "shards" / "rank0-of-1"
    for target in sorted(rng.sample(range(1, 24), 2)):  # 24 batches: kill after `target` stored
        proc = subprocess.Popen([sys.executable, "-m", "grass_rs", *_build_args(work, idx)], env=_env(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            try:
                if grass_rs.GradientStore.load(shard).num_chunks >= target:
                    break
            except (OSError, ValueError, RuntimeError):  # not created yet / being written
                pass
            time.sleep(0.002)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert not (idx / "index.json").exists() or target >= 24
    r = _cli(*_build_args(work, idx))  # resume
    assert r.returncode == 0, r.stderr[-3000:]
    _same_index(ref, idx)


@pytest.mark.slow
def test_two_processes_equal_one(work) -> None:  # type: ignore[no-untyped-def]
    one = _ref_b2(work)
    two = work["root"] / "two"
    r = _cli(*_build_args(work, two, "--nproc", "2"))
    assert r.returncode == 0, r.stderr[-3000:]
    _same_index(one, two)
