#!/usr/bin/env bash
# Installs the Debian 12 packages that damselfly's build, tests and demo need.
# Idempotent: when every package is present it only checks and returns (well under a second).
set -euo pipefail

PACKAGES=(
    build-essential cmake ninja-build pkg-config
    libevent-dev libcurl4-openssl-dev libssl-dev libsqlite3-dev libyaml-dev libjansson-dev
    libgrpc-dev libprotobuf-c-dev protobuf-c-compiler protobuf-compiler
    libcmocka-dev
    # fuzz/ (scripts/fuzz.sh): libFuzzer and its sanitizer runtimes come with clang
    clang
    # the manager: PostgreSQL client library, argon2id; a PostgreSQL server for its tests
    libpq-dev libargon2-dev postgresql
    python3 python3-pytest python3-pytest-xdist python3-grpcio python3-grpc-tools python3-protobuf
    curl iproute2 procps
    # bench/: nginx (origin), aria2c + opentracker + mktorrent (the BitTorrent scenario)
    nginx aria2 opentracker mktorrent
    # the proxy's tests: a real registry, pull clients, htpasswd, test certificates
    docker-registry skopeo containerd apache2-utils python3-cryptography
)

missing=()
for p in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$p")
    fi
done

if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: missing packages: ${missing[*]}" >&2
    echo "install-deps: run as root (or install them with apt-get) and try again" >&2
    exit 1
fi

echo "install-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install-deps: done" >&2
