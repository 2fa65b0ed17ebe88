"""Input images: paths confined to the allowed roots, base64 decoding, size limits and safe image decoding."""

from __future__ import annotations

import base64
import io
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

from imageforge.errors import InvalidImage, InvalidRequest, PathForbidden, PayloadTooLarge
from imageforge.inputs import ImageLimits, InputPaths, decode_base64, decode_image, read_file

LIMITS = ImageLimits()


def encoded(size: tuple[int, int] = (16, 12), *, format: str = "PNG", mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, 128 if mode == "L" else (200, 40, 40)).save(buffer, format=format)
    return buffer.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A PNG header claiming `width`x`height` pixels, with no pixel data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


@pytest.fixture
def roots(tmp_path: Path) -> tuple[Path, Path]:
    """An output folder and an extra input folder under a project root, each holding one image."""
    outputs, photos = tmp_path / "outputs", tmp_path / "photos"
    for folder in (outputs, photos):
        folder.mkdir()
        (folder / "a.png").write_bytes(encoded())
    (tmp_path / "secret.png").write_bytes(encoded())
    return outputs, photos


@pytest.fixture
def paths(tmp_path: Path, roots: tuple[Path, Path]) -> InputPaths:
    return InputPaths(tmp_path, list(roots))


# -- InputPaths -------------------------------------------------------------------------------------------


def test_relative_path_resolves_against_the_root(paths: InputPaths, tmp_path: Path) -> None:
    assert paths.resolve("outputs/a.png", field="f") == tmp_path / "outputs" / "a.png"


def test_absolute_path_inside_an_allowed_root_is_accepted(paths: InputPaths, roots: tuple[Path, Path]) -> None:
    assert paths.resolve(str(roots[1] / "a.png"), field="f") == roots[1] / "a.png"


def test_path_outside_every_root_is_forbidden(paths: InputPaths, tmp_path: Path) -> None:
    with pytest.raises(PathForbidden, match="outside the folders this server may read") as raised:
        paths.resolve(str(tmp_path / "secret.png"), field="init_image_path")

    assert "init_image_path" in raised.value.message
    assert "IMAGEFORGE_INPUT_DIRS" in raised.value.hint


def test_dotdot_escape_is_forbidden(paths: InputPaths) -> None:
    with pytest.raises(PathForbidden):
        paths.resolve("outputs/../secret.png", field="f")


def test_sibling_folder_sharing_a_root_prefix_is_forbidden(paths: InputPaths, tmp_path: Path) -> None:
    sibling = tmp_path / "outputs-private"
    sibling.mkdir()
    (sibling / "a.png").write_bytes(encoded())

    with pytest.raises(PathForbidden):
        paths.resolve(str(sibling / "a.png"), field="f")


def test_symlink_pointing_outside_is_forbidden(paths: InputPaths, tmp_path: Path) -> None:
    (tmp_path / "outputs" / "link.png").symlink_to(tmp_path / "secret.png")

    with pytest.raises(PathForbidden):
        paths.resolve("outputs/link.png", field="f")


def test_symlink_between_allowed_roots_is_accepted(paths: InputPaths, tmp_path: Path) -> None:
    (tmp_path / "outputs" / "link.png").symlink_to(tmp_path / "photos" / "a.png")

    assert paths.resolve("outputs/link.png", field="f") == tmp_path / "photos" / "a.png"


def test_missing_file_inside_a_root_is_an_invalid_request(paths: InputPaths) -> None:
    with pytest.raises(InvalidRequest, match=r"'outputs/b\.png' does not exist") as raised:
        paths.resolve("outputs/b.png", field="f")

    assert not isinstance(raised.value, PathForbidden)


def test_folder_inside_a_root_is_not_a_file(paths: InputPaths) -> None:
    with pytest.raises(InvalidRequest, match="is not a file"):
        paths.resolve("outputs", field="f")


@pytest.mark.parametrize(
    "raw",
    ["outputs/a\x00.png", "outputs/" + "n" * 300, "outputs/" + "d/" * 3000],
    ids=["nul-byte", "name-too-long", "path-too-long"],
)
def test_unusable_path_string_is_an_invalid_request(paths: InputPaths, raw: str) -> None:
    with pytest.raises(InvalidRequest) as raised:
        paths.resolve(raw, field="init_image_path")

    assert "init_image_path" in raised.value.message


@pytest.mark.parametrize("user", ["root", "no-such-user-imageforge"])
def test_tilde_user_is_a_plain_name_never_a_home_folder(paths: InputPaths, tmp_path: Path, user: str) -> None:
    (tmp_path / "outputs" / f"~{user}").mkdir()
    (tmp_path / "outputs" / f"~{user}" / "a.png").write_bytes(encoded())

    assert paths.resolve(f"outputs/~{user}/a.png", field="f") == tmp_path / "outputs" / f"~{user}" / "a.png"
    with pytest.raises(PathForbidden):
        paths.resolve(f"~{user}/a.png", field="f")


