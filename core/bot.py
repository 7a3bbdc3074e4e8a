"""The assembled bot: settings + plugins + the message pipeline.

A transport turns what it receives into an :class:`IncomingMessage` and calls
:meth:`Bot.handle` with a ``send`` callable; the pipeline does the rest:

resolve the session → prepare and store the user message → build the context
window → generate the reply → send it → store the reply.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Iterable
from typing import Any

from core import commands as command_parsing
from core.clock import Clock
from core.commands import CommandRegistry
from core.dispatch import Hooks
from core.errors import Refused
from core.models import (
    Context,
    HealthReport,
    IncomingMessage,
    MessageRecord,
    Reply,
    Role,
    SendReply,
    Session,
)
from core.plugins import PluginHost, get_plugin_manager
from core.settings import Settings

log = logging.getLogger("core.bot")

PLUGIN_STATE_KEY = "plugins.runtime"
# How often an instance re-reads the plugins switched at run time by an admin
# on another instance.
PLUGIN_STATE_REFRESH = 10.0

MEMORY_DEGRADED = "memory is degraded: this message may not be remembered"


class Bot:
    """One running bot instance."""

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Clock | None = None,
        entry_points: Iterable[Any] | None = None,
        instance_id: str | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock or Clock()
        self.instance_id = instance_id or settings.env.instance_id
        self.plugins: PluginHost = get_plugin_manager(settings.plugins, entry_points)
        self.hooks = Hooks(self.plugins.pm, {"bot": self})
        self.commands = CommandRegistry()
        self.transports: dict[str, Any] = {}
        self.image_providers: dict[str, Any] = {}
        self.started = False
        self._plugin_state_checked = 0.0

    # --- lifecycle ----------------------------------------------------------

    async def start(self) -> None:
        for name in list(self.plugins.enabled()):
            await self._start_plugin(name)
        self._collect_registries()
        await self._apply_plugin_state()
        self.started = True

    async def stop(self) -> None:
        if self.started:
            await self.hooks.broadcast("shutdown")
        self.started = False

    async def _start_plugin(self, name: str) -> bool:
        plugin = self.plugins.pm.get_plugin(name)
        impls = [i for i in self.hooks.implementations("startup") if i.plugin is plugin]
        before = len(self.hooks.failures)
        for impl in impls:
            await self.hooks._call("startup", impl, {"bot": self})
        if len(self.hooks.failures) > before:
            self.plugins.fail(name, f"startup failed: {self.hooks.failures[-1].error}")
            return False
        return True

    def _collect_registries(self) -> None:
        self.commands = CommandRegistry()
        self.hooks.call_registry("register_commands", self.commands.register_for)
        self.transports = {}
        self.image_providers = {}

        def registrar(target: dict[str, Any], what: str) -> Any:
            def make(plugin: str) -> Any:
                def register(name: str, value: Any) -> None:
                    if name in target:
                        log.warning("%s %r from %r ignored: already registered", what, name, plugin)
                        return
                    target[name] = value

                return register

            return make

        self.hooks.call_registry("register_transports", registrar(self.transports, "transport"))
        self.hooks.call_registry("register_image_providers", registrar(self.image_providers, "image provider"))

    # --- plugins switched at run time ------------------------------------------

    async def set_plugin_enabled(self, name: str, enabled: bool) -> str:
        """Switch a plugin on or off now, and store the choice durably so
        every instance, and this one after a restart, follows it."""
        if enabled:
            if not self.plugins.enable(name) or not await self._start_plugin(name):
                return f"plugin {name!r} could not be enabled: {self.plugins.info[name].reason}"
        else:
            if self.plugins.pm.has_plugin(name):
                await self._stop_plugin(name)
            self.plugins.disable(name)
        self._collect_registries()
        state = await self._load_plugin_state()
        disabled = set(state.get("disabled", []))
        disabled.discard(name) if enabled else disabled.add(name)
        await self.hooks.broadcast("save_bot_state", key=PLUGIN_STATE_KEY, value={"disabled": sorted(disabled)})
        return f"plugin {name!r} {'enabled' if enabled else 'disabled'}"

    async def _stop_plugin(self, name: str) -> None:
        plugin = self.plugins.pm.get_plugin(name)
        for impl in self.hooks.implementations("shutdown"):
            if impl.plugin is plugin:
                await self.hooks._call("shutdown", impl, {"bot": self})

    async def _load_plugin_state(self) -> dict[str, Any]:
        state = await self.hooks.first("load_bot_state", key=PLUGIN_STATE_KEY)
        return state if isinstance(state, dict) else {}

    async def _apply_plugin_state(self) -> None:
        self._plugin_state_checked = time.monotonic()
        state = await self._load_plugin_state()
        wanted_off = set(state.get("disabled", []))
        changed = False
        for name in list(self.plugins.enabled()):
            if name in wanted_off and name not in ("core",):
                await self._stop_plugin(name)
                self.plugins.disable(name, "disabled at run time by an admin")
                changed = True
        for name, info in list(self.plugins.info.items()):
            if info.state == "disabled" and info.reason.endswith("by an admin") and name not in wanted_off:
                if self.plugins.enable(name):
                    await self._start_plugin(name)
                    changed = True
        if changed:
            self._collect_registries()

    # --- the pipeline ----------------------------------------------------

    async def handle(self, message: IncomingMessage, send: SendReply) -> Reply | None:
        """Handle one incoming message; return the reply sent, or ``None``
        when nothing was sent (bot author, or handled by another instance)."""
        if message.author_is_bot:
            return None
        if time.monotonic() - self._plugin_state_checked > PLUGIN_STATE_REFRESH:
            await self._apply_plugin_state()
        # Claimed first: with several instances receiving every event, each
        # message (command or not) is answered once.
        if await self.hooks.first("claim_message", message=message) is False:
            return None
        problem = self._check_input(message)
        if problem:
            return await self._answer(message, Reply(problem), send)
        parsed = command_parsing.parse(message.content, self.settings.bot.command_prefix)
        if parsed and not message.attachments:
            return await self._answer(message, await self.commands.run(self, message, *parsed), send)

        lease = await self.hooks.first("session_lease", message=message)
        async with self._held(lease):
            try:
                return await self._converse(message, send)
            except Refused as refused:
                return await self._answer(message, Reply(refused.reply), send)

    async def _answer(self, message: IncomingMessage, reply: Reply, send: SendReply) -> Reply:
        """Send a reply that is not part of the conversation record."""
        await send(reply)
        await self.hooks.broadcast("message_answered", message=message, reply=reply)
        return reply

    @contextlib.asynccontextmanager
    async def _held(self, lease: Any) -> AsyncIterator[None]:
        """Hold a session lease; when taking it fails, answer anyway.

        Availability wins over strict one-at-a-time handling: a lease that
        cannot be taken (both backends down) must not cost the user a reply.
        Failures inside the block propagate unchanged.
        """
        if lease is None:
            yield
            return
        try:
            await lease.__aenter__()
        except Exception as exc:  # noqa: BLE001
            log.error("session lease could not be taken, handling without it: %s", exc)
            yield
            return
        try:
            yield
        except BaseException as exc:
            if not await lease.__aexit__(type(exc), exc, exc.__traceback__):
                raise
        else:
            await lease.__aexit__(None, None, None)

    def _check_input(self, message: IncomingMessage) -> str | None:
        if not message.content.strip() and not message.attachments:
            return "I got an empty message. Send me some text (or an image)."
        limit = self.settings.bot.max_message_chars
        if len(message.content) > limit:
            return (
                f"Your message is {len(message.content):,} characters; the limit is {limit:,}. "
                "Nothing was stored: please send it in shorter parts."
            )
        return None

    async def _converse(self, message: IncomingMessage, send: SendReply) -> Reply | None:
        session = await self.hooks.first("resolve_session", message=message)
        if session is None:
            session = self.default_session(message)
        await self.hooks.broadcast("prepare_message", message=message, session=session)
        record = MessageRecord.from_incoming(message, session)
        degraded = not await self._store(record, session)

        context = await self.hooks.first("build_context", session=session, message=message)
        if context is None:
            context = Context(session, self.settings.bot.system_prompt, [record])
        if degraded:
            context.notes.append(MEMORY_DEGRADED)
        reply = await self.hooks.first("generate_reply", context=context, message=message)
        if reply is None:
            failed = ", ".join(sorted({f.plugin for f in self.hooks.failures[-5:] if f.hook == "generate_reply"}))
            reply = Reply(f"Sorry, I could not generate a reply{f' (plugin {failed} failed)' if failed else ''}.")
        if degraded and MEMORY_DEGRADED not in reply.notes:
            reply.notes.append(MEMORY_DEGRADED)

        if await self.hooks.first("confirm_reply", message=message) is False:
            log.warning("reply to message %s not sent: another instance took the message over", message.id)
            return None
        sent = await send(reply)
        now = self.clock.now()
        reply_record = MessageRecord(
            id=f"reply:{message.id}",
            session_id=session.id,
            scope_key=session.scope_key,
            role=Role.BOT,
            author_id="bot",
            author_name=self.settings.bot.name,
            content=reply.content,
            # A reply sorts after what it answers, whatever the clocks say.
            timestamp=max(sent.timestamp if sent and sent.timestamp else now, message.timestamp + 0.001),
            guild_id=message.guild_id,
            channel_id=message.channel_id,
            reply_to_id=message.id,
            attachments=reply.attachments,
        )
        await self._store(reply_record, session)
        await self.hooks.broadcast("reply_sent", reply=reply, record=reply_record, session=session, message=message)
        return reply

    async def _store(self, record: MessageRecord, session: Session) -> bool:
        """Store through every memory plugin; ``False`` when memory is
        degraded (a plugin failed or accepted only in degraded form)."""
        if self._storage_failed():
            # A memory plugin that failed to start is not there to say so.
            return False
        impls = self.hooks.implementations("store_message")
        results = await self.hooks.broadcast("store_message", record=record, session=session)
        return len(results) == len(impls) and all(r is not False for _p, r in results)

    def _storage_failed(self) -> bool:
        return any(i.state == "failed" and "store_message" in i.hooks for i in self.plugins.info.values())

    def default_session(self, message: IncomingMessage) -> Session:
        scope = f"{message.guild_id or 'dm'}:{message.channel_id}:{message.author_id}"
        now = self.clock.now()
        return Session(
            id=scope,
            scope_key=scope,
            opened_at=now,
            last_active_at=now,
            guild_id=message.guild_id,
            channel_id=message.channel_id,
            user_id=message.author_id,
        )

    # --- operations used by commands and the CLI -----------------------------------

    async def health(self) -> list[HealthReport]:
        return [r for r in await self.hooks.collect("health") if isinstance(r, HealthReport)]
