"""Steps of features/discord_native.feature: text files, streamed replies
and reply chains through Discord, the bot in its own process, the model a
chat-completions server on 127.0.0.1 (``tests/llm/provider.py``) served
from the fake Discord's thread.

``test_discord_native.py`` imports them with the Discord steps
(``discord_steps``); no scenarios here.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web
from pytest_bdd import given, then, when

from tests.features.discord_steps import REPLY_TIMEOUT, DiscordScenario, DiscordScenarioError
from tests.harness.steps import p
from tests.llm.provider import FakeProvider, Seen, completion, last_user_text

# A streamed reply takes about this long: several edit intervals (1 s).
STREAM_PIECES = 14
STREAM_GAP = 0.25


@pytest.fixture
def model(discord_world: DiscordScenario) -> Iterator[FakeProvider]:
    """A chat-completions server on the fake Discord's loop; it answers
    ``echo: <the last user message>`` and records every request."""
    provider = FakeProvider()
    discord_world.discord.call(provider.start())
    yield provider
    discord_world.discord.call(provider.stop())


def _slow_story(text: str) -> list[str]:
    words = f"echo: {text}. " + " ".join(f"and then part {i} of the story happened." for i in range(STREAM_PIECES))
    pieces = words.split(" ")
    size = max(1, len(pieces) // STREAM_PIECES)
    return [" ".join(pieces[i:i + size]) + " " for i in range(0, len(pieces), size)]


async def _slow_sse(request: web.Request, pieces: list[str], *, broken: bool = False) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    for piece in pieces:
        chunk = {"choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}
        await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
        await asyncio.sleep(STREAM_GAP)
    if broken:
        # The connection ends mid-reply: no finish_reason, no [DONE].
        await response.write_eof()
        return response
    done = {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
    await response.write(f"data: {json.dumps(done)}\n\ndata: [DONE]\n\n".encode())
    await response.write_eof()
    return response


async def _slowly(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
    text = last_user_text(body)
    if body.get("stream"):
        return await _slow_sse(request, _slow_story(text))
    return web.json_response(completion(f"echo: {text}"))


# ============================================================================
# Given
# ============================================================================


@given("the model behind the bot is a chat-completions server")
def given_model(discord_world: DiscordScenario, model: FakeProvider) -> None:
    """Bot processes started from now on use it (``LLM_BASE_URL``), with
    quick retries."""
    discord_world.extra_env.update(LLM_BASE_URL=model.base_url, LLM_BACKOFF="0.01")


@given("the model streams its replies slowly")
def given_model_streams(discord_world: DiscordScenario, model: FakeProvider) -> None:
    """``LLM_STREAM=true``; each reply comes as about 14 pieces 0.25 s apart
    (``echo: <text>.`` then a story), so it takes several seconds."""
    discord_world.extra_env["LLM_STREAM"] = "true"
    model.default = _slowly


@given(p('the model\'s next reply breaks off after "{text}"'))
def given_model_breaks(model: FakeProvider, text: str) -> None:
    """The next request is answered by a stream of ``text`` (in pieces)
    whose connection then ends: no finish reason, no ``[DONE]``."""
    pieces = [w + " " for w in text.split(" ")]
    pieces[-1] = pieces[-1].rstrip()

    async def broken(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        return await _slow_sse(request, pieces, broken=True)

    model.script.append(broken)


@given(p("the bot process keeps {count:d} messages in its context window"))
def given_window(discord_world: DiscordScenario, count: int) -> None:
    discord_world.extra_env["SESSIONS_WINDOW_MESSAGES"] = str(count)


@given(p("{user:Name} is an administrator of the server on Discord"))
def given_discord_admin(discord_world: DiscordScenario, user: str) -> None:
    """``user`` gets the server's admin role (before any bot connects, so
    GUILD_CREATE carries it)."""
    member = discord_world.user(user)
    discord_world.discord.do(discord_world.fake.add_member, discord_world.guild, member, ["admin"])


@given(p("the bot processes follow stored settings every {seconds:g} seconds"))
def given_refresh(discord_world: DiscordScenario, seconds: float) -> None:
    """A config file (``BOT_CONFIG``) with ``[bot] plugin_state_refresh``."""
    path = discord_world.tmp_path / "bot.toml"
    path.write_text(f"[bot]\nplugin_state_refresh = {seconds}\n")
    discord_world.extra_env["BOT_CONFIG"] = str(path)


# ============================================================================
# When
# ============================================================================


@when(p('{user:Name} runs /settings set {name} "{value}" on Discord in {place:Place}'))
def when_runs_settings(discord_world: DiscordScenario, user: str, name: str, value: str, place: str) -> None:
    """The slash command ``/settings`` with its options (action, name,
    value); every bot process receives the interaction, one answers it."""
    member = discord_world.user(user)
    channel_id, _mention = discord_world.channel_for(place, member)
    answer = discord_world.discord.interaction("settings", member, channel_id,
                                               {"action": "set", "name": name, "value": value})
    discord_world.answers[f"/settings set {name}"] = answer


@given("the bot processes hear members leave")
def given_members_intent(discord_world: DiscordScenario) -> None:
    """``DISCORD_MEMBERS_INTENT=true``: the Server Members intent, without
    which Discord (and the fake) sends no GUILD_MEMBER_REMOVE."""
    discord_world.extra_env["DISCORD_MEMBERS_INTENT"] = "true"


@when(p("{user:Name} leaves the server on Discord"))
def when_leaves_on_discord(discord_world: DiscordScenario, user: str) -> None:
    """GUILD_MEMBER_REMOVE to every bot process. What ``user`` wrote in the
    server's channels is then expected gone (the server forgets its
    leavers); waits (bounded) until the database no longer holds it."""
    member = discord_world.user(user)
    discord_world.discord.call(discord_world.fake.remove_member(discord_world.guild, member))
    gone = [w for w in discord_world.written if w.user == user and w.place.startswith("#")]
    for w in gone:
        w.deleted = True

    def applied() -> bool:
        marks = ", ".join("?" * len(gone))
        ids = tuple(w.id for w in gone)
        return not discord_world.backends.query(
            f"SELECT 1 FROM messages WHERE message_id IN ({marks}) OR reply_to_id IN ({marks})", ids + ids)

    _wait_for_db(discord_world, applied, f"what {user} wrote in the server, after they left")


@given(p("the bot processes open a thread per conversation in {place:Place}, shared by its members"))
def given_thread_channel(discord_world: DiscordScenario, place: str) -> None:
    """``DISCORD_THREAD_CHANNELS`` lists the channel; ``SESSIONS_SCOPE=thread``."""
    channel_id, _mention = discord_world.channel_for(place, discord_world.user("alice"))
    discord_world.extra_env.update(DISCORD_THREAD_CHANNELS=f"[{channel_id}]", SESSIONS_SCOPE="thread")


def _wait_thread_replies(discord_world: DiscordScenario, thread_id: str, count: int, what: str) -> None:
    try:
        discord_world.wait(lambda: len(discord_world.fake.bot_messages_in(thread_id)) >= count or None,
                           REPLY_TIMEOUT, what)
    except TimeoutError:
        raise DiscordScenarioError(f"no {what}\n{discord_world.logs()}") from None


@when(p('{user:Name} starts a conversation "{text}" with the bot in {place:Place} on Discord'))
def when_starts_thread(discord_world: DiscordScenario, user: str, text: str, place: str) -> None:
    """``user`` mentions the bot in ``place``; waits (bounded) for the
    bot's answer in the thread it opens from that message."""
    written = discord_world.write_only(user, text, place)
    _wait_thread_replies(discord_world, written.id, 1, f"a thread answering {text!r}")
    discord_world.thread = written.id


