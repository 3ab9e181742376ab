#!/usr/bin/env bash
# Runs every check and test of the workspace: formatting, lints, unit, storage-suite, system and
# fault tests. This is the command the README gives and CI runs.
#
# The fault tests build network namespaces and cut links with iptables, so they run as root
# and need iproute2 and iptables; the discovery tests run a real etcd (Debian's etcd-server);
# the extension tests build SQLite extensions with gcc and libsqlite3-dev's sqlite3ext.h; the
# console tests drive Debian's chromium through chromium-driver. Missing packages are installed
# from apt.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v ip >/dev/null || missing+=(iproute2)
command -v iptables >/dev/null || missing+=(iptables)
command -v etcd >/dev/null || missing+=(etcd-server)
command -v gcc >/dev/null || missing+=(gcc)
[[ -f /usr/include/sqlite3ext.h ]] || missing+=(libsqlite3-dev)
command -v chromium >/dev/null || missing+=(chromium)
command -v chromedriver >/dev/null || missing+=(chromium-driver)
if ((${#missing[@]})); then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# From PyPI, in a virtual environment of their own (pinned versions): the automatic backup
# tests run real object stores on loopback (moto's S3 server and the GCS emulator), the
# extension tests load sqlite-vec, and the client tests run rqlite's Python clients (pyrqlite,
# and SQLAlchemy through sqlalchemy-rqlite).
venv=target/test-venv
if ! "$venv/bin/python" -c "import moto, gcp_storage_emulator, sqlite_vec, pyrqlite, sqlalchemy_rqlite" 2>/dev/null; then
    if ! python3 -m venv "$venv"; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
        python3 -m venv "$venv"
    fi
    "$venv/bin/pip" install -q "moto[server]==5.2.6" "gcp-storage-emulator==2026.7.19" "sqlite-vec==0.1.9" \
        "pyrqlite==2.2.3" "sqlalchemy-rqlite==2.0" "SQLAlchemy==2.1.9"
fi
export RQ_TEST_VENV="$PWD/$venv"

# From the npm registry, with the machine's Node.js: rqlite's JavaScript client, rqlite-js, for
# the client tests (it needs @babel/runtime 7 and does not declare it).
node_dir=target/test-node
if [[ ! -d "$node_dir/node_modules/rqlite-js" ]]; then
    npm install --prefix "$node_dir" --no-audit --no-fund --loglevel=error rqlite-js@2.5.7 @babel/runtime@7.28.4
fi
export RQ_TEST_NODE_MODULES="$PWD/$node_dir/node_modules"

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
