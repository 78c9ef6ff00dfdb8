"""Real images as model inputs, preprocessed exactly as an artifact's manifest says (verify, and calibration).

An RGB image is resized (bicubic, keeping its aspect ratio) so that it covers the input's H x W divided by the
crop fraction (``min(H, W) / preprocessing.resize``) — for a square input that is the shorter side to
``resize`` — then centre-cropped to H x W: timm's evaluation transform for square inputs, without its
aspect distortion for non-square ones. The result is ``uint8`` pixels (N, 3, H, W); :func:`normalize` gives
the float tensor ``(pixel * scale - mean) / std``.

Image folders come from users, and a bad file must be a one-line :class:`~shvit_edge.errors.InputError`
naming it, found early: :func:`list_images` checks the header of every image it returns (callers list the
images before any model work, so a bad calibration folder fails before a minutes-long conversion, not after
it). A file is read only if it is a regular file (a FIFO would block), a JPEG or PNG (no other decoder is
reachable), at most :data:`MAX_PIXELS` pixels (read from the header, before anything is decoded: a small file
can claim a huge image), and in a pixel mode read faithfully here. 16-bit greyscale PNGs are scaled to 8 bits
(``value / 257``, rounded): Pillow's ``convert`` would clip them to 255, an all-white image.
"""

from __future__ import annotations

import math
import os
import stat
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from .errors import InputError
from .manifest import Preprocessing

SUFFIXES = (".jpg", ".jpeg", ".png")

#: The decoders Image.open may use: no other format's parser is exposed to a hostile folder.
FORMATS = ("JPEG", "PNG")
#: What those decoders identify files as (a multi-picture JPEG from a phone camera is an ``MPO``; its first
#: picture is read).
_FORMATS_SEEN = frozenset({"JPEG", "MPO", "PNG"})

#: The largest image read, in pixels: 64 Mi, i.e. 8192 x 8192 — above any ordinary camera photo (48-50 MP)
#: and below Pillow's own decompression-bomb warning (``Image.MAX_IMAGE_PIXELS``, about 89.5 MP), so an image
#: accepted here never trips it. Decoded, it is at most 192 MiB as RGB (256 MiB for a 16-bit grey image
#: while it is scaled).
MAX_PIXELS = 64 * 1024 * 1024

#: 8-bit modes that ``Image.convert`` turns into the preprocessing colour faithfully (alpha dropped, palette
#: expanded, CMYK and YCbCr converted): every 8-bit mode Pillow gives for a PNG or a JPEG. (A PNG of 16 bits
#: per sample in colour, or grey with alpha, already opens in one of these, from each sample's high byte.)
_CONVERTED_MODES = frozenset({"1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr"})
#: 16-bit greyscale (a PNG of bit depth 16: ``I;16`` in current Pillow, ``I`` in older ones), scaled first.
_WIDE_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N"})

#: What Pillow raises for a corrupt or truncated file (UnidentifiedImageError is an OSError).
_UNREADABLE = (OSError, SyntaxError, ValueError, EOFError)


def list_images(folder, flag: str = "--images", limit: int | None = None) -> list[Path]:
    """The JPEG/PNG files of ``folder``, sorted by name (a deterministic order for calibration); only the first
    ``limit`` of them when given. Each one returned has had its header checked (:func:`check_image`)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{flag} {folder}: not a folder" if folder.exists() else f"{flag} {folder}: no such folder")
    images = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES)
    if not images:
        raise InputError(f"{flag} {folder}: no JPEG or PNG images in it")
    images = images[:limit]
    for path in images:
        try:
            check_image(path)
        except InputError as exc:
            raise InputError(f"{flag} {exc}") from None
    return images


def check_image(path) -> None:
    """Raise an :class:`InputError` naming ``path`` unless it is an image :func:`load_pixels` reads. Reads the
    header only: cheap enough for every image of a folder."""
    with _open_image(Path(path)):
        pass


def load_pixels(paths, resolution: tuple[int, int], preprocessing: Preprocessing) -> np.ndarray:
    """uint8 (N, 3, H, W) pixels of each image, resized and centre-cropped for ``resolution``."""
    from PIL import Image

    h, w = resolution
    crop_fraction = min(h, w) / preprocessing.resize
    cover_h, cover_w = h / crop_fraction, w / crop_fraction
    out = np.empty((len(paths), 3, h, w), dtype=np.uint8)
    for i, path in enumerate(paths):
        path = Path(path)
        with _open_image(path) as image:
            try:
                image = _converted(image, preprocessing.color)
            except _UNREADABLE as exc:
                raise InputError(f"{path}: cannot read the image ({_one_line(exc)})") from None
        iw, ih = image.size
        scale = max(cover_h / ih, cover_w / iw)
        size = (max(w, math.floor(iw * scale + 0.5)), max(h, math.floor(ih * scale + 0.5)))
        image = image.resize(size, Image.Resampling.BICUBIC)
        left, top = (size[0] - w) // 2, (size[1] - h) // 2
        pixels = np.asarray(image.crop((left, top, left + w, top + h)), dtype=np.uint8)
        out[i] = pixels.transpose(2, 0, 1)
    return out


def normalize(pixels: np.ndarray, preprocessing: Preprocessing) -> np.ndarray:
    """float32 (N, 3, H, W): ``(pixel * scale - mean) / std`` per channel."""
    mean = np.asarray(preprocessing.mean, dtype=np.float32)[None, :, None, None]
    std = np.asarray(preprocessing.std, dtype=np.float32)[None, :, None, None]
    return ((pixels.astype(np.float32) * np.float32(preprocessing.scale) - mean) / std).astype(np.float32)


@contextmanager
def _open_image(path: Path):
    """``path`` opened lazily as a checked PIL image: header read, nothing decoded yet."""
    with _regular_file(path) as file, _identified(path, file) as image:
        _check_header(path, image)
        yield image


@contextmanager
def _regular_file(path: Path):
    """``path`` open for reading, if it is a regular file. Opened non-blocking and checked on the descriptor:
    opening a FIFO would otherwise block until a writer came, and a check before opening could be raced."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except OSError as exc:
        raise InputError(f"{path}: cannot read the image ({exc.strerror})") from None
    with os.fdopen(fd, "rb") as file:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise InputError(f"{path}: cannot read the image (not a regular file)")
        os.set_blocking(fd, True)
        yield file


