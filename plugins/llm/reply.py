"""The reply plugin's per-bot runtime: settings, HTTP session, provider client.

One :class:`LlmRuntime` per bot: it owns that bot's ``aiohttp.ClientSession``
(opened in ``startup``, closed in ``shutdown``), so bots in one process never
share connections and a slow provider only holds up the conversation that
waits for it.
"""

from __future__ import annotations

import logging
from typing import Any

import aiohttp

from core.logs import redact, secret_filter
from core.models import Attachment, Context, HealthReport, IncomingMessage, MessageRecord, Reply, Role, Session
from plugins.llm.client import ChatClient, ProviderError, models_url
from plugins.llm.offline import offline_reply
from plugins.llm.prompt import FAILURE_MARK, build_messages
from plugins.llm.settings import LlmSettings, check_base_url, load_llm_settings
from core.streaming import TokenHub
from plugins.llm.summary import CARRY_FROM, RollingSummary, fallen_out, fit_budget, summary_request, summary_tokens, with_summary

log = logging.getLogger("plugins.llm")

CUT_SHORT = "the model's reply was cut short by its max_tokens limit"
# The end of a reply whose stream broke midway, in the text itself: what is
# stored (and what the model reads next time) says it is unfinished.
INTERRUPTED = " … [reply interrupted]"


def failure_text(error: ProviderError, degraded: bool) -> str:
    """What the user reads when the provider gave no usable reply."""
    saved = (
        " I could not confirm your message was saved (memory is degraded)."
        if degraded
        else " Your message is saved, so nothing is lost."
    )
    if error.kind == "unavailable":
        return f"{FAILURE_MARK} The model provider is unavailable right now ({error}).{saved} Please try again in a moment."
    if error.kind == "refused":
        return f"{FAILURE_MARK} The model provider refused the request ({error}).{saved} The bot's operator needs to check its model settings."
    return f"{FAILURE_MARK} The model sent a reply I could not use ({error}).{saved} Please try again."


