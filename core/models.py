"""Transport-neutral models passed to hooks.

Plain dataclasses: every plugin can be tested without Discord, and building
one costs a few microseconds on the hot path. Times are UTC epoch seconds as
``float``; ids are strings (Discord snowflakes fit, so do console ids).
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any


class Role(str, enum.Enum):
    USER = "user"
    BOT = "bot"
    SYSTEM = "system"


@dataclass(slots=True)
class Attachment:
    """A file attached to a message: sent by a user or produced by the bot.

    ``data`` holds the bytes while they travel through the pipeline; stored
    records keep ``sha256`` (the media store's key) and drop the bytes.
    """

    filename: str
    content_type: str = "application/octet-stream"
    size: int = 0
    url: str | None = None
    data: bytes | None = None
    sha256: str | None = None
    width: int | None = None
    height: int | None = None
    description: str | None = None
    # The decoded text of a text-like file (a plugin reads it before the
    # message is stored), so the record keeps it and the context shows it.
    text: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "filename": self.filename,
            "content_type": self.content_type,
            "size": self.size,
            "url": self.url,
            "sha256": self.sha256,
            "width": self.width,
            "height": self.height,
            "description": self.description,
        }
        if self.text is not None:
            data["text"] = self.text
        return data

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Attachment:
        fields: dict[str, Any] = {k: raw.get(k) for k in _ATTACHMENT_FIELDS if k in raw}
        return cls(**fields)

    @property
    def is_image(self) -> bool:
        return self.content_type.startswith("image/")


def _without_bytes(attachment: Attachment) -> Attachment:
    return attachment if attachment.data is None else Attachment.from_dict(attachment.to_dict())


_ATTACHMENT_FIELDS = (
    "filename",
    "content_type",
    "size",
    "url",
    "sha256",
    "width",
    "height",
    "description",
    "text",
)


@dataclass(slots=True)
class Quote:
    """The earlier message a message replies to, as the platform shows it
    (a Discord reply carries it). ``answers_id``: when the quoted message is
    the bot's own reply, the id of the message it answered (its record is
    stored as ``reply:<answers_id>``)."""

    id: str
    author_id: str
    content: str
    timestamp: float
    author_name: str = ""
    from_bot: bool = False
    answers_id: str | None = None


@dataclass(slots=True)
class IncomingMessage:
    """A message as a transport received it.

    ``id`` is the platform's message id and the idempotency key (G3): the same
    message delivered twice carries the same id. ``guild_id`` is ``None`` in
    direct messages. ``permissions`` holds the author's relevant permissions in
    this channel (``"manage_messages"``, ``"administrator"``) as the transport
    knows them; ``is_owner`` marks a configured bot owner.
    """

    id: str
    author_id: str
    channel_id: str
    content: str
    timestamp: float
    transport: str = "test"
    author_name: str = ""
    guild_id: str | None = None
    thread_id: str | None = None
    is_dm: bool = False
    author_is_bot: bool = False
    mentions_bot: bool = False
    reply_to_id: str | None = None
    attachments: list[Attachment] = field(default_factory=list)
    permissions: frozenset[str] = frozenset()
    is_owner: bool = False
    # What ``reply_to_id`` points at, when the transport knows it (same
    # channel only): the context brings that exchange back.
    quoted: Quote | None = None
    # The author's role ids in this guild, when the transport knows them
    # (per-server allowed and blocked roles: core.guild_settings).
    author_roles: frozenset[str] = frozenset()


@dataclass(slots=True)
class MessageEdit:
    """A user edited a message: ``content`` is its new text, ``edited_at``
    the platform's time of the edit (a later edit wins over an earlier one,
    whatever order they arrive in)."""

    id: str
    author_id: str
    channel_id: str
    content: str
    edited_at: float
    guild_id: str | None = None
    transport: str = "test"
    author_is_bot: bool = False


@dataclass(slots=True)
class MessageDeletion:
    """Messages deleted on the platform (one, or a bulk delete), by id; or,
    with ``author_id`` (and ``guild_id``), every message that author wrote
    in that guild up to ``deleted_at``: a member who left a guild that
    forgets its leavers (docs/MEMORY.md, E6). Both take the same path."""

    ids: list[str]
    channel_id: str
    deleted_at: float
    guild_id: str | None = None
    transport: str = "test"
    author_id: str | None = None

    @classmethod
    def of_member(cls, user_id: str, guild_id: str, left_at: float, transport: str = "test") -> MessageDeletion:
        """What ``user_id`` wrote in ``guild_id`` before ``left_at``."""
        return cls(ids=[], channel_id="", deleted_at=left_at, guild_id=guild_id, transport=transport, author_id=user_id)


class ReplyId(str):
    """The record id of the bot's reply to a message: ``reply:<message id>``.

    The reply is stored before the platform gives it an id of its own, and
    one message has at most one reply, so the id of what it answers names it
    (the idempotency key of the reply, G3). Memory also reads it back: a
    stored ``reply:<id>`` means message ``<id>`` is answered.
    """

    PREFIX = "reply:"

    def __new__(cls, message_id: str) -> ReplyId:
        return super().__new__(cls, cls.PREFIX + str(message_id))

    @property
    def message_id(self) -> str:
        """The id of the message this reply answers."""
        return self[len(self.PREFIX):]

    @classmethod
    def parse(cls, record_id: str) -> ReplyId | None:
        """The :class:`ReplyId` spelled by ``record_id``, or ``None`` when it
        is not a reply's id."""
        if not record_id.startswith(cls.PREFIX):
            return None
        return cls(record_id[len(cls.PREFIX):])


