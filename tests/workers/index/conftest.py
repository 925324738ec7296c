from __future__ import annotations

import numpy as np
import pytest

from workers.index.config import IndexConfig


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)


@pytest.fixture
def small_config() -> IndexConfig:
    return IndexConfig(dim=8, m=16, ef_construction=100, ef_search=32, initial_capacity=8)
