"""Kept for plugins that imported the token stream from here: it is the
core's now (:mod:`core.streaming`, ``bot.tokens``)."""

from core.streaming import TokenHub, TokenStream

__all__ = ["TokenHub", "TokenStream"]
