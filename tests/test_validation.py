"""Bad input to the public entry points fails early with a ValueError/TypeError naming the problem.

One test per case. Cases already held elsewhere are not repeated here: σ ≤ 0 and NaN in a
Fisher (test_distance.py), shape/label/empty errors of fisher_diagonal (test_fisher.py),
FUSE data checks (test_nas_fuse.py), genotype JSON errors (test_nas_genotype.py), data
loading (test_data.py), checkpoint corruption and shape mismatch (test_pipeline.py).
None of these tests trains or compiles a network: every check fires before any compute.
"""

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ldnas_jax as ld
from ldnas_jax import nas
from ldnas_jax._checks import check_key
from ldnas_jax.checkpoint import CheckpointError
from ldnas_jax.data import Split, TaskData
from ldnas_jax.tasks._networks import load_task_network, save_task_network

F = np.array([0.5, 1.0, 2.0])

# ---------------------------------------------------------------- distance


@pytest.mark.parametrize("sigma", [True, "0.1", None, np.array([0.1, 0.2])])
def test_sigma_that_is_not_a_real_number_is_a_type_error(sigma):
    with pytest.raises(TypeError, match="sigma must be a real number"):
        ld.log_det_distance(F, F, sigma=sigma)


@pytest.mark.parametrize("bad", [np.array([1 + 1j, 2.0]), np.array(["a", "b"])])
def test_fisher_of_complex_or_text_entries_is_a_type_error(bad):
    with pytest.raises(TypeError, match="Fisher must hold real numbers"):
        ld.mean_log_det(bad)


def test_inf_in_a_fisher_is_a_non_finite_error():
    with pytest.raises(ld.NonFiniteError, match="NaN or inf"):
        ld.log_det_distance({"w": np.array([1.0, np.inf])}, F)


def test_distance_matrix_reads_nested_mappings_by_name_not_by_order():
    a, b = np.array([1.0, 2.0]), np.array([3.0, 1.0])
    in_order = {"s": {"s": a, "t": b}, "t": {"s": b, "t": a}}
    shuffled = {"s": {"t": b, "s": a}, "t": {"t": a, "s": b}}
    expected = ld.distance_matrix([[a, b], [b, a]], sigma=0.5)
    for fishers in (shuffled, in_order):
        named = ld.distance_matrix(fishers, sigma=0.5)
        assert named.names == ("s", "t")  # names in, names out
        np.testing.assert_array_equal(named.matrix, expected)


def test_closest_task_reads_the_names_of_a_named_table():
    f = {"s": np.array([1.0, 2.0]), "t": np.array([3.0, 1.0]), "u": np.array([1.0, 2.1])}
    named = ld.distance_matrix({b: dict(f) for b in f}, sigma=0.5)  # F_{b,t} = f[t]: all zero
    table = ld.distances.NamedDistances(
        ("s", "t", "u"), np.array([[0, 2, 5], [1, 0, 4], [3, 9, 0.0]])
    )
    assert ld.closest_task(table, "s") == "t" and ld.closest_task(table, "u") == "t"
    assert ld.closest_task(named, "t", names=["s", "t", "u"]) == "s"  # matching names: accepted
    with pytest.raises(ValueError, match="differ from the table's"):
        ld.closest_task(table, "s", names=["a", "b", "c"])


def test_distance_matrix_with_a_missing_inner_task_is_an_error():
    with pytest.raises(ValueError, match=r"fishers\['t'\] must map every task"):
        ld.distance_matrix({"s": {"s": F, "t": F}, "t": {"t": F, "u": F}})


def test_distance_matrix_of_a_non_table_is_a_type_error():
    with pytest.raises(TypeError, match="K×K table"):
        ld.distance_matrix(None)


def test_log_det_table_with_nan_is_a_non_finite_error():
    with pytest.raises(ld.NonFiniteError, match="log_dets contains NaN"):
        ld.distances.distances_from_log_dets(np.array([[0.0, np.nan], [1.0, 0.0]]))


def test_empty_log_det_table_is_an_error():
    with pytest.raises(ValueError, match="non-empty square"):
        ld.distances.distances_from_log_dets(np.zeros((0, 0)))


