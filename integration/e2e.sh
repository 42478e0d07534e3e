#!/usr/bin/env bash
# The whole user story on one machine, without Docker, with the real binary: a throwaway
# Postgres and moto (Secrets Manager); a secret holding the URL; `migrun up` through the secret;
# `migrun exec --wait` starting an example app; SIGTERM to migrun reaching the app; exit codes
# and result events as documented. One summary line per step; exits non-zero on any failure.
#
#   integration/e2e.sh            (MIGRUN_BIN=path/to/migrun to test a given binary)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"

if [ -z "${E2E_INSIDE:-}" ]; then
    if [ -z "${MIGRUN_BIN:-}" ]; then
        (cd "$root" && cargo build --quiet --bin migrun)
        export MIGRUN_BIN="$root/target/debug/migrun"
    fi
    exec env E2E_INSIDE=1 python3 "$root/scripts/pgtemp.py" -- "$0"
fi

work="$(mktemp -d)"
moto_pid=""
cleanup() {
    [ -z "$moto_pid" ] || kill "$moto_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
passed=0
step() { echo "e2e: ok   $*"; passed=$((passed + 1)); }
fail() { echo "e2e: FAIL $*" >&2; echo "$passed passed, 1 failed"; exit 1; }
# The result event is the last stderr line; print one field of it.
result_field() { tail -n 1 "$1" | python3 -c "import json, sys; print(json.load(sys.stdin)['$2'])"; }
wait_for_file() {
    for _ in $(seq 1 500); do [ -e "$1" ] && return 0; sleep 0.02; done
    return 1
}

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
python3 -m moto.server -H 127.0.0.1 -p "$port" > "$work/moto.log" 2>&1 &
moto_pid=$!
for _ in $(seq 1 300); do
    python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/moto-api/')" 2>/dev/null && break
    sleep 0.05
done
export AWS_ENDPOINT_URL="http://127.0.0.1:$port" AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test \
    AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true MIGRUN_LOG_FORMAT=json MIGRUN_DIR="$root/sql"
arn=$(python3 - "$AWS_ENDPOINT_URL" "$DATABASE_URL" <<'PY'
import boto3, json, sys
client = boto3.client("secretsmanager", endpoint_url=sys.argv[1], region_name="us-east-1")
print(client.create_secret(Name="e2e/backend", SecretString=json.dumps({"DATABASE_URL": sys.argv[2]}))["ARN"])
PY
)
step "moto and Postgres up; secret e2e/backend holds the URL"
url="$DATABASE_URL"
unset DATABASE_URL PGHOST PGPORT PGUSER PGDATABASE

code=0
MIGRUN_SECRET_ID="$arn:DATABASE_URL::" "$MIGRUN_BIN" up 2> "$work/up.log" || code=$?
if [ "$code" != 0 ] || [ "$(result_field "$work/up.log" outcome)" != success ]; then
    fail "migrun up through the secret: exit $code"
fi
step "migrun up through the secret: exit 0, applied $(tail -n 1 "$work/up.log" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["applied"]))') files"

code=0
MIGRUN_SECRET_ID="$arn:DATABASE_URL::" "$MIGRUN_BIN" up 2> "$work/noop.log" || code=$?
if [ "$code" != 0 ] || [ "$(result_field "$work/noop.log" pending_before)" != 0 ]; then
    fail "second migrun up: exit $code"
fi
step "second migrun up: exit 0, nothing pending"

mkdir -p "$work/app"
APP_STATE_DIR="$work/app" MIGRUN_SECRET_ID="$arn:DATABASE_URL::" \
    "$MIGRUN_BIN" exec --wait -- "$root/integration/example-app/app.sh" > "$work/app.out" 2> "$work/exec.log" &
exec_pid=$!
wait_for_file "$work/app/started" || fail "the app did not start under migrun exec --wait"
step "migrun exec --wait: schema ready, app started"
kill -TERM "$exec_pid"
code=0
wait "$exec_pid" || code=$?
[ -e "$work/app/got-sigterm" ] || fail "the app did not get SIGTERM"
[ "$code" = 0 ] || fail "migrun exec exit $code, expected the app's own 0"
step "SIGTERM to migrun reached the app; migrun exited with the app's code 0"

mkdir -p "$work/broken"
cp "$root"/sql/*.sql "$work/broken/"
printf 'ALTER TABLE users ADD COLUMN nickname text;\nSELECT no_such_column FROM users;\n' > "$work/broken/0004_broken.sql"
code=0
DATABASE_URL="$url" MIGRUN_DIR="$work/broken" "$MIGRUN_BIN" up 2> "$work/broken.log" || code=$?
if [ "$code" != 6 ] || [ "$(result_field "$work/broken.log" outcome)" != migration_failed ] \
    || [ "$(result_field "$work/broken.log" line)" != 2 ]; then
    fail "a failing migration: exit $code"
fi
step "failing migration: exit 6 (stop the rollout), outcome migration_failed at line 2"

code=0
DATABASE_URL="$url" "$MIGRUN_BIN" wait --wait-timeout 5s 2> "$work/wait.log" || code=$?
[ "$code" = 0 ] || fail "migrun wait: exit $code"
step "migrun wait: exit 0"

echo "$passed passed, 0 failed"
