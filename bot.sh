#!/usr/bin/env bash
# Run the bot: Discord when DISCORD_TOKEN is set, else a terminal chat
# (SQLite + in-process cache, no server needed). Extra arguments go to
# `python -m core`, e.g. `./bot.sh plugins` or `./bot.sh check`.
source "$(dirname "$0")/scripts/venv.sh"
if [ $# -eq 0 ]; then set -- run; fi
exec python -m core "$@"
