"""The "embedded_objects" domain: a CIFAR-10-like set of 10 classes of coloured objects.

A class is a shape or a texture: disk, square, triangle, ring, cross, horizontal stripes,
vertical stripes, checkerboard, diamond, star. Every image places one roughly centred
object of random size, colour and small rotation on a smooth, blotchy random-colour
background, then adds pixel noise. As in CIFAR-10, colour is a weak cue: an object's hue
leans towards its class's own hue, but neighbouring classes overlap widely. Shapes are
filled with a shaded colour; texture classes fill a disk or a square patch with a two-colour
pattern, so that the texture and not the outline decides their class. Square and diamond
differ only by orientation (0 vs 45 degrees, each within +-12 degrees), and ring vs disk by a
hole, which keeps the task from being trivial.
"""

import math
from collections.abc import Callable

import numpy as np

from ldnas_jax.data.holdout import seeded_splits
from ldnas_jax.data.images import bilinear_weights

__all__ = ["embedded_objects", "OBJECT_CLASSES", "OBJECTS_TRAIN_SIZE", "OBJECTS_TEST_SIZE"]

OBJECT_CLASSES = (
    "disk",
    "square",
    "triangle",
    "ring",
    "cross",
    "horizontal_stripes",
    "vertical_stripes",
    "checkerboard",
    "diamond",
    "star",
)
OBJECTS_TRAIN_SIZE = 3000
OBJECTS_TEST_SIZE = 1000
_SIZE = 32
_SEEDS = {"train": 20_250_201, "test": 20_250_202}
_MAX_SHIFT = 3.0  # pixels
_RADIUS = (9.0, 13.0)  # pixels
_BLOTCH = (0.1, 0.4)
_HUE_SPREAD = 0.12  # standard deviation of an object's hue around its class hue (hue in [0, 1))
_MIN_CONTRAST = 0.5  # RGB distance between an object and the background under it
# Rotation range of each class in degrees, around its base angle.
_BASE_ANGLE = {"diamond": 45.0}
_MAX_TILT = {
    "square": 12.0,
    "diamond": 12.0,
    "horizontal_stripes": 15.0,
    "vertical_stripes": 15.0,
    "checkerboard": 15.0,
    "cross": 15.0,
    "triangle": 20.0,
    "star": 180.0,
}


def _uniform(rng: np.random.Generator, low: float, high: float, shape) -> np.ndarray:
    """float32 uniform draws: float64 would double the cost of every image-sized operation."""
    return rng.random(shape, dtype=np.float32) * np.float32(high - low) + np.float32(low)


def _box(u: np.ndarray, v: np.ndarray, half_u: float, half_v: float) -> np.ndarray:
    """Signed distance (in object units) to an axis-aligned box; < 0 inside."""
    du, dv = np.abs(u) - half_u, np.abs(v) - half_v
    outside = np.hypot(np.maximum(du, 0.0), np.maximum(dv, 0.0))
    return outside + np.minimum(np.maximum(du, dv), 0.0)


