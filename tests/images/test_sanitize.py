"""The hostile corpus against the decoder itself (no bot, no loop)."""

from __future__ import annotations

import io
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import ExifTags, Image

from plugins.images.sanitize import ImageRejected, Limits, header_dimensions, sanitize, sniff_format
from harness import image_corpus as corpus

LIMITS = Limits()


def reopen(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        pytest.param(corpus.decompression_bomb(), "decompression bomb", id="decompression bomb"),
        pytest.param(corpus.truncated_png(), "damaged or truncated", id="truncated PNG"),
        pytest.param(corpus.NOT_AN_IMAGE, "not an image I accept", id="text named .png"),
        pytest.param(corpus.png_with_header(0, 0), "no pixels (0×0)", id="0x0 PNG"),
        pytest.param(corpus.png_with_header(1, 0), "no pixels (1×0)", id="1x0 PNG"),
        pytest.param(corpus.png_with_header(100_000, 100_000), "10,000,000,000 pixels", id="huge header"),
        pytest.param(b"", "empty", id="empty file"),
        pytest.param(b"\x89PNG\r\n\x1a\n", "header is damaged", id="bare PNG signature"),
    ],
)
def test_hostile_files_are_refused_with_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(ImageRejected, match=re.escape(reason)):
        sanitize(data, LIMITS)


def test_bomb_is_small_on_disk_and_refused_before_decoding() -> None:
    bomb = corpus.decompression_bomb()
    assert len(bomb) < 100_000  # tiny file, 50 million pixels
    assert header_dimensions(bomb, "PNG") == (10_000, 5_000)


def test_pillow_guard_catches_what_a_lax_limit_lets_through() -> None:
    # With our own limit set absurdly high, Pillow's MAX_IMAGE_PIXELS
    # (DecompressionBombError) is the second line of defence.
    lax = Limits(max_pixels=10**12)
    with pytest.raises(ImageRejected, match="too large to decode safely"):
        sanitize(corpus.png_with_header(20_000, 20_000), lax)


def test_byte_limit() -> None:
    with pytest.raises(ImageRejected, match="limit is 0.0 MiB|the limit is"):
        sanitize(corpus.noise_png(64, 64), Limits(max_bytes=1000))


def test_format_allowlist_is_by_content() -> None:
    with pytest.raises(ImageRejected, match="GIF images are not accepted"):
        sanitize(corpus.animated_gif(), Limits(allowed_formats=("PNG", "JPEG")))
    bmp = corpus.encode(Image.new("RGB", (8, 8)), "BMP")
    with pytest.raises(ImageRejected, match="not an image I accept"):
        sanitize(bmp, LIMITS)


def test_jpeg_gps_is_gone_and_orientation_applied() -> None:
    original = corpus.jpeg_with_gps()
    assert reopen(original).getexif().get_ifd(ExifTags.IFD.GPSInfo)  # the test file does carry GPS
    clean = sanitize(original, LIMITS)
    stored = reopen(clean.data)
    assert stored.format == "JPEG"
    assert not stored.getexif()  # no EXIF at all, so no GPS
    assert "exif" not in stored.info and "comment" not in stored.info and "icc_profile" not in stored.info
    assert b"ExamplePhone" not in clean.data and b"taken at home" not in clean.data
    # Orientation 6: the 40x20 picture is shown upright as 20x40, red half on top.
    assert (clean.width, clean.height) == (20, 40) == stored.size
    top, bottom = stored.convert("RGB").getpixel((10, 5)), stored.convert("RGB").getpixel((10, 35))
    assert top[0] > 200 and top[2] < 60 and bottom[2] > 200
    assert "EXIF orientation applied" in clean.describe() and "metadata removed" in clean.describe()


def test_png_text_xmp_and_icc_are_stripped() -> None:
    original = corpus.png_with_metadata()
    assert b"my home address" in original
    clean = sanitize(original, LIMITS)
    stored = reopen(clean.data)
    assert not {"icc_profile", "Comment", "XML:com.adobe.xmp"} & set(stored.info)
    for marker in (b"my home address", b"xmpmeta", b"iCCP", b"tEXt", b"iTXt"):
        assert marker not in clean.data


def test_animated_gif_keeps_the_first_frame() -> None:
    clean = sanitize(corpus.animated_gif(("red", "lime", "blue")), LIMITS)
    stored = reopen(clean.data)
    assert stored.format == "PNG" and getattr(stored, "n_frames", 1) == 1
    assert stored.convert("RGB").getpixel((5, 5)) == (255, 0, 0)
    assert "first of 3 frames" in clean.describe()


def test_webp_is_accepted_and_reencoded() -> None:
    clean = sanitize(corpus.webp(50, 40), LIMITS)
    assert clean.source_format == "WEBP" and clean.format == "PNG" and (clean.width, clean.height) == (50, 40)
    assert "mostly orange" in clean.describe()


