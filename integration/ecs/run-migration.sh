#!/usr/bin/env bash
# Runs the migration as a one-off ECS task and exits with the migration container's exit code,
# so CI can gate the rollout on it (see migrun's exit-code table: 5 and 8 retry, 6 and 7 stop).
#
#   run-migration.sh --cluster prod --task-definition backend:42 \
#       --subnets subnet-a,subnet-b --security-groups sg-1 [--container app] \
#       [--command '["up"]'] [--public-ip DISABLED] [--timeout 3600] \
#       [--launch-type FARGATE | --capacity-provider-strategy capacityProvider=FARGATE_SPOT,weight=1] \
#       [--log-group /ecs/backend --log-stream-prefix backend]
#
# Without --launch-type or --capacity-provider-strategy the task runs on the cluster's default
# capacity provider strategy. It polls describe-tasks itself (the CLI's tasks-stopped waiter
# gives up after 10 minutes), retrying a failed describe-tasks call until the deadline instead
# of abandoning a running migration, and prints the container's CloudWatch log stream at the end.
#
# Every value read from AWS is checked, and every text from AWS is printed on one line
# (control characters shown as spaces), so no reason can forge a line of this script's.
#
# Its own exit codes stay clear of migrun's (0-17, 128+signal):
#   64  bad arguments                     (fix the call)
#   75  the task never ran, or stopped without an exit code: failures[], capacity, image pull,
#       secrets (nothing was migrated; safe to retry)
#   76  run-task's answer could not be read (not JSON): unknown whether a task started; look
#       for a task started by "migrun" before retrying
#   77  ECS no longer knows the task (describe-tasks failures[]: MISSING): wrong cluster, or
#       its record expired; look at the migration's logs before retrying
#   78  the stopped task's answer cannot be trusted (an exit code that is not 0-255, two
#       containers with the container's name): look at the task
#   124 still running at --timeout       (the task keeps running; look at it before retrying)
set -euo pipefail

cluster="" task_definition="" subnets="" security_groups="" container="app"
command='["up"]' public_ip="DISABLED" timeout=3600 poll="${POLL_SECONDS:-6}"
log_group="" log_stream_prefix="" launch_type="" capacity_provider_strategy=""

usage_error() { echo "run-migration: $*" >&2; exit 64; }
not_run() { echo "run-migration: $*" >&2; exit 75; }
fail() { local code="$1"; shift; echo "run-migration: $*" >&2; exit "$code"; }
# A jq function for texts from AWS: one line, control characters shown as spaces.
CLEAN='def clean: tostring | gsub("[[:cntrl:]]"; " ");'
json() { jq -e . >/dev/null 2>&1 <<<"$1"; }

while (($#)); do
    (($# >= 2)) || usage_error "$1 needs a value (see the header of this script)"
    case "$1" in
        --cluster) cluster="$2" ;;
        --task-definition) task_definition="$2" ;;
        --subnets) subnets="$2" ;;
        --security-groups) security_groups="$2" ;;
        --container) container="$2" ;;
        --command) command="$2" ;;
        --public-ip) public_ip="$2" ;;
        --timeout) timeout="$2" ;;
        --log-group) log_group="$2" ;;
        --log-stream-prefix) log_stream_prefix="$2" ;;
        --launch-type) launch_type="$2" ;;
        --capacity-provider-strategy) capacity_provider_strategy="$2" ;;
        *) usage_error "unknown option $1 (see the header of this script)" ;;
    esac
    shift 2
done
if [ -z "$cluster" ] || [ -z "$task_definition" ] || [ -z "$subnets" ] || [ -z "$security_groups" ]; then
    usage_error "--cluster, --task-definition, --subnets and --security-groups are required"
fi
if [ -n "$launch_type" ] && [ -n "$capacity_provider_strategy" ]; then
    usage_error "give --launch-type or --capacity-provider-strategy, not both"
fi
placement=()
[ -z "$launch_type" ] || placement=(--launch-type "$launch_type")
[ -z "$capacity_provider_strategy" ] || placement=(--capacity-provider-strategy "$capacity_provider_strategy")

network=$(jq -cn --arg subnets "$subnets" --arg groups "$security_groups" --arg ip "$public_ip" \
    '{awsvpcConfiguration: {subnets: ($subnets | split(",")), securityGroups: ($groups | split(",")), assignPublicIp: $ip}}')
overrides=$(jq -cn --arg name "$container" --argjson command "$command" \
    '{containerOverrides: [{name: $name, command: $command}]}') || usage_error "--command is not a JSON list: $command"

