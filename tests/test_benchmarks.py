"""The Fisher speed benchmark's measurements and table, in a tiny configuration (no timing asserted)."""

import numpy as np
import pytest

from benchmarks import fisher_speed


@pytest.mark.parametrize("approach", ["library", "batched_grad_fast_routes", "jax_vmap_chunked"])
def test_jax_worker_measures_an_approach(approach):
    result = fisher_speed._jax_worker("small_cnn", approach, 8, 1)
    assert result["examples"] == 8 and result["backend"] == "cpu"
    assert result["examples_per_s"] == pytest.approx(8 / result["seconds"])
    assert np.isfinite(result["peak_rss_delta_mib"])


def test_table_gives_ratios_against_the_floors_and_pytorch():
    def row(examples_per_s, examples=64):
        return {
            "examples": examples,
            "examples_per_s": examples_per_s,
            "seconds": 64 / examples_per_s,
        }

    results = {
        "library": row(40.0),
        "batched_grad": row(20.0),
        "batched_grad_fast_routes": row(80.0),
        "torch_loop": row(10.0, examples=16),
        "torch_func": row(8.0, examples=16),
        "torch_batched": row(100.0),
        "jax_loop": {"error": "timed out"},
    }
    lines = fisher_speed._table("vgg16", results).splitlines()
    library = next(line for line in lines if line.startswith(fisher_speed.LABELS["library"]))
    # per 64 examples: 1.6 s against the floor's 3.2 s and the routed floor's 0.8 s; 4× torch's loop
    assert library.split()[-5:-2] == ["0.50", "2.00", "4.00"]
    routed = next(l for l in lines if l.startswith(fisher_speed.LABELS["batched_grad_fast_routes"]))
    assert routed.split()[-3] == "0.80"  # against PyTorch's batched gradient
    assert any("error: timed out" in line for line in lines)
