"""A fake Discord (REST + gateway) on 127.0.0.1 for the real, unmodified discord.py client.

It speaks the wire protocol discord.py 2.7 speaks, and imitates the parts of
real Discord that make tests honest:

- every JSON response has ``Content-Type: application/json`` exactly (discord.py
  only parses that exact value; aiohttp's ``json_response`` adds a charset);
- login calls ``GET /users/@me`` and ``GET /oauth2/applications/@me``; a wrong
  token gets 401;
- the gateway sends HELLO, answers IDENTIFY with READY (``resume_gateway_url``
  pointing back here) and one GUILD_CREATE per guild of the shard, ACKs
  heartbeats, replays missed events on RESUME, and sends plain text frames or
  ``zlib-stream`` binary frames as the client asks;
- guild message content is blanked for a session without the message-content
  intent unless the bot is mentioned (or it is the bot's own message), and a
  session asking for a privileged intent the application does not have is
  closed with 4014, as real Discord does;
- every message the bot sends is echoed back to it as MESSAGE_CREATE;
- injected failures: a 429 carries a ``Via`` header and a JSON ``retry_after``
  (else discord.py raises instead of waiting), 5xx, dropped websockets.

Tests inject users' messages and interactions and await what the bot sent.
Use :class:`FakeDiscord` as an async context manager or ``start()``/``stop()``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import re
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from aiohttp import WSMsgType, web

log = logging.getLogger("fake_discord")

API_PREFIX = "/api/v10"
DISCORD_EPOCH_MS = 1_420_070_400_000
MESSAGE_CONTENT_INTENT = 1 << 15
GUILD_MEMBERS_INTENT = 1 << 1
GUILD_PRESENCES_INTENT = 1 << 8
PRIVILEGED_INTENTS = MESSAGE_CONTENT_INTENT | GUILD_MEMBERS_INTENT | GUILD_PRESENCES_INTENT
ZLIB_SUFFIX = b"\x00\x00\xff\xff"  # what ends every zlib-stream frame (Z_SYNC_FLUSH)

# Permission bits (https://discord.com/developers/docs/topics/permissions).
ADMINISTRATOR = 1 << 3
MANAGE_MESSAGES = 1 << 13
EVERYONE_PERMISSIONS = (1 << 10) | (1 << 11) | (1 << 14) | (1 << 15) | (1 << 16) | (1 << 31)  # view, send, embed, attach, history, use app cmds

_ids = itertools.count(1)


def snowflake(ts: float | None = None) -> str:
    """A fresh, unique, time-ordered Discord id."""
    ms = int((ts if ts is not None else time.time()) * 1000) - DISCORD_EPOCH_MS
    return str((ms << 22) | (next(_ids) & 0x3FFFFF))


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat()


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """A JSON response with the exact content type real Discord sends."""
    all_headers = {"Content-Type": "application/json"}
    all_headers.update(headers or {})
    return web.Response(body=json.dumps(data).encode(), status=status, headers=all_headers)


def error(status: int, message: str, code: int = 0) -> web.Response:
    return json_response({"message": message, "code": code}, status)


@dataclass
class InjectedFailure:
    """Answer the next ``count`` requests matching ``method`` and ``path`` (a
    regex on the path after /api/v10) with ``status``."""

    method: str
    path: str
    status: int
    count: int = 1
    retry_after: float = 0.05
    via: bool = True
    # Fail after doing the work (the message is created, the answer is lost):
    # a retry must not post it twice.
    after_effect: bool = False
    hits: int = 0


@dataclass
class GatewaySession:
    """A gateway session: survives a dropped websocket so RESUME can replay."""

    id: str
    intents: int
    shard: tuple[int, int]
    seq: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)  # every dispatch sent, with its seq
    ws: web.WebSocketResponse | None = None
    compress: Any = None  # zlib compressobj of the current connection, or None
    closed_by_server: bool = False
    invalid: bool = False


@dataclass
class Guild:
    id: str
    name: str
    owner_id: str
    roles: list[dict[str, Any]]
    channels: list[dict[str, Any]]
    members: dict[str, dict[str, Any]]


class FakeDiscord:
    """The fake Discord. ``api_base`` and ``gateway_url`` are what the client
    needs; :func:`patched_discord` (in ``tests.fake_discord.patching``) points
    discord.py in this process at them."""

    def __init__(
        self,
        *,
        token: str | None = None,
        privileged_intents: int = PRIVILEGED_INTENTS,
        heartbeat_interval_ms: int = 41_250,
        resume_overlap: int = 0,
        split_zlib_frames: bool = False,
        frames: str = "auto",
    ) -> None:
        # Obviously fake, built at run time: never a real token.
        self.token = token or "fake-" + "x" * 20
        self.privileged_intents = privileged_intents
        self.heartbeat_interval_ms = heartbeat_interval_ms
        # Replay this many already-delivered events on RESUME: Discord's
        # delivery is at-least-once, so the bot must tolerate duplicates.
        self.resume_overlap = resume_overlap
        self.split_zlib_frames = split_zlib_frames
        # "auto": zlib-stream binary frames when the client asks (as Discord
        # does), else text; "text": plain text frames whatever it asks.
        if frames not in ("auto", "text"):
            raise ValueError("frames must be 'auto' or 'text'")
        self.frames = frames
        self.frame_modes: list[str] = []  # "zlib-stream" or "text", per gateway connection
        self.nonces: dict[tuple[str, str], dict[str, Any]] = {}
        self.bot_user = self.make_user("fakebot", bot=True)
        self.application_id = snowflake()
        self.owner_user = self.make_user("appowner")
        self.guilds: dict[str, Guild] = {}
        self.dm_channels: dict[str, dict[str, Any]] = {}  # channel id -> channel (recipient user)
        self.messages: dict[str, dict[str, Any]] = {}
        self.bot_messages: list[dict[str, Any]] = []
        # Edits of the bot's messages (message_id, content, at: monotonic time)
        # and ids of the messages it deleted.
        self.edits: list[dict[str, Any]] = []
        self.deleted: list[str] = []
        self.threads: list[dict[str, Any]] = []  # threads the bot started
        self.interaction_responses: dict[str, list[dict[str, Any]]] = {}
        self.interactions: dict[str, dict[str, Any]] = {}
        self.commands: dict[str | None, list[dict[str, Any]]] = {}  # guild id or None (global)
        self.attachments: dict[str, tuple[bytes, str]] = {}  # path -> (bytes, content type)
        self.failures: list[InjectedFailure] = []
        self.requests: list[tuple[str, str, int]] = []  # (method, path, status)
        self.unknown_requests: list[tuple[str, str]] = []
        self.sessions: dict[str, GatewaySession] = {}
        self.identifies: list[dict[str, Any]] = []
        self.resumes: list[dict[str, Any]] = []
        self.heartbeats = 0
        self.typing: list[str] = []
        self.shard_count = 1
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self._sockets: set[web.WebSocketResponse] = set()
        self.port = 0

    # --- lifecycle -----------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_base(self) -> str:
        return self.base_url + API_PREFIX

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/"

    async def start(self) -> FakeDiscord:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get("/", self._gateway)
        app.router.add_get("/attachments/{rest:.*}", self._attachment)
        app.router.add_route("*", API_PREFIX + "/{path:.*}", self._api)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        for ws in list(self._sockets):
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeDiscord:
        return await self.start()

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()

    # --- the world: users, guilds, channels --------------------------------------------

    def make_user(self, name: str, *, bot: bool = False) -> dict[str, Any]:
        user = {
            "id": snowflake(),
            "username": name,
            "global_name": name,
            "discriminator": "0",
            "avatar": None,
            "bot": bot,
            "public_flags": 0,
            "flags": 0,
        }
        if bot:
            user.update(verified=True, mfa_enabled=False)
        return user

    def add_guild(self, name: str = "guild", *, owner: dict[str, Any] | None = None) -> Guild:
        """A guild with an @everyone role (id = guild id), an ``admin`` role,
        a ``mod`` role (manage messages) and the bot as a member."""
        gid = snowflake()
        owner = owner or self.make_user(f"{name}-owner")
        roles = [
            self._role(gid, "@everyone", EVERYONE_PERMISSIONS, 0),
            self._role(snowflake(), "admin", ADMINISTRATOR, 2),
            self._role(snowflake(), "mod", MANAGE_MESSAGES | EVERYONE_PERMISSIONS, 1),
        ]
        guild = Guild(gid, name, owner["id"], roles, [], {})
        self.guilds[gid] = guild
        self.add_member(guild, self.bot_user)
        self.add_member(guild, owner)
        return guild

    @staticmethod
    def _role(rid: str, name: str, permissions: int, position: int) -> dict[str, Any]:
        return {
            "id": rid, "name": name, "permissions": str(permissions), "position": position,
            "color": 0, "hoist": False, "managed": False, "mentionable": False, "flags": 0,
        }

    def role_id(self, guild: Guild, name: str) -> str:
        return next(r["id"] for r in guild.roles if r["name"] == name)

    def add_channel(self, guild: Guild, name: str = "general", *, parent_id: str | None = None) -> dict[str, Any]:
        """A text channel, or a public thread when ``parent_id`` is given."""
        channel: dict[str, Any] = {
            "id": snowflake(), "guild_id": guild.id, "name": name, "position": len(guild.channels),
            "permission_overwrites": [], "nsfw": False, "topic": None, "last_message_id": None,
            "rate_limit_per_user": 0, "parent_id": parent_id, "type": 0, "flags": 0,
        }
        if parent_id is not None:
            channel.update(
                type=11, owner_id=guild.owner_id, message_count=0, member_count=1,
                thread_metadata={"archived": False, "auto_archive_duration": 1440, "archive_timestamp": iso(time.time()),
                                 "locked": False},
            )
        guild.channels.append(channel)
        return channel

    def add_member(self, guild: Guild, user: dict[str, Any], roles: list[str] = ()) -> dict[str, Any]:  # type: ignore[assignment]
        """Make ``user`` a member; ``roles`` are role names (``admin``, ``mod``)."""
        member = {
            "user": user, "roles": [self.role_id(guild, r) for r in roles], "joined_at": iso(time.time()),
            "deaf": False, "mute": False, "flags": 0, "nick": None, "avatar": None, "pending": False,
        }
        guild.members[user["id"]] = member
        return member

    async def remove_member(self, guild: Guild, user: dict[str, Any]) -> None:
        """``user`` leaves ``guild`` (or is kicked): GUILD_MEMBER_REMOVE, sent
        only to sessions with the Server Members intent."""
        guild.members.pop(user["id"], None)
        await self.dispatch("GUILD_MEMBER_REMOVE", {"guild_id": guild.id, "user": user}, guild_id=guild.id,
                            intent=GUILD_MEMBERS_INTENT)

    def dm_channel(self, user: dict[str, Any]) -> dict[str, Any]:
        for channel in self.dm_channels.values():
            if channel["recipients"][0]["id"] == user["id"]:
                return channel
        channel = {"id": snowflake(), "type": 1, "recipients": [user], "last_message_id": None, "flags": 0}
        self.dm_channels[channel["id"]] = channel
        return channel

    def _channel(self, channel_id: str) -> tuple[dict[str, Any] | None, Guild | None]:
        if channel_id in self.dm_channels:
            return self.dm_channels[channel_id], None
        for guild in self.guilds.values():
            for channel in guild.channels:
                if channel["id"] == channel_id:
                    return channel, guild
        return None, None

    def guild_payload(self, guild: Guild) -> dict[str, Any]:
        members = list(guild.members.values())
        return {
            "id": guild.id, "name": guild.name, "icon": None, "splash": None, "discovery_splash": None,
            "owner_id": guild.owner_id, "afk_channel_id": None, "afk_timeout": 300, "verification_level": 0,
            "default_message_notifications": 0, "explicit_content_filter": 0, "roles": guild.roles,
            "emojis": [], "stickers": [], "features": [], "mfa_level": 0, "system_channel_id": None,
            "system_channel_flags": 0, "rules_channel_id": None, "vanity_url_code": None, "description": None,
            "banner": None, "premium_tier": 0, "preferred_locale": "en-US", "public_updates_channel_id": None,
            "nsfw_level": 0, "premium_progress_bar_enabled": False, "joined_at": iso(time.time()),
            "large": False, "unavailable": False,
            # Must equal the members sent, or discord.py thinks the guild is not chunked.
            "member_count": len(members), "members": members, "voice_states": [], "presences": [],
            "channels": [c for c in guild.channels if c["type"] != 11],
            "threads": [c for c in guild.channels if c["type"] == 11],
            "stage_instances": [], "guild_scheduled_events": [], "soundboard_sounds": [],
        }

    # --- injecting what users do ----------------------------------------------------------

    async def send_user_message(
        self,
        channel_id: str,
        author: dict[str, Any],
        content: str = "",
        *,
        mentions: list[dict[str, Any]] = (),  # type: ignore[assignment]
        mention_bot: bool = False,
        reply_to: str | None = None,
        attachments: list[tuple[str, bytes, str]] = (),  # type: ignore[assignment]
        stickers: list[str] = (),  # type: ignore[assignment]
        embeds: list[dict[str, Any]] = (),  # type: ignore[assignment]
    ) -> dict[str, Any]:
        """A user posts a message; it is dispatched to the bot's gateway
        sessions as MESSAGE_CREATE. ``mention_bot`` prefixes ``<@bot>``."""
        mentions = list(mentions)
        if mention_bot:
            content = f"<@{self.bot_user['id']}> {content}"
            mentions.append(self.bot_user)
        files = []
        for filename, data, content_type in attachments:
            aid = snowflake()
            path = f"{channel_id}/{aid}/{filename}"
            self.attachments[path] = (data, content_type)
            files.append({
                "id": aid, "filename": filename, "size": len(data), "content_type": content_type,
                "url": f"{self.base_url}/attachments/{path}", "proxy_url": f"{self.base_url}/attachments/{path}",
            })
        message = self._message(channel_id, author, content, mentions=mentions, attachments=files, reply_to=reply_to,
                                embeds=embeds)
        if stickers:
            message["sticker_items"] = [{"id": snowflake(), "name": name, "format_type": 1} for name in stickers]
        await self.dispatch_message(message)
        return message

    def _message(
        self,
        channel_id: str,
        author: dict[str, Any],
        content: str,
        *,
        mentions: list[dict[str, Any]] = (),  # type: ignore[assignment]
        attachments: list[dict[str, Any]] = (),  # type: ignore[assignment]
        reply_to: str | None = None,
        embeds: list[dict[str, Any]] = (),  # type: ignore[assignment]
        webhook_id: str | None = None,
        ping_reply: bool = True,
    ) -> dict[str, Any]:
        channel, guild = self._channel(channel_id)
        if channel is None:
            raise KeyError(f"unknown channel {channel_id}")
        now = time.time()
        message: dict[str, Any] = {
            "id": snowflake(now), "channel_id": channel_id, "author": author, "content": content,
            "timestamp": iso(now), "edited_timestamp": None, "tts": False, "mention_everyone": False,
            "mentions": list(mentions), "mention_roles": [], "attachments": list(attachments),
            "embeds": list(embeds), "pinned": False, "type": 0, "flags": 0, "components": [],
        }
        if webhook_id:
            message["webhook_id"] = webhook_id
        if guild is not None:
            message["guild_id"] = guild.id
            member = guild.members.get(author["id"])
            if member is not None:
                message["member"] = {k: v for k, v in member.items() if k != "user"}
        if reply_to is not None:
            message["type"] = 19
            message["message_reference"] = {"message_id": reply_to, "channel_id": channel_id,
                                            **({"guild_id": guild.id} if guild else {})}
            referenced = self.messages.get(reply_to)
            message["referenced_message"] = referenced
            if ping_reply and referenced is not None and referenced["author"]["id"] not in {m["id"] for m in message["mentions"]}:
                # Discord lists the replied-to author in mentions when the reply pings.
                message["mentions"].append(referenced["author"])
        self.messages[message["id"]] = message
        return message

    async def edit_user_message(self, message_id: str, content: str) -> dict[str, Any]:
        """The author edits a message: MESSAGE_UPDATE with the whole new
        message (as Discord sends it), ``edited_timestamp`` set."""
        message = self.messages[message_id]
        message["content"] = content
        message["edited_timestamp"] = iso(time.time())
        await self.dispatch("MESSAGE_UPDATE", dict(message), guild_id=message.get("guild_id"), blank=True)
        return message

    async def delete_user_messages(self, channel_id: str, message_ids: list[str]) -> None:
        """Messages are deleted: MESSAGE_DELETE for one, MESSAGE_DELETE_BULK
        (a moderator's purge) for several."""
        _channel, guild = self._channel(channel_id)
        for message_id in message_ids:
            self.messages.pop(message_id, None)
        where = {"channel_id": channel_id, **({"guild_id": guild.id} if guild else {})}
        if len(message_ids) == 1:
            await self.dispatch("MESSAGE_DELETE", {"id": message_ids[0], **where}, guild_id=where.get("guild_id"))
        else:
            await self.dispatch("MESSAGE_DELETE_BULK", {"ids": list(message_ids), **where}, guild_id=where.get("guild_id"))

    async def dispatch_message(self, message: dict[str, Any]) -> None:
        await self.dispatch("MESSAGE_CREATE", message, guild_id=message.get("guild_id"), blank=True)

    async def send_interaction(
        self,
        name: str,
        user: dict[str, Any],
        channel_id: str,
        options: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """A user runs slash command ``name`` in ``channel_id`` (guild or DM).
        The interaction's ``data.id`` is the synced command's id, or a made-up
        id when no such command was synced (a stale or unknown command)."""
        channel, guild = self._channel(channel_id)
        if channel is None:
            raise KeyError(f"unknown channel {channel_id}")
        synced = [c for c in self.commands.get(guild.id if guild else None, []) + self.commands.get(None, [])
                  if c["name"] == name]
        interaction: dict[str, Any] = {
            "id": snowflake(), "application_id": self.application_id, "type": 2, "token": "itoken-" + snowflake(),
            "version": 1, "locale": "en-US", "app_permissions": str(EVERYONE_PERMISSIONS),
            "attachment_size_limit": 10 * 1024 * 1024,
            "channel_id": channel_id, "channel": dict(channel), "entitlements": [],
            "authorizing_integration_owners": {}, "context": 1 if guild is None else 0,
            "data": {"id": synced[0]["id"] if synced else snowflake(), "name": name, "type": 1,
                     "options": [{"name": k, "type": 3, "value": v} for k, v in (options or {}).items()]},
        }
        if synced and synced[0].get("guild_id"):
            interaction["data"]["guild_id"] = synced[0]["guild_id"]
        interaction["_user"] = user  # not sent: stripped before dispatch
        if guild is not None:
            member = dict(guild.members[user["id"]])
            member["permissions"] = str(self.permissions(guild, user["id"]))
            interaction.update(guild_id=guild.id, member=member, guild_locale="en-US")
        else:
            interaction["user"] = user
        self.interactions[interaction["id"]] = interaction
        self.interaction_responses[interaction["id"]] = []
        await self.dispatch("INTERACTION_CREATE", {k: v for k, v in interaction.items() if k != "_user"},
                            guild_id=guild.id if guild else None)
        return interaction

    def permissions(self, guild: Guild, user_id: str) -> int:
        if user_id == guild.owner_id:
            return (1 << 53) - 1
        member = guild.members[user_id]
        value = 0
        for role in guild.roles:
            if role["id"] == guild.id or role["id"] in member["roles"]:
                value |= int(role["permissions"])
        return (1 << 53) - 1 if value & ADMINISTRATOR else value

    # --- gateway --------------------------------------------------------------------

    def _shard_of(self, guild_id: str | None) -> int:
        return 0 if guild_id is None else (int(guild_id) >> 22) % self.shard_count

    async def dispatch(self, event: str, data: dict[str, Any], *, guild_id: str | None = None, blank: bool = False,
                       intent: int = 0) -> None:
        """Send a dispatch event to every live session of the right shard
        (sessions that are disconnected buffer it for RESUME); with
        ``intent``, only to the sessions that asked for it (as Discord does)."""
        for session in list(self.sessions.values()):
            if session.invalid or session.shard[0] != (self._shard_of(guild_id) % session.shard[1]):
                continue
            if intent and not session.intents & intent:
                continue
            payload = data
            if blank and event in ("MESSAGE_CREATE", "MESSAGE_UPDATE") and self._must_blank(session, data):
                payload = dict(data, content="", embeds=[], attachments=[], components=[])
                payload.pop("poll", None)
            await self._send_dispatch(session, event, payload)

    def _must_blank(self, session: GatewaySession, message: dict[str, Any]) -> bool:
        if session.intents & MESSAGE_CONTENT_INTENT or message.get("guild_id") is None:
            return False
        if message["author"]["id"] == self.bot_user["id"]:
            return False
        return not any(m["id"] == self.bot_user["id"] for m in message.get("mentions", []))

    async def _send_dispatch(self, session: GatewaySession, event: str, data: dict[str, Any]) -> None:
        session.seq += 1
        frame = {"op": 0, "t": event, "s": session.seq, "d": data}
        session.events.append(frame)
        if session.ws is not None and not session.ws.closed:
            await self._send(session, frame)

    async def _send(self, session: GatewaySession, frame: dict[str, Any]) -> None:
        ws = session.ws
        if ws is None or ws.closed:
            return
        text = json.dumps(frame)
        try:
            if session.compress is None:
                await ws.send_str(text)
                return
            data = session.compress.compress(text.encode()) + session.compress.flush(zlib.Z_SYNC_FLUSH)
            if self.split_zlib_frames and len(data) > 8:
                # discord.py must buffer until the zlib suffix arrives.
                await ws.send_bytes(data[: len(data) // 2])
                await ws.send_bytes(data[len(data) // 2:])
            else:
                await ws.send_bytes(data)
        except (ConnectionError, RuntimeError) as exc:
            log.debug("gateway send failed: %s", exc)

    async def _gateway(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        self._sockets.add(ws)
        wants_zlib = request.query.get("compress") == "zlib-stream" and self.frames == "auto"
        compress = zlib.compressobj() if wants_zlib else None
        self.frame_modes.append("zlib-stream" if wants_zlib else "text")
        session: GatewaySession | None = None

        async def send_raw(frame: dict[str, Any]) -> None:
            holder = GatewaySession("", 0, (0, 1), ws=ws, compress=compress)
            await self._send(session or holder, frame)

        try:
            await send_raw({"op": 10, "d": {"heartbeat_interval": self.heartbeat_interval_ms}, "s": None, "t": None})
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                payload = json.loads(msg.data)
                op, data = payload.get("op"), payload.get("d")
                if op == 1:
                    self.heartbeats += 1
                    await send_raw({"op": 11, "d": None, "s": None, "t": None})
                elif op == 2:
                    session = await self._identify(ws, compress, data)
                    if session is None:
                        break
                elif op == 6:
                    session = await self._resume(ws, compress, data)
                elif op == 8:
                    log.warning("client requested guild members (op 8): member_count does not match members sent")
                await self._notify()
        finally:
            self._sockets.discard(ws)
            if session is not None and session.ws is ws:
                session.ws = None
        return ws

    async def _identify(self, ws: web.WebSocketResponse, compress: Any, data: dict[str, Any]) -> GatewaySession | None:
        if data.get("token") != self.token:
            await ws.close(code=4004, message=b"Authentication failed.")
            return None
        intents = int(data.get("intents", 0))
        if intents & PRIVILEGED_INTENTS & ~self.privileged_intents:
            await ws.close(code=4014, message=b"Disallowed intent(s).")
            return None
        self.identifies.append(data)
        shard = tuple(data.get("shard") or (0, 1))
        self.shard_count = shard[1]
        session = GatewaySession(snowflake(), intents, (int(shard[0]), int(shard[1])), ws=ws, compress=compress)
        self.sessions[session.id] = session
        guilds = [g for g in self.guilds.values() if self._shard_of(g.id) % session.shard[1] == session.shard[0]]
        ready = {
            "v": 10, "user": self.bot_user, "guilds": [{"id": g.id, "unavailable": True} for g in guilds],
            "session_id": session.id, "session_type": "normal", "resume_gateway_url": self.gateway_url,
            "shard": list(session.shard), "application": {"id": self.application_id, "flags": 0},
            "private_channels": [], "relationships": [], "presences": [], "guild_join_requests": [],
            "geo_ordered_rtc_regions": [], "user_settings": {}, "auth_session_id_hash": "x",
        }
        await self._send_dispatch(session, "READY", ready)
        for guild in guilds:
            await self._send_dispatch(session, "GUILD_CREATE", self.guild_payload(guild))
        return session

    async def _resume(self, ws: web.WebSocketResponse, compress: Any, data: dict[str, Any]) -> GatewaySession | None:
        session = self.sessions.get(data.get("session_id", ""))
        if data.get("token") != self.token or session is None or session.invalid:
            await self._send(GatewaySession("", 0, (0, 1), ws=ws, compress=compress),
                             {"op": 9, "d": False, "s": None, "t": None})
            return None
        self.resumes.append(data)
        session.ws, session.compress = ws, compress
        start = max(0, int(data.get("seq") or 0) - self.resume_overlap)
        for frame in session.events:
            if frame["s"] > start:
                await self._send(session, frame)
        await self._send_dispatch(session, "RESUMED", {})
        return session

    async def drop_connections(self, code: int = 4000) -> None:
        """Close every gateway websocket the way a network failure or a
        Discord restart does; sessions stay resumable and buffer events."""
        for session in self.sessions.values():
            session.closed_by_server = True
        for ws in list(self._sockets):
            await ws.close(code=code)

    async def send_reconnect(self) -> None:
        """Op 7: ask every session to reconnect and resume."""
        for session in self.sessions.values():
            await self._send(session, {"op": 7, "d": None, "s": None, "t": None})

    def connected_sessions(self) -> list[GatewaySession]:
        return [s for s in self.sessions.values() if s.ws is not None and not s.ws.closed]

    # --- REST -----------------------------------------------------------------------

    async def _attachment(self, request: web.Request) -> web.Response:
        found = self.attachments.get(request.match_info["rest"])
        if found is None:
            return web.Response(status=404)
        data, content_type = found
        return web.Response(body=data, headers={"Content-Type": content_type})

    def _authorized(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bot {self.token}"

    async def _api(self, request: web.Request) -> web.Response:
        path = "/" + request.match_info["path"]
        response = await self._route(request, path)
        self.requests.append((request.method, path, response.status))
        await self._notify()
        return response

    def _failure_for(self, method: str, path: str) -> InjectedFailure | None:
        for failure in self.failures:
            if failure.hits < failure.count and failure.method == method and re.fullmatch(failure.path, path):
                failure.hits += 1
                return failure
        return None

    def fail(self, method: str, path: str, status: int, *, count: int = 1, retry_after: float = 0.05,
             via: bool = True, after_effect: bool = False) -> InjectedFailure:
        """Answer the next ``count`` ``method`` requests whose path (after
        /api/v10) fully matches the regex ``path`` with ``status`` (after
        doing the work when ``after_effect``)."""
        failure = InjectedFailure(method, path, status, count, retry_after, via, after_effect)
        self.failures.append(failure)
        return failure

    async def _route(self, request: web.Request, path: str) -> web.Response:
        method = request.method
        failure = self._failure_for(method, path)
        if failure is not None and failure.after_effect:
            await self._route_ok(request, path)
        if failure is not None:
            if failure.status == 429:
                headers = {"Via": "1.1 google", "X-RateLimit-Scope": "user"} if failure.via else {}
                return json_response({"message": "You are being rate limited.", "retry_after": failure.retry_after,
                                      "global": False}, 429, headers)
            return error(failure.status, f"{failure.status}: injected failure")
        return await self._route_ok(request, path)

    async def _route_ok(self, request: web.Request, path: str) -> web.Response:
        method = request.method
        m = re.fullmatch(r"/interactions/(\d+)/([^/]+)/callback", path)
        if m and method == "POST":
            return await self._interaction_callback(request, m.group(1), m.group(2))
        m = re.fullmatch(r"/webhooks/(\d+)/([^/]+)(/messages/(@original|\d+))?", path)
        if m:
            return await self._webhook(request, m.group(2), m.group(4))

        if not self._authorized(request):
            return error(401, "401: Unauthorized")
        if method == "GET" and path == "/users/@me":
            return json_response(self.bot_user)
        if method == "GET" and path == "/oauth2/applications/@me":
            return json_response(self._application())
        if method == "GET" and path in ("/gateway/bot", "/gateway"):
            return json_response({"url": self.gateway_url, "shards": 1, "session_start_limit": {
                "total": 1000, "remaining": 999, "reset_after": 0, "max_concurrency": 1}})
        m = re.fullmatch(r"/applications/(\d+)(/guilds/(\d+))?/commands", path)
        if m:
            if m.group(1) != self.application_id:
                return error(404, "Unknown Application", 10002)
            return await self._commands(request, m.group(3))
        m = re.fullmatch(r"/channels/(\d+)/typing", path)
        if m and method == "POST":
            self.typing.append(m.group(1))
            return web.Response(status=204)
        m = re.fullmatch(r"/channels/(\d+)/messages", path)
        if m and method == "POST":
            return await self._create_message(request, m.group(1))
        m = re.fullmatch(r"/channels/(\d+)/messages/(\d+)", path)
        if m and method == "GET":
            message = self.messages.get(m.group(2))
            return json_response(message) if message else error(404, "Unknown Message", 10008)
        if m and method == "PATCH":
            return await self._edit_message(request, m.group(1), m.group(2))
        m2 = re.fullmatch(r"/channels/(\d+)/messages/(\d+)/threads", path)
        if m2 and method == "POST":
            return await self._start_thread(request, m2.group(1), m2.group(2))
        m3 = re.fullmatch(r"/channels/(\d+)", path)
        if m3 and method == "GET":
            found, _guild = self._channel(m3.group(1))
            return json_response(found) if found else error(404, "Unknown Channel", 10003)
        if m and method == "DELETE":
            return self._delete_message(m.group(1), m.group(2))
        if method == "POST" and path == "/users/@me/channels":
            body = await request.json()
            user = next((m["user"] for g in self.guilds.values() for m in g.members.values()
                         if m["user"]["id"] == str(body.get("recipient_id"))), None)
            return json_response(self.dm_channel(user)) if user else error(404, "Unknown User", 10013)
        self.unknown_requests.append((method, path))
        return error(404, "404: Not Found")

    def _application(self) -> dict[str, Any]:
        return {
            "id": self.application_id, "name": "fakebot", "icon": None, "description": "", "bot_public": True,
            "bot_require_code_grant": False, "owner": self.owner_user, "verify_key": "0" * 64, "flags": 0,
            "team": None, "summary": "", "bot": self.bot_user, "interactions_endpoint_url": None,
        }

    async def _commands(self, request: web.Request, guild_id: str | None) -> web.Response:
        if request.method == "GET":
            return json_response(self.commands.get(guild_id, []))
        if request.method != "PUT":
            return error(405, "405: Method Not Allowed")
        body = await request.json()
        problems = [c.get("name") for c in body if not re.fullmatch(r"[-_\w]{1,32}", c.get("name", ""))
                    or c.get("name") != c.get("name", "").lower() or not 1 <= len(c.get("description", "")) <= 100]
        if problems:
            return json_response({"message": "Invalid Form Body", "code": 50035, "errors": {"names": problems}}, 400)
        existing = {c["name"]: c["id"] for c in self.commands.get(guild_id, [])}
        stored = []
        for command in body:
            if command.get("default_member_permissions") is not None:
                # Discord answers permission bit sets as strings.
                command = dict(command, default_member_permissions=str(command["default_member_permissions"]))
            stored.append(dict(command, id=existing.get(command["name"]) or snowflake(),
                               application_id=self.application_id, version=snowflake(), type=command.get("type", 1),
                               **({"guild_id": guild_id} if guild_id else {})))
        self.commands[guild_id] = stored
        return json_response(stored)

    async def _read_message_body(self, request: web.Request) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """JSON body, or multipart ``payload_json`` + ``files[n]``."""
        if request.content_type == "application/json":
            return await request.json(), []
        payload: dict[str, Any] = {}
        files: list[dict[str, Any]] = []
        reader = await request.multipart()
        async for part in reader:
            if part.name == "payload_json":
                payload = json.loads(await part.text())
            elif part.name and part.name.startswith("files["):
                data = await part.read(decode=False)
                files.append({"filename": part.filename, "data": bytes(data),
                              "content_type": part.headers.get("Content-Type", "application/octet-stream")})
        return payload, files

    def _stored_files(self, channel_id: str, files: list[dict[str, Any]]) -> list[dict[str, Any]]:
        stored = []
        for f in files:
            aid = snowflake()
            path = f"{channel_id}/{aid}/{f['filename']}"
            self.attachments[path] = (f["data"], f["content_type"])
            stored.append({"id": aid, "filename": f["filename"], "size": len(f["data"]),
                           "content_type": f["content_type"], "url": f"{self.base_url}/attachments/{path}",
                           "proxy_url": f"{self.base_url}/attachments/{path}", "data": f["data"]})
        return stored

    def _validate_outgoing(self, payload: dict[str, Any], files: list[dict[str, Any]]) -> web.Response | None:
        content = payload.get("content") or ""
        if len(content) > 2000:
            return json_response({"message": "Invalid Form Body", "code": 50035, "errors": {"content": {
                "_errors": [{"code": "BASE_TYPE_MAX_LENGTH", "message": "Must be 2000 or fewer in length."}]}}}, 400)
        if not content and not files and not payload.get("embeds") and not payload.get("sticker_ids"):
            return error(400, "Cannot send an empty message", 50006)
        return None

    async def _create_message(self, request: web.Request, channel_id: str) -> web.Response:
        channel, _guild = self._channel(channel_id)
        if channel is None:
            return error(404, "Unknown Channel", 10003)
        payload, files = await self._read_message_body(request)
        problem = self._validate_outgoing(payload, files)
        if problem is not None:
            return problem
        nonce = payload.get("nonce")
        if nonce is not None and payload.get("enforce_nonce") and (channel_id, str(nonce)) in self.nonces:
            # Discord returns the message already created with this nonce.
            return json_response(self.nonces[(channel_id, str(nonce))])
        reference = (payload.get("message_reference") or {}).get("message_id")
        if reference is not None and str(reference) not in self.messages:
            if (payload.get("message_reference") or {}).get("fail_if_not_exists", True):
                return json_response({"message": "Invalid Form Body", "code": 50035}, 400)
            reference = None
        stored_files = self._stored_files(channel_id, files)
        message = self._message(channel_id, self.bot_user, payload.get("content") or "",
                                attachments=[{k: v for k, v in f.items() if k != "data"} for f in stored_files],
                                reply_to=str(reference) if reference else None,
                                embeds=payload.get("embeds") or [],
                                ping_reply=bool((payload.get("allowed_mentions") or {}).get("replied_user", True)))
        # What the bot asked for, for assertions (not part of Discord's answer).
        if nonce is not None:
            message["nonce"] = str(nonce)
            if payload.get("enforce_nonce"):
                self.nonces[(channel_id, str(nonce))] = message
        record = dict(message, allowed_mentions=payload.get("allowed_mentions"), files=stored_files)
        self.bot_messages.append(record)
        await self.dispatch_message(message)  # real Discord echoes the bot's own messages
        return json_response(message)

    def _own_message(self, channel_id: str, message_id: str) -> tuple[dict[str, Any] | None, web.Response | None]:
        message = self.messages.get(message_id)
        if message is None or message["channel_id"] != channel_id:
            return None, error(404, "Unknown Message", 10008)
        if message["author"]["id"] != self.bot_user["id"]:
            return None, error(403, "Cannot edit a message authored by another user", 50005)
        return message, None

    async def _edit_message(self, request: web.Request, channel_id: str, message_id: str) -> web.Response:
        """PATCH of a bot message: recorded in ``edits`` (with the monotonic
        time it arrived, so tests can check the bot's edit rate)."""
        message, problem = self._own_message(channel_id, message_id)
        if problem is not None or message is None:
            return problem or error(404, "Unknown Message", 10008)
        payload, files = await self._read_message_body(request)
        if "content" in payload and len(payload.get("content") or "") > 2000:
            return self._validate_outgoing(payload, files) or error(400, "Invalid Form Body", 50035)
        if "content" in payload:
            message["content"] = payload.get("content") or ""
        if files:
            message["attachments"] = [{k: v for k, v in f.items() if k != "data"}
                                      for f in self._stored_files(channel_id, files)]
        message["edited_timestamp"] = iso(time.time())
        self.edits.append({"message_id": message_id, "channel_id": channel_id, "content": message["content"],
                           "files": [f["filename"] for f in files], "at": time.monotonic()})
        for record in self.bot_messages:
            if record["id"] == message_id:
                record.update(content=message["content"], attachments=message["attachments"],
                              edited_timestamp=message["edited_timestamp"])
        return json_response(message)

    async def _start_thread(self, request: web.Request, channel_id: str, message_id: str) -> web.Response:
        """A public thread started from a message: its id is the message's
        (as on Discord); a second thread from one message is refused."""
        channel, guild = self._channel(channel_id)
        if channel is None or guild is None or message_id not in self.messages:
            return error(404, "Unknown Message", 10008)
        if self._channel(message_id)[0] is not None:
            return error(400, "A thread has already been created for this message", 160004)
        body = await request.json()
        thread = self.add_channel(guild, str(body.get("name") or "thread")[:100], parent_id=channel_id)
        thread.update(id=message_id, owner_id=self.bot_user["id"])
        self.threads.append(thread)
        await self.dispatch("THREAD_CREATE", dict(thread, newly_created=True), guild_id=guild.id)
        return json_response(thread, 201)

    def _delete_message(self, channel_id: str, message_id: str) -> web.Response:
        message, problem = self._own_message(channel_id, message_id)
        if problem is not None or message is None:
            return problem or error(404, "Unknown Message", 10008)
        del self.messages[message_id]
        self.deleted.append(message_id)
        self.bot_messages = [m for m in self.bot_messages if m["id"] != message_id]
        return web.Response(status=204)

    async def _interaction_callback(self, request: web.Request, interaction_id: str, token: str) -> web.Response:
        interaction = self.interactions.get(interaction_id)
        if interaction is None or interaction["token"] != token:
            return error(404, "Unknown interaction", 10062)
        responses = self.interaction_responses[interaction_id]
        if responses:
            return error(400, "Interaction has already been acknowledged.", 40060)
        payload, files = await self._read_message_body(request)
        data = payload.get("data") or {}
        record = {"type": payload.get("type"), "content": data.get("content") or "", "flags": data.get("flags", 0),
                  "allowed_mentions": data.get("allowed_mentions"),
                  "files": self._stored_files(interaction["channel_id"], files)}
        responses.append(record)
        callback = {"interaction": {"id": interaction_id, "type": 2, "activity_instance_id": None,
                                    "response_message_id": None, "response_message_loading": payload.get("type") == 5,
                                    "response_message_ephemeral": bool(record["flags"] & 64)}}
        if payload.get("type") == 4:
            message = self._message(interaction["channel_id"], self.bot_user, record["content"])
            message.update(interaction_metadata=self._metadata(interaction), webhook_id=self.application_id,
                           flags=record["flags"])
            callback["interaction"]["response_message_id"] = message["id"]
            callback["resource"] = {"type": 4, "message": message}
        else:
            callback["resource"] = {"type": payload.get("type")}
        return json_response(callback)

    @staticmethod
    def _metadata(interaction: dict[str, Any]) -> dict[str, Any]:
        return {"id": interaction["id"], "type": 2, "user": interaction["_user"], "authorizing_integration_owners": {}}

    async def _webhook(self, request: web.Request, token: str, message_ref: str | None) -> web.Response:
        interaction = next((i for i in self.interactions.values() if i["token"] == token), None)
        if interaction is None:
            return error(404, "Unknown Webhook", 10015)
        if request.method == "GET" and message_ref:
            return error(404, "Unknown Message", 10008)
        payload, files = await self._read_message_body(request)
        problem = self._validate_outgoing(payload, files)
        if problem is not None:
            return problem
        record = {"type": "followup" if message_ref is None else "edit", "content": payload.get("content") or "",
                  "flags": payload.get("flags", 0), "allowed_mentions": payload.get("allowed_mentions"),
                  "files": self._stored_files(interaction["channel_id"], files)}
        self.interaction_responses[interaction["id"]].append(record)
        message = self._message(interaction["channel_id"], self.bot_user, record["content"],
                                attachments=[{k: v for k, v in f.items() if k != "data"} for f in record["files"]],
                                webhook_id=self.application_id)
        message.update(interaction_metadata=self._metadata(interaction), flags=record["flags"])
        return json_response(message)

    # --- awaiting what the bot did ---------------------------------------------------------

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def wait_until(self, predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
        """Wait until ``predicate()`` is truthy (re-checked after every
        request or gateway frame); return its value. Raises TimeoutError
        naming ``what``."""
        async def loop() -> Any:
            async with self._changed:
                while True:
                    value = predicate()
                    if value:
                        return value
                    # Also wake periodically: some changes (timers) notify nobody.
                    try:
                        await asyncio.wait_for(self._changed.wait(), 0.05)
                    except asyncio.TimeoutError:
                        pass
        try:
            return await asyncio.wait_for(loop(), timeout)
        except asyncio.TimeoutError:
            raise TimeoutError(f"fake Discord: timed out after {timeout}s waiting for {what}") from None

    async def wait_for_bot_messages(self, channel_id: str, count: int = 1, *, after: int = 0,
                                    timeout: float = 10.0) -> list[dict[str, Any]]:
        """Wait until the bot has posted ``count`` messages in ``channel_id``
        (counting from its ``after``-th message there); return them."""
        def found() -> list[dict[str, Any]] | None:
            sent = [m for m in self.bot_messages if m["channel_id"] == channel_id][after:]
            return sent[:count] if len(sent) >= count else None
        return await self.wait_until(found, timeout, f"{count} bot message(s) in channel {channel_id}")

    async def wait_for_reply_to(self, message_id: str, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Wait for the bot's reply to ``message_id``; return every message of
        that reply (a long reply is split)."""
        def found() -> list[dict[str, Any]] | None:
            first = next((i for i, m in enumerate(self.bot_messages)
                          if (m.get("message_reference") or {}).get("message_id") == message_id), None)
            return self.bot_messages[first:] if first is not None else None
        return await self.wait_until(found, timeout, f"the bot's reply to message {message_id}")

    async def wait_for_interaction_response(self, interaction_id: str, count: int = 1,
                                            timeout: float = 10.0) -> list[dict[str, Any]]:
        def found() -> list[dict[str, Any]] | None:
            responses = self.interaction_responses.get(interaction_id, [])
            return responses if len(responses) >= count else None
        return await self.wait_until(found, timeout, f"a response to interaction {interaction_id}")

    async def wait_ready(self, shards: int = 1, timeout: float = 10.0) -> None:
        """Wait until ``shards`` sessions are connected and have synced their
        slash commands (the bot does that on start)."""
        await self.wait_until(lambda: len(self.connected_sessions()) >= shards, timeout, f"{shards} gateway session(s)")

    def bot_messages_in(self, channel_id: str) -> list[dict[str, Any]]:
        return [m for m in self.bot_messages if m["channel_id"] == channel_id]
