#!/usr/bin/env bash
# The whole test suite from a fresh clone. Installs what the tests need (pyzmq and
# msgpack in .venv, for the libzmq interop peers; dnsmasq, nftables, iproute2) and
# fails, never skips, when it cannot.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r tests/peers/requirements.txt
.venv/bin/python -c 'import zmq, msgpack; print("pyzmq", zmq.__version__, "libzmq", zmq.zmq_version())'
export ZMTP_RPC_PYTHON="$PWD/.venv/bin/python"

# dnsmasq: the DNS server of the discovery tests; nftables (nft) and iproute2 (ip,
# tc): the network faults of the partition tests (which need root, as CI has).
need=()
command -v dnsmasq >/dev/null || [ -x /usr/sbin/dnsmasq ] || need+=(dnsmasq-base)
command -v nft >/dev/null || [ -x /usr/sbin/nft ] || need+=(nftables)
command -v tc >/dev/null || [ -x /usr/sbin/tc ] || need+=(iproute2)
if [ ${#need[@]} -gt 0 ]; then
    sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo apt-get install -y -q "${need[@]}" >/dev/null \
        || { $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q "${need[@]}" >/dev/null; }
fi

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet
cargo test --workspace
# Features off by default, with tests of their own.
cargo test --quiet --features opentelemetry --test trace_context
# Fuzz targets are compiled (not run) so they cannot rot.
cargo check --quiet --manifest-path fuzz/Cargo.toml
echo "all tests passed"
