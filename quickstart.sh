#!/usr/bin/env bash
# NovaCron quick start.
#   ./quickstart.sh        install what is missing, build, start novacrond and boot a demo guest
#   ./quickstart.sh test   install what is missing, then run the whole test suite
# Debian/Ubuntu. Installing packages needs root (sudo is used when not root).
set -euo pipefail
cd "$(dirname "$0")"

# Runtime and test needs: QEMU with SeaBIOS, what the test-guest builder uses (apt-get download,
# dpkg -x, cpio), python3 for the benchmark baselines, a C compiler for crates that build C;
# Go and govmomi to build vcsim (the vSphere simulator) for the remote-driver tests;
# debootstrap and systemd-nspawn for the test that runs the units under a real systemd.
PACKAGES=(qemu-system-x86 qemu-utils qemu-block-extra ovmf cpio gzip python3 python3-pip curl ca-certificates openssl gcc libc6-dev pkg-config systemd dbus libglib2.0-bin golang-go golang-github-vmware-govmomi-dev debootstrap systemd-container)
# The web dashboard: npm fetches its two libraries (daemon/ui/package-lock.json); its test drives
# headless Chromium through chromedriver.
PACKAGES+=(chromium chromium-driver)
# Taps: iproute2's tc applies <bandwidth>; the tests inspect links with ip.
PACKAGES+=(iproute2)
# Virtual networks: dnsmasq (DHCP/DNS per network), nft (our own table per network); the tests'
# DHCP client and ping in network namespaces are busybox's; the quick start tells you to ping the demo guest.
PACKAGES+=(dnsmasq-base nftables busybox iputils-ping)
# Remote-driver test peers and the vendors' own Python clients the benchmarks compare against:
# fakepve (Proxmox VE fake, run as an outside process), pyspnego (NTLM server side for the WinRM
# test peer), pyvmomi and proxmoxer (reference clients), openapi-spec-validator (checks daemon/openapi.json).
PIP_PACKAGES=(fakepve==0.5.0 pyspnego==0.12.4 pyvmomi==9.1.1.0 proxmoxer==2.3.0 requests openapi-spec-validator==0.9.0)
PIP_MODULES=(fakepve spnego pyVmomi proxmoxer requests openapi_spec_validator)

as_root() {
    if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi
}

# The unprivileged user a root novacrond runs QEMU as (qemu_user's default; see
# systemd/novacron.sysusers.conf), in the kvm group (created when missing). Idempotent.
ensure_qemu_user() {
    getent group kvm >/dev/null || as_root groupadd --system kvm
    if ! getent passwd novacron-qemu >/dev/null; then
        echo "quickstart: creating the system user novacron-qemu (QEMU runs as it)"
        as_root useradd --system --user-group --groups kvm --no-create-home \
            --home-dir /nonexistent --shell /usr/sbin/nologin --comment "NovaCron QEMU guests" \
            novacron-qemu
    fi
    id -nG novacron-qemu | grep -qw kvm || as_root usermod --append --groups kvm novacron-qemu
}

missing_packages() {
    local p
    for p in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || echo "$p"
    done
    command -v npm >/dev/null || echo npm
}

