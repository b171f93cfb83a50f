"""Build an ε-approximation network by name, for configs and the command line."""

import flax.linen as nn

from ldnas_jax.models.densenet121 import DenseNet121
from ldnas_jax.models.resnet18 import ResNet18
from ldnas_jax.models.small_vgg import SmallVGG
from ldnas_jax.models.vgg16 import VGG16

_BUILDERS = {
    "small_vgg": SmallVGG,
    "vgg16": VGG16,
    "resnet18": ResNet18,
    "densenet121": DenseNet121,
}
MODEL_NAMES = tuple(_BUILDERS)


def make_model(name: str, num_classes: int) -> nn.Module:
    """Returns the named classifier with ``num_classes`` outputs.

    Example:
      >>> make_model("small_vgg", 2).num_classes
      2
    """
    if name not in _BUILDERS:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(MODEL_NAMES)}")
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
    return _BUILDERS[name](num_classes=num_classes)