def _triangle(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Approximate signed distance to an upward equilateral triangle of circumradius 1.2."""
    half_root3 = (
        math.sqrt(3.0) / 2
    )  # a Python float: a numpy float64 scalar would upcast to float64
    bottom = v - 0.6
    right = half_root3 * u - 0.5 * v - 0.6
    left = -half_root3 * u - 0.5 * v - 0.6
    return np.maximum(np.maximum(bottom, right), left)


def _shape_distance(
    name: str, u: np.ndarray, v: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Signed distance (object units, radius about 1) of class `name` at object coordinates u, v."""
    n = u.shape[0]
    radius = np.hypot(u, v)
    if name == "disk":
        return radius - 1.0
    if name == "ring":
        thickness = _uniform(rng, 0.2, 0.35, (n, 1, 1))
        return np.abs(radius - 1.0 + thickness) - thickness
    if name in ("square", "diamond"):
        return _box(u, v, 0.85, 0.85)
    if name == "triangle":
        return _triangle(u, v)
    if name == "cross":
        arm = _uniform(rng, 0.25, 0.38, (n, 1, 1))
        return np.minimum(_box(u, v, 1.0, arm), _box(u, v, arm, 1.0))
    if name == "star":
        points = rng.integers(5, 7, (n, 1, 1)).astype(np.float32)
        depth = _uniform(rng, 0.35, 0.5, (n, 1, 1))
        return radius - (1.0 - depth * (1.0 + np.cos(points * np.arctan2(v, u))) / 2) * 1.1
    # Texture classes: a disk or a square patch, chosen per image.
    patch_is_disk = rng.random((n, 1, 1)) < 0.5
    return np.where(patch_is_disk, radius - 1.0, _box(u, v, 0.9, 0.9))


def _texture(
    name: str, u: np.ndarray, v: np.ndarray, scale: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Pattern weight in [0, 1] of the second fill colour (all zeros for plain shapes)."""
    if name not in ("horizontal_stripes", "vertical_stripes", "checkerboard"):
        return np.zeros_like(u)
    n = u.shape[0]
    period = _uniform(rng, 3.5, 6.5, (n, 1, 1)) / scale  # pixels -> object units
    phase = _uniform(rng, 0.0, 2 * np.pi, (n, 2, 1, 1))
    wave_v = np.sin(2 * np.pi * v / period + phase[:, 0])
    wave_u = np.sin(2 * np.pi * u / period + phase[:, 1])
    wave = {
        "horizontal_stripes": wave_v,
        "vertical_stripes": wave_u,
        "checkerboard": wave_u * wave_v,
    }[name]
    return 0.5 + 0.5 * np.tanh(3.0 * wave)  # soft edges: no aliasing at 32x32


def _hsv_to_rgb(hue: np.ndarray, saturation: np.ndarray, value: np.ndarray) -> np.ndarray:
    """Vectorised HSV -> RGB; inputs (n,) in [0, 1], output (n, 3) float32."""
    sector = hue[:, None] * 6.0 + np.array([5.0, 3.0, 1.0], np.float32)  # R, G, B offsets
    ramp = np.clip(np.minimum(sector % 6.0, 4.0 - sector % 6.0), 0.0, 1.0)
    return (value[:, None] * (1.0 - saturation[:, None] * ramp)).astype(np.float32)


def _class_colours(rng: np.random.Generator, index: int, count: int) -> np.ndarray:
    """Object colours whose hue leans towards the class's own hue, like CIFAR classes' colour statistics.

    Neighbouring classes' hue ranges overlap, so colour alone does not give the class away.
    """
    hue = (
        index / len(OBJECT_CLASSES) + _HUE_SPREAD * rng.standard_normal(count, dtype=np.float32)
    ) % 1.0
    return _hsv_to_rgb(hue, _uniform(rng, 0.35, 1.0, count), _uniform(rng, 0.3, 1.0, count))


def _contrasting(draw: Callable[[int], np.ndarray], against: np.ndarray) -> np.ndarray:
    """Colours (n, 3) from `draw(count)`, redrawn until at least _MIN_CONTRAST (RGB distance) from `against`."""
    colours = draw(against.shape[0])
    for _ in range(8):  # redraw the few colours too close to their background
        close = np.linalg.norm(colours - against, axis=-1) < _MIN_CONTRAST
        if not close.any():
            break
        colours[close] = draw(int(close.sum()))
    close = np.linalg.norm(colours - against, axis=-1) < _MIN_CONTRAST
    # Still too close after redraws: black on light, white on dark (always >= 0.5 away).
    colours[close] = (against[close].mean(axis=-1, keepdims=True) < 0.5).astype(np.float32)
    return colours


def _backgrounds(rng: np.random.Generator, n: int) -> np.ndarray:
    """Smooth random colour fields with blotches, (n, H, W, 3): a 4x4 colour grid, upsampled."""
    base = rng.random((n, 1, 3), dtype=np.float32)
    grid = base + _uniform(rng, *_BLOTCH, (n, 1, 1)) * _uniform(rng, -1.0, 1.0, (n, 16, 3))
    # Bilinear 4x4 -> 32x32 upsampling as one (1024, 16) matrix: far faster than per-image resizes.
    upsample = np.kron(bilinear_weights(4, _SIZE), bilinear_weights(4, _SIZE))
    return np.einsum("pk,nkc->npc", upsample, grid, optimize=True).reshape(n, _SIZE, _SIZE, 3)


def _objects(rng: np.random.Generator, index: int, background: np.ndarray) -> np.ndarray:
    """Draws one object of class `index` onto each background (n, H, W, 3)."""
    n, name = background.shape[0], OBJECT_CLASSES[index]
    radius = _uniform(rng, *_RADIUS, (n, 1, 1))
    # Roughly centred, like CIFAR-10 objects; never cut by the border.
    room = np.minimum(_MAX_SHIFT, _SIZE / 2 - radius[:, None] - 1.0)
    centre = _SIZE / 2 + _uniform(rng, -1.0, 1.0, (n, 2, 1, 1)) * room
    tilt = _MAX_TILT.get(name, 0.0)
    angle = np.deg2rad(_BASE_ANGLE.get(name, 0.0) + _uniform(rng, -tilt, tilt, (n, 1, 1)))
    pixels = np.arange(_SIZE, dtype=np.float32) + 0.5
    dx = (pixels[None, None, :] - centre[:, 0]) / radius
    dy = (pixels[None, :, None] - centre[:, 1]) / radius
    u = np.cos(angle) * dx + np.sin(angle) * dy
    v = -np.sin(angle) * dx + np.cos(angle) * dy
    distance = _shape_distance(name, u, v, rng)
    coverage = np.clip(0.5 - distance * radius, 0.0, 1.0)[
        ..., None
    ]  # about 1 pixel of anti-aliasing
    row, column = (np.clip(centre[:, axis, 0, 0], 0, _SIZE - 1).astype(int) for axis in (1, 0))
    main = _contrasting(
        lambda count: _class_colours(rng, index, count), background[np.arange(n), row, column]
    )
    second = _contrasting(lambda count: rng.random((count, 3), dtype=np.float32), main)
    main, second = main[:, None, None, :], second[:, None, None, :]
    pattern = _texture(name, u, v, radius, rng)[..., None]
    shading = 1.0 + _uniform(rng, -0.25, 0.25, (n, 1, 1, 1)) * v[..., None]
    fill = (main + (second - main) * pattern) * shading
    return background + (fill - background) * coverage


def _render(rng: np.random.Generator, counts: list[int]) -> np.ndarray:
    """Images (sum(counts), H, W, 3) in [0, 1]: counts[k] images of class k, in class order."""
    images = _backgrounds(rng, sum(counts))
    starts = np.cumsum([0] + counts)
    for index in range(len(OBJECT_CLASSES)):
        block = slice(starts[index], starts[index + 1])
        images[block] = _objects(rng, index, images[block])
    noise = rng.standard_normal(images.shape, dtype=np.float32)
    noise *= _uniform(rng, 0.0, 0.06, (images.shape[0], 1, 1, 1))
    images += noise
    return np.clip(images, 0.0, 1.0, out=images)


@seeded_splits(seeds=_SEEDS, sizes={"train": OBJECTS_TRAIN_SIZE, "test": OBJECTS_TEST_SIZE})
def _generate(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    classes = len(OBJECT_CLASSES)
    labels = np.repeat(np.arange(classes, dtype=np.int32), size // classes)
    images = _render(rng, [size // classes] * classes)
    # Drawn class by class (cheap slices); one shuffle mixes the classes.
    order = rng.permutation(size)
    return images[order], labels[order]


def embedded_objects(split: str) -> tuple[np.ndarray, np.ndarray]:
    """Loads the embedded objects domain (generated once per process, then cached).

    Args:
      split: "train" (3000 images) or "test" (1000 images).

    Returns:
      (images, labels): float32 (N, 32, 32, 3) in [0, 1], read-only, and int32 (N,) class
      indices into `OBJECT_CLASSES`, balanced exactly across the 10 classes.

    Example:
      >>> x, y = embedded_objects("test")
      >>> x.shape, OBJECT_CLASSES[int(y[0])] in OBJECT_CLASSES
      ((1000, 32, 32, 3), True)
    """
    return _generate(split)
