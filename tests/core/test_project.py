"""Project-level checks: docs in step with code, lock in step with
pyproject, the core free of plugin dependencies, the CLI."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str, **kwargs) -> subprocess.CompletedProcess[str]:  # noqa: ANN003
    return subprocess.run(args, cwd=kwargs.pop("cwd", ROOT), capture_output=True, text=True, timeout=120, **kwargs)


def test_hook_docs_page_matches_hookspecs() -> None:
    generated = _run(sys.executable, "scripts/hook_docs.py").stdout
    committed = (ROOT / "docs" / "HOOKS.md").read_text()
    assert generated == committed, "docs/HOOKS.md is stale: run python scripts/hook_docs.py > docs/HOOKS.md"


def test_every_hookspec_declares_its_calling_mode_and_its_prose_agrees() -> None:
    from core import hookspecs

    prose = {
        "broadcast": "**Broadcast", "first answer": "**First answer", "collect": "**Collect", "registry": "**Registry"
    }
    for name, func in vars(hookspecs).items():
        if hasattr(func, "discord_bot_spec"):
            mode = hookspecs.mode_of(func)
            assert mode is not None, f"hook {name} declares no calling mode: @spec(Mode.…)"
            assert prose[mode.value] in (func.__doc__ or ""), f"hook {name}: its docstring does not say {mode.value}"


_CALLS = {"broadcast": "broadcast", "first": "first answer", "first_answer": "first answer",
          "collect": "collect", "collect_by_plugin": "collect", "call_registry": "registry"}


def _hook_calls(path: Path) -> list[tuple[int, str, str]]:
    """``(line, method, hook)`` for every ``….hooks.<method>("hook", …)``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        owner = node.func.value
        named_hooks = isinstance(owner, ast.Attribute) and owner.attr == "hooks" or (
            isinstance(owner, ast.Name) and owner.id == "hooks")
        if named_hooks and node.func.attr in _CALLS and node.args and isinstance(node.args[0], ast.Constant):
            found.append((node.lineno, node.func.attr, str(node.args[0].value)))
    return found