def _identified(path: Path, file):
    """The lazily opened JPEG/PNG image of ``file``. Pillow checks the size in the header against its own
    bomb limits: past twice its limit it raises, past the limit it warns — a refusal here too, turned into an
    error for this call only (no process-wide warning filter)."""
    from PIL import Image, UnidentifiedImageError

    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            return Image.open(file, formats=FORMATS)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise InputError(_too_large(path)) from None
        except UnidentifiedImageError:
            raise InputError(f"{path}: cannot read the image (not a JPEG or PNG file)") from None
        except _UNREADABLE as exc:
            raise InputError(f"{path}: cannot read the image ({_one_line(exc)})") from None


def _check_header(path: Path, image) -> None:
    if image.format not in _FORMATS_SEEN:
        raise InputError(f"{path}: cannot read the image ({image.format} is not JPEG or PNG)")
    w, h = image.size
    if w < 1 or h < 1:
        raise InputError(f"{path}: cannot read the image ({w} x {h} pixels)")
    if w * h > MAX_PIXELS:
        raise InputError(_too_large(path, f"{w} x {h}"))
    if image.mode not in _CONVERTED_MODES | _WIDE_MODES:
        raise InputError(f"{path}: cannot read the image (unsupported pixel mode {image.mode})")


def _too_large(path: Path, size: str = "") -> str:
    return (f"{path}: the image{f' ({size} pixels)' if size else ''} is larger than the limit of "
            f"{MAX_PIXELS:,} pixels")


def _converted(image, color: str):
    """``image`` decoded and converted to ``color``, 16-bit grey scaled to 8 bits first."""
    return (_eight_bit(image) if image.mode in _WIDE_MODES else image).convert(color)


def _eight_bit(image):
    """A 16-bit grey image as 8-bit ``L``: ``round(value / 257)``, so 0..65535 maps onto 0..255 exactly."""
    from PIL import Image

    values = np.asarray(image)  # uint16 (I;16*), or int32 (I, from older Pillow)
    if values.size and (values.min() < 0 or values.max() > 65535):
        raise ValueError(f"16-bit grey values outside 0..65535 in mode {image.mode}")
    scaled = values.astype(np.uint32)
    scaled *= 2  # round(v / 257) == (2 v + 257) // 514, in integers
    scaled += 257
    scaled //= 514
    return Image.fromarray(scaled.astype(np.uint8))


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def augmented_pixels(paths, resolution: tuple[int, int], preprocessing: Preprocessing, count: int, seed: int = 0,
                     scale: tuple[float, float] = (0.25, 1.0), ratio: tuple[float, float] = (3 / 4, 4 / 3),
                     progress=None) -> np.ndarray:
    """uint8 (count, 3, H, W): seeded random resized crops of the images (torchvision's ``RandomResizedCrop``
    sampling: an area fraction in ``scale`` and an aspect ratio in ``ratio``, log-uniform, resized bicubic to
    H x W), each flipped horizontally with probability 1/2. The images are taken in turn; ``progress`` gets
    ``(done, count)`` before each crop."""
    from PIL import Image

    h, w = resolution
    rng = np.random.default_rng(seed)
    out = np.empty((count, 3, h, w), dtype=np.uint8)
    decoded = {}
    for i in range(count):
        if progress is not None:
            progress(i, count)
        path = Path(paths[i % len(paths)])
        if path not in decoded:
            with _open_image(path) as image:
                try:
                    decoded[path] = _converted(image, preprocessing.color)
                except _UNREADABLE as exc:
                    raise InputError(f"{path}: cannot read the image ({_one_line(exc)})") from None
        image = decoded[path]
        iw, ih = image.size
        box = (0, 0, iw, ih)
        for _ in range(10):
            area = iw * ih * rng.uniform(*scale)
            aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
            cw, ch = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
            if 0 < cw <= iw and 0 < ch <= ih:
                left, top = int(rng.integers(0, iw - cw + 1)), int(rng.integers(0, ih - ch + 1))
                box = (left, top, left + cw, top + ch)
                break
        crop = image.resize((w, h), Image.Resampling.BICUBIC, box=box)
        if rng.random() < 0.5:
            crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        out[i] = np.asarray(crop, dtype=np.uint8).transpose(2, 0, 1)
    return out
