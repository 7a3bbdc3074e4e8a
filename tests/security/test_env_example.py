""".env.example names every environment variable the project reads, and
holds no value for a secret."""

from __future__ import annotations

import importlib
import re
import tomllib
from pathlib import Path

from pydantic import AliasChoices

from core.settings import EnvSettings, PluginSettings

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / ".env.example"
# Read by libraries or the shell, or set by them (pytest-xdist names its
# workers), not settings of this project.
GENERIC = {"PATH", "HOME", "PYTHONPATH", "TERM", "USER", "TMPDIR", "BASH_SOURCE", "CI",
           "PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT"}
SECRET = re.compile(r"^(DISCORD_TOKEN|.*_API_KEY|(.*_)?DATABASE_URL|(.*_)?REDIS_URL)$")


def _settings_classes() -> list[type]:
    entry_points = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]["discord_bot.plugins"]
    for module in entry_points.values():
        package = importlib.import_module(module)
        for path in Path(package.__file__).parent.glob("*.py"):
            importlib.import_module(f"{module}.{path.stem}") if path.stem != "__init__" else None

    def subclasses(cls: type) -> list[type]:
        found = []
        for sub in cls.__subclasses__():
            found += [sub, *subclasses(sub)]
        return found

    return [EnvSettings] + [c for c in subclasses(PluginSettings) if c.__module__.startswith("plugins.")]


def settings_variables() -> set[str]:
    names: set[str] = set()
    for cls in _settings_classes():
        prefix = cls.model_config.get("env_prefix", "")
        for field_name, field in cls.model_fields.items():
            alias = field.validation_alias
            if isinstance(alias, str):
                names.add(alias.upper())
            elif isinstance(alias, AliasChoices):
                names.update(c for c in alias.choices if isinstance(c, str) and c.isupper())
                names.add(f"{prefix}{field_name}".upper())
            else:
                names.add(f"{prefix}{field_name}".upper())
    return names


def source_variables() -> set[str]:
    """Names read with os.environ / os.getenv / ${NAME:-default} in the
    project's own code and scripts."""
    patterns = [
        re.compile(r"environ(?:\.get)?\(\s*[\"']([A-Z][A-Z0-9_]+)[\"']"),
        re.compile(r"environ\[\s*[\"']([A-Z][A-Z0-9_]+)[\"']\s*\]"),
        re.compile(r"getenv\(\s*[\"']([A-Z][A-Z0-9_]+)[\"']"),
        re.compile(r"\$\{([A-Z][A-Z0-9_]+):-"),
    ]
    names: set[str] = set()
    for folder in ("core", "plugins", "scripts", "bench", "tests", "harness", "plugin_testing"):
        for path in (ROOT / folder).rglob("*"):
            if path.suffix not in (".py", ".sh") or "security" in path.parts:
                continue
            text = path.read_text(encoding="utf-8", errors="replace")
            for pattern in patterns:
                names.update(pattern.findall(text))
    for script in ROOT.glob("*.sh"):
        names.update(patterns[3].findall(script.read_text()))
    return names - GENERIC


def example_lines() -> dict[str, str]:
    """NAME -> the value written after ``=`` (commented lines included)."""
    found = {}
    for line in EXAMPLE.read_text(encoding="utf-8").splitlines():
        match = re.match(r"^#?\s*([A-Z][A-Z0-9_]+)=(.*)$", line)
        if match:
            found[match.group(1)] = match.group(2).strip()
    return found


def test_every_settings_variable_is_in_env_example() -> None:
    missing = sorted(settings_variables() - set(example_lines()))
    assert not missing, f".env.example lacks {missing}: add a commented line for each"


def test_every_variable_read_by_the_code_and_scripts_is_in_env_example() -> None:
    missing = sorted(source_variables() - set(example_lines()))
    assert not missing, f".env.example lacks {missing}"


def test_env_example_names_nothing_that_does_not_exist() -> None:
    stale = sorted(set(example_lines()) - settings_variables() - source_variables())
    assert not stale, f".env.example names variables nothing reads: {stale}"


def test_secrets_have_no_value_and_every_line_is_commented_out() -> None:
    lines = example_lines()
    secrets = [name for name in lines if SECRET.match(name)]
    assert "DISCORD_TOKEN" in secrets and "LLM_API_KEY" in secrets
    assert {name: lines[name] for name in secrets if lines[name]} == {}
    # Copying the file to .env changes nothing until a line is uncommented
    # (an empty DISCORD_TOKEN= would count as set).
    active = [line for line in EXAMPLE.read_text().splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert active == []
