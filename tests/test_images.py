"""Image reading under hostile input: 16-bit PNGs are scaled rather than clipped to white, images whose header
claims too many pixels are refused before anything is decoded, a bad file in an image folder is found when the
folder is listed (before any model work), and nothing but a regular file is opened."""

from __future__ import annotations

import os
import struct
import threading
import time
import warnings
import zlib

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from shvit_edge import images
from shvit_edge.cli import cli
from shvit_edge.errors import InputError
from shvit_edge.images import MAX_PIXELS, check_image, list_images, load_pixels
from shvit_edge.manifest import Preprocessing


def preprocessing(size: int) -> Preprocessing:
    """For a size x size image at resolution (size, size): no resize and no crop, so pixels compare exactly."""
    return Preprocessing(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), scale=1 / 255, resize=size)


def write_png(path, width: int, height: int, depth: int, colour: int, rows: bytes = b""):
    """A PNG written chunk by chunk (Pillow writes no 16-bit colour PNG, and a bomb needs a header that lies)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows))
                     + chunk(b"IEND", b""))
    return path


def bomb(folder, width: int = 30000, height: int = 30000):
    """A 1-bit PNG whose header claims width x height pixels (900 MP by default) in a few dozen bytes."""
    folder.mkdir(exist_ok=True)
    return write_png(folder / "bomb.png", width, height, 1, 0)


def expected_8_bit(values: np.ndarray) -> np.ndarray:
    return np.round(values / 257).astype(np.uint8)


def test_a_16_bit_grey_png_is_scaled_to_8_bits_not_clipped_to_white(tmp_path):
    values = np.linspace(0, 65535, 64 * 64).round().astype(np.uint16).reshape(64, 64)
    Image.fromarray(values).save(tmp_path / "grey16.png")
    with Image.open(tmp_path / "grey16.png") as image:
        assert image.mode.startswith("I")  # really a 16-bit PNG
    out = load_pixels([tmp_path / "grey16.png"], (64, 64), preprocessing(64))
    for channel in out[0]:
        np.testing.assert_array_equal(channel, expected_8_bit(values))


def test_an_i_mode_image_from_older_pillow_is_scaled_too():
    """Older Pillow opens a 16-bit grey PNG as ``I`` (int32); the same scaling applies."""
    values = np.array([[0, 128, 129, 32896, 65407, 65535]], dtype=np.int32)
    image = Image.fromarray(values)
    assert image.mode == "I"
    np.testing.assert_array_equal(np.asarray(images._converted(image, "RGB"))[..., 0], expected_8_bit(values))
    with pytest.raises(ValueError, match="outside 0..65535"):
        images._converted(Image.fromarray(np.array([[70000]], dtype=np.int32)), "RGB")


def test_a_16_bit_rgb_png_reads_within_one_level_of_value_over_257(tmp_path):
    """Pillow opens it as 8-bit RGB from each sample's high byte: within 1 of ``value / 257``, never white."""
    rng = np.random.default_rng(0)
    values = rng.integers(0, 65536, (32, 32, 3)).astype(np.uint16)
    rows = b"".join(b"\0" + row.astype(">u2").tobytes() for row in values)
    write_png(tmp_path / "rgb16.png", 32, 32, 16, 2, rows)
    out = load_pixels([tmp_path / "rgb16.png"], (32, 32), preprocessing(32))
    diff = out[0].transpose(1, 2, 0).astype(int) - expected_8_bit(values).astype(int)
    assert np.abs(diff).max() <= 1 and out.min() < 10


@pytest.mark.parametrize("mode,fmt", [("1", "PNG"), ("L", "PNG"), ("LA", "PNG"), ("P", "PNG"), ("RGB", "PNG"),
                                      ("RGBA", "PNG"), ("L", "JPEG"), ("RGB", "JPEG"), ("CMYK", "JPEG")])
def test_every_mode_pillow_writes_as_png_or_jpeg_reads_as_convert_does(tmp_path, mode, fmt):
    rgb = Image.fromarray(np.random.default_rng(1).integers(0, 256, (16, 16, 3), dtype=np.uint8))
    path = tmp_path / f"image.{fmt.lower()}"
    (rgb.convert("RGBA") if mode == "LA" else rgb).convert(mode).save(path, fmt)
    with Image.open(path) as image:
        expected = np.asarray(image.convert("RGB")).transpose(2, 0, 1)
    check_image(path)
    np.testing.assert_array_equal(load_pixels([path], (16, 16), preprocessing(16))[0], expected)


