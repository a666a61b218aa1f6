#!/usr/bin/env bash
# cleanup_exec: always called, maybe twice, maybe after a half-done prepare. Never fails
# because something is already gone.
set -u
root="${LOCAL_DRIVER_ROOT:-/tmp/gitlab-runner-local-driver}"
echo "cleanup" 2>/dev/null >> "$root/calls.log" || true
rm -rf "${LOCAL_DRIVER_JOB_DIR:-/nonexistent}"
exit 0
