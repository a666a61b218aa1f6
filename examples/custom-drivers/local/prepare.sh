#!/usr/bin/env bash
# prepare_exec: provision the environment. Here: a per-job directory.
set -eu
root="${LOCAL_DRIVER_ROOT:-/tmp/gitlab-runner-local-driver}"
echo "prepare" >> "$root/calls.log"
if ! mkdir -p "$LOCAL_DRIVER_JOB_DIR"; then
  echo "cannot create $LOCAL_DRIVER_JOB_DIR" >&2
  exit "$SYSTEM_FAILURE_EXIT_CODE"
fi
echo "Prepared $LOCAL_DRIVER_JOB_DIR for job $CUSTOM_ENV_CI_JOB_ID ($CUSTOM_ENV_CI_PROJECT_PATH)"
