"""The ``grass-rs`` command line: ``attribute`` outputs agree with each other, ``demo`` prints its table."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from grass_rs.cli import main


@pytest.fixture(autouse=True)
def _keep_threads() -> Iterator[None]:
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def test_attribute_writes_consistent_results(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert (
        main(
            ["attribute", "--output", str(out), "--n-test", "12", "--show", "2", "-k", "32", "--no-progress"]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert printed.count("most helpful") == 2 and printed.count("most harmful") == 2
    scores = np.load(out / "scores.npy")
    assert scores.shape == (12, 1438) and np.isfinite(scores).all()
    rows = json.loads((out / "top_k.json").read_text())
    assert len(rows) == 12
    for r in rows:
        s = scores[r["test"]]
        assert [j for j, _ in r["helpful"]] == list(np.argsort(-s, kind="stable")[:3])
        assert [j for j, _ in r["harmful"]] == list(np.argsort(s, kind="stable")[:3])
        assert r["helpful"][0][1] == pytest.approx(float(s.max()))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_train"] == 1438 and summary["k"] == 32 and summary["test_accuracy"] > 0.9
    assert (out / "influence.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # a second run resumes the complete store and reproduces the scores exactly
    assert (
        main(
            ["attribute", "--output", str(out), "--n-test", "12", "--show", "0", "-k", "32", "--no-progress"]
        )
        == 0
    )
    assert np.array_equal(np.load(out / "scores.npy"), scores)


def test_demo_prints_one_row_per_projector(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--n", "24", "-k", "64"]) == 0
    lines = [
        ln.split()
        for ln in capsys.readouterr().out.splitlines()
        if ln.strip().split()[:1] in (["sjlt"], ["mask"], ["grass"], ["gaussian"])
    ]
    assert [ln[0] for ln in lines] == ["sjlt", "mask", "grass", "gaussian"]
    for ln in lines:
        assert int(ln[1]) == 64 and 0 <= float(ln[3]) < 2


def test_module_entry_point_and_bad_arguments() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "grass_rs", "--help"], capture_output=True, text=True, check=True
    )
    assert "attribute" in done.stdout and "demo" in done.stdout
    with pytest.raises(SystemExit):
        main(["attribute", "--nproc", "0"])
    with pytest.raises(SystemExit):
        main(["attribute", "--compressor", "nope"])


def test_configuration_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["attribute", "--output", str(tmp_path), "--compressor", "logra", "-k", "32", "--no-progress"]
    assert main(args) == 2  # LoGra needs k to be a perfect square
    assert "grass-rs: error:" in capsys.readouterr().err


# ---- issue 16, item 10: arguments and optional dependencies are checked before the work starts ----
@pytest.fixture
def no_work(monkeypatch: pytest.MonkeyPatch) -> None:
    import grass_rs.data.bundled

    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("the job started although the arguments are invalid")

    monkeypatch.setattr(grass_rs.data.bundled, "digits_task", fail)


@pytest.mark.parametrize(
    "bad",
    [
        ["--top", "-5"],
        ["--top", "0"],
        ["--threads", "0"],
        ["--n-test", "-1"],
        ["--n-test", "0"],
        ["--show", "-1"],
        ["-k", "0"],
        ["--damping", "nan"],
        ["--damping", "inf"],
        ["--damping", "-1"],
        ["--nproc", "0"],
        ["--seed", "-3"],
    ],
)
def test_bad_attribute_arguments_fail_up_front(
    bad: list[str], no_work: None, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["attribute", *bad])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert bad[0] in err and "Traceback" not in err


def test_output_under_a_file_fails_up_front(
    tmp_path: Path, no_work: None, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "file").write_text("x")
    for out in (tmp_path / "file", tmp_path / "file" / "sub"):
        assert main(["attribute", "--output", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("grass-rs: error: --output") and "file" in err and "Traceback" not in err


def test_attribute_runs_without_matplotlib(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises ImportError
    args = ["attribute", "--output", str(tmp_path), "--n-test", "3", "--show", "1", "-k", "16"]
    assert main([*args, "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "matplotlib is not installed" in captured.err
    assert (tmp_path / "scores.npy").exists() and not (tmp_path / "influence.png").exists()
    assert "influence.png" not in captured.out