@when(p('{user:Name} writes "{text}" in that thread on Discord'))
def when_writes_in_thread(discord_world: DiscordScenario, user: str, text: str) -> None:
    """No mention: the bot answers every message in threads it opens."""
    thread_id = discord_world.thread
    before = discord_world.snapshot(lambda: len(discord_world.fake.bot_messages_in(thread_id)))
    discord_world.write_only(user, text, thread_id, in_channel=thread_id)
    _wait_thread_replies(discord_world, thread_id, before + 1, f"the answer to {text!r} in the thread")


@when(p('bot process "{name:Name}" stops'))
def when_one_process_stops(discord_world: DiscordScenario, name: str) -> None:
    """SIGTERM to that process (it must exit 0)."""
    discord_world.stop(name)


@when(p('{user:Name} writes "{text}" to the bot in {place:Place} on Discord with the file "{name}" holding "{content}"'))
def when_writes_with_file(discord_world: DiscordScenario, user: str, text: str, place: str, name: str, content: str) -> None:
    """The message carries a file (``text/plain``); the bot downloads it
    from the fake's CDN like any attachment."""
    discord_world.write(user, text, place, attachments=[(name, content.encode(), "text/plain")])


@when(p('{user:Name} replies "{text}" on Discord to the bot\'s reply to "{earlier}"'))
def when_replies_to_old(discord_world: DiscordScenario, user: str, text: str, earlier: str) -> None:
    """A Discord reply (message reference, no mention) to the bot's post
    that answered ``earlier``, in the same channel."""
    said = discord_world.said(earlier)
    posts = discord_world.snapshot(lambda: discord_world.replies_to(said.id))
    if not posts:
        raise DiscordScenarioError(f"the bot never answered {earlier!r}")
    discord_world.write(user, text, said.place, reply_to=str(posts[0]["id"]))