def test_an_unsupported_mode_is_an_input_error_naming_file_and_mode(tmp_path, monkeypatch):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    monkeypatch.setattr(images, "_CONVERTED_MODES", images._CONVERTED_MODES - {"RGB"})
    with pytest.raises(InputError, match=r"a\.png: cannot read the image \(unsupported pixel mode RGB\)"):
        load_pixels([tmp_path / "a.png"], (8, 8), preprocessing(8))


@pytest.mark.parametrize("width,height", [(30000, 30000), (10000, 10000), (8192, 8193)],
                         ids=["past-pillow-error", "past-pillow-warning", "one-row-past-the-limit"])
def test_an_image_with_too_many_pixels_is_refused_from_its_header(tmp_path, width, height):
    path = bomb(tmp_path / "bombs", width, height)
    filters = list(warnings.filters)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for read in (lambda: list_images(path.parent), lambda: load_pixels([path], (64, 64), preprocessing(64))):
            with pytest.raises(InputError, match="bomb.png: the image .*is larger than the limit") as error:
                read()
            assert "\n" not in str(error.value)
    assert not caught  # Pillow's warning became the refusal, not a warning
    assert warnings.filters == filters  # and no filter outlives the call


def test_an_image_of_exactly_the_limit_passes_the_header_check(tmp_path):
    assert MAX_PIXELS == 8192 * 8192
    path = bomb(tmp_path / "big", 8192, 8192)
    assert list_images(path.parent) == [path]


def test_verify_refuses_a_bomb_in_one_line(tmp_path):
    """verify lists --images before it looks for artifacts: the bomb is what it reports."""
    folder = bomb(tmp_path / "images").parent
    result = CliRunner().invoke(cli, ["verify", str(tmp_path / "nonexistent"), "--images", str(folder)])
    assert result.exit_code == 2, result.output
    assert "bomb.png: the image is larger than the limit" in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_quantize_report_refuses_a_bomb_before_any_model_work(tmp_path):
    folder = bomb(tmp_path / "calibration").parent
    start = time.monotonic()
    result = CliRunner().invoke(cli, ["quantize-report", "--target", "onnx", "--variant", "shvit_s1", "--quantize",
                                      "int8", "--calibration", str(folder), "--no-validate"])
    elapsed = time.monotonic() - start
    assert result.exit_code == 2, result.output
    assert "--calibration" in result.output and "bomb.png: the image is larger than the limit" in result.output
    assert "Traceback" not in result.output and elapsed < 10, elapsed


def test_list_images_refuses_a_folder_whose_first_image_is_not_one(tmp_path):
    (tmp_path / "x.jpg").write_text("not a JPEG at all")
    Image.new("RGB", (8, 8)).save(tmp_path / "y.png")
    with pytest.raises(InputError, match=r"--calibration .*x\.jpg: cannot read the image") as error:
        list_images(tmp_path, "--calibration")
    assert "\n" not in str(error.value)


def test_list_images_checks_only_the_first_limit_images(tmp_path):
    """Calibration uses the first N images by name: a bad one after them does not stop it."""
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    (tmp_path / "b.jpg").write_text("not a JPEG")
    assert list_images(tmp_path, limit=1) == [tmp_path / "a.png"]
    with pytest.raises(InputError, match="b.jpg"):
        list_images(tmp_path, limit=2)


def test_a_png_name_on_another_format_is_refused(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png", "GIF")
    with pytest.raises(InputError, match=r"a\.png: cannot read the image \(not a JPEG or PNG file\)"):
        list_images(tmp_path)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_load_pixels_refuses_a_fifo_without_blocking(tmp_path):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    with pytest.raises(InputError, match="no JPEG or PNG images"):  # list_images never lists it
        list_images(tmp_path)
    outcome = []

    def read():
        try:
            load_pixels([fifo], (8, 8), preprocessing(8))
        except InputError as exc:
            outcome.append(str(exc))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout=10)
    if reader.is_alive():  # blocked in open(): a writer releases it before the test fails
        os.close(os.open(fifo, os.O_WRONLY))
        pytest.fail("load_pixels blocked on a FIFO")
    assert outcome and "pipe.png: cannot read the image (not a regular file)" in outcome[0]
