#!/usr/bin/env bash
# The main job, on a fresh Debian 12 machine (as root):
#   1. the test bed (Incus, storage, bridge, the offline Debian 12 image)   scripts/testbed.sh
#   2. build and install containarium and its plugins under /usr/local      scripts/install.sh
#   3. create a real environment for USER (default: dev) and log into it with OpenSSH
#
#   scripts/setup.sh [USER]
# The user's key is ~/.ssh/containarium_USER (made with ssh-keygen when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
USER_NAME="${1:-dev}"
log() { printf '==> %s\n' "$*" >&2; }

bash scripts/testbed.sh
bash scripts/install.sh /usr/local

KEY="$HOME/.ssh/containarium_${USER_NAME}"
if [ ! -f "$KEY" ]; then
  install -d -m 0700 "$HOME/.ssh"
  ssh-keygen -q -t ed25519 -N '' -C "${USER_NAME}@containarium" -f "$KEY"
  log "made key pair $KEY"
fi

if containarium info "$USER_NAME" >/dev/null 2>&1; then
  log "${USER_NAME}-container exists already"
  containarium start "$USER_NAME" >/dev/null
else
  containarium create "$USER_NAME" --ssh-key "$KEY.pub"
fi

INFO=$(containarium info "$USER_NAME" --format json)
IP=$(printf '%s' "$INFO" | python3 -c 'import json,sys; print(json.load(sys.stdin)["ipv4"][0])')
# Pin the environment's host keys as the host reports them (no trust on first use), replacing
# whatever an earlier environment at the same address left in the file.
KNOWN="$HOME/.ssh/known_hosts.containarium"
touch "$KNOWN"
ssh-keygen -R "$IP" -f "$KNOWN" >/dev/null 2>&1 || true
printf '%s' "$INFO" | python3 -c 'import json,sys; [print(sys.argv[1], k) for k in json.load(sys.stdin).get("sshHostKeys") or []]' "$IP" >> "$KNOWN"
if grep -q "^$IP " "$KNOWN"; then checking=yes; else checking=accept-new; fi
log "logging in over SSH to prove it works"
for _ in $(seq 1 60); do
  if ssh -i "$KEY" -o StrictHostKeyChecking="$checking" -o UserKnownHostsFile="$KNOWN" \
       -o BatchMode=yes -o ConnectTimeout=3 "${USER_NAME}@${IP}" 'echo "logged in as $(id -un) on $(hostname)"; sudo -n true && echo "sudo works"'; then
    cat <<MSG

Your environment is ready. Log in with:
  ssh -i $KEY -o UserKnownHostsFile=$HOME/.ssh/known_hosts.containarium ${USER_NAME}@${IP}

Manage it with: containarium list | info ${USER_NAME} | resize ${USER_NAME} --cpu 2 --memory 4GB | stop | start | delete ${USER_NAME} --force
MSG
    exit 0
  fi
  sleep 0.5
done
echo "could not log in to ${USER_NAME}@${IP}" >&2
exit 1
