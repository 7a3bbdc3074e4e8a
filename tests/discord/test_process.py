"""The bot started through its real entry point (``python -m core run``) in
its own process, talking to the fake Discord: it chats, and after a restart
of the process the conversation's context is still there (memory on SQLite)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tests.fake_discord.runner import BotProcess, FakeDiscordThread

pytestmark = [pytest.mark.discord, pytest.mark.multiprocess]

REPO = Path(__file__).resolve().parents[2]


def test_entry_point_chats_and_context_survives_a_restart(tmp_path):
    data = tmp_path / "data"
    with FakeDiscordThread() as discord:
        guild, channel, alice = discord.world()
        with BotProcess(discord, data) as bot:
            bot.start()
            first = discord.chat(channel["id"], alice, "Hello! My name is Zed.", mention=True)
            assert first, bot.log_tail()
            dm = discord.dm_channel(alice)
            assert discord.chat(dm["id"], alice, "my favourite colour is teal")

            assert bot.stop() == 0, bot.log_tail()
            bot.start()
            answer = discord.chat(channel["id"], alice, "What is my name?", mention=True)
            assert "Zed" in answer, f"{answer!r}\n{bot.log_tail()}"
            assert "teal" in discord.chat(dm["id"], alice, "what is my favourite colour?")
            assert discord.sessions_identified() == 2
            assert bot.stop() == 0, bot.log_tail()
        log = bot.log_text()

    db = data / "memory.db"
    assert db.exists(), "the memory plugin did not write its SQLite database"
    with sqlite3.connect(db) as conn:
        contents = [row[0] for row in conn.execute("SELECT content FROM messages ORDER BY ts")]
    assert "Hello! My name is Zed." in contents and "What is my name?" in contents
    assert discord.fake.token not in log, "the token leaked into the log"
