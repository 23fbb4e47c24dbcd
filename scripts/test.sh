#!/usr/bin/env bash
# Runs every test SurgeMQ has: formatting, lints, unit/property/integration tests, and the
# interop tests against Mosquitto's command-line clients and paho-mqtt. Installs what the tests
# need (Debian and PyPI packages) when it is missing, so it works on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n== %s\n' "$*"; }

apt_updated=0
need_deb() { # need_deb COMMAND PACKAGE
  command -v "$1" >/dev/null 2>&1 && return 0
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  if [ "$apt_updated" -eq 0 ]; then
    log "apt-get update"
    $sudo apt-get update -qq
    apt_updated=1
  fi
  log "installing Debian package $2 (for $1)"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$2" >/dev/null
}

need_py() { # need_py MODULE PACKAGE DEBIAN_PACKAGE
  python3 -c "import $1" >/dev/null 2>&1 && return 0
  log "installing PyPI package $2"
  # A Debian-managed Python refuses plain pip installs (PEP 668): then try the flag that
  # allows it, then Debian's own package.
  python3 -m pip install -q "$2" 2>/dev/null ||
    python3 -m pip install -q --break-system-packages "$2" 2>/dev/null || {
      command -v pip3 >/dev/null 2>&1 || need_deb pip3 python3-pip
      python3 -m pip install -q --break-system-packages "$2" 2>/dev/null
    } || need_deb_pkg "$3"
  python3 -c "import $1" || { echo "cannot install $2" >&2; exit 1; }
}

need_deb_pkg() { # need_deb_pkg PACKAGE
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  [ "$apt_updated" -eq 1 ] || { $sudo apt-get update -qq; apt_updated=1; }
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$1" >/dev/null
}

need_deb mosquitto_pub mosquitto-clients
need_deb mosquitto mosquitto
need_deb openssl openssl
need_deb nats-server nats-server
need_deb ip iproute2
need_py paho.mqtt "paho-mqtt>=2,<3" python3-paho-mqtt

log "cargo fmt --check"
cargo fmt --all -- --check

log "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets -- -D warnings

log "cargo test"
cargo test --all-targets
cargo test --doc

if [ -x scripts/interop.sh ]; then
  log "interop (mosquitto clients, paho-mqtt)"
  scripts/interop.sh
fi

if [ -x scripts/interop-v5.sh ]; then
  log "MQTT 5 interop (paho-mqtt MQTTv5, mosquitto clients -V 5)"
  scripts/interop-v5.sh
fi

if [ -x scripts/interop-shared.sh ]; then
  log "shared subscriptions interop (paho-mqtt 3.1.1 and MQTTv5, mosquitto clients)"
  scripts/interop-shared.sh
fi

if [ -x scripts/interop-tls.sh ]; then
  log "interop over TLS and WebSockets (mosquitto clients, paho-mqtt)"
  scripts/interop-tls.sh
fi

if [ -x scripts/interop-bridge.sh ]; then
  log "bridge interop (Mosquitto as the remote broker, mosquitto clients, mosquitto.conf and TOML)"
  scripts/interop-bridge.sh
fi

if [ -x scripts/interop-cluster-netns.sh ]; then
  log "cluster on three hosts (network namespaces, nats-server, mosquitto clients)"
  scripts/interop-cluster-netns.sh
fi

if [ -x scripts/metrics-test.sh ]; then
  log "metrics endpoint (promtool, a real Prometheus, the live page in headless Chromium)"
  scripts/metrics-test.sh
fi

if [ -x scripts/crash-test.sh ]; then
  log "crash test (--data-dir, five kill -9s, paho)"
  scripts/crash-test.sh
fi

if [ -x scripts/browser-test.sh ]; then
  log "browser test (MQTT.js in headless Chromium, ws:// and wss://)"
  scripts/browser-test.sh
fi

log "all tests passed"
