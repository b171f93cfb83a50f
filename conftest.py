"""Strict, CPU-only configuration for the tests and the package's doctests.

It sits at the repository root so that it also governs ``--doctest-modules`` over
``ldnas_jax/``. Four host devices let the sharded paths run on one machine.
"""

import os

# Must precede the first jax import.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("TQDM_DISABLE", "1")
# JAX's persistent compilation cache stays off in this process, whatever the caller's shell
# exports: tests must not write to ~/.cache, and a command run in-process (``cli.main``) turns
# the cache on wherever LDNAS_JAX_CACHE_DIR points. JAX reads JAX_COMPILATION_CACHE_DIR once,
# at import. Tests that want the cache turn it on for a block (tests/_fast_compiles.py).
os.environ["LDNAS_JAX_CACHE_DIR"] = "off"
os.environ.pop("JAX_COMPILATION_CACHE_DIR", None)

import jax
import pytest
from jax.experimental.compilation_cache import compilation_cache

pytest_plugins = ["pytester"]  # tests/test_compile_cache.py runs the guard below in a pytest

# Implicit rank broadcasting and implicit dtype promotion are bugs in this code base.
jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_numpy_dtype_promotion", "strict")


@pytest.fixture
def key():
    return jax.random.key(0)


# What a test may change for a block but must give back: the settings that decide whether and
# where compiled programs are written to disk, and the key type every later test draws.
GUARDED_CONFIG = (
    "jax_compilation_cache_dir",
    "jax_persistent_cache_min_compile_time_secs",
    "jax_default_prng_impl",
)
GUARDED_ENVIRON = ("LDNAS_JAX_CACHE_DIR",)


def compile_settings() -> dict[str, object]:
    """The guarded JAX settings and environment variables, by name."""
    settings = {name: getattr(jax.config, name) for name in GUARDED_CONFIG}
    settings.update({name: os.environ.get(name) for name in GUARDED_ENVIRON})
    return settings


def restore_compile_settings(saved: dict[str, object]) -> list[str]:
    """Puts back ``saved`` and resets JAX's cache object; returns the names that had changed."""
    changed = sorted(name for name, value in compile_settings().items() if value != saved[name])
    for name in changed:
        if name in GUARDED_ENVIRON:
            if saved[name] is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = saved[name]
        else:
            jax.config.update(name, saved[name])
    if changed:
        compilation_cache.reset_cache()  # JAX keeps its cache object until told to re-read
    return changed


_SESSION_SETTINGS = compile_settings()


@pytest.fixture(autouse=True)
def _gives_back_the_compile_settings():
    """A test that leaves the persistent cache on (or the key type changed) fails, and is undone.

    Left on, the cache would serve every later test of the process from a folder that pytest
    may already have removed.
    """
    yield
    changed = restore_compile_settings(_SESSION_SETTINGS)
    if changed:
        pytest.fail(f"the test left JAX settings changed (now restored): {', '.join(changed)}")


@pytest.fixture(autouse=True, scope="module")
def _frees_compiled_programs_after_each_module():
    """Drops every compiled program once a test file is done.

    A worker of ``-n 2`` lives through dozens of files and thousands of XLA:CPU compilations;
    each executable keeps memory mappings, and a process that nears the kernel's map limit
    (``vm.max_map_count``, 65530 here) can crash inside the next compilation (a segfault in
    ``backend_compile_and_load`` was seen late in a full run). Files do not share programs
    under ``--dist loadfile``, so clearing between them costs no recompilation within a file.
    """
    yield
    jax.clear_caches()


