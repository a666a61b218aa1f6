#!/usr/bin/env bash
# config_exec: builds and caches live in the remote user's home.
set -eu
. "$(dirname "$0")/common.sh"
cat <<JSON
{"builds_dir": "builds", "cache_dir": "cache", "builds_dir_is_shared": true,
 "hostname": "$SSH_HOST_DRIVER_HOST", "driver": {"name": "ssh-host", "version": "v1"}}
JSON
