"""Influence scores, block Fisher and TRAK math against direct float64 references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_breast_cancer
from torch.func import functional_call, grad, vmap
from torch.utils.data import DataLoader, TensorDataset

import grass_rs
import grass_rs.attribution.attributor
from grass_rs.attribution.fim import BlockFisher, FisherBlock
from grass_rs.attribution.influence import score_chunks, top_k


@pytest.fixture(scope="module")
def logreg() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """A logistic-regression model (Linear 30 -> 2) briefly trained on standardized breast_cancer."""
    x_np, y_np = load_breast_cancer(return_X_y=True)
    x = torch.tensor((x_np - x_np.mean(0)) / x_np.std(0), dtype=torch.float32)
    y = torch.tensor(y_np, dtype=torch.int64)
    torch.manual_seed(0)
    model = torch.nn.Linear(30, 2)
    opt = torch.optim.LBFGS(model.parameters(), max_iter=30)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y) + 1e-2 * model.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return model, x, y


def per_sample_grads(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """torch.func per-sample gradients in float64, per parameter flattened: name -> (n, numel)."""
    params = {k: v.detach().double() for k, v in model.named_parameters()}

    def loss(p: dict[str, torch.Tensor], xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        out = functional_call(model, p, (xi.unsqueeze(0).double(),))
        return torch.nn.functional.cross_entropy(out, yi.unsqueeze(0))

    g = vmap(grad(loss), in_dims=(None, 0, 0))(params, x, y)
    return {k: v.reshape(v.shape[0], -1) for k, v in g.items()}


def reference(train: torch.Tensor, test: torch.Tensor, damping: float, relative: bool) -> torch.Tensor:
    """Direct float64 g_testᵀ (F + λI)⁻¹ g_train with an explicit inverse."""
    train, test = train.double(), test.double()
    f = train.T @ train / train.shape[0]
    lam = damping * torch.trace(f) / f.shape[0] if relative else damping
    return test @ torch.linalg.inv(f + lam * torch.eye(f.shape[0], dtype=torch.float64)) @ train.T


@pytest.mark.parametrize("relative", [True, False])
def test_identity_compression_matches_direct_computation(logreg, relative: bool) -> None:
    model, x, y = logreg
    g = per_sample_grads(model, x, y)
    flat = torch.cat([g["weight"], g["bias"]], dim=1)
    train, test = flat[:400], flat[400:450]
    damping = 1e-2 if relative else 1e-4
    got = grass_rs.influence_scores(train, test, damping=damping, relative=relative)
    want = reference(train, test, damping, relative)
    assert got.shape == (50, 400) and got.dtype == torch.float32
    torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-5 * float(want.abs().max()))


def test_identity_projector_equals_raw_gradients(logreg) -> None:
    """Projecting with an identity matrix (Mask with out_dim = in_dim) changes nothing."""
    model, x, y = logreg
    flat = per_sample_grads(model, x, y)["weight"]
    ident = grass_rs.Mask(60, 60, seed=3)
    torch.testing.assert_close(ident.matrix(), torch.eye(60, dtype=torch.float64))
    a = grass_rs.influence_scores(flat[:300], flat[300:310])
    b = grass_rs.influence_scores(ident(flat[:300].float()), ident(flat[300:310].float()))
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * float(a.abs().max()))


def test_layer_dict_is_sum_of_block_diagonal_terms(logreg) -> None:
    model, x, y = logreg
    g = per_sample_grads(model, x, y)
    train = {"w": g["weight"][:300], "b": g["bias"][:300]}
    test = {"w": g["weight"][300:320], "b": g["bias"][300:320]}
    got = grass_rs.influence_scores(train, test, damping=1e-2)
    want = reference(train["w"], test["w"], 1e-2, True) + reference(train["b"], test["b"], 1e-2, True)
    torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-5 * float(want.abs().max()))


def test_one_block_equals_full_fim() -> None:
    gen = torch.Generator().manual_seed(1)
    g = torch.randn(200, 16, generator=gen, dtype=torch.float64)
    block = FisherBlock(16)
    block.update(g[:120])
    block.update(g[120:])
    full = g.T @ g / 200
    torch.testing.assert_close(block.matrix, full)
    inv = torch.linalg.inv(full + 0.1 * torch.eye(16, dtype=torch.float64))
    torch.testing.assert_close(block.inverse(0.1, relative=False), inv)


def test_damping_sweep_from_kept_eigendecomposition_equals_resolving() -> None:
    gen = torch.Generator().manual_seed(2)
    g = torch.randn(50, 24, generator=gen, dtype=torch.float64) * torch.linspace(
        0.01, 3, 24, dtype=torch.float64
    )
    x = torch.randn(7, 24, generator=gen, dtype=torch.float64)
    eig = FisherBlock(24, solver="eigh")
    eig.update(g)
    w_before = eig.eigh()[0]
    for damping in [1e-6, 1e-3, 1e-1, 10.0]:
        chol = FisherBlock(24, solver="cholesky")
        chol.update(g)
        fresh = torch.linalg.solve(
            chol.matrix + chol.damping_value(damping) * torch.eye(24, dtype=torch.float64), x.T
        ).T
        torch.testing.assert_close(eig.solve(x, damping), fresh, rtol=1e-6, atol=1e-9)
        torch.testing.assert_close(chol.solve(x, damping), fresh, rtol=1e-6, atol=1e-9)
    assert eig.eigh()[0] is w_before  # decomposition computed once and kept


def test_float32_fisher_agrees_with_float64() -> None:
    gen = torch.Generator().manual_seed(7)
    g, x = torch.randn(300, 20, generator=gen), torch.randn(5, 20, generator=gen)
    b64, b32 = FisherBlock(20), FisherBlock(20, dtype=torch.float32)
    for block in (b64, b32):
        block.update(g)
    assert b32.solve(x).dtype == torch.float32
    torch.testing.assert_close(b32.solve(x, 1e-2).double(), b64.solve(x, 1e-2), rtol=1e-4, atol=1e-5)


def test_identity_solver_is_tracin_dot_products() -> None:
    gen = torch.Generator().manual_seed(3)
    train, test = torch.randn(30, 8, generator=gen), torch.randn(4, 8, generator=gen)
    fisher = BlockFisher({"": 8}, solver="identity")
    fisher.update({"": train})
    got = score_chunks(fisher, test, [{"": train}])
    torch.testing.assert_close(got, test @ train.T, rtol=1e-5, atol=1e-5)


def test_chunked_equals_unchunked() -> None:
    gen = torch.Generator().manual_seed(4)
    train = {"a": torch.randn(103, 12, generator=gen), "b": torch.randn(103, 5, generator=gen)}
    test = {"a": torch.randn(9, 12, generator=gen), "b": torch.randn(9, 5, generator=gen)}
    whole = grass_rs.influence_scores(train, test)
    fisher = BlockFisher({"a": 12, "b": 5})
    chunks = [{k: v[i : i + 10] for k, v in train.items()} for i in range(0, 103, 10)]
    for c in chunks:
        fisher.update(c)
    chunked = score_chunks(fisher, test, chunks, test_chunk=4)
    torch.testing.assert_close(chunked, whole, rtol=1e-5, atol=1e-5)


def test_one_test_example_and_numpy_input() -> None:
    rng = np.random.default_rng(0)
    train, test = rng.standard_normal((20, 6)), rng.standard_normal((1, 6))
    got = grass_rs.influence_scores(train, test)
    assert got.shape == (1, 20)
    torch.testing.assert_close(
        got.double(), reference(torch.tensor(train), torch.tensor(test), 1e-3, True), rtol=1e-4, atol=1e-5
    )


def test_errors_are_clear() -> None:
    good = torch.randn(10, 4)
    with pytest.raises(ValueError, match="empty"):
        grass_rs.influence_scores(torch.zeros(0, 4), good)
    bad = good.clone()
    bad[3, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        grass_rs.influence_scores(bad, good)
    with pytest.raises(ValueError, match="layers"):
        grass_rs.influence_scores({"a": good}, {"b": good})
    with pytest.raises(ValueError, match="k="):
        grass_rs.influence_scores(good, torch.randn(2, 5))
    with pytest.raises(ValueError, match="singular"):
        grass_rs.influence_scores(torch.randn(2, 4), good, damping=0.0)


def test_top_k_orders_helpful_and_harmful() -> None:
    scores = torch.tensor([[0.5, -2.0, 3.0, 0.0], [-1.0, 1.0, -3.0, 2.0]])
    helpful, harmful = top_k(scores, 2)
    assert helpful.tolist() == [[2, 0], [3, 1]]
    assert harmful.tolist() == [[1, 3], [2, 0]]


# ---- end to end through the Attributor ------------------------------------------------------------------
def _loader(x: torch.Tensor, y: torch.Tensor, batch: int = 64) -> DataLoader:
    return DataLoader(TensorDataset(x, y), batch_size=batch, shuffle=False)


def test_attributor_without_compression_matches_direct_computation(logreg) -> None:
    model, x, y = logreg
    g = per_sample_grads(model, x, y)
    flat = torch.cat([g["weight"], g["bias"]], dim=1)
    att = grass_rs.Attributor(model, compressor=None, damping=1e-2).fit(_loader(x[:400], y[:400]))
    got = att.score(_loader(x[400:430], y[400:430]))
    want = reference(flat[:400], flat[400:430], 1e-2, True)
    torch.testing.assert_close(got.double(), want, rtol=1e-3, atol=1e-4 * float(want.abs().max()))
    # damping sweep on the fitted eigendecomposition equals a fresh fit at that damping
    sweep = att.score(_loader(x[400:430], y[400:430]), damping=1e-1)
    want = reference(flat[:400], flat[400:430], 1e-1, True)
    torch.testing.assert_close(sweep.double(), want, rtol=1e-3, atol=1e-4 * float(want.abs().max()))


def test_attributor_with_identity_full_compressor_matches_direct_computation(logreg) -> None:
    """grass_rs.Full(Mask, out_dim=p) is the identity on the layer gradient (hook backend, no compression)."""
    model, x, y = logreg
    g = per_sample_grads(model, x, y)
    flat = torch.cat([g["weight"], g["bias"]], dim=1)
    att = grass_rs.Attributor(model, compressor=grass_rs.Full(grass_rs.Mask, out_dim=62), damping=1e-2)
    got = att.fit(_loader(x[:400], y[:400])).score(_loader(x[400:430], y[400:430]))
    want = reference(flat[:400], flat[400:430], 1e-2, True)
    torch.testing.assert_close(got.double(), want, rtol=1e-3, atol=1e-4 * float(want.abs().max()))


def test_hook_and_torch_func_backends_give_the_same_gradients() -> None:
    from grass_rs.capture import FuncGradients, HookGradients, PerLayerProjectors

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(20, 16), torch.nn.ReLU(), torch.nn.Linear(16, 5)).eval()
    x, y = torch.randn(12, 20), torch.randint(0, 5, (12,))
    factory = grass_rs.ProjectorFactory("grass", 32, seed=5)
    a = FuncGradients(model, grass_rs.attribution.sum_cross_entropy, None, factory)(x, y)
    hooks = HookGradients(
        model, grass_rs.attribution.sum_cross_entropy, PerLayerProjectors(factory), torch.nn.Linear
    )
    b = hooks(x, y)
    hooks.close()
    assert list(a) == list(b) == ["0", "2"]
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6)
    assert all(p.grad is None for p in model.parameters())  # the user's .grad is left alone


# ---- TRAK --------------------------------------------------------------------------------------------------
def test_trak_single_model_is_a_hat_matrix() -> None:
    """Q = 1, no ridge: train-vs-train TRAK scores are X (XᵀX)⁻¹ Xᵀ, symmetric, idempotent, trace k."""
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(40, 6, generator=gen, dtype=torch.float64)
    h = grass_rs.trak_scores([x], [x], [torch.ones(40)]).double()
    torch.testing.assert_close(h, h.T, atol=1e-5, rtol=0)
    torch.testing.assert_close(h @ h, h, atol=1e-4, rtol=0)
    assert float(torch.trace(h)) == pytest.approx(6, abs=1e-4)


def test_trak_ensemble_matches_explicit_formula() -> None:
    gen = torch.Generator().manual_seed(6)
    train = [torch.randn(30, 5, generator=gen, dtype=torch.float64) for _ in range(3)]
    test = [torch.randn(4, 5, generator=gen, dtype=torch.float64) for _ in range(3)]
    q = [torch.rand(30, generator=gen, dtype=torch.float64) for _ in range(3)]
    got = grass_rs.trak_scores(train, test, q, damping=0.5)
    parts = [
        t @ np.linalg.inv(x.T @ x + 0.5 * torch.eye(5, dtype=torch.float64)) @ x.T
        for x, t in zip(train, test, strict=True)
    ]
    want = (sum(parts) / 3) * (sum(q) / 3)[None, :]
    torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-5)


def test_trak_pipeline_uses_margin_gradients_and_out_to_loss(logreg) -> None:
    from grass_rs.attribution.trak import classification_margin, out_to_loss

    model, x, y = logreg
    logits = model(x[:5]).detach().double()
    p = torch.softmax(logits, 1)[torch.arange(5), y[:5]]
    torch.testing.assert_close(classification_margin(logits, y[:5]), torch.log(p / (1 - p)).sum())
    torch.testing.assert_close(out_to_loss(logits, y[:5]), (1 - p).float())
    trak = grass_rs.TRAK([model, model], compressor=None, damping=1e-3).fit(_loader(x[:300], y[:300]))
    got = trak.score(_loader(x[300:310], y[300:310]))
    params = {k: v.detach().double() for k, v in model.named_parameters()}

    def margin(pr: dict[str, torch.Tensor], xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        return classification_margin(functional_call(model, pr, (xi[None].double(),)), yi[None])

    g = vmap(grad(margin), in_dims=(None, 0, 0))(params, x[:310], y[:310])
    feats = torch.cat([g["weight"].reshape(310, -1), g["bias"]], dim=1)
    q = out_to_loss(model(x[:300]).detach(), y[:300]).double()
    tr, te = feats[:300], feats[300:]
    want = te @ torch.linalg.inv(tr.T @ tr + 1e-3 * torch.eye(62, dtype=torch.float64)) @ tr.T * q[None, :]
    torch.testing.assert_close(got.double(), want, rtol=1e-3, atol=1e-4 * float(want.abs().max()))


# ---- issue 16: damping, layer keys, k, top_k, TRAK weights ---------------------------------------
def _grads(n: int, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {"a": torch.randn(n, 4, generator=gen), "b": torch.randn(n, 3, generator=gen)}


BAD_DAMPING = [
    (float("nan"), ValueError, "finite"),
    (float("inf"), ValueError, "finite"),
    (-1e-3, ValueError, "≥ 0"),
    ("1", TypeError, "real number"),
    (None, TypeError, "real number"),
    (True, TypeError, "real number"),
]


@pytest.mark.parametrize(("damping", "exc", "match"), BAD_DAMPING)
def test_bad_damping_is_rejected_everywhere(damping, exc: type, match: str) -> None:
    train, test = _grads(12), _grads(3, 1)
    fisher = BlockFisher({"a": 4, "b": 3})
    fisher.update(train)
    calls = [
        lambda: grass_rs.influence_scores(train, test, damping=damping),
        lambda: score_chunks(fisher, test, [train], damping=damping),
        lambda: fisher.solve(test, damping),
        lambda: fisher.blocks["a"].solve(test["a"], damping),
        lambda: FisherBlock(4, solver="identity").solve(test["a"], damping),
        lambda: grass_rs.trak_scores([train], [test], [torch.ones(12)], damping=damping),
        lambda: grass_rs.TRAK([torch.nn.Linear(2, 2)], damping=damping),
    ]
    for call in calls:
        with pytest.raises(exc, match=match) as info:
            call()
        assert isinstance(info.value, grass_rs.GrassError) and "`damping`" in str(info.value)


def test_attributor_score_rejects_non_finite_damping() -> None:
    gen = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(16, 6, generator=gen), torch.randint(0, 3, (16,), generator=gen))
    model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3))
    att = grass_rs.Attributor(model, k=4).fit(DataLoader(data, batch_size=8))
    test = DataLoader(data, batch_size=4)
    for damping in (float("nan"), float("inf"), -1.0):
        with pytest.raises(ValueError, match="`damping`"):
            att.score(test, damping=damping)


def test_singular_advice_only_suggests_what_can_help() -> None:
    zeros = torch.zeros(5, 3)
    for solver in ("eigh", "cholesky"):
        block = FisherBlock(3, solver=solver)
        block.update(zeros)
        with pytest.raises(ValueError, match="relative=False") as info:  # a larger damping cannot help
            block.solve(torch.ones(1, 3), damping=10.0, relative=True)
        assert "larger damping" not in str(info.value)
        with pytest.raises(ValueError, match="use damping > 0"):
            block.solve(torch.ones(1, 3), damping=0.0)
        got = block.solve(torch.ones(1, 3), damping=2.0, relative=False)
        torch.testing.assert_close(got, torch.full((1, 3), 0.5, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"no layers|at least one"):
        grass_rs.influence_scores({}, {})


def test_layer_keys_that_collide_are_refused() -> None:
    g = torch.randn(4, 3)
    with pytest.raises(ValueError, match="both name layer '0'"):
        grass_rs.influence_scores({0: g, "0": g}, {0: g, "0": g})


def test_layers_are_matched_by_name_in_any_order() -> None:
    train, test = _grads(12), _grads(3, 1)
    expected = grass_rs.influence_scores(train, test)
    swapped = {"b": test["b"], "a": test["a"]}
    assert torch.equal(grass_rs.influence_scores(train, swapped), expected)
    fisher = BlockFisher({"a": 4, "b": 3}, solver="cholesky")
    fisher.update(train)
    torch.testing.assert_close(score_chunks(fisher, swapped, [{"b": train["b"], "a": train["a"]}]), expected)
    q = torch.rand(12)
    assert torch.equal(
        grass_rs.trak_scores([train], [swapped], [q]), grass_rs.trak_scores([train], [test], [q])
    )


def test_zero_columns_are_refused() -> None:
    with pytest.raises(ValueError, match="k = 0 columns"):
        grass_rs.influence_scores(torch.zeros(4, 0), torch.zeros(2, 0))


def test_top_k_arguments() -> None:
    scores = torch.randn(3, 5)
    for k in (0, -1):
        with pytest.raises(ValueError, match="`k` must be at least 1"):
            top_k(scores, k)
    with pytest.raises(TypeError, match="`k` must be an int"):
        top_k(scores, 2.5)
    with pytest.raises(ValueError, match=r"\(n_test, n_train\)"):
        top_k(torch.randn(5), 2)
    helpful, harmful = top_k(scores.numpy(), 9)  # numpy works, k is clipped
    assert helpful.shape == harmful.shape == (3, 5)


def test_trak_rejects_non_finite_out_to_loss_weights() -> None:
    train, test = _grads(6), _grads(2, 1)
    q = torch.rand(6)
    q[4] = float("nan")
    with pytest.raises(ValueError, match=r"NaN or infinite weights.*example 4"):
        grass_rs.trak_scores([train], [test], [q], damping=1e-3)
