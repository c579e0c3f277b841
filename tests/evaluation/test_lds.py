"""Linear datamodeling score: exactness on linear problems, null behaviour, determinism, caching."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import grass_rs
from grass_rs.evaluation import lds as L


def _linear_problem(n: int = 200, d: int = 5, n_test: int = 60, seed: int = 0):
    rng = np.random.default_rng(seed)
    w = rng.normal(size=d)
    x = rng.normal(size=(n, d))
    y = x @ w + 0.5 * rng.normal(size=n)
    xt = rng.normal(size=(n_test, d))
    return x, y, xt


def test_exact_linear_attribution_has_lds_one() -> None:
    """Fixed-design estimator θ_S = Σ⁻¹ Σ_{i∈S} x_i y_i / |S|: the output is exactly linear in S."""
    x, y, xt = _linear_problem()
    subsets = L.sample_subsets(len(y), 40, 0.5, seed=1)
    size = subsets[0].sum()
    sigma_inv = np.linalg.inv(x.T @ x / len(y))
    outputs = np.stack([xt @ sigma_inv @ (x[s].T @ y[s]) / size for s in subsets])
    scores = (xt @ sigma_inv @ (x * y[:, None]).T) / size  # exact: Σ_{i∈S} τ_i = output
    res = L.lds(scores, subsets, outputs)
    assert res.mean > 0.999
    assert res.ci_low <= res.mean <= res.ci_high
    # A wrong-signed attribution is anti-correlated.
    assert L.lds(-scores, subsets, outputs).mean < -0.999


def test_ridge_influence_function_has_high_lds() -> None:
    """Genuine retraining of ridge regression vs its influence-function attribution."""
    x, y, xt = _linear_problem(n=300, seed=2)
    lam = 1.0
    subsets = L.sample_subsets(len(y), 50, 0.5, seed=3)

    def fit(idx: np.ndarray) -> np.ndarray:
        return np.linalg.solve(x[idx].T @ x[idx] + lam * np.eye(x.shape[1]), x[idx].T @ y[idx])

    outputs = np.stack([xt @ fit(np.flatnonzero(s)) for s in subsets])
    theta = fit(np.arange(len(y)))
    hess = x.T @ x + lam * np.eye(x.shape[1])
    g_train = (x @ theta - y)[:, None] * x  # loss gradients
    scores = -(xt @ np.linalg.solve(hess, g_train.T))  # Δ output from adding each example
    res = L.lds(scores, subsets, outputs)
    assert res.mean > 0.9, res


def test_random_scores_have_lds_near_zero() -> None:
    rng = np.random.default_rng(0)
    n_train, n_test, m = 100, 300, 50
    subsets = L.sample_subsets(n_train, m, 0.5, seed=0)
    outputs = rng.normal(size=(m, n_test)) + subsets.astype(float) @ rng.normal(size=(n_train, n_test))
    res = L.lds(rng.normal(size=(n_test, n_train)), subsets, outputs, seed=1)
    assert abs(res.mean) < 0.05, res
    assert res.ci_low < 0.0 < res.ci_high
    assert res.ci_high - res.ci_low < 0.1


def test_sample_subsets_deterministic() -> None:
    a = L.sample_subsets(101, 10, 0.3, seed=5)
    b = L.sample_subsets(101, 10, 0.3, seed=5)
    assert a.dtype == np.bool_
    assert a.shape == (10, 101)
    assert np.array_equal(a, b)
    assert (a.sum(1) == 30).all()
    assert not np.array_equal(a, L.sample_subsets(101, 10, 0.3, seed=6))
    # Growing M keeps the earlier subsets (so cached models stay valid).
    assert np.array_equal(L.sample_subsets(101, 15, 0.3, seed=5)[:10], a)
    assert len({r.tobytes() for r in a}) == 10


class _Lin(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(3, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.w


def test_model_cache_reuse_and_resume(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = torch.tensor(rng.normal(size=(40, 3)))
    xt = torch.tensor(rng.normal(size=(7, 3)))
    subsets = L.sample_subsets(40, 6, 0.5, seed=0)
    calls: list[int] = []
    fail_at: list[int] = [3]

    def train(idx: np.ndarray, m: int) -> nn.Module:
        if m in fail_at:
            raise KeyboardInterrupt  # a killed run
        calls.append(m)
        model = _Lin()
        with torch.no_grad():
            model.w.copy_(x[idx].mean(0))
        return model

    spec = {"model": "lin", "data_seed": 0, "subset_seed": 0}
    cache = L.ModelCache(tmp_path, spec)
    with pytest.raises(KeyboardInterrupt):
        L.ground_truth(train, lambda mdl: mdl(xt), subsets, cache=cache, build_fn=_Lin)
    assert calls == [0, 1, 2]
    fail_at.clear()
    first = L.ground_truth(train, lambda mdl: mdl(xt), subsets, cache=cache, build_fn=_Lin)
    assert calls == [0, 1, 2, 3, 4, 5]  # resumed: only the missing models were trained
    again = L.ground_truth(
        train, lambda mdl: mdl(xt), subsets, cache=L.ModelCache(tmp_path, spec), build_fn=_Lin
    )
    assert calls == [0, 1, 2, 3, 4, 5]  # all reused
    assert np.array_equal(first, again)
    assert first.shape == (6, 7)
    want = np.stack([xt.numpy() @ x[np.flatnonzero(s)].mean(0).numpy() for s in subsets])
    np.testing.assert_allclose(first, want)
    assert not list(tmp_path.glob("*.tmp"))
    # A different spec (e.g. another subset seed) has another key and retrains.
    other = L.ModelCache(tmp_path, {**spec, "subset_seed": 1})
    assert other.key != cache.key
    L.ground_truth(train, lambda mdl: mdl(xt), subsets[:2], cache=other, build_fn=_Lin)
    assert calls[-2:] == [0, 1]
    with pytest.raises(ValueError, match="build_fn"):
        L.ground_truth(train, lambda mdl: mdl(xt), subsets, cache=cache)


def test_damping_chosen_on_validation_split_only() -> None:
    x, y, xt = _linear_problem(n=100, n_test=40, seed=4)
    subsets = L.sample_subsets(100, 20, 0.5, seed=0)
    outputs = np.stack([xt @ (x[s].T @ y[s]) for s in subsets])
    base = xt @ (x * y[:, None]).T
    rng = np.random.default_rng(0)
    noise = rng.normal(size=base.shape) * base.std()

    def score(d: float, idx: np.ndarray) -> np.ndarray:  # larger damping = less noise
        return base[idx] + noise[idx] / d

    val_idx, eval_idx = L.split_test(40, 0.5, seed=0)
    assert set(val_idx) | set(eval_idx) == set(range(40))
    assert not set(val_idx) & set(eval_idx)
    res = L.evaluate(score, subsets, outputs, dampings=(0.01, 100.0), seed=0)
    assert res.damping == 100.0
    assert res.extra["eval_idx"] == eval_idx.tolist()
    assert res.per_example.shape == (len(eval_idx),)
    # Scrambling the reported split's ground truth does not change the chosen damping.
    scrambled = outputs.copy()
    scrambled[:, eval_idx] = rng.normal(size=(20, len(eval_idx)))
    assert L.evaluate(score, subsets, scrambled, dampings=(0.01, 100.0), seed=0).damping == 100.0


def test_margin_and_sequence_log_odds() -> None:
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.0, 0.0, 3.0]], dtype=torch.float64)
    labels = torch.tensor([0, 1])
    p = torch.softmax(logits, 1)[torch.arange(2), labels]
    torch.testing.assert_close(L.margin(logits, labels), torch.log(p / (1 - p)))
    lp = torch.tensor([-0.1, -2.0, -50.0], dtype=torch.float64)
    torch.testing.assert_close(L.sequence_log_odds(lp), lp - torch.log1p(-torch.exp(lp)))


def test_influence_scores_integration() -> None:
    """Raw-gradient influence scores (grass_rs.influence_scores) through lds/evaluate run end to end."""
    x, y, xt = _linear_problem(n=120, n_test=30, seed=6)
    subsets = L.sample_subsets(120, 20, 0.5, seed=0)
    outputs = np.stack([xt @ (x[s].T @ y[s]) for s in subsets])
    train = torch.tensor(x * y[:, None])
    test = torch.tensor(xt)
    res = L.evaluate(lambda d, idx: grass_rs.influence_scores(train, test[idx], damping=d), subsets, outputs)
    assert res.damping is not None
    assert res.mean > 0.5


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"n_train": 1}, "n_train"),
        ({"n_subsets": 1}, "n_subsets"),
        ({"alpha": 0.0}, "alpha"),
        ({"alpha": 1.0}, "alpha"),
        ({"seed": -1}, "seed"),
    ],
)
def test_sample_subsets_bad_arguments(kwargs: dict[str, float], name: str) -> None:
    args = {"n_train": 10, "n_subsets": 5, "alpha": 0.5, "seed": 0, **kwargs}
    with pytest.raises(ValueError, match=name):
        L.sample_subsets(args.pop("n_train"), args.pop("n_subsets"), args.pop("alpha"), seed=args.pop("seed"))


def test_lds_bad_arguments() -> None:
    s, sub, out = np.zeros((3, 10)), L.sample_subsets(10, 4, 0.5), np.zeros((4, 3))
    with pytest.raises(ValueError, match="subsets"):
        L.lds(s, sub[:, :9], out)
    with pytest.raises(ValueError, match="outputs"):
        L.lds(s, sub, out[:, :2])
    with pytest.raises(ValueError, match="scores"):
        L.lds(np.full((3, 10), np.nan), sub, out)
    with pytest.raises(ValueError, match="confidence"):
        L.lds(np.ones((3, 10)), sub, np.ones((4, 3)), confidence=1.5)
    with pytest.raises(ValueError, match="scores"):
        L.lds(np.zeros(10), sub, out)
    with pytest.raises(ValueError, match="defined correlation"):
        L.lds(s, sub, out)  # constant predictions
    with pytest.raises(ValueError, match="val_fraction"):
        L.split_test(10, 1.0)


def test_study_smoke(tmp_path: Path) -> None:
    """The study pipeline on the breast-cancer task with 3 cached models (fast)."""
    from grass_rs.evaluation import study as S
    from grass_rs.evaluation.tasks import classification as C

    task = C.build_task("breast_cancer", n_models=3, cache_dir=tmp_path)
    assert task.outputs.shape == (3, task.test_grads.shape[0])
    assert task.train_grads.shape == (400, 62)
    assert len(list(tmp_path.glob("*.pt"))) == 3
    again = C.build_task("breast_cancer", n_models=3, cache_dir=tmp_path)  # from the cache
    np.testing.assert_array_equal(again.outputs, task.outputs)
    row = S.run_one(task, "srht", 16, n_proj_seeds=2, n_bootstrap=50, dampings=(0.1, 1.0))
    assert row["compressor"] == "srht"
    assert row["k"] == 16
    assert len(row["lds_per_seed"]) == 2
    assert -1.0 <= row["ci_low"] <= row["lds"] <= row["ci_high"] <= 1.0
    assert "| breast_cancer | srht | 16 |" in S.table([row])
    with pytest.raises(ValueError, match="compressor"):
        C.make_projector("bogus", 10, 2)


def test_stdlib_sequences_deterministic() -> None:
    from grass_rs.data import bundled as S

    a = S.stdlib_sequences(10, 16, seed=0)
    assert a.shape == (10, 16)
    assert a.dtype == torch.int64
    assert torch.equal(a, S.stdlib_sequences(10, 16, seed=0))
    assert not torch.equal(a, S.stdlib_sequences(10, 16, seed=1))
    assert int(a.max()) < 256


def test_lds_cli_functions(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from grass_rs.cli import parser as cli_parser

    parser = cli_parser()
    out = tmp_path / "r.json"
    argv = ["lds", "--task", "breast_cancer", "--models", "3", "--compressor", "sjlt", "--k", "8"]
    args = parser.parse_args([*argv, "--cache-dir", str(tmp_path / "cache"), "--json", str(out)])
    assert args.func(args) == 0
    assert "breast_cancer sjlt k=8: LDS" in capsys.readouterr().out
    assert json.loads(out.read_text())["n_models"] == 3


def test_hooked_tasks_capture_every_example_like_one_attach() -> None:
    """CNN and GPT-2 tasks: ``compress`` (warm-up, batching, two splits) equals one hooked pass."""
    import numpy as np
    from transformers import GPT2Config, GPT2LMHeadModel

    from grass_rs.capture.compressors import make_compressor
    from grass_rs.evaluation.tasks.cnn import CNNTask, build_cnn
    from grass_rs.evaluation.tasks.gpt2 import LMTask, seq_log_prob

    torch.manual_seed(0)
    x, y = torch.rand(300, 64), torch.randint(0, 10, (300,))
    empty = np.zeros((1, 1))
    cnn = CNNTask("cnn", empty, empty, build_cnn(0).eval(), x[:280], y[:280], x[280:], y[280:], 0.0)
    cfg = GPT2Config(vocab_size=64, n_positions=8, n_embd=16, n_layer=1, n_head=2)
    ids = torch.randint(0, 64, (40, 8))
    lm = LMTask("gpt2", empty, empty, GPT2LMHeadModel(cfg).eval(), ids[:36], ids[36:], 0.0)

    def one_pass(task, loss_of, inputs):  # type: ignore[no-untyped-def]
        with grass_rs.attach(task.model, make_compressor("factgrass", 16, seed=3)) as h:
            loss_of(inputs).backward()
        task.model.zero_grad(set_to_none=True)
        return h.gradients()

    for task, loss_of, (tr_in, te_in) in [
        (
            cnn,
            lambda v: torch.nn.functional.cross_entropy(cnn.model(v[0]), v[1], reduction="sum"),
            ((x[:280], y[:280]), (x[280:], y[280:])),
        ),
        (lm, lambda v: -seq_log_prob(lm.model, v).sum(), (ids[:36], ids[36:])),
    ]:
        tr, te, seconds = task.compress("factgrass", 16, 3, repeats=1)
        assert seconds > 0 and task.row_k("factgrass", 16) == 16
        for got, inputs in ((tr, tr_in), (te, te_in)):
            want = one_pass(task, loss_of, inputs)
            assert list(got) == list(want)
            for name in want:
                torch.testing.assert_close(got[name], want[name].double(), rtol=1e-5, atol=1e-6)
        with pytest.raises(grass_rs.InvalidArgumentError, match="compressor"):
            task.compress("srht", 16, 0, repeats=0)


def test_cnn_task_ground_truth_is_cached_and_reproducible(tmp_path: Path) -> None:
    from grass_rs.evaluation.study import build_eval_task

    task = build_eval_task("cnn", n_models=2, cache_dir=tmp_path)
    assert task.outputs.shape == (2, 797) and np.isfinite(task.outputs).all()
    assert len(list(tmp_path.glob("*.pt"))) == 2
    again = build_eval_task("cnn", n_models=2, cache_dir=tmp_path)  # loaded from the cache
    np.testing.assert_array_equal(again.outputs, task.outputs)
    assert task.p == sum(p.numel() for p in again.model.parameters())