# run-task is not retried: a call that failed after ECS accepted it would start a second task.
started=$(aws ecs run-task --cluster "$cluster" --task-definition "$task_definition" \
    "${placement[@]}" --network-configuration "$network" --overrides "$overrides" \
    --started-by migrun --output json) || not_run "run-task failed (see the error above); nothing was started"
# A warning or a proxy's page instead of JSON: ECS may have started a task all the same.
json "$started" || fail 76 "run-task answered something that is not JSON: unknown whether a task started; look for tasks started by migrun in cluster $cluster before retrying"

failures=$(jq -r "$CLEAN"'[.failures[]? | "\(.arn // "task"): \(.reason)\(if .detail then " (\(.detail))" else "" end)" | clean] | join("; ")' <<<"$started")
[ -z "$failures" ] || not_run "the task did not start: $failures"
task_arn=$(jq -r "$CLEAN"'.tasks[0].taskArn // empty | clean' <<<"$started")
[ -n "$task_arn" ] || not_run "run-task returned no task"
[[ "$task_arn" =~ ^arn:[A-Za-z0-9:/._-]+$ ]] || fail 76 "run-task returned a task ARN that is not one ($task_arn): unknown whether a task started"
echo "run-migration: started $task_arn"

deadline=$(($(date +%s) + timeout))
status="" described=""
while :; do
    # A failed call (throttling, a network blip, an answer that is not JSON) is not the task's
    # failure: keep watching.
    if described=$(aws ecs describe-tasks --cluster "$cluster" --tasks "$task_arn" --output json) && json "$described"; then
        missing=$(jq -r "$CLEAN"'[.failures[]? | "\(.reason // "failure")\(if .detail then " (\(.detail))" else "" end)" | clean] | join("; ")' <<<"$described")
        if [ -n "$missing" ] && [ "$(jq '.tasks | length' <<<"$described")" = 0 ]; then
            fail 77 "ECS does not know task $task_arn: $missing (wrong cluster, or its record expired); look at the migration's logs before retrying"
        fi
        status=$(jq -r "$CLEAN"'.tasks[0].lastStatus // "UNKNOWN" | clean' <<<"$described")
        echo "run-migration: $status"
        [ "$status" = "STOPPED" ] && break
    else
        echo "run-migration: describe-tasks failed; trying again (the task keeps running)" >&2
    fi
    if (($(date +%s) >= deadline)); then
        echo "run-migration: still ${status:-unknown} after ${timeout}s; the task keeps running: $task_arn" >&2
        exit 124
    fi
    sleep "$poll"
done

# The whole stream, page by page: the result event is its last line. The end is the page
# whose forward token is the one just sent.
if [ -n "$log_group" ] && [ -n "$log_stream_prefix" ]; then
    stream="$log_stream_prefix/$container/${task_arn##*/}"
    echo "run-migration: logs from $log_group $stream"
    token="" pages=0
    while ((pages < 10000)); do
        pages=$((pages + 1))
        if ! page=$(aws logs get-log-events --log-group-name "$log_group" --log-stream-name "$stream" \
            --start-from-head ${token:+--next-token "$token"} --output json) || ! json "$page"; then
            echo "run-migration: (no more logs could be read)"
            break
        fi
        jq -r '.events[]?.message // empty' <<<"$page"
        next=$(jq -r '.nextForwardToken // empty' <<<"$page")
        if [ -z "$next" ] || [ "$next" = "$token" ]; then break; fi
        token="$next"
    done
fi

reason=$(jq -r "$CLEAN"'.tasks[0] | [.stopCode, .stoppedReason] | map(select(. != null) | clean) | join(": ")' <<<"$described")
named=$(jq --arg name "$container" '[.tasks[0].containers[]? | select(.name == $name)] | length' <<<"$described")
((named <= 1)) || fail 78 "the stopped task has $named containers named $container; cannot tell which exit code is the migration's: look at $task_arn"
container_reason=$(jq -r --arg name "$container" "$CLEAN"'.tasks[0].containers[]? | select(.name == $name) | .reason // empty | clean' <<<"$described")
exit_code=$(jq -r --arg name "$container" "$CLEAN"'.tasks[0].containers[]? | select(.name == $name) | .exitCode // empty | clean' <<<"$described")
# A container that never ran (image pull, secrets, capacity) has no exit code: that is a
# failure, never a success.
[ -n "$exit_code" ] || not_run "container $container has no exit code: ${container_reason:-$reason}"
# bash takes an exit status modulo 256: 256 would read as success.
if ! [[ "$exit_code" =~ ^[0-9]{1,3}$ ]] || ((exit_code > 255)); then
    fail 78 "container $container reports exit code $exit_code, which is not 0 to 255: look at $task_arn"
fi
echo "run-migration: container $container exited $exit_code${reason:+ ($reason)}"
exit "$exit_code"
