"""`type: image` through the app: JPEG, PNG and WebP decoded natively, equal
to Pillow's decode of the same bytes, in every mode and data type, wherever
a tensor is accepted; and every error with its exact message."""

from __future__ import annotations

import base64
import io
import json
import struct
import zlib

import falcon.testing
import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from torch_serving import Config, DecodeError, create_app, decode

ECHO = "servable_identifier=echo.pt"


@pytest.fixture(scope="module")
def client(model_root) -> falcon.testing.TestClient:
    return falcon.testing.TestClient(create_app(Config(model_root=model_root)))


def picture(mode: str, size=(13, 7)) -> Image.Image:
    """A deterministic picture with every channel varying, in a Pillow ``mode``."""
    width, height = size
    y, x = np.mgrid[0:height, 0:width]
    rgba = np.stack([x * 19 % 256, y * 37 % 256, (x * y * 7 + 11) % 256, (x + y) * 23 % 256], axis=-1)
    image = Image.fromarray(rgba.astype(np.uint8), "RGBA")
    # A palette from RGBA would carry transparency; the palette test adds its own.
    return image.convert("RGB").convert(mode) if mode == "P" else image.convert(mode)


def encoded(image: Image.Image, format: str, **options) -> bytes:
    out = io.BytesIO()
    image.save(out, format, **options)
    return out.getvalue()


def image_value(data: bytes, **fields) -> dict:
    return {"type": "image", "value": base64.b64encode(data).decode(), **fields}


def served(client, *args: dict, query: str = ECHO):
    return client.simulate_post("/serve", query_string=query, body=json.dumps(list(args)))


def tensor_of(result_value: dict) -> torch.Tensor:
    dtype = {"uint8": torch.uint8, "float32": torch.float32}[result_value["data_type"]]
    return torch.tensor(result_value["value"], dtype=dtype).reshape(result_value["shape"])


def pillow_chw(image: Image.Image, mode: str) -> torch.Tensor:
    array = np.asarray(image.convert(mode))
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


def decoded(client, data: bytes, **fields) -> torch.Tensor:
    result = served(client, image_value(data, **fields))
    assert result.status_code == 200, result.text
    return tensor_of(result.json["result"])


# Pillow mode of the source, the file format, and what UNCHANGED gives (as a Pillow mode).
SOURCES = [
    ("RGB", "PNG", "RGB"),
    ("L", "PNG", "L"),
    ("RGBA", "PNG", "RGBA"),
    ("LA", "PNG", "LA"),
    ("P", "PNG", "RGB"),
    ("RGB", "WEBP", "RGB"),
    ("RGBA", "WEBP", "RGBA"),
]


@pytest.mark.parametrize(("source", "format", "unchanged"), SOURCES, ids=[f"{f}-{s}" for s, f, _ in SOURCES])
@pytest.mark.parametrize("mode", ["RGB", "GRAY", "RGBA", "UNCHANGED"])
def test_lossless_images_equal_pillows_decode(client, source, format, unchanged, mode):
    options = {"lossless": True} if format == "WEBP" else {}
    data = encoded(picture(source), format, **options)
    reference = Image.open(io.BytesIO(data))
    expected_mode = {"RGB": "RGB", "GRAY": "L", "RGBA": "RGBA", "UNCHANGED": unchanged}[mode]
    assert torch.equal(decoded(client, data, mode=mode), pillow_chw(reference, expected_mode))


def test_a_palette_with_a_transparent_colour_has_alpha(client):
    image = picture("P")
    data = encoded(image, "PNG", transparency=3)
    reference = Image.open(io.BytesIO(data)).convert("RGBA")
    assert torch.equal(decoded(client, data, mode="UNCHANGED"), pillow_chw(reference, "RGBA"))
    assert torch.equal(decoded(client, data), pillow_chw(reference, "RGB"))


