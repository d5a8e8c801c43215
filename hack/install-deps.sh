#!/usr/bin/env bash
# Debian packages the lab and the tests need. Installs only what is missing, so a machine that has
# them does not touch the network.
set -euo pipefail
need=()
command -v openssl >/dev/null || need+=(openssl)
command -v make >/dev/null || need+=(make)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing Debian packages: ${need[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}"
fi
