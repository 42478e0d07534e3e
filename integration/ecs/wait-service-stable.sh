#!/usr/bin/env bash
# Waits until an ECS service's rollout is complete, with its own deadline: the CLI's
# `aws ecs wait services-stable` gives up after 10 minutes (40 polls, 15 s apart), shorter
# than many rollouts.
#
#   wait-service-stable.sh --cluster prod --service backend [--task-definition ARN] [--timeout 1800]
#
# Stable: one deployment left, the PRIMARY one (of --task-definition, when given), its rollout
# COMPLETED (or, without a rollout state, as many tasks running as desired). A failed
# describe-services call (or an answer that is not JSON) is retried until the deadline, and a
# deployment without task counts is not stable. Texts from AWS are printed on one line.
# Exit codes: 0 stable; 70 the rollout FAILED (the deployment circuit breaker stopped it);
# 124 not stable at --timeout; 64 bad arguments.
set -euo pipefail

cluster="" service="" task_definition="" timeout=1800 poll="${POLL_SECONDS:-15}"
usage_error() { echo "wait-service-stable: $*" >&2; exit 64; }
while (($#)); do
    (($# >= 2)) || usage_error "$1 needs a value (see the header of this script)"
    case "$1" in
        --cluster) cluster="$2" ;;
        --service) service="$2" ;;
        --task-definition) task_definition="$2" ;;
        --timeout) timeout="$2" ;;
        *) usage_error "unknown option $1 (see the header of this script)" ;;
    esac
    shift 2
done
if [ -z "$cluster" ] || [ -z "$service" ]; then usage_error "--cluster and --service are required"; fi

deadline=$(($(date +%s) + timeout))
while :; do
    # A failed call, or an answer that is not JSON (a CLI warning, a proxy's page), is retried.
    if described=$(aws ecs describe-services --cluster "$cluster" --services "$service" --output json) \
        && jq -e . >/dev/null 2>&1 <<<"$described"; then
        state=$(jq -r --arg td "$task_definition" '
            .services[0] as $s
            | ($s.deployments // []) as $d
            | ($d | map(select(.status == "PRIMARY")) | .[0]) as $p
            | if $s == null then "missing"
              elif $p == null then "waiting no primary deployment"
              elif ($td != "" and $p.taskDefinition != $td) then "waiting primary is \($p.taskDefinition)"
              elif $p.rolloutState == "FAILED" then "failed \($p.rolloutStateReason // "rollout failed")"
              elif ($p.runningCount | type) != "number" or ($p.desiredCount | type) != "number"
                then "waiting the primary deployment has no task counts yet"
              elif ($d | length) == 1 and ($p.rolloutState // "COMPLETED") == "COMPLETED"
                   and $p.runningCount == $p.desiredCount then "stable \($p.runningCount)/\($p.desiredCount) tasks"
              else "waiting \($d | length) deployment(s), \($p.runningCount)/\($p.desiredCount) running, rollout \($p.rolloutState // "-")"
              end | gsub("[[:cntrl:]]"; " ")' <<<"$described")
        echo "wait-service-stable: $state"
        case "$state" in
            stable*) exit 0 ;;
            failed*) exit 70 ;;
            missing) usage_error "service $service not found in cluster $cluster" ;;
        esac
    else
        echo "wait-service-stable: describe-services failed; trying again" >&2
    fi
    if (($(date +%s) >= deadline)); then
        echo "wait-service-stable: not stable after ${timeout}s" >&2
        exit 124
    fi
    sleep "$poll"
done
