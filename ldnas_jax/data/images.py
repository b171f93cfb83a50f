"""Image array helpers shared by the sources: resizing, channel tiling, scaling to [0, 1]."""

import numpy as np

__all__ = ["resize_images", "to_channels", "to_unit_float", "as_nhwc", "prepare_images"]

# Resize this many images at a time so the float32 copy stays small for 60k-image sets.
_RESIZE_CHUNK = 2048


def as_nhwc(images: np.ndarray, *, what: str = "images") -> np.ndarray:
    """Returns `images` as a 4-D (N, H, W, C) array, adding a channel axis to (N, H, W).

    Example:
      >>> as_nhwc(np.zeros((5, 28, 28), np.uint8)).shape
      (5, 28, 28, 1)
    """
    images = np.asarray(images)
    if images.ndim == 3:
        return images[..., None]
    if images.ndim != 4:
        raise ValueError(
            f"{what} must have shape (N, H, W) or (N, H, W, C); got shape {images.shape}"
        )
    return images


def bilinear_weights(in_size: int, out_size: int) -> np.ndarray:
    """(out_size, in_size) bilinear interpolation matrix with half-pixel centres.

    When shrinking, the triangle kernel is widened by the shrink factor (antialiasing),
    which matches `jax.image.resize(..., method="bilinear")`.
    """
    scale = out_size / in_size
    kernel_width = max(1.0 / scale, 1.0)
    sample_centres = (np.arange(out_size) + 0.5) / scale
    offsets = (np.arange(in_size) + 0.5)[None, :] - sample_centres[:, None]
    weights = np.maximum(0.0, 1.0 - np.abs(offsets) / kernel_width)
    # Border samples lose the part of the kernel that falls outside the image: renormalise.
    return (weights / weights.sum(axis=1, keepdims=True)).astype(np.float32)


def resize_images(images: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Bilinearly resizes a batch of NHWC images (pure numpy, antialiased when shrinking).

    Integer images come back in their own dtype, rounded and clipped to that dtype's range;
    float images come back as float32.

    Args:
      images: array of shape (N, H, W, C).
      size: output side length, or an (height, width) pair.

    Returns:
      Array of shape (N, height, width, C).

    Example:
      >>> resize_images(np.zeros((2, 28, 28, 1), np.uint8), 32).shape
      (2, 32, 32, 1)
    """
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"images must have shape (N, H, W, C); got shape {images.shape}")
    height, width = (size, size) if isinstance(size, (int, np.integer)) else tuple(size)
    if height < 1 or width < 1:
        raise ValueError(f"size must be positive; got {size!r}")
    n, in_h, in_w, channels = images.shape
    if (in_h, in_w) == (height, width):
        return images if np.issubdtype(images.dtype, np.integer) else images.astype(np.float32)
    rows = bilinear_weights(in_h, height)
    cols = bilinear_weights(in_w, width)
    integer = np.issubdtype(images.dtype, np.integer)
    out = np.empty((n, height, width, channels), images.dtype if integer else np.float32)
    for start in range(0, n, _RESIZE_CHUNK):
        chunk = np.moveaxis(images[start : start + _RESIZE_CHUNK], -1, 1).astype(
            np.float32
        )  # (n, C, H, W)
        resized = np.moveaxis(rows @ chunk @ cols.T, 1, -1)  # separable: rows, then columns
        if integer:
            info = np.iinfo(images.dtype)
            resized = np.clip(np.rint(resized), info.min, info.max)
        out[start : start + _RESIZE_CHUNK] = resized
    return out


def to_channels(images: np.ndarray, channels: int) -> np.ndarray:
    """Tiles single-channel NHWC images to `channels` channels; other images must already match.

    Example:
      >>> to_channels(np.zeros((2, 32, 32, 1)), 3).shape
      (2, 32, 32, 3)
    """
    if channels < 1:
        raise ValueError(f"channels must be positive; got {channels}")
    have = images.shape[-1]
    if have == channels:
        return images
    if have == 1:
        return np.repeat(images, channels, axis=-1)
    raise ValueError(
        f"cannot convert {have}-channel images to {channels} channels "
        "(only 1-channel images are tiled)"
    )


def to_unit_float(images: np.ndarray) -> np.ndarray:
    """Converts images to float32 in [0, 1]: uint8 is divided by 255, floats must already lie in [0, 1].

    Example:
      >>> to_unit_float(np.array([0, 255], np.uint8)).tolist()
      [0.0, 1.0]
    """
    images = np.asarray(images)
    if images.dtype == np.bool_:
        return images.astype(np.float32)
    if np.issubdtype(images.dtype, np.integer):
        if images.size and (images.min() < 0 or images.max() > 255):
            raise ValueError(
                f"integer images must lie in [0, 255]; got range [{images.min()}, {images.max()}]"
            )
        return images.astype(np.float32) / np.float32(255)
    if not np.issubdtype(images.dtype, np.floating):
        raise TypeError(f"images must be an integer or float array; got dtype {images.dtype}")
    images = images.astype(np.float32)
    if images.size:
        low, high = float(images.min()), float(images.max())
        if not (np.isfinite(low) and np.isfinite(high)):
            raise ValueError("images contain NaN or infinite values")
        if low < 0.0 or high > 1.0:
            raise ValueError(f"float images must lie in [0, 1]; got range [{low:.4g}, {high:.4g}]")
    return images


def prepare_images(
    images: np.ndarray, *, image_size: int | None, channels: int | None
) -> np.ndarray:
    """Brings raw source images to NHWC, `image_size` x `image_size` and `channels` channels.

    `None` leaves that property as it is. Used by every file and TFDS source.

    Example:
      >>> prepare_images(np.zeros((4, 28, 28), np.uint8), image_size=32, channels=3).shape
      (4, 32, 32, 3)
    """
    images = as_nhwc(images)
    if image_size is not None:
        images = resize_images(images, image_size)
    if channels is not None:
        images = to_channels(images, channels)
    return images


def check_image_options(image_size, channels) -> None:
    """Raises for an `image_size` or `channels` that is neither None nor a positive int."""
    for value, what in ((image_size, "image_size"), (channels, "channels")):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"{what} must be a positive int or None; got {value!r}")
        if value < 1:
            raise ValueError(f"{what} must be a positive int or None; got {value}")