def test_closest_task_on_nan_distances_is_a_non_finite_error():
    d = np.array([[0.0, np.nan], [0.3, 0.0]])
    with pytest.raises(ld.NonFiniteError, match="distances contains NaN"):
        ld.closest_task(d, 0)


def test_closest_task_on_negative_distances_is_an_error():
    with pytest.raises(ValueError, match="distances must be >= 0"):
        ld.closest_task(-np.ones((3, 3)), 0)


@pytest.mark.parametrize(
    "names,match", [(["a", "b"], "2 entries for a 3×3"), (["a", "a", "b"], "distinct")]
)
def test_closest_task_names_must_match_the_matrix(names, match):
    with pytest.raises(ValueError, match=match):
        ld.closest_task(np.ones((3, 3)), "b", names=names)


@pytest.mark.parametrize("target", [1.7, True, None])
def test_closest_task_target_must_be_an_index_or_a_name(target):
    with pytest.raises(TypeError, match="column index"):
        ld.closest_task(np.ones((3, 3)), target)


# ---------------------------------------------------------------- fisher_diagonal


@pytest.fixture(scope="module")
def dense():
    model = nn.Dense(3)
    params = model.init(jax.random.key(0), jnp.zeros((1, 4)))["params"]
    x = np.ones((5, 4), np.float32)
    y = np.array([0, 1, 2, 0, 1])
    return (lambda p, x: model.apply({"params": p}, x)), params, x, y


def test_nan_params_are_refused_before_any_compute(dense):
    apply_fn, params, x, y = dense
    params = {**params, "bias": params["bias"].at[1].set(jnp.nan)}
    with pytest.raises(ld.NonFiniteError, match=r"params contains NaN or inf at \['bias'\]"):
        ld.fisher_diagonal(apply_fn, params, (x, y))


def test_apply_fn_must_be_callable(dense):
    _, params, x, y = dense
    with pytest.raises(TypeError, match="apply_fn must be callable"):
        ld.fisher_diagonal(None, params, (x, y))


def test_unknown_method_is_an_error(dense):
    apply_fn, params, x, y = dense
    with pytest.raises(ValueError, match="unknown method 'fast'"):
        ld.fisher_diagonal(apply_fn, params, (x, y), method="fast")


@pytest.mark.parametrize(
    "option,error,match",
    [
        ({"chunk_size": 2.5}, TypeError, "chunk_size must be an int"),
        ({"chunk_size": 0}, ValueError, "chunk_size must be >= 1"),
        ({"num_samples": 1.5, "estimator": "sampled"}, TypeError, "num_samples must be an int"),
        ({"num_samples": 0, "estimator": "sampled"}, ValueError, "num_samples must be >= 1"),
    ],
)
def test_counts_must_be_positive_ints(dense, option, error, match):
    apply_fn, params, x, y = dense
    with pytest.raises(error, match=match):
        ld.fisher_diagonal(apply_fn, params, (x, y), key=jax.random.key(0), **option)


@pytest.mark.parametrize("key", [3, np.zeros(2, np.float32)])
def test_key_must_be_a_prng_key(dense, key):
    apply_fn, params, x, y = dense
    with pytest.raises(TypeError, match="key must be a JAX PRNG key"):
        ld.fisher_diagonal(apply_fn, params, (x, y), estimator="sampled", key=key)


def test_a_batch_of_keys_is_not_one_key():
    with pytest.raises(ValueError, match="single PRNG key"):
        check_key(jax.random.split(jax.random.key(0), 2))


def test_a_pair_with_1d_x_names_the_shape(dense):
    apply_fn, params, _, y = dense
    with pytest.raises(ValueError, match=r"feature axes, got shape \(5,\)"):
        ld.fisher_diagonal(apply_fn, params, (np.ones(5, np.float32), y))


def test_text_inputs_are_a_type_error(dense):
    apply_fn, params, x, y = dense
    with pytest.raises(TypeError, match="x must hold real numbers"):
        ld.fisher_diagonal(apply_fn, params, (x.astype(str), y))


# ---------------------------------------------------------------- task distances and networks


def _abstract_variables(num_classes=2, shape=(8, 8, 3)):
    """SmallVGG variables of the right structure, without compiling an init."""
    model = ld.make_model("small_vgg", num_classes)
    like = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, *shape))))
    return jax.tree.map(lambda s: np.full(s.shape, 0.1, s.dtype), dict(like))


