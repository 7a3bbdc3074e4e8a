"""Render docs/HOOKS.md from core/hookspecs.py (run: python scripts/hook_docs.py).

A test compares the committed page with this output, so the page cannot
drift from the code.
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core import hookspecs  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "ping"

HEADER = """# Hooks for plugin authors

Generated from `core/hookspecs.py` and `examples/ping` by
`python scripts/hook_docs.py > docs/HOOKS.md`; a test fails when this page
and the code disagree.

## A plugin in ten minutes

`python -m core new-plugin NAME` writes a package like `examples/ping`
(tested in CI exactly as below). A plugin is a module with functions
decorated by `core.plugins.hookimpl`, named after the hooks further down,
taking any subset of each hook's arguments by name:

```python
{plugin}```

It is found through an entry point in the `discord_bot.plugins` group:

```toml
{pyproject}```

Install it into the bot's venv, check it loaded, and chat with it:

```
.venv/bin/pip install -e examples/ping
./bot.sh plugins            # ping  enabled  (a failed plugin says why, in one line)
./bot.sh plugins --hooks    # its hooks, tryfirst/trylast, and who is asked first
./bot.sh chat               # say "ping"
```

Test it with the `chat_bot` fixture that comes with the bot (a pytest
plugin, `plugin_testing`): a bot with the core and your plugin only, real
pipeline, no network. A plugin that fails to load fails the test with the
reason.

```python
{test}```

`[plugins] disabled = ["ping"]` in `bot.toml` switches it off.

## The contract

"""


def _example(relative: str) -> str:
    return (EXAMPLE / relative).read_text()


def _entry_point_table() -> str:
    """The example's ``[project.entry-points."discord_bot.plugins"]`` table."""
    text = _example("pyproject.toml")
    table = text[text.index("[project.entry-points"):]
    return table.split("\n\n")[0] + "\n"


def render() -> str:
    header = HEADER.format(
        plugin=_example("ping_plugin/__init__.py"),
        pyproject=_entry_point_table(),
        test=_example("tests/test_ping.py"),
    )
    out = [header, inspect.getdoc(hookspecs) or "", ""]
    specs = [
        (name, func)
        for name, func in vars(hookspecs).items()
        if inspect.isfunction(func) and hasattr(func, f"{hookspecs.PROJECT_NAME}_spec")
    ]
    for name, func in specs:
        signature = str(inspect.signature(func)).replace("'", "")
        out.append(f"## `{name}`\n")
        out.append(f"```python\ndef {name}{signature}\n```\n")
        mode = hookspecs.mode_of(func)
        out.append(f"Called by: **{mode.value if mode else 'undeclared'}** (`@spec(Mode.{mode.name if mode else '?'})`).\n")
        out.append((inspect.getdoc(func) or "").strip() + "\n")
    out.append(_storage_section())
    return "\n".join(out).rstrip() + "\n"


def _storage_section() -> str:
    """The storage service a memory plugin registers (core.storage)."""
    from core import storage

    lines = ["## The storage service: `core.storage.Storage`\n", (inspect.getdoc(storage) or "") + "\n"]
    for name, func in vars(storage.Storage).items():
        if name.startswith("_") or not inspect.isfunction(func):
            continue
        signature = str(inspect.signature(func)).replace("'", "").replace("(self, ", "(").replace("(self)", "()")
        lines.append(f"### `{name}`\n")
        lines.append(f"```python\nasync def {name}{signature}\n```\n")
        lines.append((inspect.getdoc(func) or "").strip() + "\n")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.stdout.write(render())
