"""Decoding images from strangers, safely.

Everything here is synchronous, CPU-bound Pillow work: callers run it in a
worker process (``plugins.images.decoder``) bounded in time and memory. The
order of checks matters: cheap checks on the raw bytes come before Pillow
sees them, and the pixel count is checked from the header before anything
is decoded, so a small file that would inflate to gigabytes (a
decompression bomb) is refused without allocating. A PNG's chunks are
counted and its metadata chunks measured first too: Pillow walks chunks in
pure Python and inflates text chunks whole.

What comes out is a fresh encoding of the pixels only: no EXIF (so no GPS),
no XMP, no comments, no ICC profile (colours are converted to sRGB first).
"""

from __future__ import annotations

import hashlib
import io
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field

from PIL import Image, ImageCms, ImageOps, ImageStat, PngImagePlugin, UnidentifiedImageError

MIB = 1024 * 1024
SAFE_MODES = ("RGB", "RGBA")


class ImageRejected(Exception):
    """An image the bot will not take; the message is meant for the user."""


@dataclass(slots=True)
class Limits:
    """The per-image decode budget, checked before decoding (docs/SECURITY.md)."""

    max_bytes: int = 10 * MIB
    max_pixels: int = 4096 * 4096
    allowed_formats: tuple[str, ...] = ("PNG", "JPEG", "WEBP", "GIF")
    upload_limit: int = 10 * MIB
    thumbnail_size: int = 256
    max_png_chunks: int = 4096
    max_metadata_chunk: int = MIB
    # A JPEG whose longer side exceeds this is decoded at 1/2, 1/4 or 1/8
    # scale (libjpeg's scaled DCT), never below this side: most of the cost
    # of the largest accepted JPEGs goes, and nothing is lost that a chat
    # shows. 0 decodes every JPEG at full size.
    jpeg_decode_side: int = 2048


@dataclass(slots=True)
class CleanImage:
    """A re-encoded image, safe to store and to send again."""

    data: bytes
    format: str  # PNG or JPEG
    width: int
    height: int
    sha256: str
    source_format: str
    source_width: int
    source_height: int
    thumbnail: bytes
    notes: list[str] = field(default_factory=list)
    colour: str = ""

    @property
    def content_type(self) -> str:
        return f"image/{self.format.lower()}"

    @property
    def extension(self) -> str:
        return ".jpg" if self.format == "JPEG" else ".png"

    def describe(self) -> str:
        parts = [f"{self.source_format} image, {self.width}×{self.height}"]
        if self.colour:
            parts.append(f"mostly {self.colour}")
        parts.extend(self.notes)
        return "; ".join(parts)


# --- looking at the bytes before Pillow does ------------------------------------


