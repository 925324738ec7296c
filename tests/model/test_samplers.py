from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from model.samplers import ClassBalancedSampler
from simstream.errors import SamplerError


def _data(counts: list[int]) -> tuple[np.ndarray, np.ndarray]:
    y = np.concatenate([np.full(n, c) for c, n in enumerate(counts)])
    return np.arange(len(y)) * 10, y


def test_a_batch_holds_classes_per_batch_groups_of_examples_per_class() -> None:
    x, y = _data([10, 10, 10, 10, 10])
    sampler = ClassBalancedSampler(x, y, classes_per_batch=3, examples_per_class=4, seed=1)
    xb, yb = sampler[0]
    assert xb.shape == (12,) and yb.shape == (12,)
    groups = yb.reshape(3, 4)
    assert (groups == groups[:, :1]).all()
    assert len(set(groups[:, 0])) == 3
    np.testing.assert_array_equal(y[xb // 10], yb)


def test_when_each_class_has_exactly_the_examples_asked_every_batch_is_the_whole_set() -> None:
    # 3 classes × 2 examples, drawn without replacement: each batch is a permutation of 0..5.
    x, y = _data([2, 2, 2])
    sampler = ClassBalancedSampler(x, y, classes_per_batch=3, examples_per_class=2, seed=0)
    for i in range(len(sampler)):
        xb, _ = sampler[i]
        assert sorted(xb.tolist()) == [0, 10, 20, 30, 40, 50]


def test_examples_are_drawn_without_replacement_when_a_class_has_enough() -> None:
    x, y = _data([8, 8, 8])
    sampler = ClassBalancedSampler(x, y, 3, 8, steps_per_epoch=20, seed=3)
    for i in range(len(sampler)):
        xb, _ = sampler[i]
        assert len(set(xb.tolist())) == 24


def test_a_class_with_fewer_examples_than_asked_is_sampled_with_replacement() -> None:
    x, y = _data([2, 10])
    sampler = ClassBalancedSampler(x, y, classes_per_batch=2, examples_per_class=5, seed=0)
    xb, yb = sampler[0]
    small = xb[yb == 0]
    assert len(small) == 5
    assert set(small.tolist()) <= {0, 10}


def test_the_same_seed_gives_the_same_batches_in_any_order_of_access() -> None:
    x, y = _data([20] * 6)
    a = ClassBalancedSampler(x, y, 3, 4, steps_per_epoch=5, seed=7)
    b = ClassBalancedSampler(x, y, 3, 4, steps_per_epoch=5, seed=7)
    later_first = [b[i][0] for i in reversed(range(5))][::-1]
    for i in range(5):
        np.testing.assert_array_equal(a[i][0], later_first[i])


def test_another_seed_or_another_epoch_gives_other_batches() -> None:
    x, y = _data([20] * 6)
    a = ClassBalancedSampler(x, y, 3, 4, seed=7)
    b = ClassBalancedSampler(x, y, 3, 4, seed=8)
    assert not np.array_equal(a[0][0], b[0][0])
    first = a[0][0]
    a.on_epoch_end()
    assert not np.array_equal(a[0][0], first)


def test_steps_per_epoch_defaults_to_about_one_pass_over_the_data() -> None:
    x, y = _data([25, 25, 25, 25])
    assert len(ClassBalancedSampler(x, y, 2, 5)) == 10
    assert len(ClassBalancedSampler(x, y, 2, 5, steps_per_epoch=3)) == 3
    assert len(ClassBalancedSampler(x[:3], y[:3], 1, 5)) == 1


def test_the_augmentation_hook_gets_the_batch_and_a_reproducible_generator() -> None:
    x, y = _data([10, 10])

    def jitter(batch: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return batch + rng.integers(1, 5, size=batch.shape)

    a = ClassBalancedSampler(x, y, 2, 3, augment=jitter, seed=2)
    b = ClassBalancedSampler(x, y, 2, 3, augment=jitter, seed=2)
    np.testing.assert_array_equal(a[0][0], b[0][0])
    assert (a[0][0] % 10 != 0).all()


def test_fewer_classes_than_classes_per_batch_is_a_clear_error() -> None:
    x, y = _data([5, 5])
    with pytest.raises(SamplerError, match=r"Cannot form a batch of 3 classes.*Received: 2"):
        ClassBalancedSampler(x, y, classes_per_batch=3, examples_per_class=2)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"classes_per_batch": 0, "examples_per_class": 2}, "classes_per_batch"),
        ({"classes_per_batch": 1, "examples_per_class": 0}, "examples_per_class"),
        (
            {"classes_per_batch": 1, "examples_per_class": 2, "steps_per_epoch": 0},
            "steps_per_epoch",
        ),
    ],
)
def test_sizes_below_one_are_refused(kwargs: dict[str, Any], message: str) -> None:
    x, y = _data([5, 5])
    with pytest.raises(SamplerError, match=message):
        ClassBalancedSampler(x, y, **kwargs)


def test_mismatched_empty_or_non_integer_labels_are_refused() -> None:
    with pytest.raises(SamplerError, match="as many examples as labels"):
        ClassBalancedSampler(np.zeros(3), np.zeros(4, int), 1, 1)
    with pytest.raises(SamplerError, match="at least one example"):
        ClassBalancedSampler(np.zeros(0), np.zeros(0, int), 1, 1)
    with pytest.raises(SamplerError, match="integer labels"):
        ClassBalancedSampler(np.zeros(3), np.zeros(3), 1, 1)
    with pytest.raises(SamplerError, match=r"shape \(n,\)"):
        ClassBalancedSampler(np.zeros(3), np.zeros((3, 1), int), 1, 1)