@dataclass(slots=True)
class Session:
    """One conversation: a scope (who shares context) plus its open period.

    ``scope_key`` names who shares the context (e.g. one user in one channel);
    ``id`` names this particular period of it, until an idle timeout or a
    reset opens the next one. ``state`` is free-form plugin state that is
    persisted with the session (e.g. a rolling summary).
    """

    id: str
    scope_key: str
    opened_at: float
    last_active_at: float
    guild_id: str | None = None
    channel_id: str | None = None
    user_id: str | None = None
    closed_at: float | None = None
    state: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class MessageRecord:
    """A message of the conversation record, as memory stores it.

    ``id`` is the platform message id (the idempotency key); a bot reply is
    stored under the :class:`ReplyId` of the message it answers.
    Order is ``(timestamp, id)``: platform time first, the id breaking ties.
    """

    id: str
    session_id: str
    scope_key: str
    role: Role
    author_id: str
    content: str
    timestamp: float
    author_name: str = ""
    guild_id: str | None = None
    channel_id: str | None = None
    reply_to_id: str | None = None
    attachments: list[Attachment] = field(default_factory=list)

    @classmethod
    def from_incoming(cls, message: IncomingMessage, session: Session) -> MessageRecord:
        """The record of a user's message in ``session``."""
        return cls(
            id=message.id,
            session_id=session.id,
            scope_key=session.scope_key,
            role=Role.USER,
            author_id=message.author_id,
            author_name=message.author_name,
            content=message.content,
            timestamp=message.timestamp,
            guild_id=message.guild_id,
            channel_id=message.channel_id,
            reply_to_id=message.reply_to_id,
            attachments=list(message.attachments),
        )

    @classmethod
    def of_reply(
        cls, message: IncomingMessage, session: Session, reply: Reply, *, author_name: str, timestamp: float
    ) -> MessageRecord:
        """The record of the bot's ``reply`` to ``message``. It sorts after
        what it answers whatever the clocks say; attachment bytes are not
        part of the record (``sha256`` names them in the media store)."""
        return cls(
            # A plain str: storage drivers see the type they always saw.
            id=str(ReplyId(message.id)),
            session_id=session.id,
            scope_key=session.scope_key,
            role=Role.BOT,
            author_id="bot",
            author_name=author_name,
            content=reply.content,
            timestamp=max(timestamp, message.timestamp + 0.001),
            guild_id=message.guild_id,
            channel_id=message.channel_id,
            reply_to_id=message.id,
            attachments=[_without_bytes(a) for a in reply.attachments],
        )

    @property
    def sort_key(self) -> tuple[float, int, str]:
        return (self.timestamp, len(self.id), self.id)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "session_id": self.session_id,
            "scope_key": self.scope_key,
            "role": self.role.value,
            "author_id": self.author_id,
            "author_name": self.author_name,
            "content": self.content,
            "timestamp": self.timestamp,
            "guild_id": self.guild_id,
            "channel_id": self.channel_id,
            "reply_to_id": self.reply_to_id,
            "attachments": [a.to_dict() for a in self.attachments],
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> MessageRecord:
        return cls(
            id=raw["id"],
            session_id=raw["session_id"],
            scope_key=raw["scope_key"],
            role=Role(raw["role"]),
            author_id=raw["author_id"],
            author_name=raw.get("author_name") or "",
            content=raw["content"],
            timestamp=float(raw["timestamp"]),
            guild_id=raw.get("guild_id"),
            channel_id=raw.get("channel_id"),
            reply_to_id=raw.get("reply_to_id"),
            attachments=[Attachment.from_dict(a) for a in raw.get("attachments") or []],
        )


