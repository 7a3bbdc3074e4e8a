"""Reply generation: an OpenAI-compatible chat-completions provider, or an
offline stand-in when no ``LLM_BASE_URL`` is set.

Settings live in ``[llm]`` / ``LLM_*`` (see :mod:`plugins.llm.settings`).
With ``stream = true`` the model's reply is published piece by piece on
the bot's hub (``bot.tokens``, :mod:`core.streaming`) for transports that
show it live.
"""

from __future__ import annotations

import logging
from typing import Any

from core.logs import redact
from core.models import Context, HealthReport, IncomingMessage, Reply
from core.plugins import hookimpl
from plugins.llm.prompt import FAILURE_MARK
from plugins.llm.reply import LlmRuntime
from core.streaming import TokenStream

log = logging.getLogger("plugins.llm")

def runtime_for(bot: Any) -> LlmRuntime | None:
    """The plugin's state for ``bot`` (``None`` before startup)."""
    return bot.plugin_state.get("llm")


def subscribe_tokens(bot: Any, message_id: str) -> TokenStream | None:
    """Subscribe to the reply to ``message_id`` as it is generated; ``None``
    when the plugin is not running for ``bot``. Same as
    ``bot.tokens.subscribe`` (:mod:`core.streaming`)."""
    runtime = bot.plugin_state.get("llm")
    return runtime.tokens.subscribe(message_id) if runtime is not None else None


@hookimpl
async def startup(bot: Any) -> None:
    old = bot.plugin_state.pop("llm", None)
    if old is not None:
        await old.stop()
    runtime = LlmRuntime.from_bot(bot)
    runtime.tokens = bot.tokens
    await runtime.start()
    bot.plugin_state["llm"] = runtime


@hookimpl
async def shutdown(bot: Any) -> None:
    runtime = bot.plugin_state.pop("llm", None)
    if runtime is not None:
        await runtime.stop()


@hookimpl
async def health(bot: Any) -> HealthReport | None:
    runtime = bot.plugin_state.get("llm")
    return await runtime.health() if runtime is not None else None


@hookimpl(tryfirst=True)
async def extend_context(context: Context, bot: Any) -> None:
    """The rolling summary, counted in the token budget (``[llm] summaries``).
    ``tryfirst``: the conversation's own summary before what other plugins
    add (recall)."""
    runtime = bot.plugin_state.get("llm")
    if runtime is not None:
        await runtime.extend(context, bot)


@hookimpl
async def generate_reply(context: Context, message: IncomingMessage, bot: Any) -> Reply | None:
    runtime = bot.plugin_state.get("llm")
    if runtime is None:
        return None
    try:
        return await runtime.reply(context, message, bot)
    except Exception as exc:  # noqa: BLE001 - the user gets a reply, and no secret reaches the log
        log.error("llm reply failed unexpectedly: %s", redact(f"{type(exc).__name__}: {exc}", runtime.secrets))
        return Reply(f"{FAILURE_MARK} I could not generate a reply ({type(exc).__name__}). Your message is saved; please try again.")
