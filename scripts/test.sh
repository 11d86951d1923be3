#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit tests, the root integration tests (private daemons driven by
# berth and the docker CLI), and the acceptance tests with docker-py (PyPI) and docker-compose (Debian).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then echo "the integration tests need root (namespaces, overlayfs, cgroups)" >&2; exit 1; fi
bash scripts/deps.sh
cargo fmt --all -- --check
cargo build --workspace --bins
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace 2>&1

# docker-py from PyPI in a private venv; docker-compose is Debian's.
py=${PYTHON:-python3}
[ -x target/pyenv/bin/pytest ] || { "$py" -m venv target/pyenv && target/pyenv/bin/pip install -q docker pytest; }
target/pyenv/bin/pytest -q tests/clients
