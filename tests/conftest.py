"""Shared pytest configuration: deterministic hypothesis, the `cuda` marker, oracles on sys.path."""

from __future__ import annotations

import os
import sys

import pytest
import torch
from hypothesis import HealthCheck, settings

sys.path.insert(0, os.path.dirname(__file__))

# Property tests are seeded (derandomized) so they never flake in CI.
settings.register_profile(
    "ci", derandomize=True, deadline=None, max_examples=25, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("ci")

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

# grass-rs's thread count follows torch's by default; some test modules set torch's to 1 for their
# own ops, so pin grass-rs's here to keep its parallel paths exercised by every test.
import grass_rs  # noqa: E402

grass_rs.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    import grass_rs

    if grass_rs.cuda_available():
        return
    skip = pytest.mark.skip(
        reason="needs a CUDA GPU and a CUDA build of grass-rs (grass_rs.cuda_available() is False)"
    )
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
