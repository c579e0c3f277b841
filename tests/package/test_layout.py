"""The package's shape: imports flow one way between layers, no module import cycles, one error root,
old module paths still import."""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
from pathlib import Path

import pytest
import torch

import grass_rs
import grass_rs.errors

PKG = Path(grass_rs.__file__).parent
#: Lower layers never import higher ones (cli → evaluation → attribution → capture → projection → base).
LAYERS = {
    "_core": 0,
    "_io": 0,
    "_tensor": 0,
    "_validate": 0,
    "errors": 0,
    "projection": 1,
    "capture": 2,
    "attribution": 3,
    "data": 3,
    "hf": 3,
    "index": 4,
    "evaluation": 4,
    "cli": 5,
}


def _module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Every ``grass_rs`` module ``path`` imports, at any depth of the file (lazy imports count)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("grass_rs")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base]) if base else ".".join(anchor)
            if not base.startswith("grass_rs"):
                continue
            for a in node.names:  # `from . import x` may name a submodule
                sub = f"{base}.{a.name}"
                out.add(
                    sub
                    if (PKG.parent / sub.replace(".", "/")).exists()
                    or (PKG.parent / (sub.replace(".", "/") + ".py")).exists()
                    else base
                )
    return out


def _graph() -> dict[str, set[str]]:
    files = [p for p in PKG.rglob("*.py") if p.name != "__main__.py"]
    return {_module_name(p): _imports(p) for p in files}


def _layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.get(parts[1]) if len(parts) > 1 else None


def test_lower_layers_never_import_higher_ones() -> None:
    bad = []
    for mod, deps in _graph().items():
        lm = _layer(mod)
        if lm is None:  # the package root re-exports everything
            continue
        for d in deps:
            ld = _layer(d)
            if ld is not None and ld > lm:
                bad.append(f"{mod} (layer {lm}) imports {d} (layer {ld})")
    assert not bad, "\n".join(bad)


def test_no_module_import_cycle() -> None:
    graph = _graph()
    # a package's __init__ importing its own submodules is not a cycle of concepts
    edges = {
        m: {d for d in deps if d in graph and d != m and not m == d.rsplit(".", 1)[0]}
        for m, deps in graph.items()
    }
    edges = {m: {d for d in deps if not d.startswith(m + ".")} for m, deps in edges.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for d in sorted(edges.get(m, ())):
            if d in {"grass_rs"}:
                continue
            if state.get(d) == 1:
                cycle = [*stack[stack.index(d) :], d]
                raise AssertionError("import cycle: " + " → ".join(cycle))
            if d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(edges):
        if m != "grass_rs" and m not in state:
            visit(m)


def test_every_error_derives_from_grass_error() -> None:
    classes = [
        c for _, c in inspect.getmembers(grass_rs.errors, inspect.isclass) if issubclass(c, BaseException)
    ]
    assert len(classes) >= 8
    for cls in classes:
        assert issubclass(cls, grass_rs.GrassError), cls
    assert issubclass(grass_rs.InvalidArgumentError, ValueError)
    assert issubclass(grass_rs.ArgumentTypeError, TypeError)
    assert issubclass(grass_rs.StoreError, RuntimeError)
    assert issubclass(grass_rs.StoreMismatchError, grass_rs.StoreError)
    assert issubclass(grass_rs.CudaUnavailableError, RuntimeError)


@pytest.mark.parametrize(
    "call",
    [
        lambda: grass_rs.SJLT(0, 4),
        lambda: grass_rs.SJLT(8, "4"),  # type: ignore[arg-type]
        lambda: grass_rs.FactGraSS(8, mask_dim=50),
        lambda: grass_rs.influence_scores(
            {"a": grass_rs.SJLT(8, 4).matrix()}, {"b": grass_rs.SJLT(8, 4).matrix()}
        ),
        lambda: grass_rs.projector("nope", 8, 4),
        lambda: grass_rs.Attributor(torch.nn.Linear(3, 2), backend="nope"),
        lambda: grass_rs.Attributor(grass_rs.SJLT(8, 4)),  # type: ignore[arg-type]
    ],
)
def test_errors_raised_by_the_package_are_grass_errors(call) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(grass_rs.GrassError):
        call()


def test_every_subpackage_imports_on_its_own() -> None:
    for info in pkgutil.walk_packages(grass_rs.__path__, "grass_rs."):
        if info.name.endswith("__main__"):
            continue
        importlib.import_module(info.name)


def test_old_module_paths_still_import() -> None:
    from grass_rs.hooks import attach  # noqa: F401
    from grass_rs.influence import influence_scores
    from grass_rs.lds import lds  # noqa: F401
    from grass_rs.store import GradientStore

    assert influence_scores is grass_rs.influence_scores
    assert GradientStore is grass_rs.GradientStore