@when(p('{user:Name} edits "{text}" on Discord to "{new}"'))
def when_edits_on_discord(discord_world: DiscordScenario, user: str, text: str, new: str) -> None:
    """The author edits the message: MESSAGE_UPDATE to every bot process
    (mention kept, as the client keeps it). Waits (bounded) until the
    database shows it."""
    said = discord_world.said(text)
    content = said.message["content"].replace(text, new)
    discord_world.discord.call(discord_world.fake.edit_user_message(said.id, content))
    said.edited = new

    def applied() -> bool:
        return discord_world.backends.query("SELECT content FROM messages WHERE message_id = ?", (said.id,)) == [(new,)]

    _wait_for_db(discord_world, applied, f"the edit of {text!r}")


def _delete_on_discord(discord_world: DiscordScenario, texts: list[str]) -> None:
    said = [discord_world.said(t) for t in texts]
    channel_id = str(said[0].message["channel_id"])
    discord_world.discord.call(discord_world.fake.delete_user_messages(channel_id, [w.id for w in said]))
    for w in said:
        w.deleted = True

    def applied() -> bool:
        marks = ", ".join("?" * len(said))
        return not discord_world.backends.query(f"SELECT 1 FROM messages WHERE message_id IN ({marks})",
                                                tuple(w.id for w in said))

    _wait_for_db(discord_world, applied, f"the deletion of {texts}")


def _wait_for_db(discord_world: DiscordScenario, check: Any, what: str) -> None:
    deadline = time.monotonic() + REPLY_TIMEOUT
    while not check():
        if time.monotonic() > deadline:
            raise DiscordScenarioError(f"{what} never reached the database\n{discord_world.logs()}")
        time.sleep(0.05)


@when(p('{user:Name} deletes "{text}" on Discord'))
def when_deletes_on_discord(discord_world: DiscordScenario, user: str, text: str) -> None:
    """MESSAGE_DELETE to every bot process; waits (bounded) until the
    database no longer holds the message."""
    _delete_on_discord(discord_world, [text])


@when(p('a moderator deletes "{first}" and "{second}" on Discord at once'))
def when_bulk_deletes_on_discord(discord_world: DiscordScenario, first: str, second: str) -> None:
    """One MESSAGE_DELETE_BULK naming both messages."""
    _delete_on_discord(discord_world, [first, second])


# ============================================================================
# Then
# ============================================================================


@then(p('the answer on Discord to /settings set {name} says "{fragment}"'))
def then_settings_answer(discord_world: DiscordScenario, name: str, fragment: str) -> None:
    answer = discord_world.answers.get(f"/settings set {name}")
    assert answer is not None and fragment in answer, f"the answer was {answer!r}"


@then(p('the model\'s request for "{text}" was sent with the system prompt "{prompt}" and the model "{model_name}"'))
def then_request_prompt_model(model: FakeProvider, text: str, prompt: str, model_name: str) -> None:
    body = _request_for(model, text).body
    system = body["messages"][0]
    assert system["role"] == "system" and system["content"].startswith(prompt), f"the system prompt was {system}"
    assert body["model"] == model_name, f"the model asked for was {body['model']!r}"


@then(p('the model\'s request for "{text}" has no message "{content}"'))
def then_request_has_no_message(model: FakeProvider, text: str, content: str) -> None:
    """No message of the request is exactly ``content`` (the bot's earlier
    replies may still quote it: they are what the bot said)."""
    contents = _contents(_request_for(model, text))
    assert content not in contents, f"{content!r} is a message of {contents}"


@then(p('the model\'s request for "{text}" holds "{fragment}"'))
def then_request_holds(model: FakeProvider, text: str, fragment: str) -> None:
    contents = _contents(_request_for(model, text))
    assert any(fragment in c for c in contents), f"{fragment!r} is not in {contents}"


