"""The Fisher speed benchmark's measurements and table, in a tiny configuration (no timing asserted)."""

import numpy as np
import pytest

from benchmarks import fisher_speed


@pytest.mark.parametrize(
    "approach",
    [
        "library",
        "library_pure_function",
        "library_nnx",
        "batched_grad_threshold",
        "batched_grad_fast_routes",
        "jax_vmap_chunked",
    ],
)
def test_jax_worker_measures_an_approach(approach):
    result = fisher_speed._jax_worker("small_cnn", approach, 8, 1)
    assert result["examples"] == 8 and result["backend"] == "cpu"
    assert result["examples_per_s"] == pytest.approx(8 / result["seconds"])
    assert np.isfinite(result["peak_rss_delta_mib"])
    assert result["first_call_s"] > 0
    # The timed row lists the route of each convolution shape it timed (none at 8 examples).
    assert ("conv_routes" in result) == (approach == "batched_grad_fast_routes")
    # A library row lists what "auto" timed: nothing on the CPU.
    assert result.get("auto_engine") == ([] if approach.startswith("library") else None)


def test_the_three_ways_of_writing_a_model_have_one_fisher():
    """The plain-function and NNX benchmark models share the linen model's plan and Fisher."""
    import jax

    import ldnas_jax as ld
    from benchmarks._models import nnx_model, pure_function_model

    x = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype(np.float32)
    for build in (pure_function_model, nnx_model):
        apply_fn, params = build("small_cnn")
        plan = ld.fisher.layerwise_plan(apply_fn, params, x)
        assert plan.fallback == () and len(plan.layers) == 4  # three convolutions and the head
        fast = ld.fisher_diagonal(apply_fn, params, (x, np.array([1, 7])))
        reference = ld.fisher_diagonal(apply_fn, params, (x, np.array([1, 7])), method="vmap")
        for a, e in zip(jax.tree.leaves(fast), jax.tree.leaves(reference)):
            assert np.linalg.norm(a - e) <= 1e-5 * np.linalg.norm(e)


def test_targets_are_the_issue_ratios_of_one_run():
    def row(seconds, examples=64, first=1.0):
        return {
            "seconds": seconds,
            "examples": examples,
            "examples_per_s": examples / seconds,
            "first_call_s": first,
        }

    results = {
        "library": row(1.0, first=4.0),
        "library_pure_function": row(1.1),
        "library_nnx": row(1.5),
        "jax_vmap_chunked": row(8.0, first=5.0),
        "torch_func": row(2.0),
        "torch_loop": {"error": "timed out"},
    }
    targets = fisher_speed._targets("small_cnn", results)
    assert targets["plain function / linen Fisher time"][0] == pytest.approx(1.1)
    assert targets["NNX / linen Fisher time"][0] == pytest.approx(1.5)
    assert targets["linen Fisher / torch.func, ex/s"][0] == pytest.approx(2.0)
    assert targets["linen Fisher / best PyTorch Fisher, ex/s"] == (pytest.approx(2.0), ">= 1")
    assert targets["first call, fast path / vmap path"][0] == pytest.approx(0.8)
    vgg = fisher_speed._targets("vgg16", {"library": row(1.0), "torch_loop": row(4.0)})
    assert vgg == {"linen Fisher / best PyTorch Fisher, ex/s": (pytest.approx(4.0), ">= 2")}


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


