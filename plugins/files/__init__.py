"""The files plugin: text-like files users send (txt, md, code, csv, json…)
are read into the conversation record, so the context shows their content
with their names. Images are left to the images plugin.

Settings: ``[files]`` / ``FILES_*`` (see :mod:`plugins.files.settings`);
the rules are in :mod:`plugins.files.reader` and README.md.
"""

from __future__ import annotations

from typing import Any

from core.models import IncomingMessage
from core.plugins import hookimpl
from plugins.files.reader import Limits, read_texts
from plugins.files.settings import FilesSettings


def limits_for(bot: Any) -> Limits:
    limits = bot.plugin_state.get("files")
    if limits is None:
        settings = bot.settings.for_plugin("files", FilesSettings)
        limits = Limits(settings.max_bytes, settings.max_chars, settings.max_message_chars, frozenset(settings.extensions))
        bot.plugin_state["files"] = limits
    return limits


@hookimpl
def startup(bot: Any) -> None:
    bot.plugin_state.pop("files", None)
    limits_for(bot)  # bad settings fail here, naming the plugin


@hookimpl
def shutdown(bot: Any) -> None:
    bot.plugin_state.pop("files", None)


@hookimpl
def prepare_message(message: IncomingMessage, bot: Any) -> None:
    # A new list of new objects: another instance may be handed the same
    # message, and the transport's attachments stay as they came.
    read = read_texts(message.attachments, limits_for(bot)) if message.attachments else None
    if read is not None:
        message.attachments = read
