#!/usr/bin/env bash
# Debian packages the lab and the tests need. Installs only what is missing, so a machine that has
# them does not touch the network.
# - prometheus (with promtool): the lab's real Prometheus for usage history (tests/e2e/test_prometheus.py).
# - chromium: the headless browser that loads the dashboard's pages (tests/dashboard).
# - containerd (with ctr and the runc shim), runc, iptables, iproute2: the lab's real node
#   (hack/lab/oomtuner_lab/realnode.py). The lab runs containerd itself, with its own config and
#   socket; on a machine with systemd the package also enables Debian's own containerd service.
set -euo pipefail
need=()
command -v openssl >/dev/null || need+=(openssl)
command -v make >/dev/null || need+=(make)
{ command -v prometheus && command -v promtool; } >/dev/null || need+=(prometheus)
command -v chromium >/dev/null || need+=(chromium)
PATH="$PATH:/usr/sbin:/sbin"
{ command -v containerd && command -v ctr && command -v containerd-shim-runc-v2; } >/dev/null || need+=(containerd)
command -v runc >/dev/null || need+=(runc)
{ command -v iptables && command -v iptables-save; } >/dev/null || need+=(iptables)
command -v ip >/dev/null || need+=(iproute2)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing Debian packages: ${need[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