# The fast tier (`pytest -m "not slow"`) also leaves out these tests and doctests: each compiles
# a whole search, FUSE round or Fisher program and took 8 s or more on 2 cores (`--durations`,
# two runs of 2026-12-07; the second found what the first list pushed onto a file's next test,
# which then compiled the file's programs). The full suite runs them. An id with "[...]" names
# one parametrisation; one without, every one. tests/test_fast_tier.py checks the ids.
COMPILE_HEAVY = frozenset(
    {
        "ldnas_jax/experiments/_fine_tune.py::ldnas_jax.experiments._fine_tune.fine_tune",
        "ldnas_jax/experiments/_fine_tune.py::ldnas_jax.experiments._fine_tune.train_from_scratch",
        "ldnas_jax/experiments/_heads.py::ldnas_jax.experiments._heads.replace_head",
        "ldnas_jax/experiments/_reproduce.py::ldnas_jax.experiments._reproduce.build_task_zoo",
        "ldnas_jax/experiments/_reproduce.py::ldnas_jax.experiments._reproduce.distance_tables",
        "ldnas_jax/experiments/_reproduce.py::ldnas_jax.experiments._reproduce.search_comparison",
        "ldnas_jax/experiments/_reproduce.py::ldnas_jax.experiments._reproduce.train_hand_designed",
        "ldnas_jax/experiments/_transfer.py::ldnas_jax.experiments._transfer.full_log_det_table",
        "ldnas_jax/experiments/_transfer.py::ldnas_jax.experiments._transfer.target_distances",
        "ldnas_jax/fisher/_plan.py::ldnas_jax.fisher._plan.layerwise_plan",
        "ldnas_jax/models/resnet18.py::ldnas_jax.models.resnet18.BasicBlock",
        "ldnas_jax/models/small_vgg.py::ldnas_jax.models.small_vgg.SmallVGG",
        "ldnas_jax/models/vgg16.py::ldnas_jax.models.vgg16.VGG16",
        "ldnas_jax/nas/cell.py::ldnas_jax.nas.cell.Skeleton",
        "ldnas_jax/nas/fuse.py::ldnas_jax.nas.fuse.make_fuse_round",
        "ldnas_jax/nas/fuse.py::ldnas_jax.nas.fuse.run_fuse",
        "ldnas_jax/nas/mixture.py::ldnas_jax.nas.mixture.CandidateMixture",
        "ldnas_jax/nas/search.py::ldnas_jax.nas.search.fuse_search",
        "ldnas_jax/nas/search.py::ldnas_jax.nas.search.random_search",
        "ldnas_jax/nas/switch.py::ldnas_jax.nas.switch.SwitchSkeleton",
        "ldnas_jax/nas/switch.py::ldnas_jax.nas.switch.genotype_params",
        "ldnas_jax/nas/training.py::ldnas_jax.nas.training.make_train_and_evaluate",
        "ldnas_jax/pipeline.py::ldnas_jax.pipeline.distance_matrices",
        "ldnas_jax/pipeline.py::ldnas_jax.pipeline.distances_to_target",
        "ldnas_jax/pipeline.py::ldnas_jax.pipeline.search_and_train",
        "ldnas_jax/pipeline.py::ldnas_jax.pipeline.search_architecture",
        "ldnas_jax/tasks/_bootstrap.py::ldnas_jax.tasks._bootstrap.bootstrap_closest_shares",
        "ldnas_jax/tasks/_bootstrap.py::ldnas_jax.tasks._bootstrap.bootstrap_log_dets",
        "ldnas_jax/tasks/_family.py::ldnas_jax.tasks._family.full_log_det_task_distances",
        "ldnas_jax/tasks/_networks.py::ldnas_jax.tasks._networks.save_task_network",
        "ldnas_jax/tasks/_networks.py::ldnas_jax.tasks._networks.train_task_network",
        "ldnas_jax/tasks/_on_task.py::ldnas_jax.tasks._on_task.fisher_on_task",
        "ldnas_jax/tasks/_pairs.py::ldnas_jax.tasks._pairs.column_distances",
        "ldnas_jax/tasks/_pairs.py::ldnas_jax.tasks._pairs.pair_fishers",
        "tests/test_benchmarks.py::test_backward_benchmark_times_the_same_functions_both_ways",
        "tests/test_benchmarks.py::test_jax_worker_measures_an_approach[library]",
        "tests/test_benchmarks.py::test_the_three_ways_of_writing_a_model_have_one_fisher",
        "tests/test_bootstrap_shares.py::test_each_resample_equals_the_distance_recomputed_on_the_resampled_examples[target_mean]",
        "tests/test_check_once.py::test_a_fuse_search_checks_its_data_once_not_once_per_iteration",
        "tests/test_distances_report.py::test_bootstrap_zero_turns_the_resamples_off",
        "tests/test_fast_routes.py::test_fast_routes_gives_the_plain_gradient_without_select_and_scatter_or_tiny_convs",
        "tests/test_fast_routes.py::test_train_classifier_through_fast_routes_equals_plain_training",
        "tests/test_fisher.py::test_matches_per_example_loop[vmap-empirical-cnn_batchnorm]",
        "tests/test_fisher_layerwise.py::test_a_users_custom_vjp_is_obeyed_and_the_librarys_own_are_read_through",
        "tests/test_fisher_layerwise.py::test_layerwise_equals_vmap_for_every_estimator[cnn_batchnorm]",
        "tests/test_fisher_layerwise.py::test_layerwise_equals_vmap_for_every_estimator[conv_geometries]",
        "tests/test_fisher_layerwise.py::test_layerwise_equals_vmap_for_every_estimator[skeleton_dil_conv]",
        "tests/test_fisher_layerwise.py::test_layerwise_equals_vmap_for_every_estimator[skeleton_sep_conv]",
        "tests/test_fisher_layerwise.py::test_layerwise_equals_vmap_for_every_estimator[small_vgg]",
        "tests/test_fisher_layerwise.py::test_matmul_convs_is_the_same_convolution",
        "tests/test_nas_fuse.py::test_fuse_picks_the_candidate_that_can_see",
        "tests/test_nas_fuse.py::test_fuse_search_returns_a_genotype_from_the_space",
        "tests/test_nas_fuse.py::test_random_search_keeps_the_best_on_val",
        "tests/test_nas_fuse.py::test_round_runs_both_phases_and_counts_rounds",
        "tests/test_nas_fuse.py::test_run_fuse_warmup_records_only_alpha_rounds",
        "tests/test_nas_fuse.py::test_separate_weight_loss_is_the_sum_of_each_candidates_own_loss",
        "tests/test_nas_fuse.py::test_warmup_round_trains_weights_and_leaves_alpha",
        "tests/test_nas_fuse.py::test_weight_phase_freezes_alpha",
        "tests/test_nas_operations.py::test_operations_off_the_cpu_give_the_cpu_values_and_gradients[conv_7x1_1x7]",
        "tests/test_nas_operations.py::test_operations_off_the_cpu_give_the_cpu_values_and_gradients[dil_conv_5x5]",
        "tests/test_nas_operations.py::test_operations_off_the_cpu_give_the_cpu_values_and_gradients[sep_conv_3x3]",
        "tests/test_nas_operations.py::test_operations_off_the_cpu_give_the_cpu_values_and_gradients[sep_conv_5x5]",
        "tests/test_nas_registration.py::test_fuse_and_random_search_use_a_registered_operation",
        "tests/test_nas_registration.py::test_unknown_until_registered_then_known_everywhere",
        "tests/test_nas_switch.py::test_a_masked_wide_head_trains_exactly_as_a_head_of_the_task_classes",
        "tests/test_nas_switch.py::test_a_second_search_of_the_space_compiles_nothing",
        "tests/test_nas_switch.py::test_fuse_follows_the_static_path_from_the_same_weights",
        "tests/test_nas_switch.py::test_fuse_picks_the_static_winner_from_its_own_initialisation",
        "tests/test_nas_switch.py::test_random_search_trains_every_sample_in_one_program",
        "tests/test_nas_switch.py::test_switch_cell_equals_the_static_cell_in_value_and_gradient[1]",
        "tests/test_nas_switch.py::test_switch_cell_equals_the_static_cell_in_value_and_gradient[2]",
        "tests/test_nas_switch.py::test_switch_skeleton_equals_the_static_skeleton_for_every_genotype_of_a_sample",
        "tests/test_nas_switch.py::test_tasks_of_different_class_counts_share_one_random_search_program",
        "tests/test_pooling.py::test_tiled_max_pooling_rewrites_a_small_cnn_and_keeps_its_gradient",
        "tests/test_reproducibility.py::test_fuse_search_gives_the_same_genotype_and_alpha_history",
        "tests/test_reproducibility.py::test_task_distances_are_bit_identical_for_one_key",
        "tests/test_resume.py::test_fuse_search_resumed_equals_unbroken",
        "tests/test_resume.py::test_nan_in_fuse_search_names_the_iteration_and_keeps_the_checkpoint",
        "tests/test_resume.py::test_random_search_resumed_equals_unbroken",
        "tests/test_resume.py::test_train_classifier_resumed_equals_unbroken",
        "tests/test_search_distance_family.py::test_a_table_s_column_is_the_pipeline_s_column",
        "tests/test_search_distance_family.py::test_the_demo_s_distance_stage_gives_each_seed_its_own_network_and_column",
        "tests/test_search_distance_family.py::test_the_distances_differ_so_the_name_is_what_routes_them",
        "tests/test_sharding_fisher.py::test_sharded_equals_single_device[empirical]",
        "tests/test_space_check.py::test_space_check_wires_distances_spaces_rows_and_resume",
        "tests/test_train_device_loop.py::test_a_candidates_training_takes_device_resident_data_and_gives_the_same_result",
        "tests/test_train_device_loop.py::test_device_epochs_equal_a_host_loop_bit_for_bit[model1-True]",
        "tests/test_zoo_quality.py::test_each_sample_is_scored_with_its_trained_weights",
    }
)


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.nodeid in COMPILE_HEAVY or item.nodeid.split("[")[0] in COMPILE_HEAVY:
            item.add_marker(pytest.mark.slow)
