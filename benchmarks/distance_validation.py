"""Choose eq. 2's normalisation, σ and label route on one set of tasks; report them on others.

Selection set: the 8 embedded tasks E0–E7 (two domains: E0–E3 digits, E4–E7 objects),
SmallVGG ε-networks, several seeds. Every (normalize, σ, label route) is scored by

* ``same_domain``: targets whose closest baseline shares the target's domain, counted per
  seed and averaged over seeds (out of K);
* ``seed_agreement``: targets whose closest baseline is the same for every seed (out of K);
  ``domain_agreement`` is the weaker form, the closest baseline's domain the same.

Per normalisation, the setting with the best ``same_domain + seed_agreement`` is chosen;
ties go to the σ whose grid neighbours score best on average (a plateau rather than a
spike), then to the larger σ (less weight on near-zero Fisher entries). Then, without
retuning:

* ``mnist``: real MNIST T0–T3 (one domain; seed agreement only);
* ``mnist_objects``: real MNIST T0–T3 with the embedded objects E4–E7, a second two-domain
  set whose digits part the selection never saw;
* ``vgg16``: the paper's VGG-16 on a subset of E0–E7 (default E0, E3, E4, E7: a binary and a
  10-class task per domain), few examples and epochs, one seed, as 2 shared CPU cores allow;
  and whether its closest tasks agree with SmallVGG's on the same subset.

``--max-epochs N`` trains the SmallVGG ε-networks past ``--epochs`` until validation
accuracy reaches 1 − ε or N epochs (keeping the best-validation epoch); VGG-16 stays
uncapped. ``--only embedded`` runs the selection set alone. For each named setting,
``margins`` says per target how far the second-closest baseline is behind the closest in
the seed-mean table, in units of the seed-to-seed std of that gap (below ~1: a near-tie).

Trained networks and Fishers are cached under ``--cache`` so reruns only score; a cap is
part of the cache key, so capped and uncapped networks never mix.

Run: ``python -m benchmarks.distance_validation --json docs/distance_validation.json``
(add ``--mnist-dir /work/shared/data/mnist-t10k`` for the MNIST sets, ``--vgg16`` for VGG-16;
``--only embedded --max-epochs 16`` for ε-networks trained to the cap).
"""

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import jax
import numpy as np

from ldnas_jax.commands.sources import mnist_idx_loader
from ldnas_jax.data import get_task, load_task, register_source
from ldnas_jax.distances import (
    DEFAULT_NORMALIZE,
    DEFAULT_SIGMA,
    closest_task,
    distances_from_log_dets,
    flatten_fisher,
    normalize_fisher,
    pair_reference,
    win_shares,
)
from ldnas_jax.tasks._networks import load_task_network, save_task_network, train_task_network
from ldnas_jax.tasks._pairs import fisher_on_task

SIGMAS = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0, 3.0)
NORMALIZATIONS = (None, "sum", "target_mean")
ROUTES = ("pad", "predicted")
EMBEDDED = tuple(f"E{i}" for i in range(8))
MNIST = tuple(f"T{i}" for i in range(4))
# A task's seed offset does not depend on which set it is in, so sets share networks.
_TASK_INDEX = {name: i for i, name in enumerate(EMBEDDED + MNIST)}


def cache_name(model_name, epochs, max_train, max_epochs=None):
    """The cache folder of one training setting; a cap gets its own, so runs never mix.

    Example:
      >>> cache_name("small_vgg", 8, 1500), cache_name("small_vgg", 8, 1500, max_epochs=16)
      ('small_vgg_e8_n1500', 'small_vgg_e8_n1500_cap16')
    """
    name = f"{model_name}_e{epochs}_n{max_train}"
    return name if max_epochs is None else f"{name}_cap{max_epochs}"


def trained_network(name, seed, args, model_name, epochs, max_train, max_epochs=None):
    """The ε-network of one task and seed, loaded from the cache or trained and saved."""
    directory = (
        Path(args.cache)
        / "nets"
        / cache_name(model_name, epochs, max_train, max_epochs)
        / f"s{seed}"
        / name
    )
    if (directory / "meta.json").exists():
        return load_task_network(directory)[0]
    data = load_task(name, max_train=max_train)
    network = train_task_network(
        data,
        key=jax.random.fold_in(jax.random.key(seed), _TASK_INDEX[name]),
        model_name=model_name,
        epochs=epochs,
        max_epochs=max_epochs,
        progress=False,
    )
    save_task_network(network, directory, input_shape=data.train.x.shape[1:])
    return network


