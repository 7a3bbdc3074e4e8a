"""Configuration: environment variables, a ``.env`` file and a TOML file.

The TOML file (``BOT_CONFIG``, default ``./bot.toml`` when it exists) holds
the plugin lists and per-plugin sections::

    [bot]
    owner_ids = ["1234"]

    [plugins]
    disabled = ["images"]

    [sessions]
    idle_timeout = 1800

Secrets (tokens, API keys, passwords inside URLs) come from the environment
only: the file is refused when it holds one, and every secret is a
``SecretStr`` that prints as ``**********``.
"""

from __future__ import annotations

import difflib
import logging
import os
import re
import socket
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, SettingsError

from core.errors import ConfigError
from core.logs import secret_filter, secret_shape, secret_values

DEFAULT_CONFIG_FILE = "bot.toml"
DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant in a Discord conversation. Be concise."

_SECRET_WORDS = frozenset({"token", "secret", "password", "passwd", "apikey", "credentials", "privatekey"})
# "<qualifier>_key" names a secret (api_key, private_key); a plain "key" does not (key_prefix).
_KEY_QUALIFIERS = frozenset({"api", "access", "private", "secret", "signing", "encryption", "auth", "client"})
# Discord webhook URLs carry their token in the path.
_WEBHOOK_URL = re.compile(r"^https?://[^/\s]*discord(app)?\.com/api/(v\d+/)?webhooks/\d+/[^/\s]+", re.IGNORECASE)
_URL_WITH_PASSWORD = re.compile(r"^[a-z][a-z0-9+.-]*://[^/@\s:]*:[^/@\s]+@", re.IGNORECASE)


class BotSection(BaseModel):
    """The ``[bot]`` table."""

    model_config = ConfigDict(extra="forbid")

    name: str = "bot"
    command_prefix: str = "/"
    owner_ids: list[str] = Field(default_factory=list)
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    max_message_chars: int = Field(4000, gt=0)
    # Seconds between two reads of the plugins switched at run time, so an
    # instance follows a switch made on another within this time.
    plugin_state_refresh: float = Field(10.0, gt=0)
    # Seconds one plugin's implementation of a hook (or a command) may take
    # before the core gives up on it, logs it with the plugin's name and
    # goes on (the user is told): a hung plugin must not hold a session.
    # Longer than the slowest legitimate wait (the llm plugin's
    # total_timeout, 120 s by default). hook_timeouts overrides it per hook.
    hook_timeout: float = Field(180.0, gt=0)
    # Keys: hook names, "command" for command handlers, "storage.<method>"
    # for the storage service (core.storage).
    hook_timeouts: dict[str, Annotated[float, Field(gt=0)]] = Field(default_factory=dict)

    @field_validator("hook_timeouts")
    @classmethod
    def _known_hooks(cls, value: dict[str, float]) -> dict[str, float]:
        from core import hookspecs
        from core.storage import Storage

        known = {n for n, f in vars(hookspecs).items() if hookspecs.mode_of(f) is not None} | {"command"}
        known |= {f"storage.{m}" for m in vars(Storage) if not m.startswith("_")}
        unknown = sorted(set(value) - known)
        if unknown:
            raise ValueError(
                f"hook_timeouts names no hook {', '.join(unknown)} "
                "(hooks: docs/HOOKS.md, 'command', or 'storage.<method>')"
            )
        return value


class PluginsSection(BaseModel):
    """The ``[plugins]`` table: ``enabled`` is an allow-list (all installed
    plugins when absent), ``disabled`` a block-list applied after it."""

    model_config = ConfigDict(extra="forbid")

    enabled: list[str] | None = None
    disabled: list[str] = Field(default_factory=list)


class EnvSettings(BaseSettings):
    """What only the environment (or ``.env``) sets."""

    model_config = SettingsConfigDict(env_prefix="BOT_", env_file=".env", extra="ignore")

    config: Path | None = None
    data_dir: Path = Path("data")
    log_level: str = "INFO"
    # text (people) or json (one object per line, with message, session,
    # instance and plugin: log collectors).
    log_format: Literal["text", "json"] = "text"
    instance_id: str = Field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    discord_token: SecretStr | None = Field(None, validation_alias="DISCORD_TOKEN")

    @field_validator("data_dir", mode="before")
    @classmethod
    def _data_dir_named(cls, value: Any) -> Any:
        # Path("") is the working directory: the database would land wherever
        # the bot happened to be started.
        if isinstance(value, str) and not value.strip():
            raise ValueError("empty; unset it for the default ./data, or name a directory")
        return value

    @field_validator("log_level")
    @classmethod
    def _log_level_known(cls, value: str) -> str:
        return check_log_level(value)


