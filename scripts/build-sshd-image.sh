#!/usr/bin/env bash
# Builds the image the reference docker-vm driver runs as its "VM": a minimal Debian bookworm
# rootfs (debootstrap from Debian's package mirror, no registry needed) with bash, git,
# openssh-server and ca-certificates, imported into the local Docker engine. Its entrypoint puts
# $AUTHORIZED_KEY into root's authorized_keys, creates host keys and runs sshd in the foreground.
# Cached: does nothing when the tag exists. One builder at a time per machine (flock).
#   bash scripts/build-sshd-image.sh [tag]
set -euo pipefail
tag="${1:-gitlab-runner-rs-test/debian-sshd:bookworm-1}"
if docker image inspect "$tag" >/dev/null 2>&1; then
  exit 0
fi
if ! command -v debootstrap >/dev/null 2>&1; then
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends debootstrap
fi
exec 9>/tmp/gitlab-runner-rs-sshd-image.lock
flock 9
# Another builder may have finished while this one waited.
if docker image inspect "$tag" >/dev/null 2>&1; then
  exit 0
fi
mirror="$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n1)"
mirror="${mirror:-http://deb.debian.org/debian}"
rootfs="$(mktemp -d)"
trap 'rm -rf "$rootfs"' EXIT
debootstrap --variant=minbase --include=bash,git,openssh-server,ca-certificates \
  bookworm "$rootfs" "$mirror" >/dev/null
cat > "$rootfs/usr/local/bin/start-sshd" <<'SCRIPT'
#!/bin/sh
set -e
mkdir -p /root/.ssh /run/sshd
chmod 700 /root/.ssh
printf '%s\n' "$AUTHORIZED_KEY" > /root/.ssh/authorized_keys
chmod 600 /root/.ssh/authorized_keys
ssh-keygen -A >/dev/null
exec /usr/sbin/sshd -D -e -o PermitRootLogin=prohibit-password -o PasswordAuthentication=no
SCRIPT
chmod 755 "$rootfs/usr/local/bin/start-sshd"
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
tar -C "$rootfs" -c . | docker import \
  --change 'CMD ["/usr/local/bin/start-sshd"]' \
  --change 'EXPOSE 22' - "$tag" >/dev/null
echo "built $tag"
