#!/usr/bin/env bash
# The daily job: ingest -> unify -> features -> score -> monitor -> retrain + promote when monitor says so.
# Runnable by cron or any scheduler; exits non-zero only when a step fails.
#
#   scripts/daily_job.sh                      # as of the warehouse's data end, no new files
#   INBOX=incoming/ scripts/daily_job.sh      # first ingest every incoming/<table>/*.csv|parquet
#   AS_OF=2026-06-29 REFERENCE_AS_OF=2026-03-31 scripts/daily_job.sh
#
# Environment: DB (warehouse, default $CUSTOMER360_DB or data/customer360.duckdb), AS_OF
# (default: the warehouse's data end), REFERENCE_AS_OF (default: the churn champion's training
# as-of), INBOX (folder of <table>/<file> to ingest), OUT (default out/daily), C360 (the CLI),
# PY (its Python), MONITOR_CONFIG (thresholds, default configs/monitor.yaml), TRAIN_ARGS
# (extra options of `train churn`, e.g. "--trials 20").
# Example crontab line (06:00 every day):
#   0 6 * * * cd /srv/customer360 && scripts/daily_job.sh >> out/daily/cron.log 2>&1
set -euo pipefail
cd "$(dirname "$0")/.."
C360=${C360:-.venv/bin/customer360}
DB=${DB:-${CUSTOMER360_DB:-data/customer360.duckdb}}
OUT=${OUT:-out/daily}
PY=${PY:-.venv/bin/python}
mkdir -p "$OUT"
log() { echo "$(date -u +%FT%TZ) daily_job: $*"; }
# ask EXPR: print the Python expression EXPR evaluated with `con`, a read-only connection to
# $DB; a missing or unusable warehouse ends the job with the library's message, no traceback.
ask() {
  "$PY" -c "
import sys
from customer360.data.warehouse import connect, table_exists
from customer360.errors import Customer360Error
from customer360.features.assembler import data_end
try:
    with connect(sys.argv[1], read_only=True) as con:
        print($1)
except Customer360Error as err:
    sys.exit(f'daily_job: error: {err}')" "$DB"
}

# 1. ingest: every file under $INBOX/<table>/ goes through that table's contract.
if [[ -n ${INBOX:-} ]]; then
  for dir in "$INBOX"/*/; do
    table=$(basename "$dir")
    for file in "$dir"*; do
      [[ -f $file ]] || continue
      log "ingest $table $file"
      "$C360" ingest "$table" "$file" --db "$DB"
    done
  done
  "$C360" cluster --db "$DB"
fi

# 1b. unify: link new source records to the customers they belong to (crosswalk, golden
# records, review queue) when the warehouse holds any; rebuilds the web app's search index.
records=$(ask "con.execute('SELECT count(*) FROM source_records').fetchone()[0]
      if table_exists(con, 'source_records') else 0")
if [[ $records -gt 0 ]]; then
  log "identity run ($records source records)"
  "$C360" identity run --db "$DB"
fi

# 2. features as of the day (default: the first day without data).
if [[ -z ${AS_OF:-} ]]; then
  AS_OF=$(ask "data_end(con) if table_exists(con, 'transactions') else None")
  if [[ $AS_OF == None ]]; then
    echo "daily_job: error: the warehouse $DB holds no transactions, so it has no data end;" \
      "ingest them (INBOX=...) or set AS_OF=YYYY-MM-DD" >&2
    exit 2
  fi
fi
log "features as of $AS_OF"
"$C360" features build --as-of "$AS_OF" --db "$DB"

# 3. score everyone with the champions.
log "score $AS_OF"
"$C360" score --as-of "$AS_OF" --output "$OUT/scores_$AS_OF.parquet" --db "$DB"

# 4. monitor: exit 3 means a drift / performance threshold was crossed.
args=(--as-of "$AS_OF" --db "$DB")
if [[ -n ${MONITOR_CONFIG:-} ]]; then
  args+=(--config "$MONITOR_CONFIG")
fi
# The reference snapshot (default: the churn champion's latest training as-of) must be in the
# warehouse: training keeps its snapshots in memory.
if [[ -z ${REFERENCE_AS_OF:-} ]]; then
  REFERENCE_AS_OF=$("$PY" -c "
from customer360.monitoring.monitor import default_reference
print(default_reference() or '')")
fi
if [[ -n $REFERENCE_AS_OF ]]; then
  log "features as of the reference $REFERENCE_AS_OF"
  "$C360" features build --as-of "$REFERENCE_AS_OF" --db "$DB"
  args+=(--reference-as-of "$REFERENCE_AS_OF")
fi
set +e
"$C360" monitor "${args[@]}"
status=$?
set -e
if [[ $status -eq 0 ]]; then
  log "monitor quiet; done"
  exit 0
elif [[ $status -ne 3 ]]; then
  log "monitor failed (exit $status)"
  exit "$status"
fi

# 5. retrain on the latest data and promote only if the challenger beats the champion.
log "monitor alert: retrain churn and promote"
# shellcheck disable=SC2086  # TRAIN_ARGS is a list of options
"$C360" train churn --db "$DB" ${TRAIN_ARGS:-}
if "$C360" promote churn; then
  log "done: new churn champion (rescore tomorrow, or now with: $C360 score --as-of $AS_OF ...)"
else
  log "done: the challenger did not beat the champion; the champion stays (look at the drift)"
fi