def test_reencoded_to_fit_the_upload_limit() -> None:
    big = corpus.noise_png(700, 700)  # ~1.4 MB of incompressible pixels
    clean = sanitize(big, Limits(upload_limit=300_000))
    assert len(clean.data) <= 300_000
    assert reopen(clean.data).size == (clean.width, clean.height)
    assert "upload limit" in clean.describe()


def test_thumbnail_is_small() -> None:
    clean = sanitize(corpus.plain_png(1000, 500), LIMITS)
    thumb = reopen(clean.thumbnail)
    assert thumb.size == (256, 128)


@pytest.mark.parametrize(
    ("data", "fmt", "size"),
    [
        (corpus.plain_png(31, 17), "PNG", (31, 17)),
        (corpus.encode(Image.new("RGB", (33, 19)), "JPEG"), "JPEG", (33, 19)),
        (corpus.encode(Image.new("RGB", (35, 21)), "JPEG", progressive=True), "JPEG", (35, 21)),
        (corpus.animated_gif(), "GIF", (32, 32)),
        (corpus.webp(50, 40), "WEBP", (50, 40)),
        (corpus.encode(Image.new("RGB", (37, 23)), "WEBP", quality=50), "WEBP", (37, 23)),
        (corpus.encode(Image.new("RGBA", (39, 25)), "WEBP", quality=50), "WEBP", (39, 25)),
    ],
)
def test_header_dimensions_match_pillow(data: bytes, fmt: str, size: tuple[int, int]) -> None:
    assert sniff_format(data) == fmt
    assert header_dimensions(data, fmt) == size == Image.open(io.BytesIO(data)).size


_SAMPLES = [corpus.plain_png(40, 30), corpus.encode(Image.new("RGB", (40, 30), "red"), "JPEG"), corpus.animated_gif(),
            corpus.webp(20, 20)]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(_SAMPLES), st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), max_size=8),
       st.integers(0, 500))
def test_mangled_files_are_refused_or_cleaned_never_crash(sample: bytes, flips: list[tuple[int, int]],
                                                         cut: int) -> None:
    data = bytearray(sample)
    for position, value in flips:
        if position < len(data):
            data[position] = value
    if cut:
        data = data[: max(1, len(data) - cut)]
    try:
        clean = sanitize(bytes(data), Limits(max_pixels=1_000_000))
    except ImageRejected as rejected:
        assert str(rejected)
    else:
        assert reopen(clean.data).size == (clean.width, clean.height)


def test_cmyk_jpeg_becomes_rgb() -> None:
    cmyk = corpus.encode(Image.new("CMYK", (16, 8), (0, 255, 255, 0)), "JPEG")
    clean = sanitize(cmyk, LIMITS)
    stored = reopen(clean.data)
    assert stored.mode == "RGB" and stored.size == (16, 8)
    red, green, blue = stored.getpixel((8, 4))
    assert red > 200 and green < 60 and blue < 60


# --- JPEG decoded at reduced scale (Image.draft) ----------------------------------


def _jpeg(width: int, height: int, orientation: int | None = None, progressive: bool = False) -> bytes:
    image = Image.new("RGB", (width, height), (90, 120, 150))
    image.paste((200, 40, 40), (0, 0, width // 2, height))  # left half red
    exif = Image.Exif()
    if orientation:
        exif[ExifTags.Base.Orientation] = orientation
    return corpus.encode(image, "JPEG", exif=exif, quality=60, progressive=progressive)


@pytest.mark.parametrize("progressive", [False, True])
def test_the_largest_jpegs_are_decoded_at_reduced_scale(progressive: bool) -> None:
    clean = sanitize(_jpeg(4096, 4096, progressive=progressive), LIMITS)
    assert (clean.width, clean.height) == (2048, 2048)
    assert "decoded at reduced size 2048×2048 (from 4096×4096)" in clean.notes
    picture = reopen(clean.data).convert("RGB")
    assert picture.getpixel((10, 10))[0] > 150 and picture.getpixel((2040, 10))[0] < 150


def test_a_reduced_jpeg_keeps_its_orientation_and_never_goes_below_the_side() -> None:
    # Half of 4000 is below 2048: decoded at full size.
    assert "decoded at reduced size" not in " ".join(sanitize(_jpeg(4000, 2000), LIMITS).notes)
    rotated = sanitize(_jpeg(4096, 2048, orientation=6), LIMITS)
    assert (rotated.width, rotated.height) == (1024, 2048)
    assert "EXIF orientation applied" in rotated.notes


def test_other_formats_and_a_zero_side_decode_at_full_size() -> None:
    assert sanitize(corpus.plain_png(4096, 64), LIMITS).width == 4096
    full = Limits(jpeg_decode_side=0)
    assert sanitize(_jpeg(4096, 4096), full).width == 4096
