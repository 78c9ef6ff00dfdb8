"""Real images as model inputs, preprocessed exactly as an artifact's manifest says (verify, and calibration).

An RGB image is resized (bicubic, keeping its aspect ratio) so that it covers the input's H x W divided by the
crop fraction (``min(H, W) / preprocessing.resize``) — for a square input that is the shorter side to
``resize`` — then centre-cropped to H x W: timm's evaluation transform for square inputs, without its
aspect distortion for non-square ones. The result is ``uint8`` pixels (N, 3, H, W); :func:`normalize` gives
the float tensor ``(pixel * scale - mean) / std``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .errors import InputError
from .manifest import Preprocessing

SUFFIXES = (".jpg", ".jpeg", ".png")


def list_images(folder, flag: str = "--images") -> list[Path]:
    """The JPEG/PNG files of ``folder``, sorted by name (a deterministic order for calibration)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{flag} {folder}: not a folder" if folder.exists() else f"{flag} {folder}: no such folder")
    images = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES)
    if not images:
        raise InputError(f"{flag} {folder}: no JPEG or PNG images in it")
    return images


def load_pixels(paths, resolution: tuple[int, int], preprocessing: Preprocessing) -> np.ndarray:
    """uint8 (N, 3, H, W) pixels of each image, resized and centre-cropped for ``resolution``."""
    from PIL import Image, UnidentifiedImageError

    h, w = resolution
    crop_fraction = min(h, w) / preprocessing.resize
    cover_h, cover_w = h / crop_fraction, w / crop_fraction
    out = np.empty((len(paths), 3, h, w), dtype=np.uint8)
    for i, path in enumerate(paths):
        try:
            with Image.open(path) as image:
                image = image.convert(preprocessing.color)
                iw, ih = image.size
                scale = max(cover_h / ih, cover_w / iw)
                size = (max(w, math.floor(iw * scale + 0.5)), max(h, math.floor(ih * scale + 0.5)))
                image = image.resize(size, Image.Resampling.BICUBIC)
                left, top = (size[0] - w) // 2, (size[1] - h) // 2
                pixels = np.asarray(image.crop((left, top, left + w, top + h)), dtype=np.uint8)
        except (OSError, UnidentifiedImageError, ValueError) as exc:
            raise InputError(f"{path}: cannot read the image ({exc})") from None
        out[i] = pixels.transpose(2, 0, 1)
    return out


def normalize(pixels: np.ndarray, preprocessing: Preprocessing) -> np.ndarray:
    """float32 (N, 3, H, W): ``(pixel * scale - mean) / std`` per channel."""
    mean = np.asarray(preprocessing.mean, dtype=np.float32)[None, :, None, None]
    std = np.asarray(preprocessing.std, dtype=np.float32)[None, :, None, None]
    return ((pixels.astype(np.float32) * np.float32(preprocessing.scale) - mean) / std).astype(np.float32)
