"""Images: generation behind providers, and safe handling of user images.

Hook implementations and glue only; the work is in sibling modules:
``render`` (the offline Pillow provider), ``providers`` (OpenAI-compatible
and Automatic1111), ``sanitize`` (decoding strangers' files safely),
``media`` (the content-addressed store) and ``service`` (tying them together).

Configuration: the ``[images]`` section and ``IMAGES_*`` environment
variables (see :class:`plugins.images.settings.ImagesSettings`).
"""

from __future__ import annotations

from typing import Any

from core.models import Command, HealthReport, IncomingMessage, Invocation, Reply, Session
from core.plugins import hookimpl
from plugins.images.service import USAGE, ImagesService
from plugins.images.settings import ImagesSettings

async def service_for(bot: Any) -> ImagesService:
    """The bot's images service, created on first use."""
    service = bot.plugin_state.get("images")
    if service is None:
        settings = bot.settings.for_plugin("images", ImagesSettings)
        service = await ImagesService.create(bot, settings)
        bot.plugin_state["images"] = service
    return service


@hookimpl
async def startup(bot: Any) -> None:
    # Bad settings fail here, so the plugin is reported as failed by name.
    await service_for(bot)


@hookimpl
async def shutdown(bot: Any) -> None:
    service = bot.plugin_state.pop("images", None)
    if service is not None:
        await service.close()


@hookimpl
def register_image_providers(register: Any, bot: Any) -> None:
    service = bot.plugin_state.get("images")
    if service is None:  # registries collected before startup ran
        return
    for name, provider in service.providers.items():
        register(name, provider)


@hookimpl
def register_commands(register: Any) -> None:
    async def imagine(inv: Invocation) -> Reply:
        return await (await service_for(inv.bot)).imagine(inv)

    register(
        Command(
            "imagine",
            f"draw a picture: {USAGE}",
            imagine,
            options={
                "prompt": "what to draw",
                "size": "WIDTHxHEIGHT, e.g. 512x512",
                "seed": "a number; the same seed draws the same picture",
                "style": "landscape, abstract or pixel (offline renderer)",
            },
        )
    )


@hookimpl
async def prepare_message(message: IncomingMessage, session: Session, bot: Any) -> None:
    if message.attachments:
        await (await service_for(bot)).prepare(message)


@hookimpl
async def forget_user(user_id: str, bot: Any) -> dict[str, int]:
    return await (await service_for(bot)).forget(user_id)


@hookimpl
async def export_user(user_id: str, bot: Any) -> dict[str, Any]:
    return await (await service_for(bot)).export(user_id)


@hookimpl
async def load_media(sha256: str, bot: Any) -> bytes | None:
    return await (await service_for(bot)).load(sha256)


@hookimpl
async def health(bot: Any) -> HealthReport:
    ok, detail, metrics = await (await service_for(bot)).health()
    return HealthReport("images", ok, detail, metrics)
