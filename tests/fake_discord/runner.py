"""Drive a bot running in its OWN process (``python -m core run``) through the fake Discord.

Built for reuse by the Gherkin harness (restart, Redis flush, two instances)
whose steps are synchronous:

- :class:`FakeDiscordThread` runs a :class:`FakeDiscord` on its own event
  loop in a background thread; its methods are plain blocking calls;
- :class:`BotProcess` starts the bot through its real entry point with
  ``DISCORD_TOKEN`` (an obviously fake value built at run time) and the
  ``DISCORD_API_BASE`` / ``DISCORD_GATEWAY_URL`` / ``DISCORD_CDN_BASE``
  variables pointing at the fake, waits for it to connect, stops it with
  SIGTERM (graceful) or SIGKILL (crash), and keeps its log.

Example::

    with FakeDiscordThread() as discord:
        guild, channel, alice = discord.world()
        bot = BotProcess(discord, tmp_path / "data")
        bot.start()
        print(discord.chat(channel["id"], alice, "my name is Zed", mention=True))
        bot.restart()
        print(discord.chat(channel["id"], alice, "what is my name?", mention=True))
        bot.stop()
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from tests.fake_discord.server import FakeDiscord

# Variables that configure the bot: a developer's own values must not leak
# into a test bot (their database, their LLM, their Discord token).
_BOT_ENV_PREFIXES = ("DISCORD_", "BOT_", "MEMORY_", "SESSIONS_", "LLM_", "IMAGES_", "LIMITS_", "OPENAI_", "FILES_")
_BOT_ENV_NAMES = ("DATABASE_URL", "REDIS_URL")


class FakeDiscordThread:
    """A :class:`FakeDiscord` served from a background thread, with a
    blocking API for synchronous tests and steps."""

    def __init__(self, **options: Any) -> None:
        self.options = options
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="fake-discord", daemon=True)
        self.fake: FakeDiscord

    def start(self) -> FakeDiscordThread:
        self.thread.start()

        async def make() -> FakeDiscord:
            return await FakeDiscord(**self.options).start()

        self.fake = self.call(make())
        return self

    def stop(self) -> None:
        if self.thread.is_alive():
            self.call(self.fake.stop())
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
        self.loop.close()

    def __enter__(self) -> FakeDiscordThread:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def call(self, coro: Coroutine[Any, Any, Any], timeout: float = 30.0) -> Any:
        """Run ``coro`` on the fake's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def do(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run plain ``fn`` on the fake's loop (its state is not thread-safe)."""
        async def wrapper() -> Any:
            return fn(*args, **kwargs)

        return self.call(wrapper())

    # --- conveniences -------------------------------------------------------------------

    def world(self) -> tuple[Any, dict[str, Any], dict[str, Any]]:
        """A guild with a ``general`` channel and a member ``alice``."""
        def build() -> tuple[Any, dict[str, Any], dict[str, Any]]:
            guild = self.fake.add_guild("guild")
            channel = self.fake.add_channel(guild, "general")
            alice = self.fake.make_user("alice")
            self.fake.add_member(guild, alice)
            return guild, channel, alice

        return self.do(build)

    def dm_channel(self, user: dict[str, Any]) -> dict[str, Any]:
        return self.do(self.fake.dm_channel, user)

    def say(self, channel_id: str, author: dict[str, Any], content: str, *, mention: bool = False,
            **kwargs: Any) -> dict[str, Any]:
        """A user posts a message; returns it (its ``id`` is the platform id)."""
        return self.call(self.fake.send_user_message(channel_id, author, content, mention_bot=mention, **kwargs))

    def reply_to(self, message_id: str, timeout: float = 30.0) -> str:
        """The text of the bot's reply to ``message_id`` (parts joined)."""
        parts = self.call(self.fake.wait_for_reply_to(message_id, timeout), timeout + 5)
        return "\n".join(p["content"] for p in parts)

    def chat(self, channel_id: str, author: dict[str, Any], content: str, *, mention: bool = False,
             timeout: float = 30.0) -> str:
        """Say something and return the bot's reply."""
        return self.reply_to(self.say(channel_id, author, content, mention=mention)["id"], timeout)

    def interact(self, name: str, user: dict[str, Any], channel_id: str, options: dict[str, str] | None = None,
                 timeout: float = 30.0) -> list[dict[str, Any]]:
        """Run a slash command; return the bot's responses (``type`` 4 for an
        immediate answer, 5 for "thinking" followed by ``"followup"`` ones;
        ``content``, ``flags``, ``files`` with their ``data``)."""
        interaction = self.call(self.fake.send_interaction(name, user, channel_id, options))

        def answered() -> list[dict[str, Any]] | None:
            responses = self.fake.interaction_responses.get(interaction["id"], [])
            # A deferred answer is complete once a follow-up came.
            if responses and (responses[0]["type"] != 5 or len(responses) > 1):
                return responses
            return None

        return self.call(self.fake.wait_until(answered, timeout, f"an answer to /{name}"), timeout + 5)

    def interaction(self, name: str, user: dict[str, Any], channel_id: str, options: dict[str, str] | None = None,
                    timeout: float = 30.0) -> str:
        """Run a slash command; return the text of the bot's response(s)."""
        responses = self.interact(name, user, channel_id, options, timeout)
        return "\n".join(r["content"] for r in responses if r["content"])

    def sessions_identified(self) -> int:
        return self.do(lambda: len(self.fake.identifies))


