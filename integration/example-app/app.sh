#!/bin/sh
# A stand-in application: says it started, shuts down cleanly on SIGTERM (exit 0).
# $APP_STATE_DIR (optional) receives `started` and `got-sigterm` marker files.
state="${APP_STATE_DIR:-/tmp}"
trap 'echo "app: got SIGTERM, shutting down"; touch "$state/got-sigterm"; exit 0' TERM
echo "app: started"
touch "$state/started"
while :; do
    sleep 1 &
    wait $!
done
