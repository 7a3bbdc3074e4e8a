"""The recall plugin's work against a running bot: searching a user's
durable history for a new message, learning facts from what they say, and
what ``/memory`` shows. Rules: docs/RECALL.md.

The database is the memory plugin's (``plugins.memory.store_of(bot).db``):
recall reads the source of truth only, never Redis, so it works the same
with Redis down or flushed, and it is skipped (with a log line) while the
memory's database breaker is open.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from core.models import Context, IncomingMessage, Recalled

from plugins.recall import embeddings, model_facts
from plugins.recall.facts import extract, place_of
from plugins.recall.queries import Found, RecallQueries, Semantic, Where, terms
from plugins.recall.settings import RecallSettings

log = logging.getLogger("plugins.recall")

# Per recalled line: the marks, the date and the role tokens around it.
LINE_OVERHEAD = 8
# The header the reply plugin puts before recalled lines (plugins/llm/prompt.py).
HEADER_TOKENS = 30
LAST_SHOWN_MAX = 10_000
SKIP_LOG_EVERY = 60.0


@dataclass
class RecallState:
    """What the plugin keeps for one bot (``bot.plugin_state["recall"]``)."""

    settings: RecallSettings
    # What the last reply to each user recalled (for /memory), bounded.
    last_shown: OrderedDict[str, list[Recalled]] = field(default_factory=OrderedDict)
    queries: RecallQueries | None = None
    durable: Any = None
    skipped_logged_at: float = -1e18
    skipped: int = 0
    # Facts being asked of the model (cancelled at shutdown).
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)

    def note_shown(self, user_id: str, items: list[Recalled]) -> None:
        self.last_shown[user_id] = items
        self.last_shown.move_to_end(user_id)
        while len(self.last_shown) > LAST_SHOWN_MAX:
            self.last_shown.popitem(last=False)


def state_of(bot: Any) -> RecallState | None:
    state = bot.plugin_state.get("recall")
    return state if isinstance(state, RecallState) else None


def memory_of(bot: Any) -> Any:
    """The memory plugin's store for ``bot``, or ``None`` when it is not
    running (recall then has nothing to search)."""
    from plugins.memory import MemoryStore

    store = bot.plugin_state.get("memory")
    return store if isinstance(store, MemoryStore) else None


def queries_of(state: RecallState, memory: Any) -> RecallQueries | None:
    durable = getattr(memory, "db", None)
    if durable is None:
        return None
    if state.queries is None or state.durable is not durable:
        state.queries, state.durable = RecallQueries(durable), durable
    return state.queries


def where_for(settings: RecallSettings, message: IncomingMessage) -> Where:
    guild = None if message.is_dm else message.guild_id
    return Where(message.author_id, guild, everywhere=settings.share == "everywhere")


def _skip(state: RecallState, why: str) -> None:
    state.skipped += 1
    now = time.monotonic()
    if now - state.skipped_logged_at >= SKIP_LOG_EVERY:
        state.skipped_logged_at = now
        log.warning("recall: skipped (%s); replying from the window alone (%d skipped so far)", why, state.skipped)


async def _search(bot: Any, state: RecallState, message: IncomingMessage, want_messages: int) -> Found | None:
    memory = memory_of(bot)
    if memory is None:
        return None  # no memory plugin: nothing stored to recall
    if not memory.db_ok:
        _skip(state, "the database is unreachable")
        return None
    queries = queries_of(state, memory)
    if queries is None:
        return None
    cfg = state.settings
    words = terms(message.content)
    from plugins.memory import BackendDown

    try:
        async with asyncio.timeout(cfg.time_budget):
            semantic = await _semantic(bot, state, message) if want_messages else None
            return await memory.db.run(
                queries.search, where_for(cfg, message), words, want_messages, cfg.max_facts if cfg.facts else 0, cfg.time_budget,
                semantic,
            )
    except TimeoutError:
        _skip(state, f"no answer within the time budget of {cfg.time_budget}s")
    except BackendDown as exc:
        memory.db_failed(exc)
        _skip(state, str(exc))
    except Exception as exc:  # noqa: BLE001 - a statement timeout, a missing index: the reply goes on
        _skip(state, f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}")
    return None


async def _semantic(bot: Any, state: RecallState, message: IncomingMessage) -> Semantic | None:
    """The new message's vector, when semantic recall is on and a provider
    is configured; ``None`` (text search only) when it cannot be had."""
    cfg = state.settings
    runtime = bot.plugin_state.get("llm")
    if not cfg.semantic or _model_client(bot) is None or not message.content.strip():
        return None
    try:
        (vector,) = await embeddings.embed(runtime, cfg.embeddings_model, [message.content], cfg.time_budget)
    except embeddings.EmbeddingError as exc:
        _skip(state, f"no embedding for the new message ({exc}); searching by words only")
        return None
    return Semantic(cfg.embeddings_model, vector, cfg.min_similarity)


def choose(found: Found, context: Context, budget: int, count: Any, max_messages: int) -> list[Recalled]:
    """What fits: facts first (newest first), then the best matching
    messages not already in the window nor the source of a fact shown."""
    in_window = {r.id for r in context.messages}
    chosen: list[Recalled] = []
    used = HEADER_TOKENS
    for fact in found.facts:
        cost = LINE_OVERHEAD + count(fact.text())
        if used + cost > budget:
            break
        used += cost
        chosen.append(Recalled("fact", fact.text(), fact.timestamp, fact.source_id, cost))
    sources = {r.source_id for r in chosen}
    taken = 0
    for hit in found.messages:
        if taken >= max_messages:
            break
        if hit.message_id in in_window or hit.message_id in sources:
            continue
        cost = LINE_OVERHEAD + count(hit.content)
        if used + cost > budget:
            continue
        used += cost
        taken += 1
        chosen.append(Recalled("message", hit.content, hit.timestamp, hit.message_id, cost))
    return chosen


def _counter(bot: Any) -> Any:
    from plugins.sessions.service import settings_of
    from plugins.sessions.tokens import resolve_counter

    try:
        return resolve_counter(settings_of(bot).token_counter)
    except Exception:  # noqa: BLE001 - no sessions plugin: the offline estimate
        from plugins.sessions.tokens import estimate_tokens

        return estimate_tokens


async def extend(bot: Any, context: Context, message: IncomingMessage) -> None:
    """The recall step of context building (hook ``extend_context``)."""
    state = state_of(bot)
    if state is None or not message.author_id:
        return
    cfg = state.settings
    budget = cfg.max_tokens
    if context.token_budget is not None:
        budget = min(budget, context.token_budget - (context.tokens_used or 0))
    if budget <= HEADER_TOKENS + LINE_OVERHEAD:
        return
    # A few more than shown: some may be in the window already.
    want = cfg.max_messages + len(context.messages) if cfg.max_messages else 0
    found = await _search(bot, state, message, want)
    if found is None:
        return
    chosen = choose(found, context, budget, _counter(bot), cfg.max_messages)
    state.note_shown(message.author_id, chosen)
    if chosen:
        context.recalled.extend(chosen)
        context.tokens_used = (context.tokens_used or 0) + HEADER_TOKENS + sum(r.tokens for r in chosen)


async def learn(bot: Any, message: IncomingMessage) -> int:
    """Store the facts ``message`` states about its author: the offline
    rules at once, or the model's (``extract``) in a task of its own, so
    the session is not held while the model thinks. Best effort: with the
    database down the message is still stored, and full-text recall finds
    it later."""
    state = state_of(bot)
    if state is None or not state.settings.facts or not message.author_id:
        return 0
    if state.settings.semantic and _model_client(bot) is not None and message.content.strip():
        _background(state, _store_vector(bot, state, message), "recall-vector")
    client = _model_client(bot) if state.settings.extract != "rules" else None
    if client is not None and model_facts.worth_asking(message.content):
        _background(state, _learn_from_model(bot, state, client, message), "recall-facts")
        return 0
    return await _save(bot, state, message, extract(message.content))


def _background(state: RecallState, work: Any, name: str) -> None:
    task = asyncio.create_task(work, name=name)
    state.tasks.add(task)
    task.add_done_callback(state.tasks.discard)


async def _store_vector(bot: Any, state: RecallState, message: IncomingMessage) -> None:
    """Embed the user's message and store the vector beside it (best effort:
    without it the message is still found by its words)."""
    cfg = state.settings
    memory = memory_of(bot)
    queries = queries_of(state, memory) if memory is not None and memory.db_ok else None
    if queries is None:
        return
    from plugins.memory import BackendDown

    try:
        (vector,) = await embeddings.embed(bot.plugin_state.get("llm"), cfg.embeddings_model, [message.content], cfg.extract_timeout)
        guild = None if message.is_dm else message.guild_id
        await memory.db.run(queries.save_vector, message.id, message.author_id, guild, message.timestamp, cfg.embeddings_model, vector)
    except embeddings.EmbeddingError as exc:
        log.warning("recall: no embedding for message %s (%s); it is found by its words only", message.id, exc)
    except BackendDown as exc:
        memory.db_failed(exc)


def _model_client(bot: Any) -> Any:
    """The llm plugin's chat client for ``bot``, when a model is configured."""
    runtime = bot.plugin_state.get("llm")
    settings = getattr(runtime, "settings", None)
    if settings is None or getattr(settings, "offline", True):
        return None
    return getattr(runtime, "client", None)