def png_of_16_bit_rgb(samples: np.ndarray) -> bytes:
    """A PNG of 16-bit RGB ``samples`` [H, W, 3], written by hand: Pillow cannot write one."""
    height, width, _ = samples.shape
    rows = b"".join(b"\0" + samples[y].astype(">u2").tobytes() for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(rows))
        + png_chunk(b"IEND", b"")
    )


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def test_a_16_bit_png_keeps_the_high_byte_as_pillow_does(client):
    samples = (np.arange(5 * 7 * 3).reshape(5, 7, 3) * 1553 % 65536).astype(np.uint16)
    data = png_of_16_bit_rgb(samples)
    reference = Image.open(io.BytesIO(data))
    assert reference.mode == "RGB"
    assert torch.equal(decoded(client, data), pillow_chw(reference, "RGB"))
    assert torch.equal(decoded(client, data), torch.from_numpy((samples >> 8).astype(np.uint8)).permute(2, 0, 1))


@pytest.mark.parametrize("source", ["RGB", "L"])
@pytest.mark.parametrize("mode", ["RGB", "GRAY", "RGBA", "UNCHANGED"])
def test_jpeg_equals_pillows_decode_of_the_same_bytes(client, source, mode):
    # Both are libjpeg-turbo with the accurate DCT and fancy upsampling.
    data = encoded(picture(source, (40, 24)), "JPEG", quality=90)
    reference = Image.open(io.BytesIO(data))
    expected_mode = {"RGB": "RGB", "GRAY": "L", "RGBA": "RGBA", "UNCHANGED": source}[mode]
    assert torch.equal(decoded(client, data, mode=mode), pillow_chw(reference, expected_mode))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_as_pillow_does(client, orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encoded(picture("RGB", (9, 5)), "JPEG", quality=95, exif=exif.tobytes())
    reference = ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
    assert torch.equal(decoded(client, data), pillow_chw(reference, "RGB"))


@pytest.mark.parametrize("tiff", [b"II*\x00\x08\x00\x00\x00\x05\x00", b"MM\x00*\x00\x00\xff\xff", b"II"])
def test_a_malformed_exif_segment_is_ignored(client, tiff):
    data = encoded(picture("RGB", (9, 5)), "JPEG", quality=95)
    segment = b"Exif\x00\x00" + tiff
    with_exif = data[:2] + b"\xff\xe1" + struct.pack(">H", len(segment) + 2) + segment + data[2:]
    assert torch.equal(decoded(client, with_exif), pillow_chw(Image.open(io.BytesIO(data)), "RGB"))


def test_float32_is_scaled_to_the_unit_interval(client):
    data = encoded(picture("RGB"), "PNG")
    pixels = decoded(client, data, data_type="float32")
    assert pixels.dtype == torch.float32
    assert torch.equal(pixels, decoded(client, data).float() / 255)


def test_images_wherever_a_tensor_is_accepted(client):
    png = encoded(picture("RGB"), "PNG")
    expected = pillow_chw(Image.open(io.BytesIO(png)), "RGB")
    in_dict = {"type": "tensor_dict", "value": {"a": image_value(png, data_type="float32")}}
    doubled = served(client, in_dict, query="servable_identifier=dict_output.pt").json["result"]["value"]["a_doubled"]
    assert torch.equal(tensor_of(doubled), expected.float() / 255 * 2)
    # A positional `list` of `tensor_list`s of images: List[List[Tensor]].
    nested = {"type": "list", "value": [{"type": "tensor_list", "value": [image_value(png), image_value(png)]}]}
    result = served(client, nested, query="servable_identifier=nested_groups.pt")
    assert result.status_code == 200, result.text
    assert result.json["result"]["value"] == [expected.float().add(1).sum().item() * 2]


@pytest.mark.parametrize(
    "text",
    [
        lambda data: "data:image/png;base64," + base64.b64encode(data).decode(),
        lambda data: base64.urlsafe_b64encode(data).decode().rstrip("="),
        lambda data: base64.encodebytes(data).decode().replace("\n", "\r\n"),
    ],
    ids=["data-url", "url-safe-unpadded", "mime-line-breaks"],
)
def test_base64_forms(client, text):
    data = encoded(picture("RGB", (31, 17)), "PNG")
    result = served(client, {"type": "image", "value": text(data)})
    assert torch.equal(tensor_of(result.json["result"]), pillow_chw(Image.open(io.BytesIO(data)), "RGB"))


def png_declaring(width: int, height: int) -> bytes:
    """A small PNG whose header declares ``width`` x ``height`` RGB pixels."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 1000)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


PNG = encoded(picture("RGB"), "PNG")
JPEG = encoded(picture("RGB", (40, 24)), "JPEG", quality=90)
WEBP = encoded(picture("RGB"), "WEBP", lossless=True)
GIF = encoded(picture("RGB"), "GIF")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"type": "image", "value": "iVBOR w0K"}, "invalid base64: ' ' at offset 5 at body[0].value"),
        ({"type": "image", "value": "iVBO=w0K"}, "invalid base64: 'w' at offset 5, after the padding at body[0].value"),
        (
            {"type": "image", "value": "iVBORw0KG"},
            "invalid base64: its last group has a single character at body[0].value",
        ),
        (
            {"type": "image", "value": "data:image/png,iVBORw0KGgo="},
            "a data URL must be base64-encoded: data:image/...;base64,... at body[0].value",
        ),
        (image_value(GIF), "unsupported image format GIF (expected JPEG, PNG or WebP) at body[0].value"),
        (
            image_value(b"hello, world"),
            "unrecognised image format: the data starts with 68 65 6C 6C 6F 2C 20 77 (expected JPEG, PNG or WebP)"
            " at body[0].value",
        ),
        (image_value(b""), "the image data is empty at body[0].value"),
        (image_value(PNG[:60]), "corrupt or truncated PNG: the file is truncated at body[0].value"),
        (image_value(PNG[:30]), "corrupt PNG: the file is truncated at body[0].value"),
        (image_value(WEBP[:40]), "corrupt or truncated WebP at body[0].value"),
        (
            image_value(png_declaring(50_000, 50_000)),
            "PNG image of 50000 x 50000 = 2500000000 pixels exceeds the limit of 89478485 pixels at body[0].value",
        ),
        (
            image_value(PNG, mode="CMYK"),
            'unknown mode "CMYK" (expected one of RGB, GRAY, RGBA, UNCHANGED) at body[0].mode',
        ),
        (
            image_value(PNG, data_type="int64"),
            'an image\'s data_type must be uint8 or float32, found "int64" at body[0].data_type',
        ),
        ({"type": "tensor", "value": [1], "mode": "RGB"}, 'key "mode" is not allowed for type tensor at body[0]'),
        ({"type": "image", "value": 5}, "expected a string, found 5 at body[0].value"),
        (
            {"type": "tensor_list", "value": [{"type": "scalar", "value": 1}]},
            'expected type "tensor" or "image", found string "scalar" at body[0].value[0].type',
        ),
    ],
)
def test_image_errors(client, value, message):
    result = served(client, value)
    assert result.status_code == 400
    assert result.json["description"] == "Invalid request body"
    assert result.json["detail"] == message


def test_a_truncated_jpeg_is_refused(client):
    result = served(client, image_value(JPEG[: len(JPEG) // 2]))
    assert result.status_code == 400
    assert result.json["detail"].startswith("corrupt or truncated JPEG: ")


def test_the_pixel_limit_is_a_setting(model_root):
    limited = falcon.testing.TestClient(create_app(Config(model_root=model_root, max_image_pixels=90)))
    result = served(limited, image_value(PNG))
    assert result.json["detail"] == "PNG image of 13 x 7 = 91 pixels exceeds the limit of 90 pixels at body[0].value"
    with pytest.raises(DecodeError) as info:
        decode(json.dumps(image_value(JPEG)).encode(), max_image_pixels=959)
    assert str(info.value) == "JPEG image of 40 x 24 = 960 pixels exceeds the limit of 959 pixels at body.value"
    (pixels,) = decode(json.dumps(image_value(JPEG)).encode(), max_image_pixels=960)
    assert pixels.shape == (3, 24, 40)
