"""Exceptions the core gives meaning to."""


class ConfigError(Exception):
    """Configuration is malformed; the message names the key or file."""


class Refused(Exception):
    """A plugin refuses an input on purpose (too long, not allowed, ...).

    Raised from a hook, it stops the pipeline for this message and its text is
    sent to the user as the reply. It is not a plugin failure and is not
    logged as one.
    """

    def __init__(self, reply: str) -> None:
        super().__init__(reply)
        self.reply = reply


class ExportIncomplete(Exception):
    """A plugin failed while exporting: ``plugins`` names them. A partial
    export is never handed out, so the caller reports this instead."""

    def __init__(self, plugins: list[str]) -> None:
        super().__init__(f"export incomplete: plugin {', '.join(plugins)} failed")
        self.plugins = plugins
