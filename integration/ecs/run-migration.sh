#!/usr/bin/env bash
# Runs the migration as a one-off ECS task and exits with the migration container's exit code,
# so CI can gate the rollout on it (see migrun's exit-code table: 5 and 8 retry, 6 and 7 stop).
#
#   run-migration.sh --cluster prod --task-definition backend:42 \
#       --subnets subnet-a,subnet-b --security-groups sg-1 [--container app] \
#       [--command '["up"]'] [--public-ip DISABLED] [--timeout 3600] \
#       [--log-group /ecs/backend --log-stream-prefix backend]
#
# It polls describe-tasks itself (the CLI's tasks-stopped waiter gives up after 10 minutes),
# prints the container's CloudWatch log stream at the end, and fails with the reason when the
# task never ran (failures[], capacity, image pull) or stopped without an exit code.
set -euo pipefail

cluster="" task_definition="" subnets="" security_groups="" container="app"
command='["up"]' public_ip="DISABLED" timeout=3600 poll="${POLL_SECONDS:-6}"
log_group="" log_stream_prefix=""

die() { echo "run-migration: $*" >&2; exit 1; }

while (($#)); do
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
        *) die "unknown option $1 (see the header of this script)" ;;
    esac
    shift 2
done
if [ -z "$cluster" ] || [ -z "$task_definition" ] || [ -z "$subnets" ] || [ -z "$security_groups" ]; then
    die "--cluster, --task-definition, --subnets and --security-groups are required"
fi

network=$(jq -cn --arg subnets "$subnets" --arg groups "$security_groups" --arg ip "$public_ip" \
    '{awsvpcConfiguration: {subnets: ($subnets | split(",")), securityGroups: ($groups | split(",")), assignPublicIp: $ip}}')
overrides=$(jq -cn --arg name "$container" --argjson command "$command" \
    '{containerOverrides: [{name: $name, command: $command}]}')

started=$(aws ecs run-task --cluster "$cluster" --task-definition "$task_definition" \
    --launch-type FARGATE --network-configuration "$network" --overrides "$overrides" \
    --started-by migrun --output json)

failures=$(jq -r '[.failures[]? | "\(.arn // "task"): \(.reason)\(if .detail then " (\(.detail))" else "" end)"] | join("; ")' <<<"$started")
[ -z "$failures" ] || die "the task did not start: $failures"
task_arn=$(jq -r '.tasks[0].taskArn // empty' <<<"$started")
[ -n "$task_arn" ] || die "run-task returned no task"
echo "run-migration: started $task_arn"

deadline=$(($(date +%s) + timeout))
status="" described=""
while :; do
    described=$(aws ecs describe-tasks --cluster "$cluster" --tasks "$task_arn" --output json)
    status=$(jq -r '.tasks[0].lastStatus // "UNKNOWN"' <<<"$described")
    echo "run-migration: $status"
    [ "$status" = "STOPPED" ] && break
    (($(date +%s) < deadline)) || die "still $status after ${timeout}s; the task keeps running: $task_arn"
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
[ -n "$exit_code" ] || die "container $container has no exit code: ${container_reason:-$reason}"
echo "run-migration: container $container exited $exit_code${reason:+ ($reason)}"
exit "$exit_code"
