"""The minimal, transport-agnostic core of the bot.

It holds the configuration, the plugin manager, the hook contract, the
transport-neutral models and the message pipeline. It imports pluggy, pydantic
and the standard library only: Discord, Redis, databases and images belong to
plugins.
"""

__version__ = "0.1.0"