def sniff_format(data: bytes) -> str | None:
    """The format the content is in (not what the file name claims)."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def header_dimensions(data: bytes, fmt: str) -> tuple[int, int] | None:
    """Width and height as the file's header declares them, read by hand so
    nothing is decoded; ``None`` when the header is unreadable."""
    try:
        if fmt == "PNG":
            if data[12:16] != b"IHDR":
                return None
            return struct.unpack(">II", data[16:24])
        if fmt == "GIF":
            return struct.unpack("<HH", data[6:10])
        if fmt == "WEBP":
            return _webp_dimensions(data)
        if fmt == "JPEG":
            return _jpeg_dimensions(data)
    except struct.error:
        return None
    return None


def _webp_dimensions(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8X":
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
        return width, height
    if chunk == b"VP8L" and len(data) >= 25:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8 " and len(data) >= 30:
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    return None


_SOF_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg_dimensions(data: bytes) -> tuple[int, int] | None:
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            pos += 2
            continue
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        if marker in _SOF_MARKERS:
            height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
            return width, height
        if marker == 0xDA:  # start of scan before any frame header
            return None
        pos += 2 + length
    return None


def _mb(n: int) -> str:
    return f"{n / MIB:.1f} MiB"


def check_bytes(data: bytes, limits: Limits) -> tuple[str, int, int]:
    """The cheap checks: size, format by content, declared pixel count."""
    if not data:
        raise ImageRejected("the file is empty")
    if len(data) > limits.max_bytes:
        raise ImageRejected(f"the file is {_mb(len(data))}; the limit is {_mb(limits.max_bytes)}")
    fmt = sniff_format(data)
    if fmt is None:
        raise ImageRejected(
            "its content is not an image I accept, whatever its name says "
            f"(accepted: {', '.join(limits.allowed_formats)})"
        )
    if fmt not in limits.allowed_formats:
        raise ImageRejected(f"{fmt} images are not accepted here (accepted: {', '.join(limits.allowed_formats)})")
    dims = header_dimensions(data, fmt)
    if dims is None:
        raise ImageRejected(f"the {fmt} header is damaged or incomplete")
    width, height = dims
    if width <= 0 or height <= 0:
        raise ImageRejected(f"the image has no pixels ({width}×{height})")
    if width * height > limits.max_pixels:
        raise ImageRejected(
            f"the image claims {width}×{height} = {width * height:,} pixels; the limit is {limits.max_pixels:,} "
            "(it could be a decompression bomb)"
        )
    if fmt == "PNG":
        check_png_chunks(data, limits)
    return fmt, width, height


_PNG_METADATA = frozenset({b"tEXt", b"zTXt", b"iTXt", b"iCCP", b"eXIf"})


def check_png_chunks(data: bytes, limits: Limits) -> None:
    """Count the chunks and measure the metadata chunks from their headers,
    without reading their contents."""
    pos, count, end = 8, 0, len(data)
    while pos + 8 <= end:
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        count += 1
        if count > limits.max_png_chunks:
            raise ImageRejected(f"the PNG has more than {limits.max_png_chunks:,} chunks, the limit")
        if kind in _PNG_METADATA and length > limits.max_metadata_chunk:
            raise ImageRejected(
                f"its {kind.decode('latin-1')} metadata chunk is {_mb(length)}; the limit is {_mb(limits.max_metadata_chunk)}"
            )
        if kind == b"IEND":
            return
        pos += 12 + length


# --- decoding -----------------------------------------------------------------


def _open(data: bytes, fmt: str, limits: Limits) -> Image.Image:
    image = Image.open(io.BytesIO(data), formats=[fmt])
    width, height = image.size
    # Pillow's own parse of the header, in case it disagrees with ours.
    if width <= 0 or height <= 0:
        raise ImageRejected(f"the image has no pixels ({width}×{height})")
    if width * height > limits.max_pixels:
        raise ImageRejected(
            f"the image is {width}×{height} = {width * height:,} pixels; the limit is {limits.max_pixels:,}"
        )
    return image


def decode(data: bytes, limits: Limits) -> tuple[Image.Image, str, list[str]]:
    """Verify and decode ``data``: the first frame, orientation applied,
    in RGB or RGBA, colours in sRGB. Returns the image, the source format
    and notes on what was done."""
    fmt, _w, _h = check_bytes(data, limits)
    notes: list[str] = []
    try:
        with _open(data, fmt, limits) as probe:
            probe.verify()
        image = _open(data, fmt, limits)
        _reduce_jpeg(image, limits.jpeg_decode_side, notes)
        frames = getattr(image, "n_frames", 1)
        if frames > 1:
            notes.append(f"animated, first of {frames} frames kept")
        image.seek(0)
        image.load()
        icc = image.info.get("icc_profile")
        if _orientation(image) in range(2, 9):
            notes.append("EXIF orientation applied")
        image = ImageOps.exif_transpose(image)
        if icc:
            # Before any mode change: the profile describes the original
            # colour space (RGB, CMYK, ...).
            image = _to_srgb(image, icc, notes)
        image = _to_safe_mode(image)
    except ImageRejected:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageRejected(f"the image is too large to decode safely ({exc})") from None
    except ValueError as exc:
        if "MAX_TEXT" in str(exc):
            # Pillow's own bounds on PNG text: one chunk inflating past 1 MiB,
            # or all of them past 64 MiB.
            raise ImageRejected(
                f"a metadata (text) chunk inflates past the limit of {_mb(PngImagePlugin.MAX_TEXT_CHUNK)} per chunk, "
                f"{_mb(PngImagePlugin.MAX_TEXT_MEMORY)} in all"
            ) from None
        raise ImageRejected(f"the {fmt} file is damaged or truncated (ValueError)") from None
    except (UnidentifiedImageError, SyntaxError, EOFError, OSError, ValueError, struct.error, IndexError) as exc:
        raise ImageRejected(f"the {fmt} file is damaged or truncated ({type(exc).__name__})") from None
    if data_has_metadata(data):
        notes.append("metadata removed")
    return image, fmt, notes


def _reduce_jpeg(image: Image.Image, side: int, notes: list[str]) -> None:
    """Ask libjpeg for a scaled decode (``Image.draft``) when the JPEG is
    larger than ``side``: it skips the work for the pixels dropped, instead
    of decoding them all and resizing after."""
    width, height = image.size
    longer = max(width, height)
    if image.format != "JPEG" or not side or longer < 2 * side:
        return
    # draft() picks the largest of 1/8, 1/4, 1/2 that keeps at least this size.
    wanted = (max(1, width * side // longer), max(1, height * side // longer))
    if image.draft(None, wanted) is not None and image.size != (width, height):
        notes.append(f"decoded at reduced size {image.width}×{image.height} (from {width}×{height})")


def _orientation(image: Image.Image) -> int | None:
    try:
        value = image.getexif().get(0x0112)
    except Exception:  # noqa: BLE001 - broken EXIF only means no orientation
        return None
    return int(value) if isinstance(value, int) else None


def _to_safe_mode(image: Image.Image) -> Image.Image:
    if image.mode in SAFE_MODES:
        return image
    has_alpha = image.mode in ("LA", "PA", "RGBa", "La") or (
        image.mode == "P" and "transparency" in image.info
    ) or ("transparency" in image.info)
    if image.mode.startswith("I") or image.mode == "F":
        # Deep greyscale: scale to 8 bits rather than clip to white.
        image = image.convert("I").point(lambda v: v * (1 / 256)).convert("L")
    return image.convert("RGBA" if has_alpha else "RGB")


_SRGB = ImageCms.createProfile("sRGB")


def _to_srgb(image: Image.Image, icc: bytes, notes: list[str]) -> Image.Image:
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        description = (ImageCms.getProfileDescription(source) or "").strip()
        if "srgb" in description.lower():
            return image
        alpha = image.mode in ("RGBA", "LA", "PA")
        if image.mode not in ("RGB", "RGBA", "CMYK", "L"):
            raise ValueError(f"no colour management for mode {image.mode}")
        converted = ImageCms.profileToProfile(image, source, _SRGB, outputMode="RGBA" if alpha else "RGB")
    except Exception:  # noqa: BLE001 - an unreadable profile is dropped, colours as they are
        notes.append("unreadable colour profile dropped")
        return image
    notes.append("colours converted to sRGB")
    return converted if converted is not None else image


def data_has_metadata(data: bytes) -> bool:
    """Whether the raw file carries EXIF, XMP, comments or text chunks."""
    head = data[: 256 * 1024]
    markers: Iterable[bytes] = (b"Exif\x00\x00", b"http://ns.adobe.com/xap", b"tEXt", b"iTXt", b"zTXt", b"eXIf", b"\xff\xfe")
    return any(m in head for m in markers)


# --- encoding -------------------------------------------------------------------


def encode(image: Image.Image, fmt: str, quality: int = 90) -> bytes:
    """Encode the pixels only. Pillow's encoders copy ``image.info`` (JPEG
    comment, ICC profile, ...) into the file by default, so the info is
    emptied first."""
    # The images here are our own decodes: emptying their info in place
    # spares a full-size copy.
    image.info = {}
    out = io.BytesIO()
    if fmt == "JPEG":
        image.convert("RGB").save(out, "JPEG", quality=quality, optimize=True)
    else:
        image.save(out, "PNG", compress_level=6)
    return out.getvalue()


def fit_to_limit(image: Image.Image, fmt: str, limit: int, notes: list[str], *,
                 allow_jpeg: bool = True) -> tuple[bytes, Image.Image, str]:
    """Encode, shrinking (and, for opaque pictures, switching to JPEG unless
    ``allow_jpeg`` is false) until the file fits ``limit`` bytes (Discord's
    upload limit)."""
    data = encode(image, fmt)
    original = image.size
    attempts = 0
    while len(data) > limit and attempts < 12:
        attempts += 1
        if allow_jpeg and fmt == "PNG" and image.mode == "RGB":
            fmt = "JPEG"
            notes.append("re-encoded as JPEG to fit the upload limit")
            data = encode(image, fmt)
            continue
        scale = max(0.1, min(0.9, (limit / len(data)) ** 0.5 * 0.95))
        size = (max(1, int(image.width * scale)), max(1, int(image.height * scale)))
        image = image.resize(size, Image.Resampling.LANCZOS)
        data = encode(image, fmt, quality=80 if fmt == "JPEG" else 90)
    if len(data) > limit:
        raise ImageRejected(f"the image cannot be made to fit the upload limit of {_mb(limit)}")
    if image.size != original:
        notes.append(f"resized from {original[0]}×{original[1]} to fit the upload limit")
    return data, image, fmt


def make_thumbnail(image: Image.Image, side: int) -> bytes:
    scale = min(1.0, side / max(image.width, image.height))
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    # resize allocates the small result only (thumbnail() works on a full copy).
    return encode(image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0), "PNG")


_COLOURS = {
    "black": (0, 0, 0), "white": (255, 255, 255), "grey": (128, 128, 128),
    "red": (200, 40, 40), "orange": (230, 140, 30), "yellow": (230, 210, 50),
    "green": (50, 160, 60), "teal": (40, 150, 150), "blue": (40, 80, 200),
    "navy": (20, 30, 90), "purple": (130, 50, 160), "pink": (230, 130, 180),
    "brown": (120, 80, 40), "dark grey": (60, 60, 60), "light grey": (200, 200, 200),
}


def dominant_colour(image: Image.Image) -> str:
    """A rough name for the average colour: a cheap one-word description."""
    small = image.resize((16, 16), Image.Resampling.BILINEAR, reducing_gap=2.0).convert("RGB")
    mean = ImageStat.Stat(small).mean
    return min(_COLOURS, key=lambda name: sum((a - b) ** 2 for a, b in zip(_COLOURS[name], mean)))


def sanitize(data: bytes, limits: Limits, *, keep_jpeg: bool = True, force_png: bool = False) -> CleanImage:
    """Check, decode and re-encode ``data`` (blocking: run it in a thread).

    Raises :class:`ImageRejected` with a user-readable reason; any other
    exception is a bug.
    """
    image, source_format, notes = decode(data, limits)
    source_size = image.size
    fmt = "JPEG" if (keep_jpeg and not force_png and source_format == "JPEG" and image.mode == "RGB") else "PNG"
    out, image, fmt = fit_to_limit(image, fmt, limits.upload_limit, notes, allow_jpeg=not force_png)
    return CleanImage(
        data=out,
        format=fmt,
        width=image.width,
        height=image.height,
        sha256=hashlib.sha256(out).hexdigest(),
        source_format=source_format,
        source_width=source_size[0],
        source_height=source_size[1],
        thumbnail=make_thumbnail(image, limits.thumbnail_size),
        notes=notes,
        colour=dominant_colour(image),
    )
