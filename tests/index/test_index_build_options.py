"""`grass-rs build` options: k per layer (--layer-k), torchrun, --device checks, truncation/skipping."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("datasets")

import hfmodels

import grass_rs
from grass_rs.capture import FactGraSS, PerLayer, parse_layer_k, per_layer_k
from grass_rs.cli import main
from grass_rs.index import BuildConfig, Index, build
from grass_rs.index.build import load_model, make_attributor

PYTHON = Path(grass_rs.__file__).parents[1]
MLP = "transformer.h.0.mlp.c_fc"


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(PYTHON), env.get("PYTHONPATH", "")])
    env["OMP_NUM_THREADS"] = "1"
    return env


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("buildopts")
    texts = hfmodels.texts(24, seed=5)
    return {
        "root": root,
        "texts": texts,
        "gpt2": hfmodels.model_dir(root / "gpt2", "gpt2", texts, seed=0),
        "jsonl": hfmodels.write_jsonl(root / "train.jsonl", [{"text": t} for t in texts]),
    }


def _args(work, idx: Path, *extra: str) -> list[str]:  # type: ignore[no-untyped-def]
    return ["build", str(idx), "--model", str(work["gpt2"]), "--dataset", str(work["jsonl"]),
            "--batch-size", "4", "--no-progress", *extra]  # fmt: skip


# ---- k per layer ---------------------------------------------------------------------------------
def test_per_layer_k_is_recorded_and_equals_that_layer_built_alone(work, capsys) -> None:  # type: ignore[no-untyped-def]
    root: Path = work["root"]  # type: ignore[assignment]
    idx = root / "perlayer"
    assert main(_args(work, idx, "--k", "16", "--layer-k", "*.mlp.*=8", "--layer-k", "lm_head=4")) == 0
    assert "k = 4/8/16" in capsys.readouterr().out
    index = Index.open(idx)
    layers = index.layers
    assert layers[MLP] == 8 and layers["transformer.h.1.mlp.c_proj"] == 8 and layers["lm_head"] == 4
    assert layers["transformer.h.0.attn.c_attn"] == 16 and index.vectors.dim == sum(layers.values())
    assert index.meta["settings"]["layer_k"] == {"*.mlp.*": 8, "lm_head": 4}
    assert "PerLayer(" in index.fingerprint["gradients"]["compressor"]

    # that layer alone with that k (Python API this time): the same columns
    alone = build(BuildConfig(index=str(root / "alone"), model=str(work["gpt2"]), dataset=str(work["jsonl"]),
                              batch_size=4, k=8, layers=[MLP], progress=False))  # fmt: skip
    a = Index.open(alone)
    assert a.layers == {MLP: 8}
    start = 0
    for name, k in layers.items():
        if name == MLP:
            break
        start += k
    got = index.vectors.read(0, index.rows)[:, start : start + 8]
    torch.testing.assert_close(got, a.vectors.read(0, a.rows), rtol=0, atol=0)

    # a query is checked against the per-layer k: the same setting passes, another one is a mismatch
    model, tok = load_model(str(work["gpt2"]))
    settings = dict(index.meta["settings"])
    index.check_model(model, tok, make_attributor(model, settings, None)).close()
    for other in ({"*.mlp.*": 4, "lm_head": 4}, {"lm_head": 4}, None):
        att = make_attributor(model, {**settings, "layer_k": other}, None)
        with pytest.raises(grass_rs.StoreMismatchError, match="another compressor"):
            index.check_model(model, tok, att)
    r = index.query([work["texts"][3]], top=2)  # type: ignore[index]
    assert int(r.topk.helpful[0, 0]) == 3
    # the same folder with another per-layer k is refused
    assert main(_args(work, idx, "--k", "16", "--layer-k", "*.mlp.*=4", "--layer-k", "lm_head=4")) == 2
    assert "other settings" in capsys.readouterr().err


def test_per_layer_factory_and_layer_k_errors(work, capsys) -> None:  # type: ignore[no-untyped-def]
    f = PerLayer(FactGraSS(16), {"*.mlp.*": FactGraSS(8), "*": FactGraSS(4)})
    assert f.factory_for("h.0.mlp.c_fc").out_dim == 8 and f.factory_for("lm_head").out_dim == 4
    assert PerLayer(FactGraSS(16), [("a*", FactGraSS(8))]).unmatched(["b", "c"]) == ["a*"]
    assert repr(per_layer_k("factgrass", 16, None)) == repr(FactGraSS(16))  # no rules: plain factory
    assert parse_layer_k(["*.mlp.*=8", "a=b=3"]) == {"*.mlp.*": 8, "a=b": 3}
    for bad in (["nope"], ["x=0"], ["=4"], ["x=4", "x=8"]):
        with pytest.raises(grass_rs.InvalidArgumentError, match="--layer-k"):
            parse_layer_k(bad)
    with pytest.raises(grass_rs.ArgumentTypeError, match="compressor factory"):
        PerLayer(FactGraSS(16), {"x": 8})  # type: ignore[dict-item]
    with pytest.raises(grass_rs.InvalidArgumentError, match="per-layer k x=10"):
        per_layer_k("logra", 16, {"x": 10})  # LoGra needs a perfect square
    root: Path = work["root"]  # type: ignore[assignment]
    # checked before any work: bad values, and (after the model loads) a pattern matching no layer
    assert main(_args(work, root / "bad1", "--layer-k", "mlp=x")) == 2
    assert "PATTERN=K" in capsys.readouterr().err and not (root / "bad1").exists()
    assert main(_args(work, root / "bad2", "--layer-k", "*.mpl.*=8", "--limit", "4")) == 2
    assert "match no captured layer" in capsys.readouterr().err
    assert not (root / "bad2").exists()  # nothing computed: no half-made folder to delete by hand
    with pytest.raises(grass_rs.InvalidArgumentError, match="positive integer"):
        BuildConfig(index=str(root / "bad3"), model=str(work["gpt2"]), dataset=str(work["jsonl"]),
                    layer_k={"*": 0}).validate()  # fmt: skip


# ---- torchrun ------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_torchrun_two_processes_equal_one(work) -> None:  # type: ignore[no-untyped-def]
    root: Path = work["root"]  # type: ignore[assignment]
    one, two = root / "tr-one", root / "tr-two"
    extra = ("--k", "8", "--layer-k", "lm_head=4")
    r = subprocess.run([sys.executable, "-m", "grass_rs", *_args(work, one, *extra)], env=_env(),
                       capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
           "-m", "grass_rs", *_args(work, two, *extra)]  # fmt: skip
    r = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("index ") == 1  # rank 0 reports
    for name in ("vectors.bin", "fisher.npz", "texts.jsonl"):
        assert (one / name).read_bytes() == (two / name).read_bytes(), name
    assert json.loads((one / "index.json").read_text()) == json.loads((two / "index.json").read_text())


def test_torchrun_env_is_checked(work, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    root: Path = work["root"]  # type: ignore[assignment]
    monkeypatch.setenv("WORLD_SIZE", "2")
    for var in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)
    assert main(_args(work, root / "tr-bad", "--k", "8")) == 2
    assert "torchrun --nproc_per_node" in capsys.readouterr().err
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "1")
    assert main(_args(work, root / "tr-bad", "--k", "8", "--nproc", "2")) == 2
    assert "--nproc with torchrun" in capsys.readouterr().err
    assert not (root / "tr-bad").exists()


# ---- --device ------------------------------------------------------------------------------------
def test_device_is_checked_before_any_work(work, capsys) -> None:  # type: ignore[no-untyped-def]
    root: Path = work["root"]  # type: ignore[assignment]
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    cases = [("tpu9", "not a torch device"), ("xla", "cpu, cuda"), ("cpu:3", "one CPU device"),
             (f"cuda:{n + 7}", "CUDA is not available" if n == 0 else "CUDA device")]  # fmt: skip
    for dev, msg in cases:
        assert main(_args(work, root / "dev", "--device", dev)) == 2
        err = capsys.readouterr().err
        assert f"--device {dev}" in err.replace("'", "") and msg in err, err
    assert not (root / "dev").exists()
    with pytest.raises(grass_rs.InvalidArgumentError, match="--device"):
        BuildConfig(index=str(root / "dev"), model=str(work["gpt2"]), dataset=str(work["jsonl"]),
                    device="cuda:99").validate()  # fmt: skip


def test_query_device_is_checked_before_the_model_loads(work, capsys) -> None:  # type: ignore[no-untyped-def]
    root: Path = work["root"]  # type: ignore[assignment]
    idx = root / "small"
    assert main(_args(work, idx, "--k", "8", "--limit", "8")) == 0
    capsys.readouterr()
    assert main(["query", str(idx), "--text", "the cat", "--device", "tpu9"]) == 2
    assert "--device 'tpu9' is not a torch device" in capsys.readouterr().err
    with pytest.raises(grass_rs.InvalidArgumentError, match="--device"):
        Index.open(idx).query(["the cat"], device="xla")


# ---- prompt/completion truncation ----------------------------------------------------------------
def test_long_prompts_keep_their_completion_and_empty_ones_are_skipped(work, capsys) -> None:  # type: ignore[no-untyped-def]
    root: Path = work["root"]  # type: ignore[assignment]
    texts: list[str] = work["texts"]  # type: ignore[assignment]
    long_prompt = " ".join(texts[:4])  # far more than --max-length 12 tokens
    rows = [{"prompt": long_prompt, "completion": "the big dog runs"},
            {"prompt": "a cat", "completion": ""},  # no completion: skipped
            {"prompt": "the bird", "completion": "sees the river"},
            {"prompt": long_prompt, "completion": ""},  # skipped
            {"prompt": texts[5], "completion": texts[6]}]  # fmt: skip
    data = hfmodels.write_jsonl(root / "pc.jsonl", rows)
    idx = root / "pc-idx"
    args = ["build", str(idx), "--model", str(work["gpt2"]), "--dataset", str(data), "--k", "8",
            "--max-length", "12", "--batch-size", "2", "--no-progress"]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "skipped 2 example(s)" in out and "data rows 1, 3" in out, out
    index = Index.open(idx)
    assert index.rows == 3 and index.meta["skipped"] == 2 and index.meta["skipped_examples"] == [1, 3]
    lines = [json.loads(x) for x in (idx / "texts.jsonl").read_text().splitlines()]
    assert [x["example"] for x in lines] == [0, 2, 4] and index.examples == [0, 2, 4]
    found = index.query([(rows[4]["prompt"], rows[4]["completion"])], top=1).to_dict()
    assert found["queries"][0]["helpful"][0] | {"score": 0} == {"row": 2, "example": 4, "score": 0,
                                                                "text": index.texts[2]}  # fmt: skip
    assert index.texts[0].endswith("\u2502the big dog runs")
    # the long prompt lost its start, not the completion: every completion token carries a loss
    model, tok = load_model(str(work["gpt2"]))
    from grass_rs.data import hf as hfdata

    c = hfdata.load_corpus(data, tok, max_length=12)
    comp = tok("the big dog runs", add_special_tokens=False)["input_ids"]
    assert len(c.input_ids[0]) == 12 and c.input_ids[0][-len(comp) :] == comp
    assert c.labels[0] == [-100] * (12 - len(comp)) + comp
    assert c.input_ids[0][: 12 - len(comp)] == tok(long_prompt)["input_ids"][-(12 - len(comp)) :]
    # a query without a loss token is an error, not a silent all-zero score
    with pytest.raises(grass_rs.InvalidArgumentError, match="no token to put a loss on"):
        index.query([("a cat", "")], top=1, model=model, tokenizer=tok)