def network_record(net):
    """What a trained ε-network reports: accuracies, epochs, and whether it met ε."""
    val = net.val_accuracy
    return {
        "test_accuracy": round(float(net.test_accuracy), 3),
        "val_accuracy": None if val is None else round(float(val), 3),
        "epochs_trained": net.epochs_trained,
        "best_epoch": net.best_epoch,
        "meets_epsilon": bool(net.is_epsilon_approximation),
    }


def fisher_table(
    tasks, seed, route, args, model_name, epochs, max_train, examples, max_epochs=None
):
    """``(table, networks)``: ``table[b][t]`` = flat F_{b,t} (float32 on disk, float64
    here), cached per pair; ``networks[name]`` = :func:`network_record` of each ε-network."""
    root = (
        Path(args.cache)
        / "fishers"
        / f"{cache_name(model_name, epochs, max_train, max_epochs)}_m{examples}"
    )
    nets = {
        n: trained_network(n, seed, args, model_name, epochs, max_train, max_epochs) for n in tasks
    }
    table = [[None] * len(tasks) for _ in tasks]
    for t, target in enumerate(tasks):
        data = None
        for b, source in enumerate(tasks):
            path = root / f"s{seed}" / route / f"{source}_on_{target}.npy"
            if not path.exists():
                data = data or load_task(target, max_train=max_train)
                fisher = fisher_on_task(
                    nets[source],
                    data.train,
                    data.num_classes,
                    label_mode=route,
                    max_examples=examples,
                )
                path.parent.mkdir(parents=True, exist_ok=True)
                np.save(path, flatten_fisher(fisher).astype(np.float32))
            table[b][t] = np.load(path).astype(np.float64)
    return table, {n: network_record(net) for n, net in nets.items()}


def log_det_table(table, sigma, normalize):
    """``L[b, t]`` = (1/n) log det(F_{b,t} + σ²I) under ``normalize``; eq. 2 is |L[b,t] − L[t,t]|."""
    k = len(table)
    refs = [pair_reference(table[t][t], normalize=normalize) for t in range(k)]
    return np.array(
        [
            [
                np.mean(
                    np.log(normalize_fisher(table[b][t], normalize, reference=refs[t]) + sigma**2)
                )
                for t in range(k)
            ]
            for b in range(k)
        ]
    )


def distance_from_table(table, sigma, normalize):
    """D[b, t] of eq. 2 under ``normalize``, one pair reference per column."""
    return distances_from_log_dets(log_det_table(table, sigma, normalize))


def closest_per_seed(matrices, names):
    return [[closest_task(m, t, names=names) for t in names] for m in matrices]


def score(matrices, names, domains):
    """Same-domain count per seed (and its mean), seed agreement, and the closest tasks."""
    closest = closest_per_seed(matrices, names)
    per_seed = [sum(domains[c] == domains[t] for c, t in zip(row, names)) for row in closest]
    agree = sum(len({row[i] for row in closest}) == 1 for i in range(len(names)))
    agree_domain = sum(len({domains[row[i]] for row in closest}) == 1 for i in range(len(names)))
    mean = np.mean(matrices, axis=0)
    mean_closest = [closest_task(mean, t, names=names) for t in names]
    return {
        "same_domain_per_seed": per_seed,
        "same_domain": float(np.mean(per_seed)),
        "seed_agreement": int(agree),
        "domain_agreement": int(agree_domain),
        "closest_per_seed": closest,
        "closest_of_mean": mean_closest,
        "same_domain_of_mean": int(
            sum(domains[c] == domains[t] for c, t in zip(mean_closest, names))
        ),
    }


