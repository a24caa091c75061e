#!/usr/bin/env bash
# A throwaway PostgreSQL server for the shared-storage test of the grid search (issue 5).
#
#   eval "$(.ci/postgres.sh)"          # installs (Debian packages) and starts it, exports the URL
#   ... pytest ...                     # tests/test_search.py reads EFFNET_TEST_POSTGRES_URL
#   .ci/postgres.sh stop               # stops it and deletes its folder
#
# stdout carries only `export ...` lines; progress goes to stderr. The server runs as the
# `postgres` user when started by root (PostgreSQL refuses to run as root), listens on
# 127.0.0.1 on a free port, trusts local connections, and keeps its data in a temp folder.
set -euo pipefail

log() { echo "postgres.sh: $*" >&2; }

as_pg() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

bindir() {
    local d
    d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
    if [ -z "$d" ] && command -v initdb >/dev/null; then d=$(dirname "$(command -v initdb)"); fi
    echo "$d"
}

if [ "${1:-start}" = stop ]; then
    dir=${EFFNET_TEST_POSTGRES_DIR:-}
    [ -n "$dir" ] && [ -d "$dir" ] || { log "no server to stop (EFFNET_TEST_POSTGRES_DIR unset)"; exit 0; }
    as_pg "$(bindir)/pg_ctl" -D "$dir/db" -m immediate stop >&2 || true
    rm -rf "$dir"
    exit 0
fi

if [ -z "$(bindir)" ]; then
    log "installing PostgreSQL from Debian's packages"
    SUDO=""
    [ "$(id -u)" = 0 ] || SUDO="sudo"
    $SUDO apt-get update -q >&2
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q postgresql >&2
fi
BIN=$(bindir)
[ -x "$BIN/initdb" ] || { log "initdb not found after installing postgresql"; exit 1; }

DIR=$(mktemp -d /tmp/effnet-pg-XXXXXX)
[ "$(id -u)" = 0 ] && chown postgres:postgres "$DIR"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

as_pg "$BIN/initdb" -D "$DIR/db" -A trust -U postgres -N >/dev/null
as_pg "$BIN/pg_ctl" -D "$DIR/db" -l "$DIR/log" -w \
    -o "-p $PORT -k $DIR -c listen_addresses=127.0.0.1 -c fsync=off" start >&2
as_pg "$BIN/createdb" -h 127.0.0.1 -p "$PORT" -U postgres effnet

URL="postgresql://postgres@127.0.0.1:$PORT/effnet"
log "server up: $URL (data in $DIR)"
echo "export EFFNET_TEST_POSTGRES_URL=$URL"
echo "export EFFNET_TEST_POSTGRES_DIR=$DIR"