async def _learn_from_model(bot: Any, state: RecallState, client: Any, message: IncomingMessage) -> int:
    facts = None
    try:
        async with asyncio.timeout(state.settings.extract_timeout):
            completion = await client.complete(model_facts.request(message.content))
        facts = model_facts.parse(completion.text)
        if facts is None:
            log.warning("recall: the model's facts were not a JSON array of key/value; using the rules")
    except TimeoutError:
        log.warning("recall: the model did not list facts within %ss; using the rules", state.settings.extract_timeout)
    except Exception as exc:  # noqa: BLE001 - ProviderError and the like: the rules still work
        log.warning("recall: the model could not list facts (%s); using the rules", type(exc).__name__)
    return await _save(bot, state, message, extract(message.content) if facts is None else facts)


async def _save(bot: Any, state: RecallState, message: IncomingMessage, facts: list[Any]) -> int:
    if not facts:
        return 0
    memory = memory_of(bot)
    if memory is None or not memory.db_ok:
        _skip(state, "the database is unreachable; facts not extracted")
        return 0
    queries = queries_of(state, memory)
    if queries is None:
        return 0
    from plugins.memory import BackendDown

    place = place_of(message.guild_id, message.is_dm)
    try:
        return int(await memory.db.run(queries.save_facts, message.author_id, place, facts, message.id, message.timestamp))
    except BackendDown as exc:
        memory.db_failed(exc)
        _skip(state, str(exc))
        return 0


async def run_slow(bot: Any, what: str, fn: Any, *args: Any) -> Any:
    """A rare explicit operation (``/memory``, export, forget) on the
    database; raises :class:`plugins.memory.BackendDown` when unreachable."""
    from plugins.memory import BackendDown

    state = state_of(bot)
    memory = memory_of(bot)
    if state is None or memory is None:
        raise BackendDown("database", f"recall is not running; {what}")
    queries = queries_of(state, memory)
    if queries is None:
        raise BackendDown("database", f"no database is configured; {what}")
    return await memory.db.run(getattr(queries, fn), *args, slow=True)