def decision_margins(matrices, names):
    """Per target: is the closest baseline of the seed-mean table a near-tie?

    ``gap`` is d[second, t] − d[best, t] with best and second ranked on the seed mean;
    ``gap_over_seed_std`` divides it by the std over seeds (ddof 1) of that per-seed
    difference, so a value below ~1 means the seeds' noise is as large as the gap.
    ``win_shares`` is the share of seeds in which each baseline is closest.

    Example (target a: b is 1 and 3 away over two seeds, c is 2 and 3, so the gap 0.5
    has per-seed differences 1 and 0, whose std is 0.707):

      >>> one = np.array([[0.0, 5, 5], [1, 0, 5], [2, 5, 0]])
      >>> two = np.array([[0.0, 5, 5], [3, 0, 5], [3, 5, 0]])
      >>> m = decision_margins([one, two], ["a", "b", "c"])["a"]
      >>> m["best"], m["second"], m["gap"], round(m["gap_over_seed_std"], 3), m["win_shares"]
      ('b', 'c', 0.5, 0.707, {'b': 0.75, 'c': 0.25})
    """
    stack = np.asarray(matrices, dtype=np.float64)
    mean = stack.mean(axis=0)
    out = {}
    for t, target in enumerate(names):
        baselines = [b for b in range(len(names)) if b != t]
        order = sorted(baselines, key=lambda b: mean[b, t])
        shares = win_shares(stack[:, baselines, t])
        entry = {
            "best": names[order[0]],
            "second": None,
            "gap": None,
            "gap_over_seed_std": None,
            "win_shares": {
                names[b]: round(float(s), 3) for b, s in zip(baselines, shares) if s > 0
            },
        }
        if len(order) > 1:
            best, second = order[0], order[1]
            gap = float(mean[second, t] - mean[best, t])
            entry.update(second=names[second], gap=gap, best_distance=float(mean[best, t]))
        if len(order) > 1 and len(stack) > 1:  # a std needs two seeds
            spread = float(np.std(stack[:, second, t] - stack[:, best, t], ddof=1))
            entry.update(
                best_seed_std=float(np.std(stack[:, best, t], ddof=1)),
                second_seed_std=float(np.std(stack[:, second, t], ddof=1)),
                gap_seed_std=spread,
                gap_over_seed_std=gap / spread if spread > 0 else float("inf"),
            )
        out[target] = entry
    return out


def sweep(tables, names, domains):
    """Scores of every (route, normalize, σ); ``tables[route]`` is a list over seeds."""
    rows = []
    for route, normalize, sigma in itertools.product(tables, NORMALIZATIONS, SIGMAS):
        matrices = [distance_from_table(t, sigma, normalize) for t in tables[route]]
        rows.append(
            {
                "route": route,
                "normalize": normalize,
                "sigma": sigma,
                **score(matrices, names, domains),
            }
        )
    return rows


def choose(rows):
    """Per normalize, the best same_domain + seed_agreement; ties: plateau, then larger σ."""

    def value(row):
        return row["same_domain"] + row["seed_agreement"]

    chosen = {}
    for normalize in NORMALIZATIONS:
        best = None
        for route in ROUTES:
            line = [r for r in rows if r["normalize"] == normalize and r["route"] == route]
            for i, row in enumerate(line):
                plateau = float(np.mean([value(r) for r in line[max(0, i - 1) : i + 2]]))
                key = (value(row), plateau, row["sigma"])
                if best is None or key > best[0]:
                    best = (key, row)
        chosen[str(normalize)] = {k: best[1][k] for k in ("route", "normalize", "sigma")}
    return chosen


def lookup(rows, setting):
    return next(
        r
        for r in rows
        if r["route"] == setting["route"]
        and r["normalize"] == setting["normalize"]
        and np.isclose(r["sigma"], setting["sigma"])
    )


def run_set(
    label,
    tasks,
    seeds,
    args,
    model_name,
    epochs,
    max_train,
    examples,
    routes=ROUTES,
    max_epochs=None,
):
    start = time.time()
    domains = {n: get_task(n).source for n in tasks}
    tables, networks = {}, {}
    for route in routes:
        tables[route] = []
        for seed in seeds:
            table, records = fisher_table(
                tasks, seed, route, args, model_name, epochs, max_train, examples, max_epochs
            )
            tables[route].append(table)
            networks[f"seed {seed}"] = records
            print(
                f"[{label}] seed {seed} route {route} done at {time.time() - start:.0f} s",
                flush=True,
            )
    accuracies = {
        s: {n: r["test_accuracy"] for n, r in recs.items()} for s, recs in networks.items()
    }
    met = sum(r["meets_epsilon"] for recs in networks.values() for r in recs.values())
    rows = sweep(tables, list(tasks), domains)
    print(
        f"[{label}] {len(tasks)} tasks, seeds {list(seeds)}, {time.time() - start:.0f} s; "
        f"{met}/{len(tasks) * len(seeds)} networks met ε; accuracies {accuracies}",
        flush=True,
    )
    return {
        "tasks": list(tasks),
        "domains": domains,
        "model": model_name,
        "seeds": list(seeds),
        "epochs": epochs,
        "max_epochs": max_epochs,
        "max_train": max_train,
        "fisher_examples": examples,
        "test_accuracy": accuracies,
        "networks": networks,
        "met_epsilon": f"{met}/{len(tasks) * len(seeds)}",
        "seconds": round(time.time() - start),
        "rows": rows,
    }, tables


