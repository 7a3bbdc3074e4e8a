# The bot, installed from discord_bot.lock with hashes, run as a non-root
# user. Health check: /readyz of the ops plugin (docs/OPERATIONS.md).
# Linted by scripts/lint_deploy.sh (hadolint); no container engine runs in CI.

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY discord_bot.lock ./
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --require-hashes --no-deps -r discord_bot.lock
COPY pyproject.toml README.md ./
COPY core ./core
COPY plugins ./plugins
RUN /opt/venv/bin/pip install --no-deps --no-build-isolation .

FROM python:3.11-slim
# A fixed numeric id, so volume ownership means the same on every host.
RUN groupadd --system --gid 10001 bot \
    && useradd --system --uid 10001 --gid bot --home-dir /data --shell /usr/sbin/nologin bot \
    && mkdir -p /data \
    && chown 10001:10001 /data
COPY --from=build /opt/venv /opt/venv
# OPS_LISTEN on every interface inside the container: the container network
# is the boundary; publish the port on the host's loopback only (compose.yaml).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    BOT_DATA_DIR=/data \
    BOT_LOG_FORMAT=json \
    OPS_LISTEN=0.0.0.0:9108
WORKDIR /data
USER 10001:10001
VOLUME ["/data"]
EXPOSE 9108
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:9108/readyz', timeout=4).status != 200)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["python", "-m", "core"]
CMD ["run"]