def _request_for(model: FakeProvider, text: str) -> Seen:
    found = [s for s in model.seen if text in last_user_text(s.body)]
    if not found:
        asked = [last_user_text(s.body)[:60] for s in model.seen]
        raise AssertionError(f"the model was never asked about {text!r}; it was asked about {asked}")
    return found[-1]


def _contents(seen: Seen) -> list[str]:
    return [m["content"] if isinstance(m["content"], str) else json.dumps(m["content"]) for m in seen.body["messages"]]


@then(p('the model\'s request for "{text}" holds the file "{name}" with "{content}"'))
def then_request_holds_file(model: FakeProvider, text: str, name: str, content: str) -> None:
    """One message of the request shows the file by name with its text."""
    contents = _contents(_request_for(model, text))
    wanted = f"--- file: {name} ---\n{content}\n--- end of {name} ---"
    assert any(wanted in c for c in contents), f"no message holds {wanted!r}: {contents}"


@then(p('the model\'s request for "{text}" does not hold "{fragment}"'))
def then_request_lacks(model: FakeProvider, text: str, fragment: str) -> None:
    contents = _contents(_request_for(model, text))
    assert not any(fragment in c for c in contents), f"{fragment!r} is in {contents}"


@then(p('the model\'s request for "{text}" holds these messages in this order:'))
def then_request_messages(model: FakeProvider, text: str, datatable: list[list[str]]) -> None:
    """Every message of the request but the system prompt, as ``| role |
    content |``."""
    header, *rows = datatable
    assert header == ["role", "content"], header
    got = [[m["role"], m["content"]] for m in _request_for(model, text).body["messages"] if m["role"] != "system"]
    assert got == rows, f"the model was sent {got}"


def _reply_posts(discord_world: DiscordScenario, text: str) -> list[dict[str, Any]]:
    said = discord_world.said(text)
    posts = discord_world.snapshot(lambda: discord_world.replies_to(said.id))
    if not posts:
        raise DiscordScenarioError(f"no reply to {text!r}")
    return posts


@then(p('the bot\'s reply on Discord to "{text}" was posted once and edited as it was written, at most once a second'))
def then_streamed(discord_world: DiscordScenario, model: FakeProvider, text: str) -> None:
    """On the fake's REST log: one POST answers ``text``; it was edited at
    least twice, each edit showing more than the one before (the preview
    grew), no two edits of it less than 0.9 s apart, and it shows the whole
    reply now."""
    whole = "".join(_slow_story(text)).strip()
    said = discord_world.said(text)
    try:
        discord_world.wait(lambda: any(p["content"] == whole for p in discord_world.replies_to(said.id)),
                           REPLY_TIMEOUT, "the whole streamed reply")
    except TimeoutError:
        raise DiscordScenarioError(f"the reply never showed the whole text\n{discord_world.logs()}") from None
    posts = _reply_posts(discord_world, text)
    assert len(posts) == 1, f"{len(posts)} posts answer {text!r}"
    post = posts[0]
    edits = discord_world.snapshot(lambda: [e for e in discord_world.fake.edits if e["message_id"] == post["id"]])
    shown = [e["content"] for e in edits]
    assert len(edits) >= 2, f"the reply was edited {len(edits)} times: {shown}\n{discord_world.logs()}"
    assert all(len(a) < len(b) for a, b in zip(shown, shown[1:])), shown
    gaps = [b["at"] - a["at"] for a, b in zip(edits, edits[1:])]
    assert all(g >= 0.9 for g in gaps), f"edits closer than a second: {gaps}"
    assert post["content"] == whole, f"the reply shows {post['content']!r}, not the whole {whole!r}"


def _stored_reply(discord_world: DiscordScenario, text: str) -> list[tuple[Any, ...]]:
    said = discord_world.said(text)
    return discord_world.backends.query("SELECT content FROM messages WHERE role = 'bot' AND reply_to_id = ?", (said.id,))


@then(p('the database holds the bot\'s reply to "{text}" as Discord shows it'))
def then_stored_as_shown(discord_world: DiscordScenario, text: str) -> None:
    shown = "\n".join(p["content"] for p in _reply_posts(discord_world, text))
    rows = _stored_reply(discord_world, text)
    assert rows == [(shown,)], f"stored {rows}, Discord shows {shown!r}"


@then(p('the database holds the bot\'s reply to "{text}" as "{content}"'))
def then_stored_as(discord_world: DiscordScenario, text: str, content: str) -> None:
    rows = _stored_reply(discord_world, text)
    assert rows == [(content,)], f"stored {rows}"


