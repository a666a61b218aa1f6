#!/usr/bin/env bash
# config_exec: where this job's builds and caches live, who we are, and job_env for later calls.
set -eu
root="${LOCAL_DRIVER_ROOT:-/tmp/gitlab-runner-local-driver}"
mkdir -p "$root"
echo "config" >> "$root/calls.log"
cat <<JSON
{
  "builds_dir": "$root/builds",
  "cache_dir": "$root/cache",
  "builds_dir_is_shared": true,
  "hostname": "local-driver",
  "driver": {"name": "local", "version": "v1"},
  "job_env": {"LOCAL_DRIVER_JOB_DIR": "$root/jobs/$CUSTOM_ENV_CI_JOB_ID"}
}
JSON
