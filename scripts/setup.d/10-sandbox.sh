#!/usr/bin/env bash
# Process sandbox (godel-sandbox): bubblewrap and crun for the comparison
# benchmarks (`godel bench sandbox`), nftables for the NAT network mode's
# egress allowlist, iproute2 for veth pairs.
# Idempotent: installs only what is missing.
set -euo pipefail
need=()
command -v bwrap >/dev/null || need+=(bubblewrap)
command -v crun >/dev/null || need+=(crun)
command -v nft >/dev/null || need+=(nftables)
command -v ip >/dev/null || need+=(iproute2)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
