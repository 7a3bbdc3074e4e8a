"""The Discord client: gateway events in, the core's replies out.

:func:`build_client` makes a ``commands.Bot`` (or ``commands.AutoShardedBot``
when sharding is configured) bound to a core :class:`core.bot.Bot`:

- messages: DMs, mentions, replies to the bot and messages in configured
  channels go through ``bot.handle``; its own and other bots' messages are
  ignored, as is a message delivered twice (gateway resume replays);
- replies: split at 2,000 characters on sensible boundaries, sent as a reply
  to the user's message with mentions disabled (model output cannot ping
  @everyone), files attached, retried on 429 / 5xx / network errors with a
  Discord nonce so a retried send is not posted twice; shown while they are
  written when the reply plugin streams (``live``: post, then edit at most
  once a second);
- slash commands: one per core command (options as optional string options),
  synced on start, resynced when the command set changes (an admin switched
  a plugin); permission checks stay in the core (``core.commands``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import inspect
import logging
import re
import signal
from collections.abc import Callable
from typing import Any, Optional

import aiohttp
import discord
from discord import app_commands
from discord.ext import commands

from core.errors import ConfigError
from core.models import Command, Reply, Sent
from plugins.discord.convert import (
    TRANSPORT,
    interaction_to_incoming,
    read_attachments,
    to_deletion,
    to_edit,
    to_incoming,
    trigger,
)
from plugins.discord.endpoints import use_endpoints
from plugins.discord.live import LiveReply
from plugins.discord.parts import _nonce, allowed_mentions, reply_parts, to_files
from plugins.discord.settings import DiscordSettings

log = logging.getLogger("plugins.discord")

# Discord's rule for command and option names (lower case, 1-32 chars).
APP_NAME = re.compile(r"^[-_\w]{1,32}$")
# Discord wants an interaction answered within 3 s: a command still running
# after this long is deferred ("bot is thinking") and answered by follow-up.
DEFER_AFTER = 2.0
SEEN_MESSAGES = 5000
TYPING_EVERY = 8.0
PRIVILEGED_INTENT_HELP = (
    "Discord refused the Message Content intent (close code 4014). Enable it for this application in the "
    "Discord developer portal (Bot > Privileged Gateway Intents > Message Content Intent), or set "
    "DISCORD_MESSAGE_CONTENT_INTENT=false ([discord] message_content_intent = false) to answer only "
    "mentions, replies and DMs."
)
MEMBERS_INTENT_HELP = (
    " DISCORD_MEMBERS_INTENT=true ([discord] members_intent) asks for the Server Members intent too: enable "
    "it in the portal (Server Members Intent) or set it to false (then no server hears its members leave)."
)


class TypingIndicator:
    """Shows "bot is typing" from now until :meth:`stop` (Discord shows it
    for about 10 s per request, so it is renewed). :meth:`stop` waits for a
    request in flight: a typing request landing after the reply would show
    the bot typing for 10 s after it answered."""

    def __init__(self, channel: Any) -> None:
        self.channel = channel
        self.stopped = False
        self.sleeping = False
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:  # the first request goes out even if the reply was instant
            try:
                await self.channel.typing()
            except (discord.HTTPException, aiohttp.ClientError, OSError) as exc:
                log.debug("typing indicator failed: %s", exc)
                return
            if self.stopped:
                return
            self.sleeping = True
            try:
                await asyncio.sleep(TYPING_EVERY)
            finally:
                self.sleeping = False

    async def stop(self) -> None:
        self.stopped = True
        if self.sleeping:
            self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.task), 10)


class SlashTree(app_commands.CommandTree):
    """Answers slash commands Discord still shows but the bot no longer has
    (e.g. of a plugin switched off) and command errors, instead of leaving
    the user with "The application did not respond"."""

    async def on_error(self, interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
        client: Any = self.client
        if isinstance(error, app_commands.CommandNotFound):
            prefix = client.core.settings.bot.command_prefix
            text = f"Unknown command {prefix}{error.name}: it may belong to a plugin that is switched off. Try {prefix}help."
            client.schedule_resync()
        else:
            log.error("slash command failed: %s", error, exc_info=error)
            text = "That command failed; the error was logged."
        try:
            if interaction.response.is_done():
                await interaction.followup.send(text, ephemeral=True)
            else:
                await interaction.response.send_message(text, ephemeral=True)
        except discord.HTTPException as exc:
            log.warning("could not answer interaction %s: %s", interaction.id, exc)


class ReplyPlace:
    """Where the answer to one message goes: its channel, as a Discord reply
    to it; or, when it opens a thread, a thread started from it, created
    once, by the instance that sends (after the core's checks) and only
    then. A thread that exists already (a retry) is reused; one that cannot
    be created leaves the answer in the channel."""

    def __init__(self, message: discord.Message, thread: bool) -> None:
        self.message = message
        self.thread = thread
        self._opened: Any = None
        self._lock = asyncio.Lock()
        # The message's text as the core got it (the bot's mention dropped).
        self.text = ""

    def thread_name(self) -> str:
        text = " ".join(self.text.split())
        return (text[:80] or f"conversation with {self.message.author.display_name}")[:100]

    async def target(self) -> tuple[Any, bool]:
        """(the channel to post in, whether to quote the message)."""
        if not self.thread:
            return self.message.channel, True
        async with self._lock:
            if self._opened is None:
                self._opened = await self._open()
        return (self._opened, False) if self._opened is not False else (self.message.channel, True)

    async def _open(self) -> Any:
        try:
            return await self.message.create_thread(name=self.thread_name(), auto_archive_duration=1440)
        except discord.HTTPException as exc:
            if exc.code == 160004:  # already created from this message (a retried send)
                with contextlib.suppress(discord.HTTPException):
                    return await self.message.guild.fetch_channel(self.message.id)  # type: ignore[union-attr]
            log.warning("could not open a thread for message %s (%s); answering in the channel", self.message.id, exc)
            return False


class TransportMixin:
    """The transport's behaviour; mixed into ``commands.Bot`` or
    ``commands.AutoShardedBot`` by :func:`build_client`."""

    core: Any
    config: DiscordSettings
    user: Any
    tree: Any  # discord.py's CommandTree, typed by the bot class this mixes into

    def __init__(self, core_bot: Any, config: DiscordSettings, **options: Any) -> None:
        intents = discord.Intents.default()
        intents.message_content = config.message_content_intent
        intents.members = config.members_intent
        kwargs: dict[str, Any] = {
            "command_prefix": commands.when_mentioned,
            "help_command": None,
            "intents": intents,
            "allowed_mentions": discord.AllowedMentions.none(),
            "tree_cls": SlashTree,
            "guild_ready_timeout": config.guild_ready_timeout,
            # The member list is not needed (only leaving members are): no
            # chunk of every server's members at start.
            "chunk_guilds_at_startup": False,
        }
        if config.shard_count is not None:
            kwargs["shard_count"] = config.shard_count
        if config.shard_ids is not None:
            kwargs["shard_ids"] = config.shard_ids
        kwargs.update(options)
        super().__init__(**kwargs)  # type: ignore[call-arg]
        self.core = core_bot
        self.config = config
        self.owners: set[str] = set(core_bot.settings.bot.owner_ids)
        self.installed: frozenset[str] = frozenset()
        self.synced = asyncio.Event()
        self._seen: collections.OrderedDict[int, None] = collections.OrderedDict()
        self._resync_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    # --- start-up ------------------------------------------------------------------

    async def setup_hook(self) -> None:
        app = getattr(self, "application", None)
        if app is not None:
            # The application's owner (or its team) owns the bot, as in discord.py's is_owner.
            self.owners.add(str(app.owner.id))
            if app.team is not None:
                self.owners.update(str(m.id) for m in app.team.members)
        self.install_commands()
        if self.config.sync_commands:
            await self.sync_commands()
        self.synced.set()

    async def close(self) -> None:
        # discord.py dispatches "ready" from a delayed task (guild_ready_timeout
        # after the last GUILD_CREATE); closing before it fires would make it
        # dispatch on a closed client and log a spurious traceback.
        ready_task = getattr(getattr(self, "_connection", None), "_ready_task", None)
        if ready_task is not None:
            ready_task.cancel()
        await super().close()  # type: ignore[misc]

    async def on_ready(self) -> None:
        guilds = getattr(self, "guilds", [])
        log.info("connected to Discord as %s (%s guilds)", self.user, len(guilds))

    # --- messages ------------------------------------------------------------------

    def first_delivery(self, message_id: int) -> bool:
        """``False`` for a message id this process already took (a gateway
        resume may replay events; memory's claim covers other instances)."""
        if message_id in self._seen:
            return False
        self._seen[message_id] = None
        while len(self._seen) > SEEN_MESSAGES:
            self._seen.popitem(last=False)
        return True

    async def on_message(self, message: discord.Message) -> None:
        if self.user is None:
            return
        why = trigger(message, self.user.id, self.config.channels, self.config.thread_channels)
        if why is None:
            return
        if not self.first_delivery(message.id):
            log.info("message %s delivered again: ignored", message.id)
            return
        if why == "channel" and not (message.content or message.attachments or message.stickers):
            # Without the Message Content intent Discord blanks other people's
            # messages: answering each with "empty message" would spam the channel.
            log.debug("blank message %s in a configured channel ignored (is the Message Content intent on?)", message.id)
            return
        await self.answer(message)

    # --- edits and deletions -----------------------------------------------------

    async def on_raw_message_edit(self, payload: discord.RawMessageUpdateEvent) -> None:
        """A user edited a message: memory updates what it holds (the core's
        ``handle_edit``). Updates without new text (a link preview coming
        in) and the bot's own edits are not edits of what was said."""
        if self.user is None or "content" not in payload.data or payload.data.get("edited_timestamp") is None:
            return
        try:
            await self.core.handle_edit(to_edit(payload.message, bot_user_id=self.user.id, bot_name=self.user.display_name))
        except Exception:  # noqa: BLE001 - one event must not take the transport down
            log.exception("edit of message %s could not be applied", payload.message_id)

    async def on_raw_message_delete(self, payload: discord.RawMessageDeleteEvent) -> None:
        await self._deleted([payload.message_id], payload.channel_id, payload.guild_id)

    async def on_raw_bulk_message_delete(self, payload: discord.RawBulkMessageDeleteEvent) -> None:
        await self._deleted(sorted(payload.message_ids), payload.channel_id, payload.guild_id)

    async def _deleted(self, ids: list[int], channel_id: int, guild_id: int | None) -> None:
        """Messages were deleted (one, or a moderator's bulk delete): memory
        removes them everywhere (the core's ``handle_deletion``)."""
        try:
            await self.core.handle_deletion(to_deletion(ids, channel_id, guild_id, self.core.clock.now()))
        except Exception:  # noqa: BLE001 - one event must not take the transport down
            log.exception("deletion of messages %s could not be applied", ids)

    async def on_raw_member_remove(self, payload: discord.RawMemberRemoveEvent) -> None:
        """A member left the server or was removed (needs the Server Members
        intent, ``members_intent``): the core decides by the server's
        ``forget_on_leave`` whether memory deletes what they said there
        (docs/MEMORY.md, E6). The bot leaving is not a member leaving."""
        if self.user is None or payload.user.id == self.user.id:
            return
        try:
            await self.core.handle_member_left(str(payload.user.id), str(payload.guild_id), self.core.clock.now(), TRANSPORT)
        except Exception:  # noqa: BLE001 - one event must not take the transport down
            log.exception("member %s leaving guild %s could not be applied", payload.user.id, payload.guild_id)

    def opens_thread(self, message: discord.Message) -> bool:
        """Whether the answer to ``message`` opens a thread (``thread_channels``)."""
        return (
            message.guild is not None
            and not isinstance(message.channel, discord.Thread)
            and message.channel.id in self.config.thread_channels
        )

    async def answer(self, message: discord.Message) -> None:
        typing = TypingIndicator(message.channel)
        live: LiveReply | None = None
        place = ReplyPlace(message, self.opens_thread(message))

        async def send(reply: Reply) -> Sent:
            await typing.stop()
            if live is not None:
                return await live.deliver(reply)
            return await self.send_reply(message, reply, place)

        try:
            attachments = await read_attachments(message, self.config.max_attachment_bytes)
            incoming = to_incoming(
                message,
                bot_user_id=self.user.id,
                bot_name=self.user.display_name,
                owner_ids=self.owners,
                attachments=attachments,
            )
            if place.thread:
                # A thread started from a message has the message's id: the
                # conversation's scope is the thread's from its first message.
                incoming.thread_id = str(message.id)
                place.text = incoming.content
            if self.config.stream_replies:
                # Subscribed before the pipeline starts, so no piece is missed.
                live = LiveReply(self, message, incoming, self.config.stream_edit_interval, typing.stop, place)
                live.follow(self.core.tokens.subscribe(incoming.id))
            await self.core.handle(incoming, send)
        except Exception:  # noqa: BLE001 - one message must not take the transport down
            # The user's message was stored before the reply was sent (the
            # pipeline's order), so a failed send loses no history.
            log.exception("message %s could not be answered", message.id)
        finally:
            if live is not None:
                await live.close()
            await typing.stop()

    async def send_reply(self, message: discord.Message, reply: Reply, place: ReplyPlace | None = None) -> Sent:
        """Send ``reply`` as an answer to ``message``; returns the first
        message's id and time. Raises when Discord keeps refusing it."""
        mentions = allowed_mentions(reply)
        first: discord.Message | None = None
        for index, (text, files) in enumerate(reply_parts(reply)):
            sent = await self.post_part(message, index, text, files, mentions, place)
            first = first or sent
        assert first is not None
        return Sent(id=str(first.id), timestamp=first.created_at.timestamp())

    async def post_part(
        self,
        message: discord.Message,
        index: int,
        text: str | None,
        files: list[Any],
        mentions: discord.AllowedMentions,
        place: ReplyPlace | None = None,
    ) -> discord.Message:
        """Post part ``index`` of the reply to ``message`` (the first one as
        a Discord reply to it, or in the thread it opened), with the part's
        nonce."""
        channel, quoting = await (place or ReplyPlace(message, False)).target()

        def make() -> dict[str, Any]:
            kwargs: dict[str, Any] = {"content": text, "allowed_mentions": mentions, "nonce": _nonce(message.id, index)}
            if files:
                kwargs["files"] = to_files(files)
            if index == 0 and quoting:
                kwargs["reference"] = message.to_reference(fail_if_not_exists=False)
                kwargs["mention_author"] = False
            return kwargs

        return await self.send_with_retry(channel.send, make)

    async def edit_part(
        self, posted: discord.Message, text: str | None, files: list[Any], mentions: discord.AllowedMentions
    ) -> discord.Message:
        """Show ``text`` (and ``files``) in a message the bot posted."""

        def make() -> dict[str, Any]:
            kwargs: dict[str, Any] = {"content": text, "allowed_mentions": mentions}
            if files:
                kwargs["attachments"] = to_files(files)
            return kwargs

        return await self.send_with_retry(posted.edit, make)

    async def send_with_retry(self, call: Callable[..., Any], make: Callable[[], dict[str, Any]]) -> discord.Message:
        """``call(**make())`` (a channel's send, a message's edit) with
        retries beyond discord.py's own for 429, 5xx and network errors; a
        4xx other than 429 is final."""
        attempts = self.config.send_retries + 1
        for attempt in range(attempts):
            delay = self.config.send_retry_delay * (2**attempt)
            try:
                return await call(**make())
            except discord.RateLimited as exc:
                delay = max(delay, exc.retry_after)
                problem: Exception = exc
            except discord.HTTPException as exc:
                if exc.status != 429 and exc.status < 500:
                    raise
                problem = exc
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                problem = exc
            if attempt == attempts - 1:
                raise problem
            log.warning("%s failed (%s); retry %s/%s in %.1fs",
                        getattr(call, "__qualname__", "sending"), problem, attempt + 1, attempts - 1, delay)
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    # --- slash commands ----------------------------------------------------------------

    def install_commands(self) -> None:
        """(Re)build the tree from the core's commands."""
        guilds = [discord.Object(id=g) for g in self.config.guild_ids]
        self.tree.clear_commands(guild=None)
        for guild in guilds:
            self.tree.clear_commands(guild=guild)
        for command in sorted(self.core.commands.commands.values(), key=lambda c: c.name):
            app_command = self.app_command(command)
            if app_command is None:
                continue
            if guilds:
                self.tree.add_command(app_command, guilds=guilds)
            else:
                self.tree.add_command(app_command)
        self.installed = frozenset(self.core.commands.commands)

    async def sync_commands(self) -> None:
        """Publish the tree to Discord: to the configured guilds (instant)
        or globally. A failure is logged; chatting still works."""
        try:
            if self.config.guild_ids:
                for gid in self.config.guild_ids:
                    await self.tree.sync(guild=discord.Object(id=gid))
            else:
                await self.tree.sync()
        except (discord.HTTPException, aiohttp.ClientError, OSError) as exc:
            log.error("could not sync slash commands with Discord: %s", exc)
        else:
            log.info("slash commands synced: %s", ", ".join(sorted(self.installed)) or "none")

    def schedule_resync(self) -> None:
        if self._resync_task is None or self._resync_task.done():
            self._resync_task = asyncio.create_task(self._resync())

    async def _resync(self) -> None:
        self.install_commands()
        if self.config.sync_commands:
            await self.sync_commands()

    def app_command(self, command: Command) -> app_commands.Command[Any, Any, Any] | None:
        """A slash command that runs core command ``command``; its options
        are optional strings, joined in order into the command's arguments."""
        if not APP_NAME.fullmatch(command.name) or command.name != command.name.lower():
            log.warning("command %r cannot be a slash command (Discord names are 1-32 lower-case characters)",
                        command.name)
            return None
        options = [o for o in command.options if APP_NAME.fullmatch(o) and o == o.lower()]
        for skipped in set(command.options) - set(options):
            log.warning("option %r of command %r cannot be a slash command option", skipped, command.name)
        name = command.name

        async def callback(interaction: discord.Interaction, **values: Any) -> None:
            args = " ".join(v.strip() for o in options if isinstance(v := values.get(o), str) and v.strip())
            await self.run_slash(interaction, name, args)

        kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
        callback.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
            [inspect.Parameter("interaction", kind, annotation=discord.Interaction)]
            + [inspect.Parameter(o, kind, annotation=Optional[str], default=None) for o in options]
        )
        callback.__discord_app_commands_param_description__ = {  # type: ignore[attr-defined]
            o: (command.options[o] or o)[:100] for o in options
        }
        app_command: app_commands.Command[Any, Any, Any] = app_commands.Command(
            name=name, description=(command.description or name)[:100], callback=callback
        )
        # Discord hides admin commands from others by default; the core still
        # checks every call (a server can override these defaults).
        if command.permission == "admin":
            app_command.default_permissions = discord.Permissions(administrator=True)
        elif command.permission == "manage_messages":
            app_command.default_permissions = discord.Permissions(manage_messages=True)
        return app_command

    async def run_slash(self, interaction: discord.Interaction, name: str, args: str) -> None:
        if not self.first_delivery(interaction.id):
            log.info("interaction %s delivered again: ignored", interaction.id)
            return
        prefix = self.core.settings.bot.command_prefix
        incoming = interaction_to_incoming(
            interaction, content=f"{prefix}{name}" + (f" {args}" if args else ""), owner_ids=self.owners
        )
        # The core's one pipeline claims the interaction (several instances
        # on one shard all receive it: Discord accepts one answer, and
        # /reset or /forget must not run twice), runs the command and marks
        # the claim done; this transport only says how to answer.
        responder = SlashResponder(interaction)
        task = asyncio.ensure_future(self.core.handle(incoming, responder.send))
        done, _ = await asyncio.wait({task}, timeout=DEFER_AFTER)
        if not done:
            await responder.defer()
        try:
            if await task is None:
                log.info("interaction %s is handled by another instance", interaction.id)
        except Exception:  # noqa: BLE001 - one interaction must not take the transport down
            log.exception("interaction %s could not be answered", interaction.id)
        if frozenset(self.core.commands.commands) != self.installed:
            # e.g. /plugins disable images: /imagine must go from Discord too.
            self.schedule_resync()


class SlashResponder:
    """Answers one interaction: Discord wants a first response within 3 s,
    so a slow command is deferred ("thinking…") and answered by follow-up."""

    def __init__(self, interaction: discord.Interaction) -> None:
        self.interaction = interaction
        self._lock = asyncio.Lock()
        self._deferred = False

    async def defer(self) -> None:
        async with self._lock:
            if not self.interaction.response.is_done():
                await self.interaction.response.defer(thinking=True)
                self._deferred = True

    async def send(self, reply: Reply) -> Sent:
        async with self._lock:
            mentions = allowed_mentions(reply)
            for index, (text, files) in enumerate(reply_parts(reply)):
                kwargs: dict[str, Any] = {"content": text, "allowed_mentions": mentions, "ephemeral": reply.ephemeral}
                if files:
                    kwargs["files"] = to_files(files)
                if index == 0 and not self.interaction.response.is_done():
                    await self.interaction.response.send_message(**kwargs)
                else:
                    await self.interaction.followup.send(**kwargs)
        return Sent()


class DiscordBot(TransportMixin, commands.Bot):
    """The transport on one gateway connection."""


class ShardedDiscordBot(TransportMixin, commands.AutoShardedBot):
    """The transport on several shards (``shard_count`` / ``shard_ids``)."""


def build_client(core_bot: Any, config: DiscordSettings, **options: Any) -> DiscordBot | ShardedDiscordBot:
    """The client for ``core_bot``; ``options`` go to discord.py."""
    sharded = config.shard_count is not None or config.shard_ids is not None
    cls = ShardedDiscordBot if sharded else DiscordBot
    return cls(core_bot, config, **options)


def load_settings(core_bot: Any) -> DiscordSettings:
    """The ``[discord]`` settings; a bad value (in the file or a ``DISCORD_*``
    variable, e.g. a list that is not JSON) is a :class:`ConfigError`."""
    try:
        return core_bot.settings.for_plugin("discord", DiscordSettings)
    except ConfigError:
        raise
    except ValueError as exc:
        raise ConfigError(f"[discord]: {exc}") from None


async def serve(core_bot: Any) -> None:
    """Log in with ``DISCORD_TOKEN`` and serve until cancelled (or SIGTERM)."""
    config = load_settings(core_bot)
    secret = core_bot.settings.env.discord_token
    token = secret.get_secret_value().strip() if secret is not None else ""
    if not token:
        raise ConfigError("DISCORD_TOKEN is not set: the Discord transport needs the bot token in the environment")
    with use_endpoints(config.api_base, config.gateway_url, config.cdn_base), _stop_on_sigterm() as terminated:
        client = build_client(core_bot, config)
        # Read by /readyz (plugins/ops): ready once the gateway handshake is done.
        core_bot.discord_client = client
        try:
            async with client:
                await client.start(token)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if not terminated.is_set() or task is None:
                raise
            task.uncancel()
            log.info("SIGTERM: disconnected from Discord")
        except discord.PrivilegedIntentsRequired:
            raise ConfigError(PRIVILEGED_INTENT_HELP + (MEMBERS_INTENT_HELP if config.members_intent else "")) from None
        except discord.LoginFailure:
            raise ConfigError("Discord refused DISCORD_TOKEN (401 Unauthorized): check the token") from None


@contextlib.contextmanager
def _stop_on_sigterm() -> Any:
    """SIGTERM (docker stop, systemd) cancels the serving task like Ctrl-C,
    so the core's shutdown hooks flush memory before the process exits."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    terminated = asyncio.Event()
    installed = False

    def stop() -> None:
        terminated.set()
        if task is not None:
            task.cancel()

    if task is not None:
        try:
            loop.add_signal_handler(signal.SIGTERM, stop)
            installed = True
        except (NotImplementedError, RuntimeError, ValueError):
            pass  # not the main thread, or no signals on this platform
    try:
        yield terminated
    finally:
        if installed:
            loop.remove_signal_handler(signal.SIGTERM)
