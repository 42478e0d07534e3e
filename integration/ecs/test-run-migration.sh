#!/usr/bin/env bash
# Tests run-migration.sh's logic with a stand-in `aws` that replays recorded responses.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/bin"
cp "$here/testdata/aws" "$work/bin/aws"

passed=0 failed=0
# check LABEL SCENARIO EXIT_CODE TEXT [options]: a run of testdata/SCENARIO (its calls in
# $work/LABEL.calls, its output in $work/LABEL.out).
check() {
    local label="$1" scenario="$2" expected_code="$3" expected_text="$4"
    shift 4
    cp -r "$here/testdata/$scenario" "$work/$label"
    local code=0
    PATH="$work/bin:$PATH" AWS_REPLAY_DIR="$work/$label" POLL_SECONDS=0 \
        "$here/run-migration.sh" --cluster prod --task-definition backend:42 \
        --subnets subnet-a,subnet-b --security-groups sg-1 \
        --log-group /ecs/backend --log-stream-prefix backend "$@" > "$work/$label.out" 2>&1 || code=$?
    if [ "$code" = "$expected_code" ] && grep -q -- "$expected_text" "$work/$label.out"; then
        echo "ok   $label: exit $code"
        passed=$((passed + 1))
    else
        echo "FAIL $label: exit $code (want $expected_code, text '$expected_text')"
        sed 's/^/     /' "$work/$label.out"
        failed=$((failed + 1))
    fi
}

check success success 0 'container app exited 0'
check migration-failed migration-failed 6 'container app exited 6'
# The script's own failures use codes migrun never exits with: 75 (never ran), 124, 64.
check failures failures 75 'RESOURCE:CAPACITY (no Fargate capacity)'
check pull-error pull-error 75 'CannotPullContainerError'
check null-exit null-exit 75 'has no exit code: TaskFailedToStart: ResourceInitializationError'
check describe-blip describe-blip 0 'describe-tasks failed; trying again'
check still-running still-running 124 'the task keeps running' --timeout 0
check missing-value success 64 'needs a value' --container
check two-placements success 64 'not both' --launch-type FARGATE --capacity-provider-strategy capacityProvider=FARGATE,weight=1
# Hostile answers from AWS: never migrun's own codes (0-17), never a forged line.
check runtask-not-json runtask-not-json 76 'unknown whether a task started'
check describe-not-json describe-not-json 0 'describe-tasks failed; trying again'
check missing missing 77 'does not know task .*MISSING' --timeout 5
check exit-256 exit-256 78 'exit code 256, which is not 0 to 255'
check two-containers two-containers 78 'has 2 containers named app'
check forged-reason forged-reason 6 'container app exited 6'
check logs-paged logs-paged 0 'exited 0' --log-group /ecs/backend --log-stream-prefix backend
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
# No launch type unless asked: the cluster's default capacity provider strategy applies.
expect "default placement" sh -c "! grep -q -- '--launch-type' '$work/success.calls'"
check spot migration-failed 6 'exited 6' --capacity-provider-strategy capacityProvider=FARGATE_SPOT,weight=1
expect "capacity provider strategy" grep -q -- '--capacity-provider-strategy capacityProvider=FARGATE_SPOT,weight=1' "$work/spot.calls"
check fargate success 0 'exited 0' --launch-type FARGATE
expect "launch type" grep -q -- '--launch-type FARGATE' "$work/fargate.calls"
# The override and network configuration reached run-task.
expect "run-task override" grep -q -- '--overrides {"containerOverrides":\[{"name":"app","command":\["up"\]}\]}' "$work/success.calls"
expect "run-task network" grep -q -- '"subnets":\["subnet-a","subnet-b"\]' "$work/success.calls"
# The success run showed the migration's log stream.
expect "log stream" grep -q 'logs from /ecs/backend backend/app/0123456789abcdef' "$work/success.out"
# Every page of it: the result event is on the last one.
expect "log pages" grep -q '"event":"result"' "$work/logs-paged.out"
expect "log pages in order" sh -c "grep -n 'first line' '$work/logs-paged.out' | grep -q ."
# A reason with a newline stays on its line: no line of the script's own is forged.
expect "no forged line" sh -c "! grep -q '^run-migration: container app exited 0' '$work/forged-reason.out' && ! grep -q '^run-migration: started nothing' '$work/forged-reason.out'"

# wait-service-stable.sh: its own deadline, retries, and a failed rollout.
service() {
    local label="$1" scenario="$2" expected_code="$3" expected_text="$4"
    shift 4
    cp -r "$here/testdata/$scenario" "$work/$label"
    local code=0
    PATH="$work/bin:$PATH" AWS_REPLAY_DIR="$work/$label" POLL_SECONDS=0 \
        "$here/wait-service-stable.sh" --cluster prod --service backend "$@" > "$work/$label.out" 2>&1 || code=$?
    if [ "$code" = "$expected_code" ] && grep -q -- "$expected_text" "$work/$label.out"; then
        echo "ok   $label: exit $code"
        passed=$((passed + 1))
    else
        echo "FAIL $label: exit $code (want $expected_code, text '$expected_text')"
        sed 's/^/     /' "$work/$label.out"
        failed=$((failed + 1))
    fi
}
service service-stable service-stable 0 'stable 2/2 tasks' --task-definition arn:aws:ecs:eu-west-1:123456789012:task-definition/backend:43
expect "service: retried a failed call" grep -q 'describe-services failed; trying again' "$work/service-stable.out"
service service-failed service-failed 70 'circuit breaker'
service service-slow service-stable 124 'not stable after 0s' --timeout 0
service service-other-revision service-stable 124 'primary is' --task-definition backend:99 --timeout 0
service service-not-json service-not-json 0 'describe-services failed; trying again'
service service-no-counts service-no-counts 124 'no task counts' --timeout 0

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