def test_tilde_alone_is_the_server_users_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "a.png").write_bytes(encoded())

    assert InputPaths(tmp_path, [tmp_path]).resolve("~/a.png", field="f") == tmp_path / "a.png"


# -- decode_base64 and read_file --------------------------------------------------------------------------


def test_base64_decodes_plain_and_data_url_forms() -> None:
    raw = encoded()
    text = base64.b64encode(raw).decode()

    assert decode_base64(text, field="f", limits=LIMITS) == raw
    assert decode_base64(f"data:image/png;base64,{text}", field="f", limits=LIMITS) == raw


def test_line_wrapped_base64_is_accepted() -> None:
    raw = encoded((64, 64))
    wrapped = base64.encodebytes(raw).decode()  # 76 columns, as the `base64` tool writes it
    assert "\n" in wrapped.strip()

    assert decode_base64(wrapped, field="f", limits=LIMITS) == raw


@pytest.mark.parametrize("text", ["not base64!", "abc", "YWJj\u00e9", "data:image/png;base64,%%%"])
def test_malformed_base64_is_an_invalid_image(text: str) -> None:
    with pytest.raises(InvalidImage, match="f is not valid base64"):
        decode_base64(text, field="f", limits=LIMITS)


def test_base64_over_the_byte_limit_is_too_large_before_decoding() -> None:
    limits = ImageLimits(max_bytes=256 * 1024)

    with pytest.raises(PayloadTooLarge, match=r"f is larger than 0\.25 MiB"):
        decode_base64("A" * 400_000, field="f", limits=limits)


def test_file_over_the_byte_limit_is_too_large(tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    path.write_bytes(bytes(2048))

    with pytest.raises(PayloadTooLarge, match="larger than"):
        read_file(path, field="f", limits=ImageLimits(max_bytes=2047))
    assert read_file(path, field="f", limits=ImageLimits(max_bytes=2048)) == bytes(2048)


def test_file_that_cannot_be_read_is_an_invalid_request(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest, match="could not be read"):
        read_file(tmp_path / "gone.png", field="f", limits=LIMITS)


# -- decode_image -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("format", ["PNG", "JPEG", "WEBP"])
def test_png_jpeg_and_webp_decode_to_the_requested_mode(format: str) -> None:
    image = decode_image(encoded((16, 12), format=format), field="f", limits=LIMITS, mode="RGB")

    assert (image.size, image.mode) == ((16, 12), "RGB")


def test_a_photo_with_exif_orientation_is_turned_upright() -> None:
    # A camera held upright writes a landscape sensor image and orientation 6: "turn 90 degrees clockwise".
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    Image.new("RGB", (48, 32), (200, 40, 40)).save(buffer, format="JPEG", exif=exif)

    image = decode_image(buffer.getvalue(), field="f", limits=LIMITS)

    assert image.size == (32, 48)


def test_mask_decodes_to_greyscale() -> None:
    assert decode_image(encoded(mode="RGB"), field="f", limits=LIMITS, mode="L").mode == "L"


@pytest.mark.parametrize("format", ["TIFF", "BMP", "GIF", "ICO"])
def test_other_formats_are_invalid_images(format: str) -> None:
    with pytest.raises(InvalidImage, match="could not be decoded") as raised:
        decode_image(encoded(format=format), field="f", limits=LIMITS)

    assert "PNG, JPEG or WebP" in raised.value.hint


@pytest.mark.parametrize(
    "data",
    [b"", b"garbage" * 20, encoded()[:40], b"\x89PNG\r\n\x1a\n" + b"\x00" * 40],
    ids=["empty", "text", "cut", "bad-chunk"],
)
def test_undecodable_bytes_are_invalid_images(data: bytes) -> None:
    with pytest.raises(InvalidImage):
        decode_image(data, field="f", limits=LIMITS)


def test_image_over_the_pixel_limit_is_too_large_naming_its_size() -> None:
    with pytest.raises(PayloadTooLarge, match="f is 64x65 pixels, over the limit of 4096 pixels"):
        decode_image(encoded((64, 65)), field="f", limits=ImageLimits(max_pixels=64 * 64))


@pytest.mark.parametrize("side", [5_000, 12_000, 50_000, 2**31 - 1])
def test_decompression_bomb_is_too_large_without_being_decoded(side: int) -> None:
    bomb = png_claiming(side, side)
    assert len(bomb) < 100

    with pytest.raises(PayloadTooLarge, match="pixels") as raised:
        decode_image(bomb, field="f", limits=LIMITS)

    assert "Downscale" in raised.value.hint