def check_log_level(value: str) -> str:
    """``value`` upper-cased when it names a logging level, else ``ValueError``."""
    level = value.strip().upper()
    if not isinstance(logging.getLevelName(level), int):
        raise ValueError(f"log level {value!r} is not one of {', '.join(LOG_LEVELS)}")
    return level


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class Settings(BaseModel):
    """Everything the core knows of the configuration."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    env: EnvSettings
    bot: BotSection = Field(default_factory=BotSection)
    plugins: PluginsSection = Field(default_factory=PluginsSection)
    sections: dict[str, dict[str, Any]] = Field(default_factory=dict)
    config_file: Path | None = None

    @property
    def data_dir(self) -> Path:
        return self.env.data_dir

    def section(self, name: str) -> dict[str, Any]:
        return dict(self.sections.get(name, {}))

    def for_plugin(self, name: str, model: type[_P]) -> _P:
        """Validate plugin ``name``'s settings: its TOML section, overridden
        by environment variables (``model``'s prefix). Errors name the key."""
        loaded = load_plugin_settings(model, self.section(name), where=self._where(name))
        # Every secret a plugin loads is masked in logs from now on; a URL's
        # password is, not the whole URL, so hosts stay readable.
        secret_filter().add_all(v for v in secret_values(loaded) if "://" not in v)
        return loaded

    def _where(self, table: str) -> str:
        return f"{self.config_file or 'config'} [{table}]"

    def redacted(self) -> dict[str, Any]:
        """A dump safe to print or log: every secret is masked."""
        return _redact(self.model_dump(mode="python"))


class PluginSettings(BaseSettings):
    """Base for a plugin's settings: environment beats the TOML section.

    A subclass sets ``model_config = SettingsConfigDict(env_prefix="NAME_")``;
    a field may also name a documented variable with
    ``validation_alias=AliasChoices("field", "ENV_NAME")``.
    """

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The TOML section arrives as init kwargs; the environment wins over it.
        return (env_settings, dotenv_settings, init_settings)


_P = TypeVar("_P", bound=BaseModel)


def closest(name: str, known: Any) -> str:
    """``"; did you mean 'x'?"`` for the known name closest to ``name``, else ``""``."""
    match = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
    return f"; did you mean {match[0]!r}?" if match else ""


def load_plugin_settings(model: type[_P], section: dict[str, Any], where: str = "config") -> _P:
    known = set(model.model_fields)
    for key in section:
        if key not in known:
            raise ConfigError(
                f"{where}: unknown key {key!r}{closest(key, known)} (known: {', '.join(sorted(known)) or 'none'})"
            )
    try:
        return model(**section)
    except ValidationError as exc:
        raise ConfigError(_explain(exc, where, model)) from None
    except SettingsError as exc:
        # A malformed complex value in an environment variable (e.g. JSON);
        # pydantic-settings' message names the field, never the value.
        raise ConfigError(f"{where} (or its environment variable): {exc}") from None


def _explain(exc: ValidationError, where: str, model: type[BaseModel] | None = None) -> str:
    parts = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(value)"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden" and model is not None and err["loc"]:
            msg += closest(str(err["loc"][0]), model.model_fields)
        # A value the environment set is named by its variable, not by the
        # file's table, so the operator looks in the right place.
        env = _env_variable(model, str(err["loc"][0])) if model is not None and err["loc"] else None
        label = key if not env else env if where == "environment" else f"{key} (set by {env} in the environment)"
        parts.append(f"{where}: {label}: {msg}")
    # One line per problem, each naming where it is.
    return "\n".join(parts)


def _env_variable(model: type[BaseModel], field: str) -> str | None:
    """The environment variable that set ``field`` of a settings model, if one did."""
    prefix = str(model.model_config.get("env_prefix") or "")
    if not issubclass(model, BaseSettings) or field not in model.model_fields:
        return None
    alias = model.model_fields[field].validation_alias
    names = [f"{prefix}{field}"]
    choices = getattr(alias, "choices", None)
    if choices:
        names += [c for c in choices if isinstance(c, str)]
    elif isinstance(alias, str):
        names.append(alias)
    upper = {k.upper() for k in os.environ}
    return next((n.upper() for n in names if n.upper() in upper), None)


def unknown_sections(settings: Settings, plugins: Any) -> list[str]:
    """A problem line for each table of the config file that names no
    installed plugin (``[limit]`` for ``[limits]``): silently ignored, a typo
    would leave that plugin on its defaults."""
    known = set(plugins) | {"bot", "plugins"}
    return [
        f"{settings.config_file or 'config'}: unknown section [{name}]{closest(name, known)} "
        f"(known: {', '.join(sorted(known))})"
        for name in settings.sections
        if name not in known
    ]


def _is_secret_key(key: str) -> bool:
    # Whole words, so max_tokens and token_budget stay allowed; camelCase
    # (botToken) is split like snake_case.
    words = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", key).lower()
    parts = [w for w in re.split(r"[_\-.\s]+", words) if w]
    if _SECRET_WORDS & set(parts):
        return True
    return any(a in _KEY_QUALIFIERS and b == "key" for a, b in zip(parts, parts[1:]))


def _check_no_secrets(data: Any, where: str, path: str = "") -> None:
    """Refuse secret-looking string values: a key that names a secret
    (``token``, ``api_key``, ``password`` ... as a whole word, so
    ``max_tokens`` and ``token_budget`` stay allowed) or a URL with a
    password, wherever it sits (tables and arrays). Never echo the value."""
    items = data.items() if isinstance(data, dict) else enumerate(data)
    for key, value in items:
        name = f"{path}{key}" if isinstance(data, dict) else f"{path.rstrip('.')}[{key}]"
        if isinstance(value, (dict, list)):
            _check_no_secrets(value, where, f"{name}.")
            continue
        if not isinstance(value, str) or not value:
            continue
        if isinstance(key, str) and _is_secret_key(key):
            raise ConfigError(
                f"{where}: {name!r} looks like a secret; secrets come from environment variables only "
                "(see .env.example), never from the config file"
            )
        if _URL_WITH_PASSWORD.match(value) or _WEBHOOK_URL.match(value):
            raise ConfigError(
                f"{where}: {name!r} holds a URL with a password or token; put it in an environment variable instead"
            )
        # Wherever it sits: a key pasted into a system prompt or a bot name
        # would be sent to a model or shown to every user.
        kind = secret_shape(value)
        if kind:
            raise ConfigError(
                f"{where}: {name!r} holds what looks like {kind}; secrets come from environment variables only "
                "(see .env.example), never from the config file"
            )


def load_settings(config_file: str | Path | None = None, *, env_file: str | Path | None = ".env") -> Settings:
    """Read environment, ``.env`` and the TOML file into :class:`Settings`.

    Raises :class:`~core.errors.ConfigError` with a message that names the
    file and key at fault.
    """
    try:
        env = EnvSettings(_env_file=env_file)  # type: ignore[call-arg]
    except ValidationError as exc:
        raise ConfigError(_explain(exc, "environment", EnvSettings)) from None
    except SettingsError as exc:
        raise ConfigError(f"environment: {exc}") from None

    path = Path(config_file) if config_file else env.config
    if path is None and Path(DEFAULT_CONFIG_FILE).is_file():
        path = Path(DEFAULT_CONFIG_FILE)
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{path}: config file not found") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read config file: {exc}") from None
    where = str(path or "config")
    _check_no_secrets(raw, where)

    sections = {k: v for k, v in raw.items() if k not in ("bot", "plugins")}
    for name, value in sections.items():
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: top-level key {name!r} must be a [table] of plugin settings")
    try:
        bot = BotSection(**raw.get("bot", {}))
    except (ValidationError, TypeError) as exc:
        raise ConfigError(_explain(exc, f"{where} [bot]", BotSection) if isinstance(exc, ValidationError) else f"{where} [bot]: {exc}") from None
    try:
        plugins = PluginsSection(**raw.get("plugins", {}))
    except (ValidationError, TypeError) as exc:
        raise ConfigError(_explain(exc, f"{where} [plugins]", PluginsSection) if isinstance(exc, ValidationError) else f"{where} [plugins]: {exc}") from None
    return Settings(env=env, bot=bot, plugins=plugins, sections=sections, config_file=path)


def _redact(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return "**********" if value.get_secret_value() else ""
    if isinstance(value, dict):
        return {k: _redact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact(v) for v in value]
    if isinstance(value, BaseModel):
        return _redact(value.model_dump(mode="python"))
    if isinstance(value, str) and _URL_WITH_PASSWORD.match(value):
        return redact_url(value)
    return value


def redact_url(url: str) -> str:
    """A URL with its password (the user info after the colon) replaced by ``***``."""
    return re.sub(r"(://[^/@\s:]*:)[^/@\s]+@", r"\1***@", url)
