"""Every NAS entry point that draws at random checks its PRNG key first."""

import jax
import numpy as np
import pytest
from _toy_tasks import stripes_task

from ldnas_jax import nas


def test_nas_searches_and_sampling_check_the_key_first():
    space = nas.SearchSpace(("identity", "sep_conv_3x3"), num_nodes=2)
    task = stripes_task("T", n=8)
    data = (task.train.x, task.train.y)
    # Reference: a real key works and draws genotypes of the space.
    assert all(g in space for g in space.sample(jax.random.key(0), 2))
    for bad in (0, np.zeros(2, np.float32), jax.random.split(jax.random.key(0), 2)):
        with pytest.raises((TypeError, ValueError), match="key must be"):
            space.sample(bad, 2)
        with pytest.raises((TypeError, ValueError), match="key must be"):
            nas.fuse_search(space, data, data, key=bad, num_classes=2, progress=False)
        with pytest.raises((TypeError, ValueError), match="key must be"):
            nas.random_search(space, data, data, key=bad, num_classes=2, progress=False)