class LlmRuntime:
    """Everything the plugin holds for one bot."""

    def __init__(self, settings: LlmSettings) -> None:
        self.settings = settings
        self.http: aiohttp.ClientSession | None = None
        self.client: ChatClient | None = None
        self.tokens = TokenHub()
        self.last_outcome: str = "no reply generated yet"

    @classmethod
    def from_bot(cls, bot: Any) -> LlmRuntime:
        return cls(load_llm_settings(bot.settings))

    @property
    def secrets(self) -> list[str]:
        key = self.settings.api_key_value()
        return [key] if key else []

    def describe(self) -> str:
        if self.settings.offline:
            return "offline stand-in (LLM_BASE_URL is not set)"
        url = check_base_url(self.settings.base_url or "")
        where = f"{url.scheme}://{url.host}{f':{url.port}' if url.explicit_port else ''}"
        return f"model {self.settings.model} at {where}{' (streaming)' if self.settings.stream else ''}"

    async def start(self) -> None:
        secret_filter().add(self.settings.api_key_value())
        if not self.settings.offline:
            # Limits per bot: many conversations at once, none waiting on another's socket.
            self.http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64))
            self.client = ChatClient(self.settings, self.http)
        log.info("llm: %s", self.describe())

    async def stop(self) -> None:
        if self.http is not None:
            await self.http.close()
        self.http = None
        self.client = None

    # --- replying -----------------------------------------------------------

    async def reply(self, context: Context, message: IncomingMessage, bot: Any = None) -> Reply:
        """Answer ``message`` from ``context``; never raises for provider
        trouble (the user gets a clear reply instead)."""
        try:
            if self.settings.offline or self.client is None:
                has_memory = bot is None or bot.storage.present or bool(bot.hooks.implementations("build_context"))
                # Not a stream: nothing is published, the transport sends the
                # reply whole (a preview would only race the stored reply).
                return Reply(offline_reply(context, message.author_id, message.id, message.author_name, has_memory))
            return await self._model_reply(context, message, bot)
        finally:
            self.tokens.finish(message.id)

    async def _model_reply(self, context: Context, message: IncomingMessage, bot: Any) -> Reply:
        assert self.client is not None
        guild_id = context.session.guild_id or message.guild_id
        bot_default = bot.settings.bot.system_prompt if bot is not None else None
        system = self.settings.persona(guild_id, context.system_prompt, bot_default)
        # Set at run time by the server's administrators (/settings): wins.
        runtime = bot.guild_settings if bot is not None else None
        system = (runtime.get(guild_id, "system_prompt") if runtime and guild_id else None) or system
        model = runtime.get(guild_id, "model") if runtime and guild_id else None
        if self.settings.summaries:
            # Brought up to date, and counted in the budget, by extend_context.
            system = with_summary(system, RollingSummary.from_state(context.session.state))
        messages = await build_messages(
            context,
            system,
            vision=self.settings.vision,
            max_image_bytes=self.settings.max_image_bytes,
            load_media=_media_loader(bot) if self.settings.vision else None,
        )
        degraded = any("degraded" in note for note in context.notes)
        notes: list[str] = []
        try:
            broken: str | None = None
            if self.settings.stream:
                text, finish_reason, broken = await self._streamed(messages, message.id, model)
                if broken is not None:
                    notes.append(f"the model's reply broke off ({broken}); this is what arrived")
            else:
                completion = await self.client.complete(messages, model)
                text, finish_reason = completion.text, completion.finish_reason
        except ProviderError as error:
            self.last_outcome = f"failed: {error}"
            log.warning("llm reply failed (%s): %s", error.kind, redact(str(error), self.secrets))
            return Reply(failure_text(error, degraded))
        self.last_outcome = "ok"
        if finish_reason == "length":
            notes.append(CUT_SHORT)
        text = text.strip()
        limit = self.settings.max_reply_chars
        if len(text) > limit:
            notes.append(f"the model's reply was {len(text):,} characters; I kept the first {limit:,}")
            text = text[:limit].rstrip() + "…"
        if broken is not None:
            text += INTERRUPTED
        return Reply(text, notes=notes)

    async def _streamed(
        self, messages: list[dict[str, Any]], message_id: str, model: str | None = None
    ) -> tuple[str, str | None, str | None]:
        assert self.client is not None
        stream = self.client.stream(messages, model)
        try:
            async for piece in stream:
                self.tokens.publish(message_id, piece)
        except ProviderError as error:
            if not stream.text.strip():
                raise
            return stream.text, stream.finish_reason, str(error)
        return stream.text, stream.finish_reason, None

    async def extend(self, context: Context, bot: Any) -> None:
        """The summary step of context building: bring the rolling summary
        up to date, then make room for it in the token budget by dropping
        the window's oldest messages (they are in the summary, or will be
        at its next update)."""
        if not self.settings.summaries or self.client is None:
            return
        summary = await self._summary(context, bot)
        count, cost = _counters(bot)
        extra = summary_tokens(summary, count)
        if not extra or context.tokens_used is None:
            return
        context.messages, context.tokens_used = fit_budget(
            context.messages, context.tokens_used + extra, context.token_budget, cost
        )

    async def _summary(self, context: Context, bot: Any) -> RollingSummary:
        """The session's rolling summary, first folding in what left the
        window once ``summary_every`` messages have, and at once the last
        messages of the session it was carried from. A failed update keeps
        the old summary; those messages are folded in next time."""
        assert self.client is not None
        session = context.session
        summary = RollingSummary.from_state(session.state)
        limit = len(context.messages) + self.settings.summary_lookback
        loaded = await bot.storage.load_messages(session, limit)
        history = [r for r in loaded if isinstance(r, MessageRecord) and r.session_id == session.id]
        fallen = fallen_out(history, context.messages, summary.upto)
        previous = await self._previous_tail(session, summary, bot)
        if previous == []:
            # Carried over with nothing of the previous session left out.
            session.state = summary.into(session.state, folded_previous=True)
            await bot.storage.save_session(session)
            previous = None
        if previous is None and len(fallen) < self.settings.summary_every:
            return summary
        new = (previous or []) + fallen
        try:
            completion = await self.client.complete(summary_request(summary.text, new, self.settings.summary_words))
        except ProviderError as error:
            log.warning("llm: summary not updated (%s); replying from the window alone", redact(str(error), self.secrets))
            return summary
        text = completion.text.strip()[: self.settings.summary_words * 12]
        updated = RollingSummary(text=text, upto=new[-1].sort_key, count=summary.count + len(new))
        session.state = updated.into(session.state, folded_previous=previous is not None)
        await bot.storage.save_session(session)
        return updated

    async def _previous_tail(self, session: Session, summary: RollingSummary, bot: Any) -> list[MessageRecord] | None:
        """The messages of the session the summary was carried from (after
        a timeout or a ``reset keep``) that it does not cover yet; ``None``
        when it was not carried or that tail is folded in already."""
        source = session.state.get(CARRY_FROM)
        if not isinstance(source, str) or not source:
            return None
        previous = Session(id=source, scope_key=session.scope_key, opened_at=0.0, last_active_at=0.0, guild_id=session.guild_id,
                           channel_id=session.channel_id, user_id=session.user_id)
        loaded = await bot.storage.load_messages(previous, self.settings.summary_lookback)
        tail = [r for r in loaded if isinstance(r, MessageRecord) and r.session_id == source]
        return fallen_out(tail + [_LATER], [_LATER], summary.upto)

    # --- health ----------------------------------------------------------------

    async def health(self) -> HealthReport:
        if self.settings.offline or self.http is None:
            return HealthReport("llm", True, self.describe())
        timeout = aiohttp.ClientTimeout(total=min(5.0, self.settings.connect_timeout + 2), connect=min(3.0, self.settings.connect_timeout))
        assert self.client is not None
        try:
            async with self.http.get(models_url(self.settings), headers=self.client.headers(), timeout=timeout) as response:
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            return HealthReport("llm", False, f"{self.describe()}: unreachable ({type(exc).__name__}); last reply {self.last_outcome}")
        if status in (401, 403):
            return HealthReport("llm", False, f"{self.describe()}: the API key was refused (HTTP {status}); check LLM_API_KEY")
        if status >= 500:
            return HealthReport("llm", False, f"{self.describe()}: provider error (HTTP {status}); last reply {self.last_outcome}")
        return HealthReport("llm", True, f"{self.describe()}: reachable; last reply {self.last_outcome}")