install_missing() {
    local missing pass
    # Two passes: installing one package can remove another of the list (Debian's QEMU 7.2
    # removes a newer backported qemu-utils it conflicts with), which the second puts back.
    for pass in 1 2; do
        mapfile -t missing < <(missing_packages)
        [[ ${#missing[@]} -gt 0 ]] || break
        echo "quickstart: installing ${missing[*]}"
        [[ $pass == 1 ]] && as_root apt-get update -q
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
    done
    if ! python3 -c "import $(IFS=,; echo "${PIP_MODULES[*]}")" 2>/dev/null; then
        echo "quickstart: installing Python packages ${PIP_PACKAGES[*]}"
        python3 -m pip install -q --disable-pip-version-check "${PIP_PACKAGES[@]}" 2>/dev/null \
            || python3 -m pip install -q --disable-pip-version-check --break-system-packages "${PIP_PACKAGES[@]}"
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

# What only the test run needs: cargo-fuzz (built from crates.io once per machine, into
# ~/.cargo/bin) and promtool. promtool is unpacked alone from Debian's prometheus package into
# the test cache: installing the package would add 96 MB and, under systemd, start a
# Prometheus server that nothing here uses.
CARGO_FUZZ_VERSION=0.13.2
install_test_tools() {
    if ! cargo fuzz --version 2>/dev/null | grep -qx "cargo-fuzz $CARGO_FUZZ_VERSION"; then
        echo "quickstart: installing cargo-fuzz $CARGO_FUZZ_VERSION"
        cargo install --locked --quiet "cargo-fuzz@$CARGO_FUZZ_VERSION"
    fi
    local promtool_dir=${NOVACRON_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/novacron}/promtool
    if ! command -v promtool >/dev/null && [[ ! -x $promtool_dir/usr/bin/promtool ]]; then
        echo "quickstart: unpacking promtool (Debian package prometheus) into $promtool_dir"
        local tmp
        tmp=$(mktemp -d)
        # apt's download sandbox user cannot write to a private temp directory as root.
        local sandbox=()
        [[ $(id -u) -eq 0 ]] && sandbox=(-o APT::Sandbox::User=root)
        if ! (cd "$tmp" && apt-get download -q "${sandbox[@]}" prometheus); then
            as_root apt-get update -q
            (cd "$tmp" && apt-get download -q "${sandbox[@]}" prometheus)
        fi
        rm -rf "$promtool_dir.new" && mkdir -p "$promtool_dir.new"
        dpkg-deb --fsys-tarfile "$tmp"/prometheus_*.deb | tar -x -C "$promtool_dir.new" ./usr/bin/promtool
        rm -rf "$tmp" "$promtool_dir" && mv "$promtool_dir.new" "$promtool_dir"
    fi
}

# Every fuzz target is built (the fuzz crate is outside the workspace, so nothing else would
# notice it no longer compiles) and run briefly from the committed seeds (fuzz/seeds/<target>)
# plus what earlier local runs found (fuzz/corpus/<target>, not committed): a crash fails the
# run, its reproducer is in fuzz/artifacts/<target>/. --dev (opt-level 1, fuzz/Cargo.toml)
# builds faster than the default release build; long runs are the README's.
run_fuzz_smoke() {
    local seconds=${NOVACRON_FUZZ_SECONDS:-5}
    RUSTC_BOOTSTRAP=1 cargo fuzz build --dev
    local target
    for target in $(cargo fuzz list); do
        echo "-- fuzz $target, ${seconds}s"
        mkdir -p "fuzz/corpus/$target"
        RUSTC_BOOTSTRAP=1 cargo fuzz run --dev "$target" "$PWD/fuzz/corpus/$target" "$PWD/fuzz/seeds/$target" -- \
            -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 2>&1 \
            | { grep -v -E '^#[0-9]+[[:space:]]+(NEW|REDUCE|pulse)' || true; } \
            || { echo "fuzz: $target failed; the reproducer is in fuzz/artifacts/$target/" >&2; return 1; }
    done
    # CI is a fresh machine with a tight disk: the fuzz build is not needed by the test build.
    if [[ ${CI:-} == true ]]; then rm -rf fuzz/target; fi
}

run_tests() {
    # A one-shot build gains nothing from incremental caches, which would double the target dir.
    export CARGO_INCREMENTAL=0
    # The systemd container test boots a debootstrapped Debian, built once per machine:
    # on a fresh one it downloads while fmt and clippy run (the test waits for it).
    if [[ $(id -u) -eq 0 ]]; then
        bash tests/nspawn/build-rootfs.sh >"${TMPDIR:-/tmp}/novacron-rootfs.log" 2>&1 &
    fi
    echo "== disk free where the build goes"
    df -h . | tail -1
    echo "== dashboard libraries (npm ci)"
    build_ui
    echo "== cargo fmt --check"
    cargo fmt --all -- --check
    echo "== cargo clippy"
    cargo clippy --workspace --all-targets --locked -- -D warnings
    echo "== fuzz targets"
    run_fuzz_smoke
    echo "== cargo test"
    cargo test --workspace --locked --no-fail-fast
}

# The dashboard's libraries (xterm.js, noVNC) at the versions package-lock.json pins, from the
# npm registry; daemon/build.rs embeds them into novacrond, so this runs before cargo builds.
build_ui() {
    (cd daemon/ui && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
}

# The dashboard needs the TCP listener: a config with 127.0.0.1:8640 and a generated token
# (kept 0600 beside it) for the daemon the demo starts. Prints the config's path.
DASHBOARD_ADDR=127.0.0.1:8640
dashboard_config() {
    local dir=${XDG_CONFIG_HOME:-$HOME/.config}/novacron
    mkdir -p "$dir"
    if [[ ! -s $dir/dashboard-token ]]; then
        (umask 077 && openssl rand -hex 24 >"$dir/dashboard-token")
    fi
    local sha
    sha=$(tr -d '\n' <"$dir/dashboard-token" | sha256sum | cut -d' ' -f1)
    printf '[api]\nlisten = "%s"\n[[api.tokens]]\nname = "dashboard"\nsha256 = "%s"\nrole = "operator"\n' \
        "$DASHBOARD_ADDR" "$sha" >"$dir/quickstart.toml"
    echo "$dir/quickstart.toml"
}

# The main job: novacrond running, a demo guest booted through novactl.
run_demo() {
    build_ui
    cargo build --release --locked -p novacrond -p novacron-tests --bins
    local bin=target/release novactl=target/release/novactl
    local log_dir
    if [[ $(id -u) -eq 0 ]]; then log_dir=/var/log/novacron
    else log_dir=${XDG_STATE_HOME:-$HOME/.local/state}/novacron/logs; fi
    if ! $novactl host >/dev/null 2>&1; then
        local daemon_log=${TMPDIR:-/tmp}/novacrond-$(id -u).log
        echo "quickstart: starting novacrond (log: $daemon_log)"
        nohup "$bin/novacrond" --config "$(dashboard_config)" >"$daemon_log" 2>&1 &
        for _ in $(seq 100); do $novactl host >/dev/null 2>&1 && break; sleep 0.1; done
        $novactl host >/dev/null || { cat "$daemon_log"; exit 1; }
    fi
    echo "quickstart: preparing the demo guest (built once per machine; the accelerator is probed)"
    local xml=${TMPDIR:-/tmp}/novacron-demo.xml
    "$bin/novacron-demo-guest" demo >"$xml"
    # Its data disk: a volume in the default pool, made once (vdb in the guest).
    $novactl vol-info demo-data.qcow2 >/dev/null 2>&1 ||
        $novactl vol-create-as default demo-data.qcow2 1G --format qcow2 >/dev/null
    local data
    data=$($novactl --json vol-info demo-data.qcow2 | python3 -c 'import json,sys; print(json.load(sys.stdin)["path"])')
    sed -i "s#</devices>#  <disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='$data'/><target dev='vdb' bus='virtio'/></disk>\n  </devices>#" "$xml"
    # The demo guest sits on the default NAT network (defined by novacrond at its first start)
    # and asks for a lease with udhcpc.
    $novactl --json net-info default 2>/dev/null | grep -q '"active":true' || $novactl net-start default
    $novactl net-autostart default >/dev/null
    python3 - "$xml" <<'PY'
import sys
p = sys.argv[1]
x = open(p).read()
if "source network=" not in x:
    x = x.replace("</cmdline>", " novacron.dhcp=1</cmdline>", 1)
    x = x.replace("</devices>", "  <interface type='network'><source network='default'/><model type='virtio'/></interface>\n  </devices>", 1)
open(p, "w").write(x)
PY
    $novactl define -f "$xml" >/dev/null
    if [[ $($novactl --json info demo | python3 -c 'import json,sys; print(json.load(sys.stdin)["state"])') != running ]]; then
        $novactl start demo
    fi
    echo "quickstart: waiting for the guest's ready line on its serial console"
    for _ in $(seq 600); do
        grep -q NOVACRON-TEST-GUEST-READY "$log_dir/serial/demo.log" 2>/dev/null && break
        sleep 0.1
    done
    grep -q NOVACRON-TEST-GUEST-READY "$log_dir/serial/demo.log" || { echo "the demo guest did not boot; see $log_dir/qemu/demo.log"; exit 1; }
    echo
    $novactl list --all
    local mac ip=""
    mac=$($novactl dumpxml demo | python3 -c 'import re,sys; m=re.search(r"<interface type=.network.>.*?<mac address=.([0-9a-f:]+).", sys.stdin.read(), re.S); print(m.group(1) if m else "")')
    echo "quickstart: waiting for the demo guest's DHCP lease on the default network"
    for _ in $(seq 240); do
        ip=$($novactl --json net-dhcp-leases default | python3 -c 'import json,sys; m=sys.argv[1]; print(next((l["ip"] for l in json.load(sys.stdin)["leases"] if l["mac"]==m), ""))' "$mac")
        [[ -n $ip ]] && break
        sleep 0.5
    done
    if [[ -n $ip ]]; then
        echo "quickstart: the demo guest has $ip on the default network; try: ping -c 3 $ip"
    else
        echo "quickstart: the demo guest has no lease yet; see: $novactl net-dhcp-leases default"
    fi
    cat <<NEXT

The demo guest is running. Try:
  $novactl info demo                 # status and settings
  $novactl vol-list                  # the default pool's volumes (demo-data.qcow2 is vdb)
  $novactl events                    # follow events (in another terminal)
  $novactl suspend demo; $novactl resume demo
  $novactl qmp demo query-status     # raw QMP (root only)
  tail -f $log_dir/serial/demo.log   # the guest's console (a heartbeat a second)
  $novactl shutdown demo             # ACPI power-off; the guest powers itself off
  $novactl undefine demo             # remove the definition
  $novactl net-list; $novactl net-dhcp-leases default   # virtual networks and leases
novacrond keeps running in the background; stop it with: pkill -TERM novacrond (guests keep running).
NEXT
    local token_file=${XDG_CONFIG_HOME:-$HOME/.config}/novacron/dashboard-token
    if curl -fsS -o /dev/null "http://$DASHBOARD_ADDR/ui/" 2>/dev/null; then
        echo "Dashboard: http://$DASHBOARD_ADDR/ui/  token: $(cat "$token_file") (also in $token_file)"
    else
        echo "Dashboard: this novacrond was started without the quick start's config (no TCP listener); restart it to get http://$DASHBOARD_ADDR/ui/"
    fi
}

install_missing
ensure_qemu_user
case "${1:-demo}" in
    demo) run_demo ;;
    test) install_test_tools; run_tests ;;
    *) echo "usage: $0 [demo|test]" >&2; exit 2 ;;
esac