@pytest.fixture(scope="module")
def network():
    return ld.TaskNetwork("a", "small_vgg", 2, _abstract_variables(), 0.9, 0.1)


SPLIT = Split(np.zeros((4, 8, 8, 3), np.float32), np.array([0, 1, 0, 1], np.int32))


def test_fisher_on_task_needs_a_task_network(network):
    with pytest.raises(TypeError, match="network must be a TaskNetwork, got dict"):
        ld.fisher_on_task(network.variables, SPLIT, 2)


def test_fisher_on_task_needs_a_split(network):
    with pytest.raises(TypeError, match="target must be a Split"):
        ld.fisher_on_task(network, (SPLIT.x, SPLIT.y), 2)


def test_fisher_on_task_checks_labels_against_the_target_classes(network):
    # The padded head has 4 logits, but the target only declares 2 classes.
    with pytest.raises(ValueError, match=r"target labels: labels must lie in \[0, 2\)"):
        ld.fisher_on_task(network, SPLIT._replace(y=np.array([0, 1, 2, 3], np.int32)), 2)


@pytest.mark.parametrize("count", [0, -1])
def test_fisher_on_task_max_examples_must_be_positive(network, count):
    # A negative count would silently drop examples through slicing.
    with pytest.raises(ValueError, match="max_examples must be >= 1"):
        ld.fisher_on_task(network, SPLIT, 2, max_examples=count)


def test_fisher_on_task_needs_nhwc_images(network):
    with pytest.raises(ValueError, match="NHWC"):
        ld.fisher_on_task(network, SPLIT._replace(x=SPLIT.x[..., 0]), 2)


@pytest.mark.parametrize(
    "options,error,match",
    [
        ({"sigma": 0.0}, ValueError, "sigma must be a finite number > 0"),
        ({"sigma": "1e-3"}, TypeError, "sigma must be a real number"),
        ({"normalize": "max"}, ValueError, "unknown normalize"),
        ({"key": 3}, TypeError, "key must be a JAX PRNG key"),
    ],
)
def test_task_distances_checks_options_before_any_fisher(
    network, monkeypatch, options, error, match
):
    import ldnas_jax.tasks._pairs as td

    monkeypatch.setattr(td, "fisher_on_task", lambda *a, **k: pytest.fail("Fisher computed"))
    with pytest.raises(error, match=match):
        ld.task_distances([network], [SPLIT], [2], progress=False, **options)


def test_task_distances_refuses_duplicate_task_names(network):
    with pytest.raises(ValueError, match="task names must be distinct"):
        ld.task_distances([network, network], [SPLIT, SPLIT], [2, 2], progress=False)


def test_train_task_network_needs_task_data():
    with pytest.raises(TypeError, match="data must be a TaskData"):
        ld.train_task_network((SPLIT.x, SPLIT.y), key=jax.random.key(0), progress=False)


@pytest.mark.parametrize("epsilon", [0.0, 1.5, "0.1"])
def test_train_task_network_checks_epsilon_before_training(epsilon):
    data = TaskData("t", 2, SPLIT, SPLIT, SPLIT)
    with pytest.raises(ValueError, match=r"epsilon must lie in \(0, 1\)"):
        ld.train_task_network(data, key=jax.random.key(0), epsilon=epsilon, progress=False)


def test_train_task_network_checks_labels_against_its_classes():
    bad = SPLIT._replace(y=np.array([0, 1, 2, 1], np.int32))
    data = TaskData("t", 2, bad, SPLIT, SPLIT)
    with pytest.raises(ValueError, match=r"t train: labels must lie in \[0, 2\)"):
        ld.train_task_network(data, key=jax.random.key(0), progress=False)


@pytest.fixture
def saved_network(network, tmp_path):
    directory = tmp_path / "net"
    save_task_network(network, directory, input_shape=(8, 8, 3))
    return directory


def _edit_metadata(directory, **changes):
    path = directory / "meta.json"
    meta = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            del meta["metadata"][key]
        else:
            meta["metadata"][key] = value
    path.write_text(json.dumps(meta))


