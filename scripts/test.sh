#!/usr/bin/env bash
# The test command: sets the machine up, then runs every test of the workspace.
# Profiles and test groups are in .config/nextest.toml: the `ci` profile when CI is set (as
# .ci/run's environment has it), the `default` one otherwise. NEXTEST_PROFILE, or a --profile
# argument, picks another.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --workspace --all-targets
case "${CI:-}" in
  "" | false | 0) default_profile=default ;;
  *) default_profile=ci ;;
esac
export NEXTEST_PROFILE="${NEXTEST_PROFILE:-$default_profile}"
echo "cargo nextest profile: $NEXTEST_PROFILE" >&2
cargo nextest run --workspace --no-fail-fast "$@"
