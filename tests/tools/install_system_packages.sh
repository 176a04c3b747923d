#!/usr/bin/env bash
# Install the Debian packages bindep.txt lists for the given profile (default: test) that are
# missing. apt's index is refreshed only when an install fails, so a warm machine makes no
# network call at all.
set -euo pipefail

bindep=${BINDEP:-bindep}
profile=${1:-test}

missing=$("$bindep" -b "$profile" || true)
if [ -z "$missing" ]; then
  echo "system packages: all present"
  exit 0
fi
echo "system packages: installing $(echo "$missing" | tr '\n' ' ')"
if [ "$(id -u)" -ne 0 ]; then
  sudo=sudo
else
  sudo=
fi
# shellcheck disable=SC2086 # one package name per word, by design
if ! $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $missing; then
  $sudo apt-get update
  # shellcheck disable=SC2086
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $missing
fi
