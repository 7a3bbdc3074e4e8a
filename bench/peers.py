"""The peers: LangChain community's Redis and SQL chat histories.

Installed only into .venv-bench (bench/setup.sh); when absent every peer
figure reads "not installed" and the run goes on.
"""

from __future__ import annotations

import warnings
from typing import Any

from bench import data

HOT = 50


def available() -> str | None:
    """``None`` when the peers import, else why not."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import langchain_community.chat_message_histories  # noqa: F401
            import sqlalchemy  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - any import failure means "not installed"
        return f"not installed ({type(exc).__name__}: {exc})"
    return None


class Peers:
    def __init__(self, redis_url: str, sqlalchemy_url: str, prefix: str) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from langchain_community.chat_message_histories import RedisChatMessageHistory, SQLChatMessageHistory
            from langchain_core.messages import AIMessage, HumanMessage
        self.human, self.ai = HumanMessage, AIMessage
        # Defaults as documented: no ttl (one LPUSH per message, never trimmed).
        self.redis_read = RedisChatMessageHistory("read", url=redis_url, key_prefix=f"{prefix}lc:")
        self.redis_write = RedisChatMessageHistory("write", url=redis_url, key_prefix=f"{prefix}lc:")
        self.sql_url = sqlalchemy_url
        self.sql_read = SQLChatMessageHistory("read", connection=sqlalchemy_url, table_name="lc_message_store")
        self.sql_write = SQLChatMessageHistory("write", connection=sqlalchemy_url, table_name="lc_message_store")

    def message(self, i: int) -> Any:
        return (self.human if i % 2 == 0 else self.ai)(content=data.CONTENT)

    def setup(self, pg: Any, table_rows: int) -> None:
        self.redis_read.clear()
        self.redis_read.add_messages([self.message(i) for i in range(HOT)])
        self.sql_read.add_messages([self.message(i) for i in range(HOT)])
        self.fill(pg, table_rows)

    def fill(self, pg: Any, table_rows: int) -> None:
        """Grow LangChain's table to ``table_rows`` with other sessions'
        messages, so its read pays for its table like ours does."""
        import json

        msg = json.dumps({"type": "human", "data": {"content": data.CONTENT, "type": "human"}})
        with pg.cursor() as cur:
            cur.execute("SELECT count(*) FROM lc_message_store")
            have = int(cur.fetchone()[0])
            if have < table_rows:
                cur.execute(
                    "INSERT INTO lc_message_store (session_id, message) "
                    f"SELECT 'fill:' || (g / {data.PER_FILL_SESSION}), %s FROM generate_series(%s, %s) AS g",
                    (msg, have, table_rows - 1),
                )
                cur.execute("ANALYZE lc_message_store")

    async def redis_messages(self, _i: int) -> Any:
        return self.redis_read.messages

    async def redis_add(self, i: int) -> None:
        self.redis_write.add_message(self.message(i))

    async def sql_messages(self, _i: int) -> Any:
        return self.sql_read.messages

    async def sql_add(self, i: int) -> None:
        self.sql_write.add_message(self.message(i))

    def close(self) -> None:
        for history in (self.sql_read, self.sql_write):
            engine = getattr(history, "engine", None)
            if engine is not None:
                engine.dispose()
        for history in (self.redis_read, self.redis_write):
            history.redis_client.close()
