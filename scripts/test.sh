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

# The automatic backup tests run real object stores on loopback: moto's S3 server and the GCS
# emulator from PyPI, in a virtual environment of their own (pinned versions).
venv=target/test-venv
if [[ ! -x $venv/bin/moto_server || ! -x $venv/bin/gcp-storage-emulator ]]; then
    if ! python3 -m venv "$venv"; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
        python3 -m venv "$venv"
    fi
    "$venv/bin/pip" install -q "moto[server]==5.2.6" "gcp-storage-emulator==2026.7.19"
fi
export RQ_TEST_VENV="$PWD/$venv"

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
