#!/usr/bin/env bash
# web-assets.sh: installs the browser libraries ingest-api serves itself
# (Leaflet for /map and /track) into services/ingest-api/web/node_modules with
# `npm ci --ignore-scripts` from the committed package-lock.json. Idempotent:
# does nothing when node_modules already matches the lock file. Needs node and
# npm; the service builds and runs without them (the pages then draw the grid).
set -euo pipefail
cd "$(dirname "$0")/../services/ingest-api/web"

stamp=node_modules/.lock-sha256
want=$(sha256sum package-lock.json | cut -d' ' -f1)
if [[ -f $stamp && $(cat "$stamp") == "$want" && -f node_modules/leaflet/dist/leaflet.js ]]; then
  exit 0
fi
command -v npm >/dev/null 2>&1 || {
  echo "web-assets.sh: npm is missing; install Node.js 18+ (Debian: apt-get install npm)" >&2
  exit 1
}
echo "==> npm ci (services/ingest-api/web)"
npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
echo "$want" > "$stamp"
