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
# Its own exit codes stay clear of migrun's (0-9, 128+signal):
#   64  bad arguments                     (fix the call)
#   75  the task never ran, or stopped without an exit code: failures[], capacity, image pull,
#       secrets (nothing was migrated; safe to retry)
#   124 still running at --timeout       (the task keeps running; look at it before retrying)
set -euo pipefail

cluster="" task_definition="" subnets="" security_groups="" container="app"
command='["up"]' public_ip="DISABLED" timeout=3600 poll="${POLL_SECONDS:-6}"
log_group="" log_stream_prefix="" launch_type="" capacity_provider_strategy=""

usage_error() { echo "run-migration: $*" >&2; exit 64; }
not_run() { echo "run-migration: $*" >&2; exit 75; }

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

failures=$(jq -r '[.failures[]? | "\(.arn // "task"): \(.reason)\(if .detail then " (\(.detail))" else "" end)"] | join("; ")' <<<"$started")
[ -z "$failures" ] || not_run "the task did not start: $failures"
task_arn=$(jq -r '.tasks[0].taskArn // empty' <<<"$started")
[ -n "$task_arn" ] || not_run "run-task returned no task"
echo "run-migration: started $task_arn"

deadline=$(($(date +%s) + timeout))
status="" described=""
while :; do
    # A failed call (throttling, a network blip) is not the task's failure: keep watching.
    if described=$(aws ecs describe-tasks --cluster "$cluster" --tasks "$task_arn" --output json); then
        status=$(jq -r '.tasks[0].lastStatus // "UNKNOWN"' <<<"$described")
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

if [ -n "$log_group" ] && [ -n "$log_stream_prefix" ]; then
    stream="$log_stream_prefix/$container/${task_arn##*/}"
    echo "run-migration: logs from $log_group $stream"
    aws logs get-log-events --log-group-name "$log_group" --log-stream-name "$stream" \
        --start-from-head --output json | jq -r '.events[].message' || echo "run-migration: (no logs)"
fi

reason=$(jq -r '.tasks[0] | [.stopCode, .stoppedReason] | map(select(. != null)) | join(": ")' <<<"$described")
container_reason=$(jq -r --arg name "$container" '.tasks[0].containers[]? | select(.name == $name) | .reason // empty' <<<"$described")
exit_code=$(jq -r --arg name "$container" '.tasks[0].containers[]? | select(.name == $name) | .exitCode // empty' <<<"$described")
# A container that never ran (image pull, secrets, capacity) has no exit code: that is a
# failure, never a success.
[ -n "$exit_code" ] || not_run "container $container has no exit code: ${container_reason:-$reason}"
echo "run-migration: container $container exited $exit_code${reason:+ ($reason)}"
exit "$exit_code"