@dataclass(slots=True)
class Recalled:
    """Something brought back from outside the window: a message of an
    earlier conversation or a fact the user told the bot, with its date
    (``timestamp``, epoch seconds) and where it came from (``source_id``:
    the message id)."""

    kind: str  # "message" or "fact"
    content: str
    timestamp: float
    source_id: str | None = None
    tokens: int = 0


@dataclass(slots=True)
class Context:
    """What a reply plugin sees: the system prompt and the context window.

    ``messages`` are in conversation order and end with the current message.
    ``notes`` carry facts a reply may want to mention (e.g. memory degraded).
    """

    session: Session
    system_prompt: str
    messages: list[MessageRecord]
    token_budget: int | None = None
    tokens_used: int | None = None
    notes: list[str] = field(default_factory=list)
    # Added by ``extend_context`` implementations (the recall plugin):
    # counted in ``tokens_used``, shown to the model apart from the window.
    recalled: list[Recalled] = field(default_factory=list)


@dataclass(slots=True)
class Reply:
    """What the bot sends back. Mentions are never pinged unless a plugin
    explicitly sets ``allow_mentions`` (model output must not @everyone)."""

    content: str
    attachments: list[Attachment] = field(default_factory=list)
    ephemeral: bool = False
    allow_mentions: bool = False
    notes: list[str] = field(default_factory=list)
    # A command's answer that belongs to the conversation (an /imagine
    # picture): the core stores the request and this reply in the session,
    # as it does for a generated reply.
    in_conversation: bool = False

    def text(self) -> str:
        """The content with notes appended, as a plain-text transport shows it."""
        if not self.notes:
            return self.content
        return "\n".join([self.content, *(f"({note})" for note in self.notes)])


@dataclass(slots=True)
class Sent:
    """What a transport reports after sending a reply."""

    id: str | None = None
    timestamp: float | None = None


SendReply = Callable[[Reply], Awaitable["Sent | None"]]


@dataclass(slots=True)
class HealthReport:
    """One component's health, collected by the ``health`` hook."""

    component: str
    ok: bool
    detail: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)


PERMISSION_LEVELS = ("everyone", "manage_messages", "admin", "owner")


@dataclass(slots=True)
class Invocation:
    """A command call: who asked, where, with what arguments."""

    bot: Any
    message: IncomingMessage
    name: str
    args: str


CommandHandler = Callable[[Invocation], "Awaitable[Reply] | Reply"]


@dataclass(slots=True)
class Command:
    """A transport-neutral command, registered through ``register_commands``.

    ``permission`` is the least a caller needs: ``everyone``,
    ``manage_messages`` (moderators of the channel), ``admin`` (server
    administrators or owners) or ``owner`` (configured bot owners).
    ``options`` maps option names to help texts; transports that have typed
    commands (Discord slash commands) expose them as string options.
    ``holds_session``: the core runs the handler holding the session's lease
    (as it does for a conversation turn), e.g. ``reset``, which must not
    interleave with a reply being generated in the same session.
    """

    name: str
    description: str
    handler: CommandHandler
    permission: str = "everyone"
    options: dict[str, str] = field(default_factory=dict)
    plugin: str = ""
    holds_session: bool = False

    def __post_init__(self) -> None:
        if self.permission not in PERMISSION_LEVELS:
            raise ValueError(
                f"command {self.name!r}: permission {self.permission!r} is not one of {PERMISSION_LEVELS}"
            )
