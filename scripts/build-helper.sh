#!/usr/bin/env bash
# Builds the statically linked gitlab-runner-rs that executors inject into containers and VMs as
# their helper (no helper image to pull): glibc's crt-static on the gnu target. Prints its path.
#   bash scripts/build-helper.sh            # release
#   PROFILE=dev bash scripts/build-helper.sh  # debug, quicker to build
set -euo pipefail
cd "$(dirname "$0")/.."
target="$(rustc -vV | sed -n 's/^host: //p')"
profile="${PROFILE:-release}"
# The target is named explicitly so build scripts and proc macros stay dynamic: only the final
# binary is linked statically.
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
  cargo build -q --profile "$profile" --target "$target" -p gitlab-runner-rs
dir="$profile"
[ "$profile" = dev ] && dir=debug
echo "$PWD/target/$target/$dir/gitlab-runner-rs"
