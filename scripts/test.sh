#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit tests and the root integration tests (private daemons).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then echo "the integration tests need root (namespaces, overlayfs, cgroups)" >&2; exit 1; fi
bash scripts/deps.sh
cargo fmt --all -- --check
cargo build --workspace --bins
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace 2>&1
