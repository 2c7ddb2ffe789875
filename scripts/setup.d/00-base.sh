#!/usr/bin/env bash
# Base tools: git (the worktree runtime) and apt bookkeeping shared by other fragments.
set -euo pipefail
need=()
command -v git >/dev/null || need+=(git)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi
