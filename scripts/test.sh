#!/usr/bin/env bash
# Runs every check and test of the workspace: formatting, lints, unit, storage-suite, system and
# fault tests. This is the command the README gives and CI runs.
#
# The fault tests build network namespaces and cut links with iptables, so they run as root
# and need iproute2 and iptables; the discovery tests run a real etcd (Debian's etcd-server).
# Missing packages are installed from apt.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v ip >/dev/null || missing+=(iproute2)
command -v iptables >/dev/null || missing+=(iptables)
command -v etcd >/dev/null || missing+=(etcd-server)
if ((${#missing[@]})); then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