def add_margins(result, tables, settings, terms_of="proposed default"):
    """``result["margins"][name]`` = :func:`decision_margins` of each named setting, and
    ``result["log_det_terms"]``: the seed mean and std (ddof 1) of :func:`log_det_table`
    under the setting ``terms_of``, which show where each baseline's scalar sits against
    the target's own (the diagonal) and how far it moves between seeds."""
    s = settings[terms_of]
    if s["route"] in tables:
        terms = np.array([log_det_table(t, s["sigma"], s["normalize"]) for t in tables[s["route"]]])
        spread = terms.std(axis=0, ddof=1) if len(terms) > 1 else np.full(terms.shape[1:], np.nan)
        result["log_det_terms"] = {
            "setting": terms_of,
            "layout": "[source b][target t]",
            "mean": np.round(terms.mean(axis=0), 4).tolist(),
            "seed_std": np.round(spread, 4).tolist(),
        }
    result["margins"] = {
        name: decision_margins(
            [distance_from_table(t, s["sigma"], s["normalize"]) for t in tables[s["route"]]],
            result["tasks"],
        )
        for name, s in settings.items()
        if s["route"] in tables
    }


def print_rows(label, result, settings):
    k = len(result["tasks"])
    for name, setting in settings.items():
        row = lookup(result["rows"], setting)
        print(
            f"[{label}] {name:26s} normalize={setting['normalize']!s:11s} σ={setting['sigma']:<7g} "
            f"route={setting['route']:9s} same-domain {row['same_domain']:.2f}/{k} "
            f"(per seed {row['same_domain_per_seed']})  seed agreement {row['seed_agreement']}/{k}  "
            f"closest (mean) {row['closest_of_mean']}",
            flush=True,
        )


def print_margins(label, result, name):
    for target, m in result["margins"][name].items():
        ratio = m["gap_over_seed_std"]
        print(
            f"[{label}] {name}: {target} closest {m['best']} then {m['second']}, gap/seed-std "
            f"{'-' if ratio is None else f'{ratio:.2f}'}, seed wins {m['win_shares']}",
            flush=True,
        )


def parse_arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", default="/tmp/ldnas_distance_validation")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--max-train", type=int, default=1500)
    parser.add_argument("--fisher-examples", type=int, default=256)
    parser.add_argument("--mnist-dir", default=None, help="MNIST IDX files: adds the MNIST sets")
    parser.add_argument("--vgg16", action="store_true", help="also VGG-16 on the embedded tasks")
    parser.add_argument(
        "--vgg16-tasks",
        nargs="+",
        default=["E0", "E3", "E4", "E7"],
        help="embedded tasks for VGG-16 (each is a VGG-16 to train on 2 shared cores)",
    )
    parser.add_argument("--vgg16-seeds", type=int, default=1)
    parser.add_argument("--vgg16-epochs", type=int, default=3)
    parser.add_argument("--vgg16-max-train", type=int, default=384)
    parser.add_argument("--vgg16-fisher-examples", type=int, default=64)
    parser.add_argument(
        "--vgg16-routes",
        nargs="+",
        default=["predicted"],
        choices=ROUTES,
        help="label routes for VGG-16 (each costs 64 VGG-16 Fishers); settings on other routes are skipped",
    )
    parser.add_argument(
        "--max-epochs",
        type=int,
        default=None,
        help="train the SmallVGG ε-networks past --epochs until validation accuracy ≥ 1 − ε "
        "or this many epochs (default: exactly --epochs)",
    )
    parser.add_argument(
        "--only",
        choices=["embedded"],
        default=None,
        help="run only this set (embedded: the selection set; skips MNIST and VGG-16)",
    )
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    if args.max_epochs is not None and args.max_epochs < args.epochs:
        parser.error(f"--max-epochs ({args.max_epochs}) must be at least --epochs ({args.epochs})")
    return args


