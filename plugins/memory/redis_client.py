"""Redis clients for ``REDIS_URL``: one server, Sentinel, or Cluster.

- ``redis://``, ``rediss://``, ``unix://``: one server (a blocking pool).
- ``redis+sentinel://[[user]:password@]host:port[,host:port…]/SERVICE[/DB]``:
  the master Sentinel names for ``SERVICE``, found again after a failover
  (redis-py's Sentinel support: a connection the old master refused makes the
  next one ask the Sentinels). The URL's password is the Redis servers';
  ``?sentinel_password=`` is the Sentinels' own, when they have one.
- ``redis+cluster://[[user]:password@]host:port[,host:port…]`` (``rediss+cluster``
  for TLS): a Redis Cluster; the hosts are the startup nodes, the rest of the
  topology is discovered and followed through failovers and resharding.
- ``fakeredis://NAME``: an in-process server (tests, the terminal chat).

Every client has fast timeouts and no retries of its own: the memory's
breaker and health probe decide what a failure means (docs/MEMORY.md, R1-R2).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

_FAKE_SERVERS: dict[str, Any] = {}

SCHEMES = ("redis", "rediss", "unix", "redis+sentinel", "redis+cluster", "rediss+cluster", "fakeredis")


class RedisURLError(ValueError):
    """REDIS_URL is malformed; the message never holds the password."""


def fake_server(name: str) -> Any:
    """The process-wide fakeredis server called ``name`` (created on first use)."""
    import fakeredis

    server = _FAKE_SERVERS.get(name)
    if server is None:
        server = _FAKE_SERVERS[name] = fakeredis.FakeServer()
    return server


def is_cluster(client: Any) -> bool:
    return isinstance(client, aioredis.RedisCluster)


def describe_redis_url(url: str) -> str:
    """The URL without user or password, for messages."""
    try:
        p = urlparse(url)
        if p.scheme == "unix":
            return f"unix://{p.path}"
        if "," in p.netloc or "+" in p.scheme:
            hosts = p.netloc.rpartition("@")[2]
            return f"{p.scheme}://{hosts}{p.path}"
        port = f":{p.port}" if p.port else ""
        return f"{p.scheme}://{p.hostname or ''}{port}{p.path}"
    except ValueError:
        return "(unparseable URL)"


def make_client(url: str, timeout: float) -> Any:
    """A redis.asyncio client for ``url`` with fast timeouts and no retries
    (the breaker and the probe decide what happens on failure)."""
    try:
        parsed = urlparse(url)
        scheme = parsed.scheme
    except ValueError as exc:
        raise RedisURLError(f"not a URL ({exc})") from None
    if scheme == "fakeredis":
        import fakeredis

        name = (parsed.netloc + parsed.path).strip("/") or "default"
        return fakeredis.FakeAsyncRedis(server=fake_server(name))
    if scheme not in SCHEMES:
        raise RedisURLError(
            f"unsupported scheme {scheme!r} (use redis://, rediss://, unix://, redis+sentinel://, "
            "redis+cluster://, rediss+cluster:// or fakeredis://NAME)"
        )
    common: dict[str, Any] = dict(
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
        retry_on_timeout=False,
        health_check_interval=0,
    )
    try:
        if scheme == "redis+sentinel":
            return _sentinel_client(parsed, common)
        if scheme.endswith("+cluster"):
            return _cluster_client(parsed, common, tls=scheme.startswith("rediss"))
        # A blocking pool: a burst of concurrent sessions waits (briefly) for a
        # free connection instead of failing with MaxConnectionsError, which
        # the breaker would take for an outage (and rebuild every window).
        pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=256, timeout=max(timeout, 1.0), **common)
        return aioredis.Redis.from_pool(pool)
    except (ValueError, TypeError) as exc:
        raise RedisURLError(str(exc).replace(url, describe_redis_url(url))) from None


def _hosts(parsed: Any, default_port: int) -> list[tuple[str, int]]:
    """``host:port,host:port`` of a URL's netloc (after any ``user:password@``)."""
    hosts = []
    for part in parsed.netloc.rpartition("@")[2].split(","):
        if not part:
            continue
        if part.startswith("["):  # [IPv6]:port
            host, _, port = part[1:].partition("]")
            port = port.lstrip(":")
        else:
            host, _, port = part.partition(":")
        try:
            hosts.append((host, int(port) if port else default_port))
        except ValueError:
            raise RedisURLError(f"port {port!r} is not a number") from None
    if not hosts:
        raise RedisURLError("no host:port in the URL")
    return hosts


def _credentials(parsed: Any) -> dict[str, Any]:
    userinfo = parsed.netloc.rpartition("@")[0]
    if not userinfo:
        return {}
    user, _, password = userinfo.partition(":")
    out: dict[str, Any] = {}
    if user:
        out["username"] = unquote(user)
    if password:
        out["password"] = unquote(password)
    return out


def _sentinel_client(parsed: Any, common: dict[str, Any]) -> Any:
    from redis.asyncio.sentinel import Sentinel

    parts = [p for p in parsed.path.split("/") if p]
    if not parts:
        raise RedisURLError("a redis+sentinel:// URL names the service: redis+sentinel://host:port,host:port/SERVICE[/DB]")
    service = unquote(parts[0])
    try:
        db = int(parts[1]) if len(parts) > 1 else 0
    except ValueError:
        raise RedisURLError(f"database {parts[1]!r} is not a number") from None
    query = parse_qs(parsed.query)
    sentinel_kwargs: dict[str, Any] = {"socket_timeout": common["socket_timeout"], "socket_connect_timeout": common["socket_connect_timeout"]}
    if query.get("sentinel_password"):
        sentinel_kwargs["password"] = query["sentinel_password"][0]
    sentinel = Sentinel(_hosts(parsed, 26379), sentinel_kwargs=sentinel_kwargs, db=db, **_credentials(parsed), **common)
    # The master is asked of the Sentinels on each new connection; the pool
    # drops its connections when the master it finds is another server.
    return sentinel.master_for(service, redis_class=aioredis.Redis, check_connection=False)


def _cluster_client(parsed: Any, common: dict[str, Any], tls: bool) -> Any:
    from redis.asyncio.cluster import ClusterNode

    if parsed.path.strip("/") not in ("", "0"):
        raise RedisURLError("a Redis Cluster has database 0 only")
    nodes = [ClusterNode(host, port) for host, port in _hosts(parsed, 6379)]
    # No retries: the breaker decides what a failure means. A connection
    # error makes the client read the topology again on its next command
    # (a failover moved the slot to a promoted replica).
    kwargs = dict(common)
    kwargs.pop("retry_on_timeout")
    return aioredis.RedisCluster(
        startup_nodes=nodes,
        ssl=tls,
        max_connections=256,
        **_credentials(parsed),
        **kwargs,
    )
