#!/usr/bin/env bash
# run_exec <script> <stage>: run one stage's script; the user's exit code goes to
# BUILD_EXIT_CODE_FILE and the driver exits BUILD_FAILURE_EXIT_CODE.
set -u
root="${LOCAL_DRIVER_ROOT:-/tmp/gitlab-runner-local-driver}"
echo "run $2" >> "$root/calls.log"
bash "$1"
code=$?
if [ "$code" -ne 0 ]; then
  echo "$code" > "$BUILD_EXIT_CODE_FILE"
  exit "$BUILD_FAILURE_EXIT_CODE"
fi
