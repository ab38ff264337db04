#!/bin/sh
# tests/unit/bounded.sh CMD...: runs a unit test binary for at most
# UNIT_TIMEOUT seconds (default 900), so that a hung test fails the run
# with its name instead of eating CI's time. Its exit status is CMD's.
secs=${UNIT_TIMEOUT:-900}
timeout -k 10 "$secs" "$@"
rc=$?
[ "$rc" -eq 124 ] && echo "$*: still running after $secs s: killed (a hang)" >&2
exit "$rc"