def bot_environment(fake: FakeDiscord, data_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of a bot process talking to ``fake``: the caller's
    environment without bot settings, plus the fake's endpoints and token."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_BOT_ENV_PREFIXES) and k not in _BOT_ENV_NAMES}
    env.update(
        DISCORD_TOKEN=fake.token,
        DISCORD_API_BASE=fake.api_base,
        DISCORD_GATEWAY_URL=fake.gateway_url,
        DISCORD_CDN_BASE=fake.base_url,
        DISCORD_GUILD_READY_TIMEOUT="0.1",
        DISCORD_SEND_RETRY_DELAY="0.1",
        BOT_DATA_DIR=str(data_dir),
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


class BotProcess:
    """The bot in its own OS process, started through ``python -m core run``.

    It runs in ``data_dir`` (so no ``.env`` or ``bot.toml`` of the checkout
    is read); ``env`` adds variables (``REDIS_URL``, ``BOT_CONFIG``,
    ``BOT_INSTANCE_ID``...). Its output goes to ``<data_dir>/bot-<n>.log``.
    """

    def __init__(self, discord: FakeDiscordThread, data_dir: Path, *, env: dict[str, str] | None = None,
                 python: str = sys.executable, name: str = "bot") -> None:
        self.discord = discord
        self.data_dir = Path(data_dir)
        self.extra_env = dict(env or {})
        self.python = python
        self.name = name
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.log_path: Path | None = None

    def start(self, timeout: float = 60.0) -> None:
        """Start the process and wait until it is connected to the fake
        (IDENTIFY seen and its slash commands synced)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        self.log_path = self.data_dir / f"{self.name}-{self.starts}.log"
        before = self.discord.sessions_identified()
        synced_before = self.discord.do(lambda: sum(1 for m, p, _s in self.discord.fake.requests
                                                    if m == "PUT" and p.endswith("/commands")))
        env = bot_environment(self.discord.fake, self.data_dir, **self.extra_env)
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [self.python, "-m", "core", "run"], cwd=self.data_dir, env=env,
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            )

        def connected() -> bool:
            if self.process is not None and self.process.poll() is not None:
                return True  # died: reported below
            synced = sum(1 for m, p, _s in self.discord.fake.requests if m == "PUT" and p.endswith("/commands"))
            return len(self.discord.fake.identifies) > before and synced > synced_before

        try:
            self.discord.call(self.discord.fake.wait_until(connected, timeout, f"{self.name} to connect"), timeout + 5)
        except TimeoutError:
            raise RuntimeError(f"{self.name} did not connect in {timeout}s:\n{self.log_tail()}") from None
        if self.process.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}")

    def stop(self, timeout: float = 30.0) -> int:
        """Graceful stop (SIGTERM: memory flushes); returns the exit code."""
        return self._end(signal.SIGTERM, timeout)

    def kill(self) -> int:
        """Crash stop (SIGKILL: nothing flushes)."""
        return self._end(signal.SIGKILL, 30.0)

    def restart(self, timeout: float = 60.0) -> int:
        code = self.stop()
        self.start(timeout)
        return code

    def _end(self, sig: int, timeout: float) -> int:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
            raise RuntimeError(f"{self.name} ignored signal {sig} for {timeout}s:\n{self.log_tail()}") from None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def __enter__(self) -> BotProcess:
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.running:
            self.kill()
