#!/usr/bin/env bash
# The daily job: ingest -> unify -> features -> score -> monitor -> retrain + promote when monitor
# says so.
# Runnable by cron or any scheduler; exits non-zero only when a step fails.
#
#   scripts/daily_job.sh                      # as of the warehouse's data end, no new files
#   INBOX=incoming/ scripts/daily_job.sh      # first ingest every incoming/<table>/*.csv|parquet
#   AS_OF=2026-06-29 REFERENCE_AS_OF=2026-03-31 scripts/daily_job.sh
#
# Environment: DB (warehouse, default $CUSTOMER360_DB or data/customer360.duckdb), AS_OF
# (default: the warehouse's data end), REFERENCE_AS_OF (default: the churn champion's training
# as-of), INBOX (folder of <table>/<file> to ingest), OUT (default out/daily), C360 (the CLI),
# PY (the project's Python, default .venv/bin/python).
# Example crontab line (06:00 every day):
#   0 6 * * * cd /srv/customer360 && scripts/daily_job.sh >> out/daily/cron.log 2>&1
set -euo pipefail
cd "$(dirname "$0")/.."
C360=${C360:-.venv/bin/customer360}
PY=${PY:-.venv/bin/python}
DB=${DB:-${CUSTOMER360_DB:-data/customer360.duckdb}}
OUT=${OUT:-out/daily}
mkdir -p "$OUT"
log() { echo "$(date -u +%FT%TZ) daily_job: $*"; }

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

# 2. unify: identity resolution over source_records, when the warehouse has any (incremental: a
#    rerun on the same records changes nothing).
records=$("$PY" -c "
from customer360.data.warehouse import connect, table_exists
with connect('$DB', read_only=True) as con:
    print(con.execute('SELECT count(*) FROM source_records').fetchone()[0]
          if table_exists(con, 'source_records') else 0)")
if [[ $records -gt 0 ]]; then
  log "unify $records source records"
  "$C360" identity run --db "$DB"
else
  log "unify: no source_records; skipped"
fi

# 3. features as of the day (default: the first day without data).
if [[ -z ${AS_OF:-} ]]; then
  AS_OF=$("$PY" -c "
from customer360.data.warehouse import connect
from customer360.features.assembler import data_end
with connect('$DB', read_only=True) as con:
    print(data_end(con))")
fi
log "features as of $AS_OF"
"$C360" features build --as-of "$AS_OF" --db "$DB"

# 4. score everyone with the champions.
log "score $AS_OF"
"$C360" score --as-of "$AS_OF" --output "$OUT/scores_$AS_OF.parquet" --db "$DB"

# 5. monitor: exit 3 means a drift / performance threshold was crossed.
args=(--as-of "$AS_OF" --db "$DB")
if [[ -n ${REFERENCE_AS_OF:-} ]]; then
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

# 6. retrain on the latest data and promote only if the challenger beats the champion.
log "monitor alert: retrain churn and promote"
"$C360" train churn --db "$DB"
if "$C360" promote churn; then
  log "done: new churn champion (rescore tomorrow, or now with: $C360 score --as-of $AS_OF ...)"
else
  log "done: the challenger did not beat the champion; the champion stays (look at the drift)"
fi