def choose_settings(embedded: dict) -> tuple[dict, dict]:
    """The settings every set is scored at, and the selection record behind them."""
    chosen = choose(embedded["rows"])

    def value(setting):
        row = lookup(embedded["rows"], setting)
        return row["same_domain"] + row["seed_agreement"]

    best = max(chosen.values(), key=value)
    settings = {
        "proposed default": {
            "route": "predicted",
            "normalize": DEFAULT_NORMALIZE,
            "sigma": DEFAULT_SIGMA,
        },
        "paper eq. 2 (None), best σ": chosen["None"],
        "paper eq. 2, σ²=1e-4 predicted": {"route": "predicted", "normalize": None, "sigma": 1e-2},
        "sum, best σ": chosen["sum"],
        "sum, σ=1e-3 pad (old default)": {"route": "pad", "normalize": "sum", "sigma": 1e-3},
        "target_mean, best σ": chosen["target_mean"],
    }
    selection = {
        "rule": "max same_domain + seed_agreement; ties: mean over the σ and its grid neighbours, "
        "then the larger σ",
        "per_normalize": chosen,
        "best": best,
        "default": "the library's DEFAULT_NORMALIZE and DEFAULT_SIGMA with the 'predicted' route: "
        "the best of the modes that are size-free and free of the common scale (None is not: its "
        "σ is absolute), even where None scores higher in-sample",
    }
    return settings, selection


def vgg16_against_small_vgg(args, seeds, settings: dict, common: dict) -> dict:
    """VGG-16's set beside SmallVGG's on the same tasks, and how often they pick the same task."""
    out = {}
    subset = tuple(args.vgg16_tasks)
    small, _ = run_set("small_vgg_subset", subset, seeds, args, "small_vgg", **common)
    result, _ = run_set(
        "vgg16",
        subset,
        range(args.vgg16_seeds),
        args,
        "vgg16",
        epochs=args.vgg16_epochs,
        max_train=args.vgg16_max_train,
        examples=args.vgg16_fisher_examples,
        routes=tuple(args.vgg16_routes),
    )
    out["small_vgg_subset"] = small
    out["vgg16"] = result
    vgg_settings = {n: s for n, s in settings.items() if s["route"] in args.vgg16_routes}
    print_rows("small_vgg_subset", small, vgg_settings)
    print_rows("vgg16", result, vgg_settings)
    agreement = {}
    for name, setting in vgg_settings.items():
        a = lookup(small["rows"], setting)["closest_of_mean"]
        b = lookup(result["rows"], setting)["closest_of_mean"]
        agreement[name] = f"{sum(x == y for x, y in zip(a, b))}/{len(subset)}"
        print(
            f"[vgg16 vs small_vgg] {name:26s} same closest task for {agreement[name]} targets",
            flush=True,
        )
    out["vgg16_agrees_with_small_vgg"] = agreement
    return out


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_arguments(argv)
    seeds = range(args.seeds)
    common = {
        "epochs": args.epochs,
        "max_train": args.max_train,
        "examples": args.fisher_examples,
        "max_epochs": args.max_epochs,
    }

    out = {"command": "python -m benchmarks.distance_validation " + " ".join(argv)}
    embedded, embedded_tables = run_set("embedded", EMBEDDED, seeds, args, "small_vgg", **common)
    settings, out["selection"] = choose_settings(embedded)
    out["settings"] = settings
    out["embedded"] = embedded
    add_margins(embedded, embedded_tables, settings)
    print_rows("embedded", embedded, settings)
    print_margins("embedded", embedded, "proposed default")

    if args.mnist_dir and args.only is None:
        register_source("mnist", mnist_idx_loader(Path(args.mnist_dir)), overwrite=True)
        for label, tasks in (("mnist", MNIST), ("mnist_objects", MNIST + EMBEDDED[4:])):
            result, _ = run_set(label, tasks, seeds, args, "small_vgg", **common)
            out[label] = result
            print_rows(label, result, settings)

    if args.vgg16 and args.only is None:
        out.update(vgg16_against_small_vgg(args, seeds, settings, common))

    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1, default=str) + "\n")


if __name__ == "__main__":
    main()
