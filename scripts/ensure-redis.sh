#!/usr/bin/env bash
# Makes sure a Redis server answers at 127.0.0.1:6379 for the tests of the
# shared position store (services/ingest-api/tests/store.rs): starts one,
# keeping nothing on disk, when none answers; installs Debian's redis-server
# when it is missing. Idempotent; never stops a running server.
set -euo pipefail

answers() { redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; }

if command -v redis-cli >/dev/null && answers; then
  exit 0
fi
if ! command -v redis-server >/dev/null; then
  echo "redis-server missing: installing Debian's redis-server" >&2
  apt-get update -qq && apt-get install -y -qq redis-server >/dev/null
fi
redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
for _ in $(seq 1 100); do
  answers && exit 0
  sleep 0.1
done
echo "redis-server did not answer at 127.0.0.1:6379" >&2
exit 1
