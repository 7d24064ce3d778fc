#!/usr/bin/env bash
# Installs the Debian/Ubuntu packages the build and the fixtures need, when missing.
# Sourced by scripts/test.sh and scripts/demo.sh.
#   clang, libelf-dev, zlib1g-dev, pkg-config: the BPF program and libbpf
#   gcc, g++, libc6-dev (static libc), libjemalloc-dev, libgoogle-perftools-dev (tcmalloc),
#   libmimalloc-dev, make (tikv-jemallocator builds jemalloc), musl-tools (musl-gcc: the
#   fixture on musl, Alpine's libc): the fixture programs
#   (callers add more, e.g. chromium for the browser tests)
deps_install() {
    local packages=(clang libelf-dev zlib1g-dev pkg-config gcc g++ libc6-dev libjemalloc-dev
        libgoogle-perftools-dev libmimalloc-dev make musl-tools "$@")
    local missing=() p sudo=""
    for p in "${packages[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if ((${#missing[@]})); then
        echo "installing ${missing[*]}" >&2
        [[ $(id -u) -eq 0 ]] || sudo="sudo"
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
}
