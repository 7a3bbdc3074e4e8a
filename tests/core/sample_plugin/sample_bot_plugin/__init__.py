"""A third-party plugin: answers every message with "sample says hi"."""

from core.models import Reply
from core.plugins import hookimpl


@hookimpl
def generate_reply():
    return Reply("sample says hi")
