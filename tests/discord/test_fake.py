"""The fake Discord itself: the details that make tests against it honest."""

from __future__ import annotations

import asyncio
import json
import zlib

import aiohttp
import pytest

from tests.fake_discord.server import ZLIB_SUFFIX, FakeDiscord


def test_rest_answers_like_discord(run):
    async def scenario():
        async with FakeDiscord() as fake, aiohttp.ClientSession() as http:
            auth = {"Authorization": f"Bot {fake.token}"}
            async with http.get(fake.api_base + "/users/@me", headers=auth) as r:
                # Exactly this value: discord.py does not parse "; charset=utf-8".
                assert r.headers["Content-Type"] == "application/json"
                assert (await r.json())["bot"] is True
            async with http.get(fake.api_base + "/users/@me") as r:
                assert r.status == 401
            fake.fail("GET", "/users/@me", 429, retry_after=0.25)
            async with http.get(fake.api_base + "/users/@me", headers=auth) as r:
                assert r.status == 429 and r.headers["Via"]
                assert json.loads(await r.text())["retry_after"] == 0.25
            async with http.get(fake.api_base + "/nothing/here", headers=auth) as r:
                assert r.status == 404
            assert fake.unknown_requests == [("GET", "/nothing/here")]

    run(scenario())


def test_gateway_zlib_stream_ready_and_blanking(run):
    async def scenario():
        async with FakeDiscord() as fake, aiohttp.ClientSession() as http:
            guild = fake.add_guild()
            channel = fake.add_channel(guild)
            alice = fake.make_user("alice")
            fake.add_member(guild, alice)
            inflate = zlib.decompressobj()

            async def receive(ws):
                msg = await asyncio.wait_for(ws.receive(), 5)
                assert msg.type == aiohttp.WSMsgType.BINARY and msg.data.endswith(ZLIB_SUFFIX)
                return json.loads(inflate.decompress(msg.data))

            async with http.ws_connect(fake.gateway_url + "?v=10&encoding=json&compress=zlib-stream") as ws:
                assert (await receive(ws))["op"] == 10
                await ws.send_str(json.dumps({"op": 2, "d": {"token": fake.token, "intents": 1 | 512}}))
                ready = await receive(ws)
                assert ready["t"] == "READY" and ready["d"]["resume_gateway_url"].startswith("ws://")
                created = await receive(ws)
                assert created["t"] == "GUILD_CREATE"
                assert created["d"]["member_count"] == len(created["d"]["members"])
                await fake.send_user_message(channel["id"], alice, "hidden")
                await fake.send_user_message(channel["id"], alice, "shown", mention_bot=True)
                assert (await receive(ws))["d"]["content"] == ""  # no message-content intent
                assert (await receive(ws))["d"]["content"].endswith("shown")

    run(scenario())


@pytest.mark.parametrize("intents", [1 << 15, 1 << 1])
def test_privileged_intent_not_granted_closes_4014(run, intents):
    async def scenario():
        async with FakeDiscord(privileged_intents=0) as fake, aiohttp.ClientSession() as http:
            async with http.ws_connect(fake.gateway_url) as ws:
                await ws.receive()
                await ws.send_str(json.dumps({"op": 2, "d": {"token": fake.token, "intents": intents}}))
                msg = await asyncio.wait_for(ws.receive(), 5)
                assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 4014

    run(scenario())