def test_saved_network_round_trips(network, saved_network):
    loaded, _ = load_task_network(saved_network)
    assert loaded._replace(variables=None) == network._replace(variables=None)
    for a, b in zip(jax.tree.leaves(loaded.variables), jax.tree.leaves(network.variables)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "changes,match",
    [
        ({"task": None}, r"missing \['task'\]"),
        ({"input_shape": [8, 8]}, "input_shape must be"),
        ({"epsilon": "x"}, "epsilon must be a number"),
        ({"test_accuracy": 1.5}, "test_accuracy must be a number"),
        ({"model_name": 3}, "model_name must be a string"),
    ],
)
def test_network_checkpoint_with_bad_metadata_is_refused(saved_network, changes, match):
    _edit_metadata(saved_network, **changes)
    with pytest.raises(CheckpointError, match=match):
        load_task_network(saved_network)


def test_network_checkpoint_whose_metadata_is_not_an_object_is_refused(saved_network):
    (saved_network / "meta.json").write_text("[1, 2]")
    with pytest.raises(CheckpointError, match="invalid metadata"):
        load_task_network(saved_network)


def test_network_checkpoint_holding_nan_is_refused(network, tmp_path):
    poisoned = network._replace(variables=jax.tree.map(lambda a: a * np.nan, network.variables))
    save_task_network(poisoned, tmp_path / "nan", input_shape=(8, 8, 3))
    with pytest.raises(CheckpointError, match="NaN or inf"):
        load_task_network(tmp_path / "nan")


# ---------------------------------------------------------------- nas


@pytest.mark.parametrize(
    "text", ["[" * 100_000 + "]" * 100_000, b"\xff\xfe\x00"], ids=["deep", "not-utf8"]
)
def test_genotype_from_pathological_text_is_a_value_error(text):
    with pytest.raises(ValueError, match="genotype JSON"):
        nas.Genotype.from_json(text)


@pytest.mark.parametrize("edges", ["6", 6.0, True])
def test_num_nodes_for_edges_needs_an_int(edges):
    with pytest.raises(TypeError, match="num_edges must be an int"):
        nas.num_nodes_for_edges(edges)


@pytest.mark.parametrize("stride", [True, 1.0])
def test_operation_stride_must_be_the_int_1_or_2(stride):
    with pytest.raises(ValueError, match="stride must be 1 or 2"):
        nas.make_operation("identity", 4, stride)


def test_cell_channels_must_be_positive():
    cell = nas.Cell(("identity",), channels=0)
    with pytest.raises(ValueError, match="channels must be a positive int"):
        cell.init(jax.random.key(0), jnp.ones((1, 4, 4, 3)))


GENOTYPE = nas.Genotype(("identity",), num_nodes=2)


def test_skeleton_refuses_a_bool_width():
    net = nas.Skeleton(GENOTYPE, 2, channels=True, num_cells=1)
    with pytest.raises(ValueError, match="channels must be a positive int, got True"):
        net.init(jax.random.key(0), jnp.ones((1, 4, 4, 3)))


def test_skeleton_reduction_positions_must_be_ints():
    net = nas.Skeleton(GENOTYPE, 2, channels=2, num_cells=1, reduction_positions="0")
    with pytest.raises(TypeError, match="reduction_positions must be ints"):
        net.init(jax.random.key(0), jnp.ones((1, 4, 4, 3)))


def test_candidate_params_of_a_missing_candidate_is_an_error():
    params = {"candidates_0": {}, "candidates_1": {}}
    with pytest.raises(ValueError, match="no candidate 2: the mixture has 2 candidates"):
        nas.candidate_params(params, 2)


def test_split_mixture_variables_without_alpha_is_an_error():
    with pytest.raises(ValueError, match="expected CandidateMixture variables"):
        nas.split_mixture_variables({"params": {}})


def test_count_params_of_non_arrays_is_a_type_error():
    with pytest.raises(TypeError, match="params must hold arrays"):
        nas.count_params({"w": "abc"})


def test_complex_images_are_a_type_error():
    data = (np.zeros((2, 4, 4, 3), np.complex64), np.array([0, 1]))
    with pytest.raises(TypeError, match="real numbers"):
        nas.check_classification_data(data, 2)
