#!/usr/bin/env bash
# Installs the Debian packages the Rust build needs (rdkafka builds librdkafka from source with
# OpenSSL and zlib; the patched Tansu build applies its patch with patch; infra/local-stack.sh asks
# moto whether it runs with curl). A fresh machine of our kind has them already; this only fills gaps.
set -euo pipefail

needed=(build-essential perl pkg-config libssl-dev zlib1g-dev curl patch)
missing=()
for pkg in "${needed[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi
command -v cargo >/dev/null || { echo "cargo is missing: install Rust from rustup first" >&2; exit 1; }
