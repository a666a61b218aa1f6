# Sourced by the other scripts: the ssh command line for the configured host.
: "${SSH_HOST_DRIVER_HOST:?set SSH_HOST_DRIVER_HOST in the runner environment}"
ssh_cmd=(ssh -p "${SSH_HOST_DRIVER_PORT:-22}"
  -o BatchMode=yes -o StrictHostKeyChecking=yes -o ConnectTimeout=10
  -o "UserKnownHostsFile=${SSH_HOST_DRIVER_KNOWN_HOSTS:-$HOME/.ssh/known_hosts}")
if [ -n "${SSH_HOST_DRIVER_KEY:-}" ]; then
  ssh_cmd+=(-i "$SSH_HOST_DRIVER_KEY")
fi
ssh_cmd+=("${SSH_HOST_DRIVER_USER:-$(id -un)}@$SSH_HOST_DRIVER_HOST")
