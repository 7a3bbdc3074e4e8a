"""The ``[files]`` settings (environment variables ``FILES_*`` win)."""

from __future__ import annotations

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from core.settings import PluginSettings

# Names that are text whatever the content type says (many clients send
# code and data files as application/octet-stream).
DEFAULT_EXTENSIONS = (
    "txt", "md", "markdown", "rst", "log", "csv", "tsv", "json", "jsonl", "ndjson", "yaml", "yml", "toml",
    "ini", "cfg", "conf", "xml", "html", "htm", "css", "js", "mjs", "ts", "tsx", "jsx", "py", "pyi", "java",
    "kt", "c", "h", "cc", "cpp", "hpp", "cs", "go", "rs", "rb", "php", "pl", "swift", "lua", "r", "scala",
    "sh", "bash", "zsh", "ps1", "bat", "sql", "tex", "diff", "patch", "dockerfile", "gradle", "vue", "svelte",
)


class FilesSettings(PluginSettings):
    """Settings of the text-file reader (``[files]``, env prefix ``FILES_``)."""

    model_config = SettingsConfigDict(env_prefix="FILES_", env_file=".env", extra="ignore")

    # Files larger than this are not read (they stay ``[file: name]``).
    max_bytes: int = Field(256 * 1024, ge=1)
    # Characters of one file put into the context; the rest is cut, and the
    # cut is said in the text the model reads.
    max_chars: int = Field(20_000, ge=1)
    # Characters of all the files of one message together.
    max_message_chars: int = Field(40_000, ge=1)
    # File name endings read as text (lower case, no dot), besides any
    # ``text/*`` and JSON/XML content type.
    extensions: list[str] = Field(default_factory=lambda: list(DEFAULT_EXTENSIONS))

    @field_validator("extensions")
    @classmethod
    def _plain(cls, value: list[str]) -> list[str]:
        return [v.strip().lower().lstrip(".") for v in value if v.strip()]
