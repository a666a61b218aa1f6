#!/usr/bin/env bash
# prepare_exec: the host must answer and have bash and git.
set -u
. "$(dirname "$0")/common.sh"
if ! "${ssh_cmd[@]}" 'command -v bash >/dev/null && command -v git >/dev/null' </dev/null; then
  echo "cannot use $SSH_HOST_DRIVER_HOST: unreachable, key refused, or bash/git missing" >&2
  exit "$SYSTEM_FAILURE_EXIT_CODE"
fi
echo "Connected to $SSH_HOST_DRIVER_HOST"
