"""How often does FUSE pick the best of its candidates?

Every candidate of ``benchmarks.zoo_budget``'s JSON was trained alone for the study's whole
budget, so each has a known final test accuracy. This benchmark draws ``--sets`` fixed sets
of ``--candidates`` of them (seeded), runs FUSE on each set under every variant of
:data:`VARIANTS`, and counts how often FUSE's winner is the set's best candidate (chance:
1 / C) and how much final test accuracy its pick loses against that best.

    python -m benchmarks.fuse_pick_rate --budget-json docs/zoo_budget_E6.json \\
        --json docs/fuse_pick_rate_E6.json

Resumable row by row: rerun the same command and finished (variant, set) rows are kept.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import jax
import numpy as np
from tqdm import tqdm

from ldnas_jax.data import load_task
from ldnas_jax.nas import SEARCHABLE_OPERATIONS, FuseConfig, Genotype, run_fuse

# FUSE settings compared. "no_warmup" is the search budget the demo and the search
# comparison used so far (4 rounds of 10 steps, patience 3); "warmup_8" trains the weights
# for 8 rounds (80 steps, about one epoch of E6 at batch 32) before α moves, "warmup_20" for
# 20 rounds (200 steps, where benchmarks.zoo_budget found single networks leave the
# majority-class plateau of E6); "separate_warmup_8" also trains each candidate on its own
# loss in the weight phase (FuseConfig.weight_loss), so that none leans on the others.
VARIANTS = {
    "no_warmup": FuseConfig(max_rounds=4, patience_k=3, steps_per_round=10),
    "warmup_8": FuseConfig(max_rounds=4, patience_k=3, steps_per_round=10, warmup_rounds=8),
    "warmup_20": FuseConfig(max_rounds=4, patience_k=3, steps_per_round=10, warmup_rounds=20),
    "separate_warmup_8": FuseConfig(
        max_rounds=4, patience_k=3, steps_per_round=10, warmup_rounds=8, weight_loss="separate"
    ),
}


def candidate_sets(count: int, sets: int, size: int, seed: int) -> list[tuple[int, ...]]:
    """``sets`` distinct index sets of ``size`` out of ``count``, drawn without replacement."""
    every = list(itertools.combinations(range(count), size))
    order = np.random.default_rng(seed).permutation(len(every))[:sets]
    return [every[i] for i in sorted(order)]


def pick_summary(rows: list[dict], candidates: int) -> dict:
    """Per variant: the share of sets whose best candidate FUSE picked, and accuracy lost."""
    summary = {}
    for name in sorted({r["variant"] for r in rows}):
        mine = [r for r in rows if r["variant"] == name]
        picked = np.array([r["picked_best"] for r in mine], float)
        lost = np.array([r["accuracy_lost"] for r in mine])
        summary[name] = {
            "sets": len(mine),
            "pick_rate": float(picked.mean()),
            "chance": 1.0 / candidates,
            "mean_accuracy_lost": float(lost.mean()),
            "max_accuracy_lost": float(lost.max()),
        }
    return summary


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget-json", required=True)
    parser.add_argument("--sets", type=int, default=10)
    parser.add_argument("--candidates", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    budget = json.loads(Path(args.budget_json).read_text())
    study = budget["config"]
    genotypes = [Genotype.from_json(json.dumps(r["genotype"])) for r in budget["genotypes"]]
    final = [r["curve"][-1]["test_accuracy"] for r in budget["genotypes"]]
    data = load_task(study["task"])
    variants = args.variants.split(",")
    config = {
        "budget_json": args.budget_json,
        "sets": args.sets,
        "candidates": args.candidates,
        "seed": args.seed,
        "variants": {name: _describe(VARIANTS[name]) for name in variants},
    }
    path = Path(args.json) if args.json else None
    rows = []
    if path is not None and path.exists():
        previous = json.loads(path.read_text())
        if previous.get("config") != config:
            raise SystemExit(f"{path} holds another configuration: {previous.get('config')}")
        rows = previous["rows"]
    done = {(r["variant"], tuple(r["set"])) for r in rows}
    sets = candidate_sets(len(genotypes), args.sets, args.candidates, args.seed)
    size = dict(channels=study["channels"], num_cells=study["cells"], batch_size=study["batch_size"])
    todo = [(v, s) for v in variants for s in sets if (v, s) not in done]
    for name, members in tqdm(todo, desc="FUSE runs"):
        began = time.perf_counter()
        result = run_fuse(
            [genotypes[i] for i in members],
            (data.train.x, data.train.y),
            (data.val.x, data.val.y),
            key=jax.random.fold_in(jax.random.key(args.seed), sets.index(members)),
            num_classes=data.num_classes,
            config=VARIANTS[name]._replace(**size),
            operations=SEARCHABLE_OPERATIONS,  # one compiled round for every set
            progress=False,
        )
        scores = [final[i] for i in members]
        best = int(np.argmax(scores))
        rows.append(
            {
                "variant": name,
                "set": list(members),
                "final_test_accuracies": scores,
                "winner": result.winner_index,
                "best": best,
                "picked_best": bool(scores[result.winner_index] == scores[best]),
                "accuracy_lost": float(scores[best] - scores[result.winner_index]),
                "alpha": result.alpha_history[-1].tolist(),
                "rounds": result.rounds_run,
                "seconds": round(time.perf_counter() - began, 1),
            }
        )
        print(rows[-1], flush=True)
        if path is not None:
            _write(path, config, rows, args.candidates)
    payload = _payload(config, rows, args.candidates)
    if path is not None:
        _write(path, config, rows, args.candidates)
    print(json.dumps(payload["summary"], indent=1))
    return payload


def _describe(config: FuseConfig) -> dict:
    keep = ("max_rounds", "patience_k", "steps_per_round", "warmup_rounds", "weight_loss")
    return {name: getattr(config, name) for name in keep}


def _payload(config, rows, candidates) -> dict:
    return {
        "command": "python -m benchmarks.fuse_pick_rate --budget-json "
        f"{config['budget_json']} --sets {config['sets']} --candidates {candidates} "
        f"--seed {config['seed']} --variants {','.join(config['variants'])}",
        "config": config,
        "rows": rows,
        "summary": pick_summary(rows, candidates) if rows else {},
    }


def _write(path: Path, config, rows, candidates) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(_payload(config, rows, candidates), indent=1))
    tmp.replace(path)


if __name__ == "__main__":
    main()
