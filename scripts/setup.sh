#!/usr/bin/env bash
# Prepares a Debian 12 machine to build and test xnlb. Idempotent: on a
# machine already set up it only checks, in a second or two.
#
# Installs: Debian's rustc-web + rust-web-src (rustc 1.96 with LLVM 22 and
# its std source, to build `core` for bpfel-unknown-none), LLVM 22 for
# bpf-linker, the network tools the tests use, binutils (objcopy) and man-db
# for `cargo xtask package` and its test, nginx and wrk (the real HTTP server
# and load generator of tests/tests/http_load.rs, which start their own nginx
# per node namespace: the system nginx service is never started), bird2
# (BIRD 2, the routing daemon the routed-mode test runs in its namespaces),
# and bpf-linker itself. Mounts the BPF filesystem if nothing has.
set -euo pipefail

log() { printf 'setup: %s\n' "$*" >&2; }
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

PKGS=(
  rustc-web rust-web-src llvm-22-dev libpolly-22-dev libzstd-dev clang-22
  bpftool iproute2 nftables iptables iputils-ping ethtool procps netsniff-ng
  binutils man-db nginx wrk bird2
)
BPF_LINKER_VERSION=0.13.0

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if [ "${#missing[@]}" -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -qq
  # No service may start while packages install (nginx's would listen on
  # port 80 of the host): a policy-rc.d that refuses, unless one is there.
  policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    policy=/usr/sbin/policy-rc.d
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
    $SUDO chmod 755 "$policy"
  fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  if [ -n "$policy" ]; then $SUDO rm -f "$policy"; fi
else
  log "Debian packages present"
fi

# The tests run nginx by hand; the system service stays off (stopped and
# disabled if the package started or enabled it anyway).
if [ -d /run/systemd/system ] && systemctl is-enabled --quiet nginx 2>/dev/null; then
  log "disabling the system nginx service (the tests start their own)"
  $SUDO systemctl disable --now --quiet nginx
fi
if [ -s /run/nginx.pid ] && pid="$(cat /run/nginx.pid)" && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = nginx ]; then
  log "stopping the system nginx (pid $pid; the tests start their own)"
  $SUDO kill -QUIT "$pid"
fi

# bird2's package starts and enables a system-wide bird with /etc/bird/bird.conf.
# The tests start their own bird processes (own config, control socket and pid
# file, inside their namespaces) and must not share the host with one, so the
# packaged service is stopped and masked; on a host without systemd its
# init script's daemon is stopped by its pid file.
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
  if [ "$(systemctl is-enabled bird.service 2>/dev/null || true)" != masked ]; then
    log "stopping and masking the packaged bird.service"
    $SUDO systemctl disable --now bird.service >/dev/null 2>&1 || true
    $SUDO systemctl mask bird.service >/dev/null
  fi
else
  if [ -f /run/bird/bird.pid ] && kill -0 "$(cat /run/bird/bird.pid)" 2>/dev/null; then
    log "stopping the packaged bird daemon"
    $SUDO kill "$(cat /run/bird/bird.pid)"
  fi
  if ls /etc/rc[2-5].d/S*bird >/dev/null 2>&1; then
    log "disabling the packaged bird init script"
    $SUDO update-rc.d bird disable >/dev/null 2>&1 || true
  fi
fi

if ! command -v cargo >/dev/null 2>&1; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  else
    log "cargo not found: install a Rust toolchain (rustup, stable >= 1.85) first"
    exit 1
  fi
fi

linker="$HOME/.cargo/bin/bpf-linker"
if [ -x "$linker" ] && "$linker" --version 2>/dev/null | grep -q "$BPF_LINKER_VERSION"; then
  log "bpf-linker $BPF_LINKER_VERSION present"
else
  log "building bpf-linker $BPF_LINKER_VERSION against LLVM 22 (about a minute)"
  LLVM_PREFIX=/usr/lib/llvm-22 PATH="/usr/lib/llvm-22/bin:$PATH" \
    cargo install --quiet --locked "bpf-linker@$BPF_LINKER_VERSION" \
    --no-default-features --features llvm-22
fi

if ! mount | grep -q "on /sys/fs/bpf type bpf"; then
  log "mounting the BPF filesystem on /sys/fs/bpf"
  $SUDO mount -t bpf bpf /sys/fs/bpf
fi
log "ready"
