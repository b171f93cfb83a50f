"""How long must a random genotype train before its validation rank means something?

The zoo's architecture search ranks random genotypes after a short training. This study
trains ``--genotypes`` random genotypes of the full space (no ``zero``) of one task for
``--steps`` weight steps each, evaluating every one at the milestones ``--milestones``,
and gives, per milestone, the Spearman ρ between the genotypes' validation accuracy there
and their test accuracy after the whole training. The smallest milestone whose ρ is close
to the last one's is the budget at which a short ranking agrees with the full one.

With a constant learning rate (Adam at 3e-3, the search's optimiser), the first k steps of
a long run are exactly a k-step run, so one run per genotype gives every milestone.

The candidate trainings are written to the JSON too, for ``benchmarks.fuse_pick_rate``,
which needs every candidate "trained fully and alone".

    python -m benchmarks.zoo_budget --task E6 --json docs/zoo_budget_E6.json

Resumable: rerun the same command and the genotypes already in the JSON are kept (the
configuration must match).
"""

from __future__ import annotations

import argparse
import functools
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from ldnas_jax.data import load_task
from ldnas_jax.experiments import spearman
from ldnas_jax.nas import (
    SEARCHABLE_OPERATIONS,
    SearchSpace,
    default_weight_optimizer,
    genotype_choices,
    switch_init,
    switch_network,
)
from ldnas_jax.train import cross_entropy, optimizer_step


@functools.lru_cache(maxsize=4)
def _programs(network, optimizer):
    """A jitted segment of weight steps and a jitted (accuracy, mean loss) evaluation."""

    def loss_fn(params, x, y, choices):
        return cross_entropy(network.apply({"params": params}, x, choices), y)

    @jax.jit
    def segment(params, opt_state, x, y, indices, choices):
        def step(carry, index):
            params, opt_state = carry
            grads = jax.grad(loss_fn)(params, x[index], y[index], choices)
            return optimizer_step(optimizer, grads, opt_state, params), None

        (params, opt_state), _ = jax.lax.scan(step, (params, opt_state), indices)
        return params, opt_state

    @jax.jit
    def evaluate(params, x, y, choices):
        def chunk(xy):
            logits = network.apply({"params": params}, xy[0], choices)
            log_p = jax.nn.log_softmax(logits)
            loss = -jnp.take_along_axis(log_p, xy[1][:, None], axis=1)[:, 0]
            return jnp.sum(jnp.argmax(logits, -1) == xy[1]), jnp.sum(loss)

        size = 100  # the embedded splits have 300 and 1000 rows
        xs = x.reshape((-1, size) + x.shape[1:])
        ys = y.reshape(-1, size)
        correct, loss = jax.lax.map(chunk, (xs, ys))
        return jnp.sum(correct) / len(x), jnp.sum(loss) / len(x)

    return segment, evaluate


def train_curve(genotype, data, *, key, space, milestones, batch_size, channels, cells):
    """Validation and test accuracy (and validation loss) of one genotype at each milestone."""
    network = switch_network(
        space.operations, data.num_classes, num_nodes=space.num_nodes, channels=channels,
        num_cells=cells,
    )
    optimizer = default_weight_optimizer()
    segment, evaluate = _programs(network, optimizer)
    init_key, batch_key = jax.random.split(key)
    x_train, y_train = jnp.asarray(data.train.x), jnp.asarray(data.train.y)
    params = switch_init(network, init_key, data.train.x[:1])
    opt_state = optimizer.init(params)
    choices = jnp.asarray(genotype_choices(genotype, space.operations))
    steps = max(milestones)
    epochs = -(-steps * batch_size // len(x_train))
    order = np.concatenate(
        [np.asarray(jax.random.permutation(k, len(x_train))) for k in jax.random.split(batch_key, epochs)]
    )[: steps * batch_size].reshape(steps, batch_size)
    # Segments of one length (the milestones' common divisor): one compiled program.
    length = int(np.gcd.reduce(milestones))
    curve, done = [], 0
    for milestone in milestones:
        for begin in range(done, milestone, length):
            indices = jnp.asarray(order[begin : begin + length])
            params, opt_state = segment(params, opt_state, x_train, y_train, indices, choices)
        done = milestone
        val_accuracy, val_loss = evaluate(params, data.val.x, data.val.y, choices)
        test_accuracy, _ = evaluate(params, data.test.x, data.test.y, choices)
        curve.append(
            {
                "steps": milestone,
                "val_accuracy": float(val_accuracy),
                "val_loss": float(val_loss),
                "test_accuracy": float(test_accuracy),
            }
        )
    return curve


def rank_agreement(records, milestones) -> list[dict]:
    """Per milestone: Spearman ρ of validation accuracy there against the final test accuracy."""
    final = [r["curve"][-1]["test_accuracy"] for r in records]
    rows = []
    for index, milestone in enumerate(milestones):
        # Ties on accuracy broken by the validation loss, as the zoo's search does.
        score = [
            r["curve"][index]["val_accuracy"] - 1e-6 * r["curve"][index]["val_loss"]
            for r in records
        ]
        rows.append(
            {
                "steps": milestone,
                "spearman_val_vs_final_test": spearman(score, final),
                "best_by_val_is_best_final": int(np.argmax(score)) == int(np.argmax(final)),
                "median_val_accuracy": float(np.median([r["curve"][index]["val_accuracy"] for r in records])),
            }
        )
    return rows


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="E6")
    parser.add_argument("--genotypes", type=int, default=8)
    parser.add_argument("--milestones", default="25,50,100,200,400,600")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--channels", type=int, default=8)
    parser.add_argument("--cells", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    milestones = sorted(int(m) for m in args.milestones.split(","))
    config = {k: v for k, v in vars(args).items() if k != "json"}
    data = load_task(args.task)
    space = SearchSpace(SEARCHABLE_OPERATIONS, shared_cells=True)
    genotypes = space.sample(jax.random.key(args.seed), args.genotypes)
    path = Path(args.json) if args.json else None
    records = []
    if path is not None and path.exists():
        previous = json.loads(path.read_text())
        if previous.get("config") != config:
            raise SystemExit(f"{path} holds another configuration: {previous.get('config')}")
        records = previous["genotypes"]
    start = time.perf_counter()
    for index in tqdm(range(len(records), len(genotypes)), desc="genotypes"):
        began = time.perf_counter()
        curve = train_curve(
            genotypes[index], data, key=jax.random.fold_in(jax.random.key(args.seed), index + 1),
            space=space, milestones=milestones, batch_size=args.batch_size,
            channels=args.channels, cells=args.cells,
        )
        records.append(
            {
                "genotype": json.loads(genotypes[index].to_json()),
                "curve": curve,
                "seconds": round(time.perf_counter() - began, 1),
            }
        )
        print(f"{index}: {genotypes[index].normal} -> {curve[-1]}", flush=True)
        if path is not None:
            _write(path, config, records, milestones)
    payload = _payload(config, records, milestones)
    payload["seconds_this_run"] = round(time.perf_counter() - start, 1)
    if path is not None:
        _write(path, config, records, milestones)
    for row in payload["agreement"]:
        print(row)
    return payload


def _payload(config, records, milestones):
    payload = {
        "command": "python -m benchmarks.zoo_budget "
        + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in config.items()),
        "config": config,
        "genotypes": records,
    }
    if len(records) >= 3:
        payload["agreement"] = rank_agreement(records, milestones)
    return payload


def _write(path: Path, config, records, milestones):
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(_payload(config, records, milestones), indent=1))
    tmp.replace(path)


if __name__ == "__main__":
    main()
