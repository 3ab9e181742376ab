#!/usr/bin/env bash
# Runs every check and test of the workspace: formatting, lints, unit, storage-suite and system
# tests. This is the command the README gives and CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
