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

HEADER = """# Hooks for plugin authors

Generated from `core/hookspecs.py` by `python scripts/hook_docs.py > docs/HOOKS.md`;
a test fails when this page and the code disagree.

A plugin is a module (or object) with functions decorated by
`core.plugins.hookimpl`, named after the hooks below, taking any subset of
each hook's arguments by name. Publish it with an entry point in the
`discord_bot.plugins` group:

```toml
[project.entry-points."discord_bot.plugins"]
myplugin = "my_package.plugin"
```

then `pip install` it; `python -m core plugins` lists it and `[plugins]
disabled = ["myplugin"]` in `bot.toml` switches it off.

"""


def render() -> str:
    out = [HEADER, inspect.getdoc(hookspecs) or "", ""]
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
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
