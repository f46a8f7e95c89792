#!/usr/bin/env bash
# NovaCron quick start.
#   ./quickstart.sh        install what is missing, build, run the main job (the demo)
#   ./quickstart.sh test   install what is missing, then run the whole test suite
# Debian/Ubuntu. Installing packages needs root (sudo is used when not root).
set -euo pipefail
cd "$(dirname "$0")"

# Runtime and test needs: QEMU with SeaBIOS, what the test-guest builder uses (apt-get download,
# dpkg -x, cpio), python3 for the benchmark baselines, a C compiler for crates that build C.
PACKAGES=(qemu-system-x86 qemu-utils cpio gzip python3 curl ca-certificates gcc libc6-dev pkg-config)

as_root() {
    if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi
}

install_missing() {
    local missing=()
    for p in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if [[ ${#missing[@]} -gt 0 ]]; then
        echo "quickstart: installing ${missing[*]}"
        as_root apt-get update -q
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
    fi
    if ! command -v cargo >/dev/null; then
        [[ -x "$HOME/.cargo/bin/cargo" ]] && export PATH="$HOME/.cargo/bin:$PATH"
    fi
    if ! command -v cargo >/dev/null; then
        echo "quickstart: no Rust toolchain; installing one with rustup" >&2
        curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal -c clippy,rustfmt
        export PATH="$HOME/.cargo/bin:$PATH"
    fi
}

run_tests() {
    echo "== cargo fmt --check"
    cargo fmt --all -- --check
    echo "== cargo clippy"
    cargo clippy --workspace --all-targets --locked -- -D warnings
    echo "== cargo test"
    cargo test --workspace --locked
}

install_missing
case "${1:-demo}" in
    demo) cargo run --release --locked -p novacron-tests --bin novacron-demo ;;
    test) run_tests ;;
    *) echo "usage: $0 [demo|test]" >&2; exit 2 ;;
esac
