"""The hook contract between the core and its plugins: every hook, in one place.

Each hook says what it receives, what it returns and how the core calls it
(its mode, declared in code by ``@spec(Mode.…)`` and enforced by the core's
dispatcher: a call in another mode, or with an argument the hook does not
declare, is refused with :class:`core.dispatch.HookMisuse`):

- **broadcast**: every implementation runs; results are ignored.
- **first answer**: implementations run in turn and the first that returns
  something other than ``None`` wins.
- **collect**: every implementation runs; the non-``None`` results are
  gathered (a list returned by one implementation is flattened).
- **registry**: the hook receives a ``register`` callable and calls it once
  per contribution; the core validates each one.

**Order** (every mode): ``tryfirst`` implementations run first, ``trylast``
ones last. Among the rest, pluggy calls the plugin registered last first, and
plugins register in name order (``core`` first): a plugin named ``ping``
answers ``generate_reply`` before ``llm``, one named ``aping`` after it (and
so never, as ``llm`` always answers). A reply plugin meant to win whatever
its name says ``@hookimpl(tryfirst=True)``. ``./bot.sh plugins --hooks``
shows every hook's order on this bot.

**Mistakes are not silent.** A plugin that implements a name that is not a
hook (``generate_replies``), or asks for an argument its hook does not pass,
is marked failed at start-up with a one-line reason (``./bot.sh plugins``).
An ``async`` implementation that takes longer than ``[bot] hook_timeout``
seconds (180; ``[bot] hook_timeouts`` per hook, and ``command`` for command
handlers) is given up on, logged with its plugin's name and counted as
failed: the user is told, and the session is not held. A plain ``def`` that
blocks cannot be interrupted: do blocking work in a thread
(``asyncio.to_thread``).

Any implementation may be ``async def`` or plain ``def``: the core awaits what
needs awaiting (pluggy itself does not). An implementation that raises is
logged with its plugin's name and skipped; the others still run and the user
still gets a reply. Raising :class:`core.errors.Refused` is the one deliberate
way to stop a message: its text becomes the reply.

An implementation declares only the arguments it needs, by name. Every hook
may also take ``bot``: the running :class:`core.bot.Bot` (settings, clock,
instance id, ``bot.hooks`` to call other hooks, ``bot.storage``: the
conversation store, :class:`core.storage.StorageService`, and
``bot.tokens``: replies as they are written, :mod:`core.streaming`).

**Streaming**: a reply plugin that writes its reply piece by piece
publishes each piece with ``bot.tokens.publish(message.id, piece)`` while
``generate_reply`` runs, and still returns the whole :class:`Reply` (the
one sent last and stored). A transport that shows replies live subscribes
with ``bot.tokens.subscribe(message.id)`` before ``bot.handle`` and asks
``bot.may_send(message)`` before its first post.

**Per-bot state**: what a plugin keeps for a running bot (a client, a
service, its validated settings) goes in ``bot.plugin_state[<plugin name>]``,
set in ``startup`` and removed in ``shutdown``; never in module globals nor
in attributes of its own on the bot: several bots share a process (tests,
instances).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any, TypeVar

import pluggy

from core.models import (
    Context,
    HealthReport,
    IncomingMessage,
    MessageRecord,
    Reply,
    Session,
)

PROJECT_NAME = "discord_bot"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)


class Mode(enum.Enum):
    """How the core calls a hook (see above); declared by each hookspec with
    :func:`spec` and enforced by :class:`core.dispatch.Hooks`."""

    BROADCAST = "broadcast"
    FIRST = "first answer"
    COLLECT = "collect"
    REGISTRY = "registry"


MODE_ATTRIBUTE = "calling_mode"
F = TypeVar("F", bound=Callable[..., Any])


def spec(mode: Mode) -> Callable[[F], F]:
    """Declare a hook and the one way it is called. pluggy's own
    ``firstresult`` is not used: pluggy does not await, so the core's
    dispatcher reads the mode instead."""

    def declare(func: F) -> F:
        setattr(func, MODE_ATTRIBUTE, mode)
        return hookspec(func)

    return declare


def mode_of(func: Callable[..., Any]) -> Mode | None:
    """The calling mode a hookspec declares, or ``None``."""
    found = getattr(func, MODE_ATTRIBUTE, None)
    return found if isinstance(found, Mode) else None


# --- Lifecycle ---------------------------------------------------------------


@spec(Mode.BROADCAST)
def startup(bot: Any) -> None:
    """Open connections and start background work.

    Called once when the bot starts, before any message. **Broadcast.** An
    implementation that raises marks its plugin as failed and unregisters it,
    so no half-started plugin sees messages.
    """


@spec(Mode.BROADCAST)
def shutdown(bot: Any) -> None:
    """Flush what is buffered and close connections.

    Called once when the bot stops. **Broadcast.**
    """


@spec(Mode.COLLECT)
def health(bot: Any) -> HealthReport | list[HealthReport] | None:
    """Report the health of what the plugin owns (backends, queues).

    Used by the ``session`` command and ``python -m core check``.
    **Collect**: return one :class:`~core.models.HealthReport`, a list of them,
    or ``None``.
    """


# --- Registries --------------------------------------------------------------


@spec(Mode.REGISTRY)
def register_transports(register: Any, bot: Any) -> None:
    """Contribute transports: ``register(name, run)``.

    ``run`` is ``async def run(bot) -> None`` and serves until cancelled. The
    CLI runs ``discord`` when a Discord token is set, else ``console``.
    **Registry.**
    """


@spec(Mode.REGISTRY)
def register_commands(register: Any, bot: Any) -> None:
    """Contribute commands: ``register(Command(...))``.

    Names are unique; a second command with a taken name is refused and
    reported. Transports expose them (``/name`` in the terminal, slash
    commands in Discord) and hand every call to the core's one pipeline,
    which claims it, runs it and marks it answered. A command declared with
    ``holds_session=True`` runs holding its session's lease; an answer
    returned with ``Reply(in_conversation=True)`` is stored in the session
    with the request, like a conversation turn. **Registry.**
    """


@spec(Mode.REGISTRY)
def register_image_providers(register: Any, bot: Any) -> None:
    """Contribute image generators: ``register(name, provider)``.

    ``provider`` is an object with ``async def generate(prompt, *, size,
    seed, style) -> bytes`` returning PNG bytes (``size`` is a ``(width,
    height)`` tuple). The images plugin picks one by config. ``bot`` gives
    a provider its settings (``bot.settings.for_plugin``). **Registry.**
    """


@spec(Mode.REGISTRY)
def register_storage(register: Any, bot: Any) -> None:
    """Provide the bot's conversation store: ``register(storage)`` with an
    object that satisfies :class:`core.storage.Storage` (messages, sessions,
    the session lease, the fenced send, bot-wide state; subclass
    :class:`core.storage.StorageBase`). One per bot: a second is refused
    and reported. The core holds it as ``bot.storage`` and calls it with the
    hooks' isolation and timeout; other plugins call ``bot.storage`` too.
    The plugin that provides it is essential (never switched off at run
    time). **Registry.**
    """


@spec(Mode.REGISTRY)
def register_admin_commands(register: Any, bot: Any) -> None:
    """Contribute commands of the command line beside ``run``/``chat``/
    ``plugins``/``check``: ``register(AdminCommand(...))`` (see
    :class:`core.admin.AdminCommand`), e.g. ``python -m core migrate show``.

    Called on a bot that is not started yet; a command says whether the
    core starts the plugins before running it. Names are unique; a taken
    name is refused and reported. **Registry.**
    """


# --- Commands ------------------------------------------------------------------


@spec(Mode.BROADCAST)
def before_command(command: Any, message: IncomingMessage, args: str, bot: Any) -> None:
    """Inspect a command call after its permission check, before it runs
    (``command`` is the :class:`~core.models.Command`, ``args`` the text
    after its name). E.g. rate limits. Raise :class:`~core.errors.Refused`
    to refuse it: its text becomes the reply and the command does not run.
    **Broadcast.**
    """



@spec(Mode.BROADCAST)
def message_answered(message: IncomingMessage, reply: Reply, bot: Any) -> None:
    """Called after the core answered ``message`` with anything but a
    generated conversation reply: a command (from any transport: text or
    slash command), or input it refused (empty, too long, refused by a
    plugin). Every message is claimed first (one answer across instances);
    this is where such a claim is marked done. A conversation reply is done
    when its record is stored. **Broadcast.**
    """


# --- The message pipeline, in the order the core calls it ---------------------


@spec(Mode.FIRST)
def claim_message(message: IncomingMessage, bot: Any) -> bool | None:
    """Decide whether this bot instance handles ``message``.

    Return ``True`` to handle it, ``False`` when it was or is being handled
    elsewhere (another instance, or an earlier delivery of the same id): the
    core then drops it silently. May wait (e.g. for another instance's claim
    to expire), or raise :class:`~core.errors.Refused` to answer with the
    refusal instead of handling it (a limit's one notice). ``None`` means no
    opinion. **First answer**; with no answer the message is handled.
    Asked again for the same message when the storage's ``confirm_reply``
    refused its send (another instance took it over, and may die before
    answering too): a claim that keeps watch until that one answers
    returns ``False`` then, or ``True`` when the message came back.
    """


@spec(Mode.FIRST)
def session_scope(message: IncomingMessage, bot: Any) -> str | None:
    """Return the scope key of ``message``: the name of who shares context
    (e.g. ``g:1:c:2:u:3`` for one user in one channel). Leases and sessions
    are keyed by it. **First answer**; with no answer the core uses
    ``<guild or dm>:<channel>:<user>``.
    """


@spec(Mode.FIRST)
def resolve_session(message: IncomingMessage, bot: Any) -> Session | None:
    """Return the session ``message`` belongs to, opening one if needed.

    Applies scope (who shares context) and idle timeouts. **First answer**;
    with no answer the core uses a session per channel and user that never
    times out.
    """


@spec(Mode.BROADCAST)
def prepare_message(message: IncomingMessage, session: Session, bot: Any) -> None:
    """Inspect or transform an incoming message before it is stored.

    E.g. decode, check and strip attachments, filling in their ``sha256``,
    size and description. Raise :class:`~core.errors.Refused` to refuse it.
    **Broadcast.**
    """


@spec(Mode.FIRST)
def build_context(session: Session, message: IncomingMessage, bot: Any) -> Context | None:
    """Build the context window a reply is generated from.

    The messages end with the current one. **First answer**; with no answer
    the core builds a context holding the current message only.
    """


@spec(Mode.BROADCAST)
def extend_context(context: Context, message: IncomingMessage, bot: Any) -> None:
    """Add to the context a reply will be generated from, after
    ``build_context``: e.g. what the user said in earlier sessions
    (``context.recalled``, see the recall plugin) or ``context.notes``.

    An implementation keeps what it adds inside ``context.token_budget``
    (adding what it spends to ``context.tokens_used``) and within a short
    time of its own: a slow or failing one is cut off by ``[bot]
    hook_timeout`` and the reply goes on without it. **Broadcast.**
    """


@spec(Mode.FIRST)
def generate_reply(context: Context, message: IncomingMessage, bot: Any) -> Reply | None:
    """Generate the reply to ``message`` from ``context``.

    **First answer**: the first reply plugin that answers wins; a built-in
    ``trylast`` fallback answers when no reply plugin is enabled.
    """


@spec(Mode.BROADCAST)
def reply_sent(reply: Reply, record: MessageRecord, session: Session, message: IncomingMessage, bot: Any) -> None:
    """Called after a reply was sent and stored (``record`` is the stored
    reply). **Broadcast.**
    """


# --- Media ---------------------------------------------------------------------


@spec(Mode.FIRST)
def load_media(sha256: str, bot: Any) -> bytes | None:
    """Return the stored bytes of a media file (an image a user sent or the
    bot generated) by its ``sha256``, as recorded in
    :attr:`~core.models.Attachment.sha256` of stored messages; ``None`` when
    the plugin does not have it. Reply plugins use it to pass images of the
    context to vision models. **First answer.**
    """


# --- People's data -----------------------------------------------------------


@spec(Mode.COLLECT)
def export_user(user_id: str, bot: Any) -> dict[str, Any] | None:
    """Return everything the plugin holds about ``user_id`` as JSON-able
    data, keyed by what it is (``{"messages": [...]}``). **Collect**; the
    core merges the dicts.
    """


@spec(Mode.COLLECT)
def forget_user(user_id: str, bot: Any) -> dict[str, int] | None:
    """Delete everything the plugin holds about ``user_id`` everywhere it
    keeps it (cache, database, queues, media). Return counts of what was
    deleted. **Collect.**
    """


@spec(Mode.COLLECT)
def export_guild(guild_id: str, bot: Any) -> dict[str, Any] | None:
    """Return everything the plugin holds for guild (server) ``guild_id``
    as JSON-able data, keyed by what it is (``{"messages": [...]}``):
    what was said there, its settings, what was learnt there. Never
    another guild's data, never a secret. Who may ask is checked by the
    caller (the guild's administrators for their guild, the bot's owners
    for any). **Collect**; the core merges the dicts, and an export with a
    failed implementation is refused whole.
    """
