"""The "embedded_digits" domain: procedurally drawn handwritten-like digits 0-9.

Each digit is a few pen strokes (polylines, arcs included) in a unit box. Every image
draws its digit with its own random affine transform (scale, aspect, slant, rotation,
shift), a smooth wobble of the pen path, a random pen width and ink level, then adds
sensor noise. Strokes are rendered as anti-aliased distance-to-segment ink, white on
black, at 32x32, and the grey level is replicated to 3 channels, like MNIST resized
to 32x32x3. Some digits have two common writing styles (a 1 with or without a flag,
a 7 with or without a bar, an open or a closed 4, a straight or a curved 9 tail).
"""

import numpy as np

from ldnas_jax.data.holdout import seeded_splits

__all__ = ["embedded_digits", "DIGITS_TRAIN_SIZE", "DIGITS_TEST_SIZE", "IMAGE_SIZE"]

DIGITS_TRAIN_SIZE = 3000
DIGITS_TEST_SIZE = 1000
IMAGE_SIZE = 32
_NUM_CLASSES = 10
_SEEDS = {"train": 20_250_101, "test": 20_250_102}
# Images per distance pass: small enough that the work buffers stay in cache.
_INK_CHUNK = 64

Stroke = list[tuple[float, float]]


def _arc(
    cx: float, cy: float, rx: float, ry: float, start: float, stop: float, pieces: int
) -> Stroke:
    """Points along an elliptic arc; angles in degrees, y pointing down (90 = bottom)."""
    angles = np.deg2rad(np.linspace(start, stop, pieces + 1))
    return [(cx + rx * np.cos(a), cy + ry * np.sin(a)) for a in angles]


# Strokes of each digit in a box x in [0, 1], y in [0, 1] (y down); a list of styles per digit.
_STYLES: dict[int, list[list[Stroke]]] = {
    0: [[_arc(0.5, 0.5, 0.3, 0.45, 0, 360, 12)]],
    1: [[[(0.52, 0.05), (0.48, 0.95)]], [[(0.3, 0.25), (0.55, 0.05), (0.5, 0.95)]]],
    2: [[_arc(0.5, 0.3, 0.28, 0.25, 180, 390, 7) + [(0.2, 0.95), (0.82, 0.95)]]],
    3: [[_arc(0.5, 0.28, 0.26, 0.22, 200, 450, 6), _arc(0.5, 0.72, 0.29, 0.23, 270, 520, 6)]],
    4: [
        [[(0.62, 0.05), (0.15, 0.65), (0.85, 0.65)], [(0.62, 0.05), (0.62, 0.95)]],
        [[(0.3, 0.05), (0.2, 0.6), (0.85, 0.6)], [(0.66, 0.25), (0.66, 0.95)]],
    ],
    5: [[[(0.78, 0.05), (0.32, 0.05), (0.28, 0.45)] + _arc(0.48, 0.68, 0.3, 0.27, 235, 510, 7)]],
    6: [[[(0.72, 0.05), (0.45, 0.25), (0.29, 0.5)] + _arc(0.5, 0.72, 0.23, 0.23, 190, 540, 9)]],
    7: [
        [[(0.18, 0.05), (0.82, 0.05), (0.4, 0.95)]],
        [[(0.18, 0.05), (0.82, 0.05), (0.4, 0.95)], [(0.38, 0.5), (0.75, 0.5)]],
    ],
    8: [[_arc(0.5, 0.27, 0.22, 0.22, -90, 270, 8), _arc(0.5, 0.72, 0.27, 0.24, -90, 270, 8)]],
    9: [
        [_arc(0.5, 0.3, 0.26, 0.25, 0, 360, 9), [(0.76, 0.3), (0.72, 0.95)]],
        [_arc(0.5, 0.3, 0.26, 0.25, 0, 360, 9), [(0.76, 0.3), (0.7, 0.7), (0.48, 0.95)]],
    ],
}


def _segments(strokes: list[Stroke]) -> tuple[np.ndarray, np.ndarray]:
    """Start and end points, each (S, 2), of every segment of every stroke."""
    starts = [p for stroke in strokes for p in stroke[:-1]]
    ends = [p for stroke in strokes for p in stroke[1:]]
    return np.asarray(starts, np.float32), np.asarray(ends, np.float32)


def _pixel_centres() -> tuple[np.ndarray, np.ndarray]:
    """x and y of every pixel centre, each flattened to (H*W,)."""
    coords = np.arange(IMAGE_SIZE, dtype=np.float32) + 0.5
    ys, xs = np.meshgrid(coords, coords, indexing="ij")
    return xs.ravel(), ys.ravel()


