#!/usr/bin/env bash
# run_exec <script> <stage>: the script on the remote login shell's stdin. ssh exits 255 for
# its own failures: that is the backend failing, not the user's script.
set -u
. "$(dirname "$0")/common.sh"
"${ssh_cmd[@]}" bash -l < "$1"
code=$?
if [ "$code" -eq 255 ]; then
  exit "$SYSTEM_FAILURE_EXIT_CODE"
fi
if [ "$code" -ne 0 ]; then
  echo "$code" > "$BUILD_EXIT_CODE_FILE"
  exit "$BUILD_FAILURE_EXIT_CODE"
fi
