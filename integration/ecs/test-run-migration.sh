#!/usr/bin/env bash
# Tests run-migration.sh's logic with a stand-in `aws` that replays recorded responses.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/bin"
cp "$here/testdata/aws" "$work/bin/aws"

passed=0 failed=0
check() {
    local scenario="$1" expected_code="$2" expected_text="$3"
    cp -r "$here/testdata/$scenario" "$work/$scenario"
    local code=0
    PATH="$work/bin:$PATH" AWS_REPLAY_DIR="$work/$scenario" POLL_SECONDS=0 \
        "$here/run-migration.sh" --cluster prod --task-definition backend:42 \
        --subnets subnet-a,subnet-b --security-groups sg-1 \
        --log-group /ecs/backend --log-stream-prefix backend > "$work/$scenario.out" 2>&1 || code=$?
    if [ "$code" = "$expected_code" ] && grep -q -- "$expected_text" "$work/$scenario.out"; then
        echo "ok   $scenario: exit $code"
        passed=$((passed + 1))
    else
        echo "FAIL $scenario: exit $code (want $expected_code, text '$expected_text')"
        sed 's/^/     /' "$work/$scenario.out"
        failed=$((failed + 1))
    fi
}

check success 0 'container app exited 0'
check migration-failed 6 'container app exited 6'
check failures 1 'RESOURCE:CAPACITY (no Fargate capacity)'
check pull-error 1 'CannotPullContainerError'
check null-exit 1 'has no exit code: TaskFailedToStart: ResourceInitializationError'
expect() {
    local what="$1"
    shift
    if "$@"; then
        echo "ok   $what"
        passed=$((passed + 1))
    else
        echo "FAIL $what"
        failed=$((failed + 1))
    fi
}
# The override and network configuration reached run-task.
expect "run-task override" grep -q -- '--overrides {"containerOverrides":\[{"name":"app","command":\["up"\]}\]}' "$work/success.calls"
expect "run-task network" grep -q -- '"subnets":\["subnet-a","subnet-b"\]' "$work/success.calls"
# The success run showed the migration's log stream.
expect "log stream" grep -q 'logs from /ecs/backend backend/app/0123456789abcdef' "$work/success.out"

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
