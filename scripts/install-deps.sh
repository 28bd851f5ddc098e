#!/usr/bin/env bash
# Installs what the build needs from Debian's packages when it is missing.
# Idempotent and quiet when everything is present.
set -euo pipefail
need=()
command -v cmake >/dev/null || need+=(cmake)
command -v cc >/dev/null || need+=(gcc)
command -v make >/dev/null || need+=(make)
command -v pkg-config >/dev/null || need+=(pkg-config)
pkg-config --exists libpcre2-8 2>/dev/null || need+=(libpcre2-dev)
command -v objdump >/dev/null && command -v readelf >/dev/null && command -v nm >/dev/null || need+=(binutils)
command -v python3 >/dev/null || need+=(python3)
echo 'int main(void){return 0;}' | cc -fopenmp -x c - -o /dev/null 2>/dev/null || need+=(libgomp1)
# `longattn eval` draws its heatmaps as PNG with gnuplot (CSV without it).
command -v gnuplot >/dev/null || need+=(gnuplot-nox)
[ ${#need[@]} -eq 0 ] && exit 0
echo "install-deps: installing ${need[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null; then SUDO=sudo; else
    echo "install-deps: need root (or sudo) to apt-get install ${need[*]}; install them and rerun" >&2
    exit 1
  fi
fi
if ! command -v apt-get >/dev/null; then
  echo "install-deps: no apt-get here; install ${need[*]} with your package manager" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq "${need[@]}" >/dev/null