def test_backward_benchmark_times_the_same_functions_both_ways():
    # The two variants must differ only in their backward passes: equal values and
    # gradients, and the library's functions are back in place after the block.
    import jax
    import jax.numpy as jnp

    from benchmarks import backward_passes
    from ldnas_jax.nas import convolution, operations

    library = convolution.depthwise_conv2d, convolution.conv2d, operations.max_pool
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 6, 6, 3)), jnp.float32)
    kernel = jnp.asarray(np.random.default_rng(1).normal(size=(3, 3, 1, 3)), jnp.float32)
    dense = jnp.asarray(np.random.default_rng(2).normal(size=(1, 7, 3, 3)), jnp.float32)

    def gradients():
        def loss(x, kernel, dense):
            y = convolution.depthwise_conv2d(x, kernel, 2, 1) + convolution.conv2d(x, dense, 2)
            return jnp.sum(jnp.cos(y)) + jnp.sum(jnp.sin(operations.max_pool(x, 3, 2)))

        return jax.grad(loss, (0, 1, 2))(x, kernel, dense)

    with backward_passes.autodiff_backward_passes():
        assert convolution.depthwise_conv2d is backward_passes.autodiff_depthwise
        assert convolution.conv2d is backward_passes.autodiff_dense
        assert operations.max_pool is backward_passes.autodiff_max_pool
        step, args = backward_passes.operation_step("max_pool_3x3", 1, x)
        assert step(*args)[1].shape == x.shape
        autodiff = gradients()
    assert (convolution.depthwise_conv2d, convolution.conv2d, operations.max_pool) == library
    for a, b in zip(autodiff, gradients()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_the_library_is_set_against_the_best_of_the_four_pytorch_fishers():
    def row(examples_per_s):
        return {"examples": 32, "examples_per_s": examples_per_s, "seconds": 32 / examples_per_s}

    results = {
        "library": row(60.0),
        "torch_loop": row(20.0),
        "torch_func": row(10.0),
        "torch_backpack": row(40.0),
        "torch_opacus": {"error": "timed out"},
        "torch_batched": row(500.0),  # a training step's gradient, not a Fisher
    }
    summary = fisher_speed._summary("vgg16", 32, results)
    assert summary["best_pytorch"] == "torch_backpack"
    assert summary["library_over_best_pytorch"] == pytest.approx(1.5)
    assert set(summary["pytorch_examples_per_s"]) == {"torch_loop", "torch_func", "torch_backpack"}
    assert fisher_speed._targets("vgg16", results)["linen Fisher / best PyTorch Fisher, ex/s"][
        0
    ] == pytest.approx(1.5)
    text = fisher_speed._summary_text([summary]).splitlines()
    assert text[0].split()[:6] == ["model", "batch", "library", "loop", "func", "backpack"]
    assert text[1].split() == ["vgg16", "32", "60.0", "20.0", "10.0", "40.0", "backpack", "1.50x"]
    assert fisher_speed._summary("vgg16", 32, {"library": row(1.0)}) is None


def test_batch_sizes_cap_the_slow_rows_and_reps_override_the_default():
    cfg = fisher_speed._config("vgg16", quick=False, batch=32, reps=1)
    assert cfg["batch"] == 32 and cfg["reps"] == cfg["slow_reps"] == 1
    assert cfg["examples"]["torch_loop"] == 16 and cfg["examples"]["jax_vmap_chunked"] == 32
    assert "torch_func" not in cfg["examples"]  # the whole batch, in chunks of PER_EXAMPLE_CHUNK
    small = fisher_speed._config("small_cnn", quick=False, batch=32)
    assert small["examples"]["torch_loop"] == 32 and small["reps"] == 5
    assert fisher_speed._config("small_cnn", quick=False)["batch"] == 256
    assert fisher_speed._batch_sizes("32,128") == [32, 128]
    assert fisher_speed._batch_sizes(None) == [None]
    for bad in ("32,x", "0", ""):
        with pytest.raises(ValueError, match="--batch-sizes"):
            fisher_speed._batch_sizes(bad)


def test_header_rounds_the_load_average():
    machine = {"cpu": "Xeon", "cores": 2, "load_average_1min": 3.3466796875}
    assert fisher_speed._header(machine, True) == "machine: Xeon, 2 cores, load 3.35"
    assert "load -" in fisher_speed._header({**machine, "load_average_1min": None}, True)


def test_main_measures_every_batch_size_and_sums_up(monkeypatch, tmp_path, capsys):
    """The driver without the measurements: each (model, batch) gets its run and summary row."""
    import json

    calls = []

    def spawn(args, timeout):
        _, model, approaches, ns, reps = args
        calls.append((model, approaches, ns, reps))
        speed = {"library": 30.0, "torch_loop": 10.0, "torch_backpack": 20.0}
        return {
            a: {"examples": int(n), "seconds": int(n) / speed[a], "examples_per_s": speed[a]}
            for a, n in zip(approaches.split(","), ns.split(","))
        }

    monkeypatch.setattr(fisher_speed, "_spawn", spawn)
    monkeypatch.setattr(fisher_speed, "_have_torch", lambda: True)  # the rows are stubbed
    path = tmp_path / "speed.json"
    fisher_speed.main(
        "--models vgg16 --batch-sizes 8,32 --reps 1 --no-memory "
        f"--approaches library,torch_loop,torch_backpack --json {path}".split()
    )
    assert [c[2] for c in calls] == ["8", "8", "8", "32", "16", "32"]  # the loop: 16 at most
    assert {c[3] for c in calls} == {"1"}
    report = json.loads(path.read_text())
    assert [(r["model"], r["batch"]) for r in report["runs"]] == [("vgg16", 8), ("vgg16", 32)]
    assert [r["library_over_best_pytorch"] for r in report["summary"]] == [1.5, 1.5]
    out = capsys.readouterr().out
    assert "library against the best PyTorch Fisher" in out and "wall time" in out


def test_quick_help_promises_no_time_it_did_not_keep(capsys):
    with pytest.raises(SystemExit):
        fisher_speed.main(["--help"])
    assert "< 3 min" not in capsys.readouterr().out  # the issue-28 run took 3 min 38 s


def _tiny_batch_norm_net():
    """Conv, eval BatchNorm with running statistics far from (0, 1), pooling and a head."""
    import torch

    torch.manual_seed(3)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1),
        torch.nn.BatchNorm2d(4),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(4, 5, 3, padding=1),
        torch.nn.BatchNorm2d(5),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(5, 6),
    )
    with torch.no_grad():
        for norm in (net[1], net[5]):
            norm.running_mean.uniform_(-1.0, 1.0)
            norm.running_var.uniform_(0.5, 2.0)
            norm.weight.uniform_(0.5, 1.5)
            norm.bias.uniform_(-0.5, 0.5)
    return net.eval()


