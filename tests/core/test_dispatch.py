"""The async dispatcher: isolation, order, first answer with sync and async."""

from __future__ import annotations

import asyncio
import types

import pluggy
import pytest

from core import hookspecs
from core.dispatch import Hooks
from core.errors import Refused
from core.hookspecs import PROJECT_NAME
from core.models import Context, Reply, Session
from core.plugins import hookimpl


def _pm(*plugins: tuple[str, object]) -> pluggy.PluginManager:
    pm = pluggy.PluginManager(PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    for name, plugin in plugins:
        pm.register(plugin, name=name)
    return pm


def _ns(**funcs: object) -> types.SimpleNamespace:
    return types.SimpleNamespace(**funcs)


def _context() -> Context:
    return Context(Session("s", "k", 0.0, 0.0), "sys", [])


def run(coro):  # noqa: ANN001, ANN201
    return asyncio.run(coro)


def test_first_answer_awaits_async_and_skips_none() -> None:
    calls = []

    class Silent:
        @hookimpl(tryfirst=True)
        async def generate_reply(self):  # noqa: ANN201
            calls.append("silent")
            return None

    class Answers:
        @hookimpl
        def generate_reply(self):  # noqa: ANN201
            calls.append("answers")
            return Reply("sync answer")

    class Later:
        @hookimpl(trylast=True)
        async def generate_reply(self):  # noqa: ANN201
            calls.append("later")
            return Reply("too late")

    hooks = Hooks(_pm(("later", Later()), ("answers", Answers()), ("silent", Silent())))
    reply = run(hooks.first("generate_reply", context=_context(), message=None, bot=None))
    assert reply.content == "sync answer"
    assert calls == ["silent", "answers"]


def test_async_first_answer_is_awaited_not_returned_as_coroutine() -> None:
    class AsyncOnly:
        @hookimpl
        async def generate_reply(self):  # noqa: ANN201
            await asyncio.sleep(0)
            return Reply("async answer")

    hooks = Hooks(_pm(("a", AsyncOnly())))
    reply = run(hooks.first("generate_reply", context=_context(), message=None, bot=None))
    assert isinstance(reply, Reply) and reply.content == "async answer"


def test_a_raising_plugin_is_isolated_and_named() -> None:
    seen = []

    class Broken:
        @hookimpl(tryfirst=True)
        def shutdown(self):  # noqa: ANN201
            raise RuntimeError("boom")

    class Fine:
        @hookimpl
        async def shutdown(self):  # noqa: ANN201
            seen.append("fine")

    hooks = Hooks(_pm(("fine", Fine()), ("broken", Broken())))
    results = run(hooks.broadcast("shutdown", bot=None))
    assert seen == ["fine"]
    assert [name for name, _ in results] == ["fine"]
    assert hooks.failures[-1].plugin == "broken"
    assert "boom" in hooks.failures[-1].error


def test_first_answer_goes_on_after_a_failure() -> None:
    class Broken:
        @hookimpl(tryfirst=True)
        async def generate_reply(self):  # noqa: ANN201
            raise ValueError("bad")

    class Fine:
        @hookimpl
        def generate_reply(self):  # noqa: ANN201
            return Reply("still here")

    hooks = Hooks(_pm(("fine", Fine()), ("broken", Broken())))
    assert run(hooks.first("generate_reply", context=_context(), message=None, bot=None)).content == "still here"


def test_refused_is_not_swallowed() -> None:
    class Refuser:
        @hookimpl
        def prepare_message(self):  # noqa: ANN201
            raise Refused("too big")

    hooks = Hooks(_pm(("r", Refuser())))
    with pytest.raises(Refused, match="too big"):
        run(hooks.broadcast("prepare_message", message=None, session=None, bot=None))


def test_collect_flattens_lists_and_drops_none() -> None:
    class One:
        @hookimpl
        def export_user(self):  # noqa: ANN201
            return {"a": 1}

    class Many:
        @hookimpl
        def health(self):  # noqa: ANN201
            return ["x", "y"]

    class Nothing:
        @hookimpl
        def health(self):  # noqa: ANN201
            return None

    hooks = Hooks(_pm(("one", One()), ("many", Many()), ("nothing", Nothing())))
    assert sorted(run(hooks.collect("health", bot=None))) == ["x", "y"]
    assert run(hooks.collect("export_user", user_id="u", bot=None)) == [{"a": 1}]


def test_implementations_receive_only_the_arguments_they_name() -> None:
    got = {}

    class Picky:
        @hookimpl
        def forget_user(self, user_id):  # noqa: ANN001, ANN201
            got["user_id"] = user_id
            return {"n": 1}

    hooks = Hooks(_pm(("p", Picky())), {"bot": object()})
    assert run(hooks.collect("forget_user", user_id="u1")) == [{"n": 1}]
    assert got == {"user_id": "u1"}


def test_registry_hooks_know_the_plugin_and_isolate_failures() -> None:
    class Good:
        @hookimpl
        def register_transports(self, register):  # noqa: ANN001, ANN201
            register("x", "value")

    class Bad:
        @hookimpl
        def register_transports(self, register):  # noqa: ANN001, ANN201
            raise RuntimeError("nope")

    hooks = Hooks(_pm(("good", Good()), ("bad", Bad())))
    registered = []
    hooks.call_registry("register_transports", lambda plugin: lambda *a: registered.append((plugin, a)))
    assert registered == [("good", ("x", "value"))]
    assert hooks.failures[-1].plugin == "bad"


def test_a_call_in_the_wrong_mode_is_refused() -> None:
    from core.dispatch import HookMisuse

    hooks = Hooks(_pm())
    with pytest.raises(HookMisuse, match="resolve_session.*first answer, not by broadcast"):
        run(hooks.broadcast("resolve_session", message=None))
    with pytest.raises(HookMisuse, match="export_user.*collect, not by first answer"):
        run(hooks.first("export_user", user_id="u"))
    with pytest.raises(HookMisuse, match="no hook named 'generate_replies'"):
        run(hooks.first("generate_replies"))


def test_an_undeclared_argument_is_refused_not_dropped() -> None:
    from core.dispatch import HookMisuse

    hooks = Hooks(_pm())
    with pytest.raises(HookMisuse, match="'load_media' takes no argument attachment"):
        run(hooks.first("load_media", sha256="x", attachment=None))


def test_a_hookspec_without_a_mode_is_refused_at_start_up() -> None:
    from core.dispatch import HookMisuse

    class Specs:
        @hookspecs.hookspec
        def mystery(self) -> None:
            """No mode."""

    pm = _pm()
    pm.add_hookspecs(Specs)
    with pytest.raises(HookMisuse, match="mystery.*declares no calling mode"):
        Hooks(pm)


def test_a_first_answer_reports_the_failures_of_this_call_only() -> None:
    class Broken:
        @hookimpl
        def generate_reply(self):  # noqa: ANN201
            raise RuntimeError("down")

    hooks = Hooks(_pm(("broken", Broken())))
    from core.dispatch import HookFailure

    hooks.failures.append(HookFailure("other", "generate_reply", "old"))
    outcome = run(hooks.first_answer("generate_reply", context=_context(), message=None))
    assert outcome.value is None and [f.plugin for f in outcome.failures] == ["broken"] and outcome.all_failed