def test_every_hook_call_in_the_code_uses_the_declared_mode_and_arguments() -> None:
    """The dispatcher refuses a wrong call when it runs; this finds one on a
    path no test happens to run."""
    import inspect

    from core import hookspecs

    specs = {n: f for n, f in vars(hookspecs).items() if hasattr(f, "discord_bot_spec")}
    wrong = []
    for folder in ("core", "plugins", "bench", "harness", "plugin_testing"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            tree = ast.parse(path.read_text(), str(path))
            calls = {(c.lineno, c): c for c in ast.walk(tree) if isinstance(c, ast.Call)}
            for line, method, hook in _hook_calls(path):
                where = f"{path.relative_to(ROOT)}:{line}"
                if hook not in specs:
                    wrong.append(f"{where}: no hook {hook!r}")
                    continue
                mode = hookspecs.mode_of(specs[hook])
                if mode is None or mode.value != _CALLS[method]:
                    wrong.append(f"{where}: {method}({hook!r}) but {hook} is called by {mode and mode.value}")
                argnames = set(inspect.signature(specs[hook]).parameters)
                for (cline, call) in calls:
                    if cline == line and isinstance(call.func, ast.Attribute) and call.func.attr == method:
                        extra = {k.arg for k in call.keywords if k.arg} - argnames
                        if extra:
                            wrong.append(f"{where}: {hook} takes no argument {', '.join(sorted(extra))}")
    assert wrong == []


def test_lock_is_in_step_with_pyproject() -> None:
    digest = _run(sys.executable, "scripts/lock_digest.py").stdout.strip()
    first_line = (ROOT / "discord_bot.lock").read_text().splitlines()[0]
    assert first_line == f"# pyproject-dependencies-sha256: {digest}", (
        "discord_bot.lock is stale against pyproject.toml: run scripts/lock.sh"
    )


def test_lock_pins_every_package_with_hashes() -> None:
    text = (ROOT / "discord_bot.lock").read_text()
    pins = [line for line in text.splitlines() if "==" in line and not line.startswith((" ", "#"))]
    assert pins and all(line.rstrip().endswith("\\") for line in pins), "every pin must be followed by hashes"


def test_core_imports_only_pluggy_pydantic_and_stdlib() -> None:
    allowed_third_party = {"pluggy", "pydantic", "pydantic_settings"}
    for path in (ROOT / "core").glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                assert top == "core" or top in allowed_third_party or top in sys.stdlib_module_names, (
                    f"{path.name} imports {name}"
                )


def test_cli_plugins_lists_builtins(tmp_path: Path) -> None:
    result = _run(sys.executable, "-m", "core", "plugins", cwd=tmp_path, env=_env(tmp_path))
    assert result.returncode == 0, result.stderr
    for name in ("core", "console", "memory", "sessions", "llm", "images", "discord"):
        assert f"\n{name} " in "\n" + result.stdout


def test_cli_disabled_plugin_in_config_file(tmp_path: Path) -> None:
    (tmp_path / "bot.toml").write_text('[plugins]\ndisabled = ["console"]\n')
    result = _run(sys.executable, "-m", "core", "plugins", cwd=tmp_path, env=_env(tmp_path))
    line = next(l for l in result.stdout.splitlines() if l.startswith("console "))
    assert "disabled" in line


def test_cli_malformed_config_is_one_clear_line(tmp_path: Path) -> None:
    (tmp_path / "bot.toml").write_text("[plugins\n")
    result = _run(sys.executable, "-m", "core", "check", cwd=tmp_path, env=_env(tmp_path))
    assert result.returncode == 2
    assert result.stderr.startswith("config error: bot.toml: not valid TOML")
    assert "Traceback" not in result.stderr


def test_terminal_chat_answers(tmp_path: Path) -> None:
    result = _run(
        sys.executable, "-m", "core", "chat", cwd=tmp_path, env=_env(tmp_path), input="hello there\n/help\n"
    )
    assert result.returncode == 0, result.stderr
    lines = [l for l in result.stdout.splitlines() if l.startswith("bot> ")]
    assert len(lines) >= 2 and "/help" in result.stdout


def _env(tmp_path: Path) -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("BOT_", "DISCORD_", "REDIS_", "DATABASE_", "LLM_"))}
    env["BOT_DATA_DIR"] = str(tmp_path / "data")
    return env


def test_the_fast_matrix_needs_no_database_or_redis_server(tmp_path: Path) -> None:
    """With the services out of reach, --backend fast collects nothing that
    needs one: no [real] run, no test marked real, none using a service
    fixture (.ci/run then runs that selection with the services unreachable)."""
    import os

    env = {**os.environ, "HARNESS_PG_PORT": "9", "HARNESS_REDIS_SERVER": str(tmp_path / "no-redis-server")}
    collect = (sys.executable, "-m", "pytest", "--backend", "fast", "--collect-only", "-q", "-p", "no:cacheprovider")
    result = _run(*collect, "-m", "real", env=env)
    # -m real selects what needs the services: after --backend fast, nothing.
    assert "no tests collected" in result.stdout or " 0 selected" in result.stdout or result.returncode == 5, (
        result.stdout[-2000:]
    )
    collected = _run(*collect, env=env)
    ids = [line for line in collected.stdout.splitlines() if "::" in line]
    assert ids and not [i for i in ids if i.endswith("[real]")]


def test_the_benchmarks_do_not_import_the_tests() -> None:
    """bench/ and the tests share the harness package; bench never reaches
    into tests/ (test code is not a dependency of anything)."""
    wrong = []
    for path in sorted((ROOT / "bench").rglob("*.py")) + sorted((ROOT / "harness").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            wrong += [f"{path.relative_to(ROOT)}: {n}" for n in names if n == "tests" or n.startswith("tests.")]
    assert wrong == []