@pytest.mark.parametrize("model", ["small_cnn", "batch_norm"])
@pytest.mark.parametrize("approach", ["torch_func", "torch_backpack", "torch_opacus"])
def test_pytorch_fishers_equal_the_per_example_loop(model, approach):
    """BackPACK, Opacus and torch.func give the per-example loop's sums of squared gradients,
    with the same scaling (a mean loss would be off by N² or N), chunked or not.

    In float64: in float32 a batched forward pass rounds differently from a one-example one,
    and where two inputs of a max-pool window nearly tie (one window of the small CNN on these
    inputs) the gradient goes to the other one, changing that example's gradients by percents.
    """
    torch = pytest.importorskip("torch")
    pytest.importorskip("backpack")
    pytest.importorskip("opacus")
    from benchmarks._models import torch_model

    net = (torch_model("small_cnn") if model == "small_cnn" else _tiny_batch_norm_net()).double()
    side = 32 if model == "small_cnn" else 8
    x = torch.randn(5, 3, side, side, generator=torch.Generator().manual_seed(0)).double()
    y = torch.tensor([1, 5, 3, 3, 0])
    reference = fisher_speed.torch_fisher("torch_loop", net, x, y)()
    for chunk in (None, 2):
        fisher = fisher_speed.torch_fisher(approach, net, x, y, chunk)()
        assert sorted(fisher) == sorted(reference)
        for name, expected in reference.items():
            np.testing.assert_allclose(
                fisher[name].numpy(), expected.numpy(), rtol=1e-9, atol=1e-15, err_msg=name
            )
    # net itself keeps no hooks and no replaced layers: the loop on it gives the same again.
    again = fisher_speed.torch_fisher("torch_loop", net, x, y)()
    assert all(torch.equal(again[k], reference[k]) for k in reference)


@pytest.mark.parametrize("approach", ["torch_backpack", "torch_opacus"])
def test_torch_worker_measures_the_new_rows(approach):
    pytest.importorskip("torch")
    pytest.importorskip("backpack")
    pytest.importorskip("opacus")
    result = fisher_speed._torch_worker("small_cnn", approach, 4, 1)
    assert result["examples"] == 4 and result["device"] == "cpu"
    assert result["examples_per_s"] == pytest.approx(4 / result["seconds"])


def test_search_comparison_takes_a_saved_zoo_as_the_space_check_does():
    from benchmarks import search_comparison
    from ldnas_jax.zoo import load_zoo

    prebuilt = load_zoo()
    args = search_comparison.parse_args(["--target", "E6", "--zoo", "prebuilt"])
    zoo, target_net = search_comparison.saved_zoo(args, "E6")
    assert list(zoo) == ["E0", "E1", "E2", "E3", "E4", "E5", "E7"]  # every other entry
    assert zoo["E1"].space == prebuilt["E1"].space
    assert target_net.test_accuracy == prebuilt["E6"].network.test_accuracy  # the zoo's N_t
    named = search_comparison.parse_args(["--zoo", "prebuilt", "--baselines", "E1", "E4"])
    assert list(search_comparison.saved_zoo(named, "E6")[0]) == ["E1", "E4"]
    with pytest.raises(ValueError, match="no baseline \\['T0'\\]"):
        search_comparison.saved_zoo(
            search_comparison.parse_args(["--zoo", "prebuilt", "--baselines", "T0"]), "E6"
        )
    with pytest.raises(ValueError, match="no entry for target T3"):
        search_comparison.saved_zoo(args, "T3")
    # Without --zoo the default baselines still apply.
    assert search_comparison.parse_args(["--target", "E6"]).baselines == ["E1", "E3", "E5", "E7"]


def test_a_library_row_reports_the_engine_auto_timed_and_kept():
    import time

    from ldnas_jax.fisher import _engine_choice

    _engine_choice.clear_engine_timings()
    slow = lambda x: (time.sleep(0.005), x)[1]
    try:
        _engine_choice.faster_engine(
            ("gpu", "program", "empirical", 1, 64), {"vmap": slow, "layerwise": slow}, (0,)
        )
        (row,) = fisher_speed._auto_engine()
    finally:
        _engine_choice.clear_engine_timings()
    assert row["chunk"] == 64 and row["vmap_ms"] >= 5 and row["layerwise_ms"] >= 5
    assert row["method"] == ("layerwise" if row["layerwise_ms"] <= row["vmap_ms"] else "vmap")
