"""The assembled bot: settings + plugins + the message pipeline.

A transport turns what it receives into an :class:`IncomingMessage` and calls
:meth:`Bot.handle` with a ``send`` callable; the pipeline does the rest:

resolve the session → prepare and store the user message → build the context
window → generate the reply → send it → store the reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from collections.abc import Set as AbstractSet
from typing import Any

from core import commands as command_parsing
from core import guild_settings
from core.clock import Clock
from core.commands import CommandRegistry
from core.dispatch import HookFailure, Hooks
from core.errors import ExportIncomplete, Refused
from core.guild_settings import GuildSettings
from core.models import (
    Context,
    HealthReport,
    IncomingMessage,
    MessageDeletion,
    MessageEdit,
    MessageRecord,
    Reply,
    SendReply,
    Session,
)
from core.plugins import ESSENTIAL, PluginHost, get_plugin_manager
from core.settings import Settings
from core.storage import StorageService
from core.streaming import TokenHub
from core.switches import BOT_KEY, STATE_PREFIX, StoredSwitches, Switch, SwitchBoard, guild_key
from core.tasks import stop_task

log = logging.getLogger("core.bot")

_NONE: frozenset[str] = frozenset()
# A plugin implementing one of these is switched for the whole bot only.
OWNERS_ONLY_HOOKS = frozenset(
    {"claim_message", "session_scope", "resolve_session", "register_storage", "export_user", "forget_user", "export_guild"}
)

# How a conversation turn gets its answer: (message, session, its stored
# record, whether memory is degraded) -> the reply.
Answerer = Callable[[IncomingMessage, Session, MessageRecord, bool], Awaitable[Reply]]

MEMORY_DEGRADED = "memory is degraded: this message may not be remembered"
# How often one delivery of a message asks for its claim again after another
# instance took it over (each round waits for that one to answer or die).
CLAIM_ROUNDS = 4


class TakenOver(Exception):
    """The storage refused the send (``confirm_reply``): another instance
    took the message over while this one was handling it. ``resume`` sends
    (and stores) the answer already made, if the message comes back."""

    def __init__(self, message_id: str, resume: Callable[[], Awaitable[Reply | None]]) -> None:
        super().__init__(message_id)
        self.resume = resume


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
        self.hooks = Hooks(self.plugins.pm, {"bot": self}, self.off_in_guild, self.hook_timeout)
        # The conversation store one plugin registers (core.storage).
        self.storage = StorageService(self.hooks)
        # Replies as they are written, for transports that show them live
        # (core.streaming): reply plugins publish, transports subscribe.
        self.tokens = TokenHub()
        # What each plugin keeps for this bot, under the plugin's name (the
        # one way: several bots share a process in tests and deploys).
        self.plugin_state: dict[str, Any] = {}
        self.commands = CommandRegistry()
        self.transports: dict[str, Any] = {}
        self.image_providers: dict[str, Any] = {}
        # The transport this instance serves (set by the CLI before start):
        # essential here, whatever a stored switch says.
        self.running_transport: str | None = None
        self.transport_plugins: dict[str, str] = {}
        self.switches = StoredSwitches()
        # Per-server settings changed at run time (core.guild_settings).
        self.guild_settings = GuildSettings()
        self._guild_off: dict[str, set[str]] = {}
        self._local_states: dict[str, Any] = {}
        self._follower: asyncio.Task[None] | None = None
        self.started = False

    # --- lifecycle ----------------------------------------------------------

    async def start(self) -> None:
        for name in list(self.plugins.enabled()):
            await self._start_plugin(name)
        self._collect_registries()
        await self.refresh_plugin_state()
        self._follower = asyncio.create_task(self._follow_forever())
        self.started = True

    async def stop(self) -> None:
        await stop_task(self._follower)
        self._follower = None
        if self.started:
            await self.hooks.broadcast("shutdown")
        self.started = False

    async def _start_plugin(self, name: str) -> bool:
        plugin = self.plugins.pm.get_plugin(name)
        impls = [i for i in self.hooks.implementations("startup") if i.plugin is plugin]
        for impl in impls:
            failure = await self.hooks.call_one("startup", impl)
            if failure is not None:
                self.plugins.fail(name, f"startup failed: {failure.error}", bad_config=failure.config)
                return False
        return True

    def _collect_registries(self) -> None:
        self.commands = CommandRegistry()
        self.hooks.call_registry("register_commands", self.commands.register_for)
        self.transports = {}
        self.transport_plugins = {}
        self.image_providers = {}
        plugin_of: dict[str, dict[str, str]] = {"transport": self.transport_plugins, "image provider": {}}

        def registrar(target: dict[str, Any], what: str) -> Any:
            def make(plugin: str) -> Any:
                def register(name: str, value: Any) -> None:
                    if name in target:
                        log.warning("%s %r from %r ignored: already registered", what, name, plugin)
                        return
                    target[name] = value
                    plugin_of[what][name] = plugin

                return register

            return make

        self.storage.clear()
        self.hooks.call_registry("register_storage", self.storage.register_for)
        self.hooks.call_registry("register_transports", registrar(self.transports, "transport"))
        self.hooks.call_registry("register_image_providers", registrar(self.image_providers, "image provider"))

    def hook_timeout(self, hook: str) -> float:
        """Seconds one implementation of ``hook`` may take ([bot] hook_timeout)."""
        return self.settings.bot.hook_timeouts.get(hook, self.settings.bot.hook_timeout)

    # --- plugins switched at run time (rules: core.switches) -----------------

    def essential_plugins(self) -> set[str]:
        """Plugins nobody switches off at run time: the core, the plugin
        that provides the storage, and the transport this instance runs on."""
        essential = set(ESSENTIAL)
        essential |= {
            i.name for i in self.plugins.info.values() if i.state == "enabled" and "register_storage" in i.hooks
        }
        running = self.transport_plugins.get(self.running_transport or "")
        if running:
            essential.add(running)
        return essential

    def owners_only_plugins(self) -> set[str]:
        """Plugins a guild administrator cannot switch in their guild:
        essential ones, transports, those that declare it (limits), and
        those that decide which conversation a message belongs to or hold
        people's data (sessions): off in one guild, they would split its
        conversations (G9) and take ``/export`` and ``/forget`` away."""
        by_role = {i.name for i in self.plugins.info.values() if OWNERS_ONLY_HOOKS & set(i.hooks)}
        declared = {i.name for i in self.plugins.info.values() if i.owners_only}
        return self.essential_plugins() | set(self.transport_plugins.values()) | declared | by_role

    def off_in_guild(self, guild_id: str | None) -> AbstractSet[str]:
        """The plugins switched off in ``guild_id`` (empty for DMs)."""
        return self._guild_off.get(guild_id, _NONE) if guild_id else _NONE

    async def switch_plugin(self, name: str, enabled: bool, *, guild_id: str | None, by: str) -> str:
        """Switch plugin ``name`` for one guild, or for the whole bot when
        ``guild_id`` is ``None``, and store the choice so every instance
        follows it. Who may call this is the caller's check; which plugin
        may be switched where is checked here (``ValueError`` says why not)."""
        if name not in self.plugins.candidates:
            raise ValueError(f"unknown plugin {name!r}; installed: {', '.join(sorted(self.plugins.candidates))}")
        if not enabled and name in self.essential_plugins():
            raise ValueError(f"plugin {name!r} is essential here ({self._why_essential(name)}) and cannot be switched off")
        if guild_id is None:
            return await self._switch_bot_wide(name, enabled, by)
        return await self._switch_in_guild(name, enabled, guild_id, by)

    def _why_essential(self, name: str) -> str:
        if name in ESSENTIAL:
            return "the core"
        if name == self.transport_plugins.get(self.running_transport or ""):
            return "the transport this instance runs on"
        return "it stores the messages"

    async def _switch_bot_wide(self, name: str, enabled: bool, by: str) -> str:
        states = await self._load_states()
        board = SwitchBoard.from_stored((states or {}).get(BOT_KEY)) if states is not None else self.switches.bot
        if enabled and not self.plugins.pm.has_plugin(name) and not await self._turn_on(name):
            return f"plugin {name!r} could not be switched on: {self.plugins.info[name].reason}"
        board.switches[name] = Switch(enabled, by, self.clock.now())
        await self._save_state(BOT_KEY, board.to_stored())
        self.switches.bot = board
        await self._follow()
        self._collect_registries()
        return f"plugin {name!r} switched {'on' if enabled else 'off'} for the whole bot"

    async def _switch_in_guild(self, name: str, enabled: bool, guild_id: str, by: str) -> str:
        if name in self.owners_only_plugins():
            raise ValueError(f"plugin {name!r} can only be switched for the whole bot, by the bot's owners")
        if enabled and self.plugins.info[name].state != "enabled":
            raise ValueError(f"plugin {name!r} is off for the whole bot; only the bot's owners can switch it on")
        states = await self._load_states()
        key = guild_key(guild_id)
        if states is not None:
            board = SwitchBoard.from_stored(states.get(key), key)
        else:
            board = self.switches.guilds.get(guild_id, SwitchBoard())
        if enabled:
            board.switches.pop(name, None)
        else:
            board.switches[name] = Switch(False, by, self.clock.now())
        await self._save_state(key, board.to_stored())
        self.switches.guilds[guild_id] = board
        self._index_guild_switches()
        return f"plugin {name!r} switched {'on' if enabled else 'off'} in this server"

    async def refresh_plugin_state(self) -> bool:
        """Read every stored switch and follow it. ``False`` when the store
        cannot answer now: the switches last read stay in force."""
        states = await self._load_states()
        if states is None:
            return False
        self.switches = StoredSwitches.from_states(states)
        self.guild_settings = GuildSettings.from_states(states)
        await self._follow()
        return True

    async def change_setting(self, guild_id: str | None, name: str, raw: str | None, *, by: str) -> str:
        """Set (``raw`` text) or reset (``None``) run-time setting ``name``
        for ``guild_id`` and store it so every instance follows
        (``core.guild_settings``). Who may call this is the caller's check;
        a bad name or value raises ``ValueError`` saying why."""
        setting = guild_settings.SETTINGS.get(name)
        if setting is None:
            raise ValueError(f"unknown setting {name!r}; known: {', '.join(guild_settings.SETTINGS)}")
        if guild_id is None and not setting.bot_wide:
            raise ValueError(f"{name} is a per-server setting: change it in the server")
        value = None
        if raw is not None:
            try:
                value = setting.parse(raw)
            except ValueError as exc:
                raise ValueError(f"{name}: {exc}") from None
        key = guild_settings.scope_key(guild_id, name)
        states = await self._load_states()
        stored = dict((states or {}).get(key) or {})
        if value is None:
            stored.pop(name, None)
        else:
            stored[name] = value
        await self._save_state(key, stored)
        self.guild_settings.values[key[len(guild_settings.SETTINGS_PREFIX):]] = stored
        log.info("setting %s %s by %s (%s)", name, "reset" if value is None else "changed", by, key)
        return f"{name} {'reset to the config' if value is None else 'set'}" + ("" if setting.bot_wide else " in this server")

    async def _follow(self) -> None:
        """Make this instance's plugins what config and the bot-wide
        switches say, in both directions."""
        essential = self.essential_plugins()
        changed = False
        for name, info in list(self.plugins.info.items()):
            switch = self.switches.bot.switches.get(name)
            info.switch = switch
            if info.state not in ("enabled", "disabled") or name in essential:
                continue
            wanted = switch.enabled if switch else info.configured
            if wanted and info.state == "disabled":
                changed |= await self._turn_on(name)
            elif not wanted and info.state == "enabled":
                await self._stop_plugin(name)
                self.plugins.disable(name, f"switched off for the whole bot{_by(switch)}")
                changed = True
        if changed:
            self._collect_registries()
        self._index_guild_switches()

    def _index_guild_switches(self) -> None:
        # What a guild switched off, less what no guild may switch: a stored
        # switch never outranks the rules, whoever wrote it.
        protected = self.owners_only_plugins()
        self._guild_off = {g: off for g, b in self.switches.guilds.items() if (off := b.off() - protected)}

    async def _turn_on(self, name: str) -> bool:
        return self.plugins.enable(name) and await self._start_plugin(name)

    async def _stop_plugin(self, name: str) -> None:
        plugin = self.plugins.pm.get_plugin(name)
        for impl in self.hooks.implementations("shutdown"):
            if impl.plugin is plugin:
                await self.hooks.call_one("shutdown", impl)

    async def _load_states(self) -> dict[str, Any] | None:
        """Every stored switch, or ``None`` when the store cannot answer.
        Without a plugin that stores bot state, the switches live in this
        process only."""
        if not self.storage.present:
            return dict(self._local_states)
        return await self.storage.load_bot_states(STATE_PREFIX)

    async def _save_state(self, key: str, value: Any) -> None:
        self._local_states[key] = value
        await self.storage.save_bot_state(key, value)

    async def _follow_forever(self) -> None:
        """Follow switches made on other instances, whether or not
        messages arrive here."""
        while True:
            await asyncio.sleep(self.settings.bot.plugin_state_refresh)
            try:
                await self.refresh_plugin_state()
            except Exception as exc:  # noqa: BLE001 - keep following
                log.error("could not refresh the plugins switched at run time: %s", exc)

    # --- the pipeline ----------------------------------------------------

    async def handle(self, message: IncomingMessage, send: SendReply) -> Reply | None:
        """Handle one incoming message, conversation or command, from any
        transport; return the reply sent, or ``None`` when nothing was sent
        (bot author, or handled by another instance).

        The one way in: every transport calls this with a ``send`` callable
        and nothing else of the pipeline (claim, lease, session, storage,
        the claim marked done) is done anywhere but here.
        """
        try:
            return await self._handle(message, send)
        finally:
            # A transport following the reply live stops waiting, whatever
            # happened (a command, a refusal, another instance answered).
            self.tokens.finish(message.id)

    async def _handle(self, message: IncomingMessage, send: SendReply) -> Reply | None:
        if message.author_is_bot or not self.guild_settings.listens_to(message):
            return None
        resume: Callable[[], Awaitable[Reply | None]] | None = None
        for _round in range(CLAIM_ROUNDS):
            try:
                if resume is None:
                    return await self._handle_claimed(message, send)
                # Rule A4 (docs/MEMORY.md): the one that took it over may die
                # before answering too; asking for the claim again keeps watch
                # (A3) until it answers, or gives the message back: then the
                # answer made here is sent (nothing is run twice).
                try:
                    if await self.hooks.first("claim_message", message=message) is False:
                        return None
                except Refused:
                    return None  # a limit's notice: this message was handled once already
                async with self.session_held(message):
                    return await resume()
            except TakenOver as lost:
                log.info("message %s: another instance took it over; keeping watch until it answers", message.id)
                resume = lost.resume
        return None

    async def _handle_claimed(self, message: IncomingMessage, send: SendReply) -> Reply | None:
        # Claimed first: with several instances receiving every event, each
        # message (command or not) is answered once. A claim may refuse with
        # a reply (a limit's notice) rather than drop the message silently.
        try:
            if await self.hooks.first("claim_message", message=message) is False:
                return None
        except Refused as refused:
            return await self._answer(message, Reply(refused.reply), send)
        problem = self._check_input(message)
        if problem:
            return await self._answer(message, Reply(problem), send)
        parsed = command_parsing.parse(message.content, self.settings.bot.command_prefix)
        if parsed and not message.attachments:
            return await self._command(message, *parsed, send)
        return await self._turn(message, send, self._generate, prepare=True)

    async def handle_edit(self, edit: MessageEdit) -> None:
        """A user edited a message, on any transport: memory updates what
        it holds for it (docs/MEMORY.md, E). Nothing is sent. An edit too
        long to be a message is ignored (the old text stays)."""
        if edit.author_is_bot:
            return
        if len(edit.content) > self.settings.bot.max_message_chars or not edit.content.strip():
            log.info("edit of message %s ignored: empty or longer than a message may be", edit.id)
            return
        await self.storage.edit_message(edit)

    async def handle_deletion(self, deletion: MessageDeletion) -> None:
        """Messages were deleted, on any transport: memory removes them and
        the bot's replies to them (docs/MEMORY.md, E). Nothing is sent."""
        if deletion.ids:
            await self.storage.delete_messages(deletion)

    async def handle_member_left(self, user_id: str, guild_id: str, left_at: float, transport: str = "test") -> bool:
        """A member left guild ``guild_id`` (or was removed from it), on any
        transport. When the guild forgets its leavers (``forget_on_leave``),
        memory deletes what they wrote there by the path of a bulk delete
        (docs/MEMORY.md, E6); ``True`` when it was asked to."""
        if not guild_settings.forgets_leavers(self.guild_settings, guild_id):
            return False
        log.info("member %s left guild %s, which forgets its leavers: deleting what they wrote there", user_id, guild_id)
        await self.storage.delete_messages(MessageDeletion.of_member(user_id, guild_id, left_at, transport))
        return True

    async def export_guild(self, guild_id: str) -> dict[str, Any]:
        """Everything the plugins hold for ``guild_id`` (the ``export_guild``
        hook), merged: lists under one key are joined. Raises
        :class:`ExportIncomplete` when a plugin failed. Who may ask is the
        caller's check."""
        results = await self.hooks.collect_by_plugin("export_guild", guild_id=guild_id)
        answered = {plugin for plugin, _ in results}
        failed = sorted({i.plugin_name for i in self.hooks.implementations("export_guild")} - answered)
        if failed:
            raise ExportIncomplete(failed)
        merged: dict[str, Any] = {}
        for _plugin, part in results:
            for key, value in (part or {}).items():
                if isinstance(merged.get(key), list) and isinstance(value, list):
                    merged[key] = merged[key] + value
                else:
                    merged[key] = value
        return merged

    async def stored_states(self) -> dict[str, Any]:
        """Every stored switch and run-time setting (``plugins.`` bot
        state), read now; raises ``RuntimeError`` when the store cannot
        answer (unknown is not "none set")."""
        states = await self._load_states()
        if states is None:
            raise RuntimeError("the stored settings cannot be read now (is the database reachable?)")
        return states

    async def _command(
        self, message: IncomingMessage, name: str, args: str, send: SendReply
    ) -> Reply | None:
        command = self.commands.commands.get(name)
        if command is not None and command.holds_session:
            async with self.session_held(message):
                reply = await self.commands.run(self, message, name, args)
        else:
            reply = await self.commands.run(self, message, name, args)
        if not reply.in_conversation:
            return await self._answer(message, reply, send)

        async def answer(*_turn: object) -> Reply:
            return reply

        # A command's answer that is part of the conversation (a picture):
        # the request and the answer are stored like a conversation turn.
        # The command was checked as a command, so prepare_message (the
        # checks of a conversation message) does not run again.
        sent = await self._turn(message, send, answer, prepare=False)
        if sent is not None:
            await self.hooks.broadcast("message_answered", message=message, reply=sent)
        return sent

    async def _answer(self, message: IncomingMessage, reply: Reply, send: SendReply) -> Reply | None:
        """Send a reply that is not part of the conversation record; its
        claim is done once sent."""
        if not await self._confirmed(message):
            raise TakenOver(message.id, lambda: self._answer(message, reply, send))
        await send(reply)
        await self.hooks.broadcast("message_answered", message=message, reply=reply)
        return reply

    async def may_send(self, message: IncomingMessage) -> bool:
        """Whether this instance may show an answer to ``message`` now: the
        check the core makes before every send (``confirm_reply``, A4). A
        transport that posts a reply before it is complete (streaming) asks
        this before its first post; asking again is harmless."""
        return await self._confirmed(message)

    async def _confirmed(self, message: IncomingMessage) -> bool:
        if not await self.storage.confirm_reply(message):
            log.warning("reply to message %s not sent: another instance took the message over", message.id)
            return False
        return True

    @contextlib.asynccontextmanager
    async def session_held(self, message: IncomingMessage) -> AsyncIterator[None]:
        """Hold the lease of ``message``'s session; when taking it fails,
        go on without it.

        Availability wins over strict one-at-a-time handling: a lease that
        cannot be taken (both backends down) must not cost the user a reply.
        Failures inside the block propagate unchanged.
        """
        lease = await self.storage.session_lease(message)
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

    async def _turn(
        self, message: IncomingMessage, send: SendReply, answer: Answerer, *, prepare: bool
    ) -> Reply | None:
        """One turn of the conversation, holding the session's lease:
        resolve the session, store the message, ``answer`` it, send the
        answer and store it."""
        async with self.session_held(message):
            try:
                session = await self.hooks.first("resolve_session", message=message)
                if session is None:
                    session = self.default_session(message)
                if prepare:
                    await self.hooks.broadcast("prepare_message", message=message, session=session)
                record = MessageRecord.from_incoming(message, session)
                degraded = not await self._store(record, session)
                reply = await answer(message, session, record, degraded)
                if degraded and MEMORY_DEGRADED not in reply.notes:
                    reply.notes.append(MEMORY_DEGRADED)
                return await self._deliver(message, session, reply, send)
            except Refused as refused:
                return await self._answer(message, Reply(refused.reply), send)

    async def _generate(
        self, message: IncomingMessage, session: Session, record: MessageRecord, degraded: bool
    ) -> Reply:
        context = await self.hooks.first("build_context", session=session, message=message)
        if context is None:
            context = Context(session, self.settings.bot.system_prompt, [record])
        await self.hooks.broadcast("extend_context", context=context, message=message)
        if degraded:
            context.notes.append(MEMORY_DEGRADED)
        answer = await self.hooks.first_answer("generate_reply", context=context, message=message)
        if answer.value is None or (answer.failures and answer.plugin in ESSENTIAL):
            # A reply plugin failed and only the core's fallback answered:
            # say so, naming this message's own failures (another message's,
            # failing at the same time, must not be blamed here).
            return Reply(f"Sorry, I could not generate a reply{_blame(answer.failures)}.")
        return answer.value

    async def _deliver(
        self, message: IncomingMessage, session: Session, reply: Reply, send: SendReply
    ) -> Reply | None:
        """Send the answer of a conversation turn and store it; storing its
        record marks the message answered."""
        if not await self._confirmed(message):
            raise TakenOver(message.id, lambda: self._deliver(message, session, reply, send))
        sent = await send(reply)
        reply_record = MessageRecord.of_reply(
            message,
            session,
            reply,
            author_name=self.settings.bot.name,
            timestamp=sent.timestamp if sent and sent.timestamp else self.clock.now(),
        )
        await self._store(reply_record, session)
        await self.hooks.broadcast("reply_sent", reply=reply, record=reply_record, session=session, message=message)
        return reply

    async def _store(self, record: MessageRecord, session: Session) -> bool:
        """Store through the storage; ``False`` when memory is degraded (it
        failed, or accepted only in degraded form)."""
        if self._storage_failed():
            # A memory plugin that failed to start is not there to say so.
            return False
        return await self.storage.store_message(record, session)

    def _storage_failed(self) -> bool:
        return any(i.state == "failed" and "register_storage" in i.hooks for i in self.plugins.info.values())

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


def _blame(failures: list[HookFailure]) -> str:
    """`` (plugin llm failed)`` for a reply; who did not answer in time is
    named as such."""
    hung = sorted({f.plugin for f in failures if f.timed_out})
    failed = sorted({f.plugin for f in failures if not f.timed_out})
    parts = [f"plugin {', '.join(failed)} failed"] if failed else []
    if hung:
        parts.append(f"plugin {', '.join(hung)} did not answer in time")
    return f" ({'; '.join(parts)})" if parts else ""


def _by(switch: Switch | None) -> str:
    return f" by {switch.by}" if switch and switch.by else ""