# A stand-in "window" later than every message: with it, fallen_out returns
# the whole tail of a previous session past what the summary covers.
_LATER = MessageRecord(id="~", session_id="", scope_key="", role=Role.USER, author_id="", content="", timestamp=float("inf"))


def _counters(bot: Any) -> tuple[Any, Any]:
    """The sessions plugin's token counter (and per-record cost), so the
    budget is counted one way; the offline estimate without it."""
    from plugins.sessions.tokens import estimate_tokens, record_tokens, resolve_counter

    try:
        from plugins.sessions.service import settings_of

        count = resolve_counter(settings_of(bot).token_counter)
    except Exception:  # noqa: BLE001 - no sessions plugin
        count = estimate_tokens
    return count, lambda record: record_tokens(record, count)


def _media_loader(bot: Any) -> Any:
    """Reads image bytes through an optional ``load_media`` hook (the images
    plugin's media store), when some plugin declares and implements it."""
    if bot is None or not hasattr(bot.plugins.pm.hook, "load_media"):
        return None

    async def load(attachment: Attachment) -> bytes | None:
        try:
            data = await bot.hooks.first("load_media", sha256=attachment.sha256)
        except Exception as exc:  # noqa: BLE001 - an image we cannot read is described instead
            log.warning("llm: could not load image %s: %s", attachment.filename, type(exc).__name__)
            return None
        return data if isinstance(data, bytes) else None

    return load