def _random_pen_paths(rng: np.random.Generator, points: np.ndarray, n: int) -> np.ndarray:
    """Maps unit-box points (P, 2) to pixel coordinates (n, P, 2), one random hand per image."""
    wobble = rng.uniform(0.0, 0.05, (n, 1, 2)).astype(np.float32)
    frequency = rng.uniform(0.5, 1.5, (n, 1, 2)).astype(np.float32)
    phase = rng.uniform(0.0, 2 * np.pi, (n, 1, 2)).astype(np.float32)
    # A smooth displacement keeps connected strokes connected while bending them.
    swapped = points[None, :, ::-1]
    bent = points[None] + wobble * np.sin(2 * np.pi * frequency * swapped + phase)
    centred = bent - 0.5
    height = rng.uniform(18.0, 25.0, n)
    width = height * rng.uniform(0.65, 1.05, n)
    slant = rng.uniform(-0.35, 0.35, n)
    angle = np.deg2rad(rng.uniform(-15.0, 15.0, n))
    cos, sin = np.cos(angle), np.sin(angle)
    # Pixel = rotation @ shear @ scale @ unit point + centre.
    a = np.stack([np.stack([width, slant * height], -1), np.stack([np.zeros(n), height], -1)], -2)
    r = np.stack([np.stack([cos, -sin], -1), np.stack([sin, cos], -1)], -2)
    matrix = (r @ a).astype(np.float32)
    shift = (IMAGE_SIZE / 2 + rng.uniform(-3.0, 3.0, (n, 1, 2))).astype(np.float32)
    return np.einsum("nij,npj->npi", matrix, centred) + shift


def _ink(starts: np.ndarray, ends: np.ndarray, pen_width: np.ndarray) -> np.ndarray:
    """Anti-aliased ink (n, H*W) of segments (n, S, 2) drawn with per-image pen widths (n,)."""
    xs, ys = _pixel_centres()
    squared = np.empty((starts.shape[0], xs.size), np.float32)
    for first in range(0, starts.shape[0], _INK_CHUNK):
        squared[first : first + _INK_CHUNK] = _squared_distance(
            xs, ys, starts[first : first + _INK_CHUNK], ends[first : first + _INK_CHUNK]
        )
    # Ink falls off linearly over about one pixel at the pen's edge.
    return np.clip(pen_width[:, None] / 2 + 0.5 - np.sqrt(squared), 0.0, 1.0)


def _squared_distance(
    xs: np.ndarray, ys: np.ndarray, starts: np.ndarray, ends: np.ndarray
) -> np.ndarray:
    """Squared distance (n, P) from each pixel to the nearest segment of its image.

    Written with in-place buffers: this loop is most of the generation time.
    """
    direction = ends - starts
    inverse_length2 = 1.0 / (np.sum(direction * direction, axis=-1) + 1e-6)
    nearest = np.full((starts.shape[0], xs.size), np.inf, np.float32)
    dx, dy, t, scratch = (np.empty_like(nearest) for _ in range(4))
    for s in range(starts.shape[1]):
        bx, by = direction[:, s, 0:1], direction[:, s, 1:2]
        np.subtract(xs, starts[:, s, 0:1], out=dx)
        np.subtract(ys, starts[:, s, 1:2], out=dy)
        # t = projection of the pixel onto the segment, clamped to its ends.
        np.multiply(dx, bx * inverse_length2[:, s : s + 1], out=t)
        np.multiply(dy, by * inverse_length2[:, s : s + 1], out=scratch)
        t += scratch
        np.clip(t, 0.0, 1.0, out=t)
        dx -= np.multiply(t, bx, out=scratch)
        dy -= np.multiply(t, by, out=scratch)
        dx *= dx
        dy *= dy
        dx += dy
        np.minimum(nearest, dx, out=nearest)
    return nearest


def _render(rng: np.random.Generator, labels: np.ndarray) -> np.ndarray:
    """Grey images (n, H*W) in [0, 1] for the given digit labels."""
    n = labels.size
    ink = np.zeros((n, IMAGE_SIZE * IMAGE_SIZE), np.float32)
    style = rng.integers(0, 2, n)
    for digit, styles in _STYLES.items():
        for index, strokes in enumerate(styles):
            chosen = np.flatnonzero((labels == digit) & (style % len(styles) == index))
            if chosen.size == 0:
                continue
            starts, ends = _segments(strokes)
            paths = _random_pen_paths(rng, np.concatenate([starts, ends]), chosen.size)
            pen_width = rng.uniform(1.3, 3.3, chosen.size).astype(np.float32)
            ink[chosen] = _ink(paths[:, : len(starts)], paths[:, len(starts) :], pen_width)
    ink *= rng.uniform(0.6, 1.0, (n, 1)).astype(np.float32)
    noise = rng.standard_normal(ink.shape, dtype=np.float32)
    noise *= rng.uniform(0.0, 0.1, (n, 1)).astype(np.float32)
    ink += noise
    return np.clip(ink, 0.0, 1.0, out=ink)


@seeded_splits(seeds=_SEEDS, sizes={"train": DIGITS_TRAIN_SIZE, "test": DIGITS_TEST_SIZE})
def _generate(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    labels = rng.permutation(np.arange(size) % _NUM_CLASSES).astype(np.int32)
    grey = _render(rng, labels).reshape(size, IMAGE_SIZE, IMAGE_SIZE, 1)
    return np.repeat(grey, 3, axis=-1), labels


def embedded_digits(split: str) -> tuple[np.ndarray, np.ndarray]:
    """Loads the embedded digits domain (generated once per process, then cached).

    Args:
      split: "train" (3000 images) or "test" (1000 images).

    Returns:
      (images, labels): float32 (N, 32, 32, 3) in [0, 1], read-only, and int32 (N,) digits 0-9,
      balanced exactly across the 10 classes.

    Example:
      >>> x, y = embedded_digits("test")
      >>> x.shape, x.dtype.name, y.shape
      ((1000, 32, 32, 3), 'float32', (1000,))
    """
    return _generate(split)
