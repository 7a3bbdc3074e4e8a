"""Pointing discord.py at another Discord (a fake one, in tests).

discord.py keeps its URLs in class attributes (``Route.BASE``,
``DiscordWebSocket.DEFAULT_GATEWAY``, ``Asset.BASE``): process-global, so
:func:`use_endpoints` restores them on exit. Production leaves them alone.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import yarl
from discord import asset, gateway, http


@contextlib.contextmanager
def use_endpoints(api_base: str | None = None, gateway_url: str | None = None,
                  cdn_base: str | None = None) -> Iterator[None]:
    """Within the block, discord.py uses the given REST base (``…/api/v10``),
    gateway URL (``ws://…/``) and CDN base; ``None`` keeps the current one."""
    saved = (http.Route.BASE, gateway.DiscordWebSocket.DEFAULT_GATEWAY, asset.Asset.BASE)
    try:
        if api_base:
            http.Route.BASE = api_base.rstrip("/")
        if gateway_url:
            gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(gateway_url)
        if cdn_base:
            asset.Asset.BASE = cdn_base.rstrip("/")
        yield
    finally:
        http.Route.BASE, gateway.DiscordWebSocket.DEFAULT_GATEWAY, asset.Asset.BASE = saved
