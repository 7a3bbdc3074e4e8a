"""Scenarios of features/images.feature: images are part of the conversation.

The shared steps come from tests/harness/steps.py; the image steps are here.
They need the bot in this process (the default 'the bot is running'), since
they read its records and media store directly.
"""

from __future__ import annotations

import hashlib
import io

import pytest
from PIL import ExifTags, Image
from pytest_bdd import given, scenarios, then, when

from core.models import Attachment, MessageRecord
from tests.harness.harness import Harness, HarnessError
from harness.instances import InProcessInstance
from tests.harness.steps import p
from harness import image_corpus as corpus

scenarios("images.feature")


@pytest.fixture
def shared_images() -> dict[str, list[str]]:
    """sha256 of the images each user shared, as the bot recorded them."""
    return {}


def _bot(harness: Harness):  # noqa: ANN202
    instance = harness.instance()
    if not isinstance(instance, InProcessInstance):
        raise HarnessError("image steps read the bot's records directly: run the bot in this process")
    return instance.bot


def _records(harness: Harness, user: str, place: str) -> list[MessageRecord]:
    bot = _bot(harness)
    probe = harness.probe(user, place)

    async def read() -> list[MessageRecord]:
        scope = await bot.hooks.first("session_scope", message=probe) or bot.default_session(probe).scope_key
        session = await bot.storage.load_session(scope)
        if session is None:
            return []
        return await bot.storage.load_messages(session, harness.window)

    return harness.run(read(), what="reading the bot's records")


def _load_media(harness: Harness, sha256: str) -> bytes | None:
    return harness.run(_bot(harness).hooks.first("load_media", sha256=sha256), what="reading the media store")


def _share(harness: Harness, user: str, place: str, text: str, attachment: Attachment) -> None:
    message = harness.new_message(user, place, text)
    message.attachments = [attachment]
    harness.deliver(message)


def _remember(harness: Harness, shared_images: dict[str, list[str]], user: str, place: str, text: str) -> None:
    record = next((r for r in _records(harness, user, place) if r.id == harness.message_said(text).id), None)
    if record is None or not record.attachments or not record.attachments[0].sha256:
        raise HarnessError(f"the photo sent with {text!r} was not recorded with its hash")
    shared_images.setdefault(user, []).append(record.attachments[0].sha256)


# --- Given / When ---------------------------------------------------------------


@given(p('{user:Name} shares a photo with GPS data in {place:Place} saying "{text}"'))
@when(p('{user:Name} shares a photo with GPS data in {place:Place} saying "{text}"'))
def share_photo(harness: Harness, shared_images: dict[str, list[str]], user: str, place: str, text: str) -> None:
    """A 40x20 JPEG with GPS coordinates, a camera make and EXIF orientation
    6 (shown upright as 20x40), sent with ``text``."""
    data = corpus.jpeg_with_gps()
    _share(harness, user, place, text, Attachment("IMG_1234.JPG", "image/jpeg", len(data), data=data))
    _remember(harness, shared_images, user, place, text)


@given(p('{user:Name} shares another photo in {place:Place} saying "{text}"'))
def share_other_photo(harness: Harness, shared_images: dict[str, list[str]], user: str, place: str, text: str) -> None:
    """As 'shares a photo with GPS data', with other pixels (so another hash)."""
    data = corpus.jpeg_with_gps(colour="green")
    _share(harness, user, place, text, Attachment("IMG_5678.JPG", "image/jpeg", len(data), data=data))
    _remember(harness, shared_images, user, place, text)


@when(p('{user:Name} shares a text file named "{filename}" in {place:Place} saying "{text}"'))
def share_fake(harness: Harness, user: str, filename: str, place: str, text: str) -> None:
    """A text file dressed as an image: image name, image content type."""
    _share(harness, user, place, text, Attachment(filename, "image/png", len(corpus.NOT_AN_IMAGE), data=corpus.NOT_AN_IMAGE))


# --- Then -------------------------------------------------------------------------


@then(
    p('in the bot\'s context for {user:Name} in {place:Place}, "{text}" carries a {width:d}x{height:d} {fmt} image'),
    target_fixture="image_sha256",
)
def context_carries_image(harness: Harness, user: str, place: str, text: str, width: int, height: int, fmt: str) -> str:
    """The record of ``text`` in the context the bot reads now holds one
    image attachment: its hash, type and size, no bytes and no URL; the
    media store has bytes with that hash."""
    wanted = harness.message_said(text).id
    record = next((r for r in _records(harness, user, place) if r.id == wanted), None)
    assert record is not None, f"{text!r} is not in the bot's context for {user} in {place}"
    assert len(record.attachments) == 1, f"{text!r} carries {record.attachments}"
    [image] = record.attachments
    assert image.content_type == f"image/{fmt.lower()}" and (image.width, image.height) == (width, height), image
    assert image.sha256 and image.data is None and image.url is None, image
    stored = _load_media(harness, image.sha256)
    assert stored is not None, f"the media store has no file {image.sha256}"
    assert hashlib.sha256(stored).hexdigest() == image.sha256 and len(stored) == image.size
    return image.sha256


@then("the stored copy of that image has no GPS data")
def stored_copy_clean(harness: Harness, image_sha256: str) -> None:
    """No EXIF at all (so no GPS), and none of the original's metadata text."""
    stored = _load_media(harness, image_sha256)
    assert stored is not None
    picture = Image.open(io.BytesIO(stored))
    assert not picture.getexif() and not picture.getexif().get_ifd(ExifTags.IFD.GPSInfo)
    assert b"ExamplePhone" not in stored and b"taken at home" not in stored


@then(p("{user:Name}'s images are gone from the media store"))
def images_gone(harness: Harness, shared_images: dict[str, list[str]], user: str) -> None:
    """Every image ``user`` shared in this scenario: no bytes, no export entry."""
    assert shared_images.get(user), f"{user} shared no image in this scenario"
    for sha in shared_images[user]:
        assert _load_media(harness, sha) is None, f"{user}'s image {sha} is still stored"
    exports = harness.run(_bot(harness).hooks.collect("export_user", user_id=harness.world.user(user).id))
    media = [m for e in exports if isinstance(e, dict) for m in e.get("media", [])]
    assert media == [], f"{user}'s export still lists {media}"


@then(p("{user:Name}'s images are still in the media store"))
def images_kept(harness: Harness, shared_images: dict[str, list[str]], user: str) -> None:
    """Every image ``user`` shared is still there, byte for byte."""
    assert shared_images.get(user), f"{user} shared no image in this scenario"
    for sha in shared_images[user]:
        stored = _load_media(harness, sha)
        assert stored is not None and hashlib.sha256(stored).hexdigest() == sha
