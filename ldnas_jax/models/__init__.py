"""ε-approximation networks: Flax linen classifiers used to represent tasks.

Every model here maps an NHWC float batch to logits of shape ``(batch, num_classes)``
and takes ``train: bool`` so BatchNorm can switch between batch and running
statistics. :func:`make_model` builds one by name.
"""

from ldnas_jax.models.small_vgg import SmallVGG
from ldnas_jax.models.vgg16 import VGG16
from ldnas_jax.models.registry import MODEL_NAMES, make_model

__all__ = ["SmallVGG", "VGG16", "MODEL_NAMES", "make_model"]
