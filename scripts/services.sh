#!/usr/bin/env bash
# Make sure the local PostgreSQL and Redis that the `real` test matrix needs are
# running; start them if they are installed but stopped. Prints what to do when
# they are not installed (the `real` matrix then fails with the same advice).
set -u
ok=0
if command -v pg_isready >/dev/null 2>&1 && ! pg_isready -q -h 127.0.0.1 -p 5432; then
    if [ -d /etc/postgresql ] && command -v pg_ctlcluster >/dev/null 2>&1; then
        echo "starting PostgreSQL ..." >&2
        pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || ok=1
    fi
fi
if ! command -v pg_isready >/dev/null 2>&1; then
    echo "PostgreSQL is not installed: apt-get install postgresql (trust auth for 127.0.0.1)" >&2; ok=1
fi
if command -v redis-cli >/dev/null 2>&1 && ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
    echo "starting Redis ..." >&2
    mkdir -p /var/lib/redis /var/log/redis 2>/dev/null
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
        --dir /var/lib/redis --logfile /var/log/redis/ci.log || ok=1
fi
if ! command -v redis-server >/dev/null 2>&1; then
    echo "Redis is not installed: apt-get install redis-server" >&2; ok=1
fi
exit $ok
