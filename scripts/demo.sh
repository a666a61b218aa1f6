#!/usr/bin/env bash
# Sets up and runs the main job: the demo pipeline in examples/demo, run locally with
# `gitlab-runner-rs exec shell`, exactly as `run` would run it for GitLab.
set -euo pipefail
cd "$(dirname "$0")/.."
# Only what the demo needs (git, bash, a C toolchain): the test tools (cargo-nextest, s3s-fs,
# sshd, ...) are scripts/test.sh's business.
bash scripts/setup.sh --demo
cargo build -q -p gitlab-runner-rs
binary="$PWD/target/debug/gitlab-runner-rs"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cp -r examples/demo/. "$work/"
cd "$work"
git init -q -b main
git add -A
git -c user.name=demo -c user.email=demo@example.com commit -q -m demo
"$binary" exec shell "${1:-build}"
