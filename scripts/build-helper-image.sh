#!/usr/bin/env bash
# Builds the Docker executor's helper image: the debootstrap Debian of build-sshd-image.sh (bash,
# git) plus the statically linked gitlab-runner-rs as /usr/bin/gitlab-runner-helper.
#   bash scripts/build-helper-image.sh [tag] [profile]
# Default tag: gitlab-runner-rs/helper:<version> (the executor's default helper_image);
# profile: release (default) or dev.
set -euo pipefail
cd "$(dirname "$0")/.."
version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)"
tag="${1:-gitlab-runner-rs/helper:$version}"
profile="${2:-release}"
base="gitlab-runner-rs-test/debian-sshd:bookworm-1"
bash scripts/build-sshd-image.sh "$base"
helper="$(PROFILE="$profile" bash scripts/build-helper.sh | tail -n1)"
context="$(mktemp -d)"
trap 'rm -rf "$context"' EXIT
# One image build at a time per machine: concurrent legacy builds of the same content share
# cached layers, and one can lose its image while another retags it.
exec 9>/tmp/gitlab-runner-rs-helper-image.lock
flock 9
cp "$helper" "$context/gitlab-runner-helper"
printf 'FROM %s\nCOPY gitlab-runner-helper /usr/bin/gitlab-runner-helper\n' "$base" > "$context/Dockerfile"
previous="$(docker image inspect -f '{{.Id}}' "$tag" 2>/dev/null || true)"
docker build -q -t "$tag" "$context" >/dev/null
# A rebuilt helper moves the tag; the image it leaves untagged is removed (kept if in use).
current="$(docker image inspect -f '{{.Id}}' "$tag")"
if [ -n "$previous" ] && [ "$previous" != "$current" ]; then
  docker rmi "$previous" >/dev/null 2>&1 || true
fi
echo "$tag"
