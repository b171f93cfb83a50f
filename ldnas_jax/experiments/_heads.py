"""Head surgery: find a network's classifier layer and give it a fresh one of another size."""

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from ldnas_jax.models import make_model
from ldnas_jax.tasks import TaskNetwork


def head_paths(model_name: str, example_x: np.ndarray) -> frozenset[tuple[str, ...]]:
    """Paths of the modules whose parameters depend on the number of classes: the classifier.

    Found by comparing the parameter shapes of the model built for 2 and for 3
    classes, so it works for any model of the registry without naming layers.

    Example:
      >>> sorted(head_paths("small_vgg", np.zeros((1, 32, 32, 3), np.float32)))
      [('Dense_1',)]
    """
    x = jnp.zeros((1, *np.shape(example_x)[1:]), jnp.float32)

    def shapes(num_classes):
        model = make_model(model_name, num_classes)
        tree = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))
        return {p: s.shape for p, s in traverse_util.flatten_dict(dict(tree["params"])).items()}

    two, three = shapes(2), shapes(3)
    heads = frozenset(path[:-1] for path in two if two[path] != three[path])
    if not heads:
        raise ValueError(f"model {model_name!r} has no layer whose size follows num_classes")
    return heads


def in_head(path: tuple[str, ...], heads: frozenset[tuple[str, ...]]) -> bool:
    """Whether the parameter at ``path`` belongs to one of the ``heads`` modules.

    Example:
      >>> in_head(("Dense_1", "kernel"), frozenset({("Dense_1",)}))
      True
    """
    return any(path[: len(h)] == h for h in heads)


def replace_head(
    network: TaskNetwork, num_classes: int, *, key: jax.Array, example_x: np.ndarray
) -> dict[str, Any]:
    """N_b's variables with a freshly initialised classifier of ``num_classes`` outputs.

    Every variable outside the classifier (convolutions, BatchNorm scales and
    running statistics, hidden dense layers) is N_b's, unchanged. The head is
    replaced even when the sizes agree: the target's classes mean something else.

    Example:
      >>> x = np.zeros((1, 8, 8, 3), np.float32)
      >>> variables = make_model("small_vgg", 2).init(jax.random.key(0), x)
      >>> network = TaskNetwork("A", "small_vgg", 2, dict(variables), 0.9, 0.1)
      >>> new = replace_head(network, 4, key=jax.random.key(1), example_x=x)
      >>> kept = new["params"]["Conv_0"]["kernel"] == variables["params"]["Conv_0"]["kernel"]
      >>> new["params"]["Dense_1"]["bias"].shape, bool(kept.all())
      ((4,), True)
    """
    heads = head_paths(network.model_name, example_x)
    model = make_model(network.model_name, num_classes)
    fresh = model.init(key, jnp.asarray(example_x[:1]), train=False)
    out = {}
    for collection, tree in network.variables.items():
        old = traverse_util.flatten_dict(dict(tree))
        new = traverse_util.flatten_dict(dict(fresh.get(collection, {})))
        kept = {p: v for p, v in old.items() if not in_head(p, heads)}
        kept.update({p: v for p, v in new.items() if in_head(p, heads)})
        out[collection] = traverse_util.unflatten_dict(kept)
    return out
