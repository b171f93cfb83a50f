"""ε-approximation networks: Flax linen classifiers used to represent tasks.

Every model here maps an NHWC float batch to logits of shape ``(batch, num_classes)``
and takes ``train: bool`` so BatchNorm can switch between batch and running
statistics. :func:`make_model` builds one by name. ResNet-18 and DenseNet-121 are the
hand-designed baselines of the paper's Tables 1–2.
"""

from ldnas_jax.models.densenet121 import DenseNet121
from ldnas_jax.models.registry import MODEL_NAMES, make_model
from ldnas_jax.models.resnet18 import ResNet18
from ldnas_jax.models.small_vgg import SmallVGG
from ldnas_jax.models.vgg16 import VGG16

__all__ = ["MODEL_NAMES", "VGG16", "DenseNet121", "ResNet18", "SmallVGG", "make_model"]
