#!/usr/bin/env bash
# Demo tail: start the customer360 service in the background, wait until it is ready, print a
# sample /customer360 answer and how to stop it.
#   scripts/demo_serve.sh start   # DB=... PORT=... (defaults data/customer360.duckdb, 3000)
#   scripts/demo_serve.sh stop
set -euo pipefail
cd "$(dirname "$0")/.."
DB=${DB:-data/customer360.duckdb}
PORT=${PORT:-3000}
PY=${PY:-.venv/bin/python}
C360=${C360:-.venv/bin/customer360}
PIDFILE=out/serve.pid
LOG=out/serve.log
mkdir -p out

stop() {
  if [[ -f $PIDFILE ]]; then
    kill -TERM -- "-$(cat "$PIDFILE")" 2>/dev/null || true
    rm -f "$PIDFILE"
    echo "customer360 service stopped"
  else
    echo "no service started by this script ($PIDFILE missing)"
  fi
}

start() {
  if [[ -f $PIDFILE ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
    echo "already running (pid $(cat "$PIDFILE")); stop it with: scripts/demo_serve.sh stop"
    exit 1
  fi
  setsid "$C360" serve --db "$DB" --port "$PORT" >"$LOG" 2>&1 &
  echo $! >"$PIDFILE"
  "$PY" - "$PORT" "$DB" "$(cat "$PIDFILE")" "$LOG" <<'PYEOF'
import json, os, sys, time

import duckdb
import httpx

port, db, pid, log = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
url = f"http://127.0.0.1:{port}"
deadline = time.monotonic() + 600
while True:
    try:
        os.kill(pid, 0)
    except OSError:
        sys.exit("the service exited while starting:\n" + open(log).read()[-3000:])
    try:
        if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
            break
    except httpx.HTTPError:
        pass
    if time.monotonic() > deadline:
        sys.exit(f"the service was not ready after 600 s; see {log}")
    time.sleep(0.5)
with duckdb.connect(db, read_only=True) as con:
    (cid,) = con.execute(
        "SELECT customer_id FROM feature_snapshots WHERE txn__orders__all > 1 "
        "ORDER BY as_of DESC, customer_id LIMIT 1"
    ).fetchone()
token = os.environ.get("CUSTOMER360_API_TOKEN")
headers = {"Authorization": f"Bearer {token}"} if token else {}
print(f"customer360 service ready at {url} (OpenAPI docs: {url}/)")
print(f"$ curl -s -X POST {url}/customer360 -H 'Content-Type: application/json' "
      f"-d '{{\"customer_id\": \"{cid}\"}}'")
answer = httpx.post(f"{url}/customer360", json={"customer_id": cid}, headers=headers, timeout=60)
print(json.dumps(answer.json(), indent=2))
PYEOF
  echo "API: http://127.0.0.1:$PORT/   web app: http://127.0.0.1:$PORT/app/"
  echo "stop it with: scripts/demo_serve.sh stop   (log: $LOG)"
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 [start|stop]" >&2; exit 2 ;;
esac
