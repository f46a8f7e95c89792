//! Per-NIC bandwidth limits (tc) and the clean-traffic filter (our nftables table per tap),
//! on a real kernel, in network namespaces the test makes and removes (names `q<pid>...`):
//! - the daemon's own tc and nft code, run inside a namespace on a veth port of a bridge
//!   standing in for a guest's tap (frames "from the guest" are sent on the veth's peer, in
//!   a second namespace, by python3 raw sockets, ping and udhcpc): transfers are throttled,
//!   spoofed frames dropped and counted while clean traffic passes, DHCP-learned addresses
//!   let through;
//! - a real novacrond in a namespace starting an OS-less guest whose NIC asks for both: the
//!   qdiscs and the table are on its tap before it runs, a kill -9 and restart adopts them
//!   (no duplicate) and sweeps an orphan table, and stopping the guest leaves the ruleset
//!   exactly as before.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::daemon::{curl, Reply};
use common::flood::Transfer;
use common::Env;
use novacron_domain::model::{Bandwidth, BandwidthRate};
use novacrond::host::net::{nic_rules, qos};

fn run(cmd: &str, args: &[&str]) -> Output {
    Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"))
}

fn ok(cmd: &str, args: &[&str]) -> String {
    let out = run(cmd, args);
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn name(suffix: &str) -> String {
    let n = format!("q{}{suffix}", std::process::id());
    assert!(n.len() <= 15, "{n}");
    n
}

/// A network namespace; dropping it kills what runs inside and deletes it.
struct Netns(String);

impl Netns {
    fn new(suffix: &str) -> Netns {
        let name = name(suffix);
        let _ = run("ip", &["netns", "del", &name]);
        ok("ip", &["netns", "add", &name]);
        let ns = Netns(name);
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }
    fn ip(&self, args: &[&str]) -> String {
        let mut a = vec!["-n", self.0.as_str()];
        a.extend_from_slice(args);
        ok("ip", &a)
    }
    fn exec(&self, args: &[&str]) -> Output {
        let mut a = vec!["netns", "exec", self.0.as_str()];
        a.extend_from_slice(args);
        run("ip", &a)
    }
    fn ok(&self, args: &[&str]) -> String {
        let out = self.exec(args);
        assert!(
            out.status.success(),
            "{args:?} in {}: {}{}",
            self.0,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
    fn spawn(&self, args: &[&str]) -> Child {
        Command::new("ip")
            .args(["netns", "exec", &self.0])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }
    /// Runs `f` on a thread that entered this namespace: the daemon's tc/nft helpers run
    /// their commands there (a child inherits its thread's namespace).
    fn within<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/run/netns/{}", self.0);
        std::thread::spawn(move || {
            let fd = std::fs::File::open(&path).unwrap();
            nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            f()
        })
        .join()
        .unwrap()
    }
    fn ruleset(&self) -> String {
        self.ok(&["nft", "list", "ruleset"])
    }
    /// `(rx_bytes, tx_bytes)` of a link.
    fn bytes(&self, dev: &str) -> (u64, u64) {
        let v: serde_json::Value =
            serde_json::from_str(&self.ip(&["-j", "-s", "link", "show", "dev", dev])).unwrap();
        let s = &v[0]["stats64"];
        (
            s["rx"]["bytes"].as_u64().unwrap(),
            s["tx"]["bytes"].as_u64().unwrap(),
        )
    }
    /// ICMP echo requests this namespace's stack received (`/proc/net/snmp` Icmp InEchos).
    fn in_echos(&self) -> u64 {
        let snmp = self.ok(&["cat", "/proc/net/snmp"]);
        let mut icmp = snmp.lines().filter(|l| l.starts_with("Icmp: "));
        let (head, vals) = (icmp.next().unwrap(), icmp.next().unwrap());
        let i = head
            .split_whitespace()
            .position(|h| h == "InEchos")
            .unwrap();
        vals.split_whitespace().nth(i).unwrap().parse().unwrap()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let pids = run("ip", &["netns", "pids", &self.0]);
        for pid in String::from_utf8_lossy(&pids.stdout).split_whitespace() {
            let _ = run("kill", &["-9", pid]);
        }
        let _ = run("ip", &["netns", "del", &self.0]);
    }
}

const GUEST_MAC: &str = "52:54:00:77:00:05";
const GUEST_IP: &str = "10.77.0.5";
const HOST_IP: &str = "10.77.0.1";

/// The host namespace (a bridge `qbr` with 10.77.0.1/24 and the port `qtap`, the stand-in for
/// a guest's tap) and the guest namespace (`qgst`, the peer, with the guest's MAC).
struct Lab {
    host: Netns,
    guest: Netns,
}

impl Lab {
    fn new(tag: &str, guest_ip: bool) -> Lab {
        let host = Netns::new(&format!("{tag}h"));
        let guest = Netns::new(&format!("{tag}g"));
        host.ip(&["link", "add", "qbr", "type", "bridge"]);
        host.ip(&["addr", "add", "10.77.0.1/24", "dev", "qbr"]);
        host.ip(&["link", "set", "qbr", "up"]);
        host.ip(&[
            "link", "add", "qtap", "type", "veth", "peer", "name", "qgst", "netns", &guest.0,
        ]);
        host.ip(&["link", "set", "qtap", "master", "qbr", "up"]);
        // No IPv6 chatter from the guest side: the other_l2 counter counts only our frames.
        guest.ok(&["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"]);
        guest.ok(&["sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"]);
        guest.ip(&["link", "set", "qgst", "address", GUEST_MAC]);
        if guest_ip {
            guest.ip(&["addr", "add", "10.77.0.5/24", "dev", "qgst"]);
        }
        guest.ip(&["link", "set", "qgst", "up"]);
        Lab { host, guest }
    }
    fn br_mac(&self) -> String {
        let v: serde_json::Value =
            serde_json::from_str(&self.host.ip(&["-j", "link", "show", "dev", "qbr"])).unwrap();
        v[0]["address"].as_str().unwrap().to_owned()
    }
    /// Sends `count` raw frames from the guest side: an ICMP echo request to the host (or,
    /// with `kind` "arp", an ARP request; "ipv6", an IPv6 frame) with the given sources.
    fn send(&self, kind: &str, src_mac: &str, src_ip: &str, count: u32) {
        self.guest.ok(&[
            "python3",
            "-c",
            RAW_SENDER,
            kind,
            src_mac,
            src_ip,
            &self.br_mac(),
            HOST_IP,
            &count.to_string(),
        ]);
    }
    fn drops(&self) -> std::collections::BTreeMap<String, u64> {
        self.host
            .within(|| nic_rules::drops("qtap").unwrap())
            .into_iter()
            .collect()
    }
    fn ping(&self) -> bool {
        self.guest
            .exec(&["busybox", "ping", "-c", "1", "-W", "2", HOST_IP])
            .status
            .success()
    }
}

/// Builds and sends Ethernet frames on `qgst` with an AF_PACKET socket.
const RAW_SENDER: &str = r#"
import socket, struct, sys
kind, smac, sip, dmac, dip, count = sys.argv[1:7]
mac = lambda m: bytes(int(x, 16) for x in m.split(':'))
ip4 = socket.inet_aton
def csum(b):
    if len(b) % 2: b += b'\0'
    s = sum(struct.unpack('!%dH' % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xffff); s += s >> 16
    return ~s & 0xffff
if kind == 'icmp':
    icmp = struct.pack('!BBHHH', 8, 0, 0, 0x77, 1) + b'novacron' * 4
    icmp = icmp[:2] + struct.pack('!H', csum(icmp)) + icmp[4:]
    hdr = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + len(icmp), 1, 0, 64, 1, 0, ip4(sip), ip4(dip))
    hdr = hdr[:10] + struct.pack('!H', csum(hdr)) + hdr[12:]
    frame = mac(dmac) + mac(smac) + b'\x08\x00' + hdr + icmp
elif kind == 'arp':
    arp = struct.pack('!HHBBH6s4s6s4s', 1, 0x0800, 6, 4, 1, mac(smac), ip4(sip), b'\0' * 6, ip4(dip))
    frame = b'\xff' * 6 + mac(smac) + b'\x08\x06' + arp
else:
    frame = mac(dmac) + mac(smac) + b'\x86\xdd' + b'\x60' + b'\0' * 53
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("qgst", 0))
for _ in range(int(count)):
    s.send(frame)
"#;

#[test]
fn spoofed_frames_are_dropped_and_counted_while_clean_traffic_passes() {
    let lab = Lab::new("s", true);
    let outside = lab.host.ruleset();
    let mac: [u8; 6] = [0x52, 0x54, 0x00, 0x77, 0x00, 0x05];
    lab.host.within(move || {
        let rules = nic_rules::ruleset(&nic_rules::NicRules {
            ifname: "qtap",
            mac,
            clean_traffic: Some(&[GUEST_IP.parse().unwrap()]),
            outbound: None,
        });
        nic_rules::apply(&rules, "qtap").unwrap();
        // Applying again replaces, never duplicates.
        nic_rules::apply(&rules, "qtap").unwrap();
    });
    let tables = lab.host.ok(&["nft", "list", "tables"]);
    assert_eq!(
        tables.matches("table bridge novacron-nic-qtap").count(),
        1,
        "{tables}"
    );

    // The guest's own traffic passes: ARP resolution and ping, and a crafted clean echo.
    assert!(lab.ping(), "clean traffic was dropped: {:?}", lab.drops());
    let echos = lab.host.in_echos();
    lab.send("icmp", GUEST_MAC, GUEST_IP, 3);
    assert_eq!(lab.host.in_echos(), echos + 3, "the clean crafted echo");

    // Spoofed: another source MAC, another source IP, ARP naming another IP, IPv6.
    let before = lab.drops();
    assert!(before.values().all(|v| *v == 0), "{before:?}");
    let echos = lab.host.in_echos();
    lab.send("icmp", "52:54:00:77:00:99", GUEST_IP, 5);
    lab.send("icmp", GUEST_MAC, "10.77.0.66", 7);
    lab.send("arp", GUEST_MAC, "10.77.0.66", 4);
    lab.send("ipv6", GUEST_MAC, GUEST_IP, 6);
    assert_eq!(
        lab.host.in_echos(),
        echos,
        "a spoofed echo reached the host"
    );
    let d = lab.drops();
    assert_eq!(d["mac_spoof"], 5, "{d:?}");
    assert_eq!(d["ip_spoof"], 7, "{d:?}");
    assert_eq!(d["arp_spoof"], 4, "{d:?}");
    assert_eq!(d["other_l2"], 6, "{d:?}");
    // An ARP that lies about the MAC inside the ARP payload only (frame source is right).
    lab.guest.ok(&[
        "python3",
        "-c",
        &RAW_SENDER.replace(
            "mac(smac), ip4(sip), b'\\0' * 6",
            "mac('52:54:00:77:00:98'), ip4(sip), b'\\0' * 6",
        ),
        "arp",
        GUEST_MAC,
        GUEST_IP,
        &lab.br_mac(),
        HOST_IP,
        "2",
    ]);
    assert_eq!(lab.drops()["arp_spoof"], 6);
    assert!(lab.ping(), "clean traffic stopped passing");

    // The guest changes its address by itself: dropped.
    lab.guest.ip(&["addr", "flush", "dev", "qgst"]);
    lab.guest
        .ip(&["addr", "add", "10.77.0.9/24", "dev", "qgst"]);
    assert!(!lab.ping(), "a self-assigned address got through");

    lab.host.within(|| nic_rules::delete("qtap").unwrap());
    assert_eq!(
        lab.host.ruleset(),
        outside,
        "something outside our table changed"
    );
    assert!(lab.ping(), "without the filter the new address passes");
}

#[test]
fn without_ip_parameters_the_address_is_learned_from_the_dhcp_server() {
    let lab = Lab::new("l", false);
    let dir = tempfile::tempdir().unwrap();
    let leases = dir.path().join("leases");
    let mut dnsmasq = lab.host.spawn(&[
        "dnsmasq",
        "--keep-in-foreground",
        "--conf-file=/dev/null",
        "--bind-interfaces",
        "--interface=qbr",
        "--except-interface=lo",
        "--port=0",
        "--dhcp-range=10.77.0.100,10.77.0.120,1h",
        &format!("--dhcp-leasefile={}", leases.display()),
        &format!("--pid-file={}", dir.path().join("pid").display()),
    ]);
    let mac: [u8; 6] = [0x52, 0x54, 0x00, 0x77, 0x00, 0x05];
    lab.host.within(move || {
        let rules = nic_rules::ruleset(&nic_rules::NicRules {
            ifname: "qtap",
            mac,
            clean_traffic: Some(&[]),
            outbound: None,
        });
        nic_rules::apply(&rules, "qtap").unwrap();
    });
    // Before any lease, no address of the guest's choosing passes.
    let echos = lab.host.in_echos();
    lab.send("icmp", GUEST_MAC, "10.77.0.100", 2);
    assert_eq!(lab.host.in_echos(), echos);
    assert_eq!(lab.drops()["ip_spoof"], 2);

    // DHCP from 0.0.0.0 passes; the server's answer teaches the filter the address.
    let got = lab.guest.exec(&[
        "busybox",
        "udhcpc",
        "-i",
        "qgst",
        "-n",
        "-q",
        "-f",
        "-t",
        "10",
        "-T",
        "1",
        "-s",
        "/bin/true",
    ]);
    let _ = dnsmasq.kill();
    let _ = dnsmasq.wait();
    // busybox prints "lease of <ip> obtained" on stdout or stderr depending on its build.
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&got.stdout),
        String::from_utf8_lossy(&got.stderr)
    );
    assert!(got.status.success(), "udhcpc: {out}");
    let lease = out
        .split(|c: char| c.is_whitespace() || c == ',')
        .find(|w| w.starts_with("10.77.0.1") && w.parse::<std::net::Ipv4Addr>().is_ok())
        .unwrap_or_else(|| panic!("no lease in udhcpc output: {out}"))
        .to_owned();
    let set = lab
        .host
        .ok(&["nft", "list", "set", "bridge", "novacron-nic-qtap", "ip4"]);
    assert!(set.contains(&lease), "{lease} not learned: {set}");
    let echos = lab.host.in_echos();
    lab.send("icmp", GUEST_MAC, &lease, 2);
    assert_eq!(
        lab.host.in_echos(),
        echos + 2,
        "the leased address is dropped"
    );
    // Another address is still refused.
    lab.send("icmp", GUEST_MAC, "10.77.0.119", 1);
    assert_eq!(lab.host.in_echos(), echos + 2);
    assert_eq!(lab.drops()["ip_spoof"], 3);
}

/// A 2 s flood from `from` to `dst`; `arrived` is `rx_dev`'s received-bytes delta in `rx_ns`.
fn flood(from: &Netns, dst: &str, rx_ns: &Netns, rx_dev: &str) -> Transfer {
    common::flood::flood(&from.0, dst, || rx_ns.bytes(rx_dev).0)
}

#[test]
fn a_bandwidth_limited_tap_is_throttled_both_ways_and_freed() {
    let lab = Lab::new("b", true);
    assert!(lab.ping());
    // inbound (to the guest) 400 kB/s, burst 32 KiB; outbound (from it) 200 kB/s, burst
    // 16 KiB (the policer's bucket holds at least one second of the rate).
    let bw = Bandwidth {
        inbound: Some(BandwidthRate {
            average: 400,
            peak: None,
            burst: Some(32),
        }),
        outbound: Some(BandwidthRate {
            average: 200,
            peak: None,
            burst: Some(16),
        }),
    };
    let b = bw.clone();
    let mac: [u8; 6] = [0x52, 0x54, 0x00, 0x77, 0x00, 0x05];
    lab.host.within(move || {
        qos::apply("qtap", &b).unwrap();
        let rules = nic_rules::ruleset(&nic_rules::NicRules {
            ifname: "qtap",
            mac,
            clean_traffic: None,
            outbound: b.outbound.as_ref(),
        });
        nic_rules::apply(&rules, "qtap").unwrap();
    });
    assert!(lab.host.within(|| qos::present("qtap").unwrap()));

    // From the guest: policed as the tap hands frames to the bridge.
    let out = flood(&lab.guest, HOST_IP, &lab.host, "qbr");
    out.held("outbound", 200_000.0, 200_000.0, true);
    assert!(lab.drops()["over_limit"] > 0);

    // To the guest: shaped on the tap's egress.
    let inn = flood(&lab.host, GUEST_IP, &lab.guest, "qgst");
    inn.held("inbound", 400_000.0, 32.0 * 1024.0, false);

    // Removed (as at the tap's end, or a live change to no limit): the same floods run free.
    lab.host.within(|| {
        qos::replace("qtap", None).unwrap();
        nic_rules::delete("qtap").unwrap();
    });
    assert!(!lab.host.within(|| qos::present("qtap").unwrap()));
    for (what, t) in [
        ("outbound", flood(&lab.guest, HOST_IP, &lab.host, "qbr")),
        ("inbound", flood(&lab.host, GUEST_IP, &lab.guest, "qgst")),
    ] {
        eprintln!(
            "{what} without limit: arrived {} B in {:.2} s",
            t.arrived, t.sending
        );
        assert!(
            t.arrived as f64 > 4.0 * 400_000.0 * t.window,
            "{what} still throttled after the limit was removed: {} B",
            t.arrived
        );
    }
}

// ---- the daemon ----------------------------------------------------------------------------

/// novacrond run inside `ns`.
struct NsDaemon {
    child: Child,
    socket: PathBuf,
    log: PathBuf,
}

impl NsDaemon {
    fn start(env: &Env, ns: &Netns) -> NsDaemon {
        let config = env.write_config("");
        let log = env.dir.path().join("daemon.log");
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        // `ip netns exec` execs novacrond in place: the child's pid is the daemon's.
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns.0,
                env!("CARGO_BIN_EXE_novacrond"),
                "--config",
            ])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        let socket = env.config.run_dir.join("novacrond.sock");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            assert!(
                Instant::now() < deadline,
                "novacrond did not serve:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        NsDaemon { child, socket, log }
    }
    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for NsDaemon {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn post(socket: &Path, path: &str, xml: Option<&str>) -> Reply {
    match xml {
        Some(x) => curl(
            socket,
            "POST",
            path,
            &["-H", "Content-Type: application/xml", "--data-binary", x],
        ),
        None => curl(socket, "POST", path, &[]),
    }
}

fn osless_xml(name: &str, nics: &str) -> String {
    let ty = match novacron_tests::osless_accel() {
        novacron_tests::Accel::Kvm => "kvm",
        novacron_tests::Accel::Tcg => "qemu",
    };
    format!(
        "<domain type='{ty}'>
           <name>{name}</name>
           <memory unit='MiB'>64</memory>
           <vcpu>1</vcpu>
           <os><type arch='x86_64' machine='q35'>hvm</type></os>
           <features><acpi/></features>
           <devices>{nics}</devices>
         </domain>"
    )
}

/// The links in `ns` that carry the daemon's marker for `domain`.
fn taps_of(ns: &Netns, domain: &str) -> Vec<String> {
    let v: Vec<serde_json::Value> = serde_json::from_str(&ns.ip(&["-j", "link", "show"])).unwrap();
    v.into_iter()
        .filter(|l| l["ifalias"] == format!("novacron:{domain}"))
        .map(|l| l["ifname"].as_str().unwrap().to_owned())
        .collect()
}

fn qdiscs(ns: &Netns, dev: &str) -> Vec<String> {
    let v: Vec<serde_json::Value> =
        serde_json::from_str(&ns.ok(&["tc", "-j", "qdisc", "show", "dev", dev])).unwrap();
    v.into_iter()
        .map(|q| {
            format!(
                "{} {}",
                q["kind"].as_str().unwrap(),
                q["handle"].as_str().unwrap()
            )
        })
        .collect()
}

#[test]
fn the_daemon_puts_limits_and_filter_on_a_guests_tap_and_takes_them_away() {
    let ns = Netns::new("d");
    ns.ip(&["link", "add", "qbr0", "type", "bridge"]);
    ns.ip(&["link", "set", "qbr0", "up"]);
    // A link that is not a guest's, and a filter table naming it: a restart leaves both.
    ns.ip(&["link", "add", "other0", "type", "bridge"]);
    let env = Env::new();
    let mut d = NsDaemon::start(&env, &ns);
    let before = ns.ruleset();

    let nic = "<interface type='bridge'><mac address='52:54:00:77:01:01'/>\
        <source bridge='qbr0'/><model type='virtio'/>\
        <bandwidth><inbound average='1000' peak='2000' burst='64'/>\
        <outbound average='500'/></bandwidth>\
        <filterref filter='clean-traffic'><parameter name='IP' value='10.77.1.5'/></filterref>\
        <port isolated='yes'/></interface>";
    let r = post(&d.socket, "/v1/domains", Some(&osless_xml("qosguest", nic)));
    assert_eq!(r.status, 201, "{}", r.body);
    let xml = curl(&d.socket, "GET", "/v1/domains/qosguest/xml", &[]);
    for want in [
        "<inbound average='1000' peak='2000' burst='64'/>",
        "<outbound average='500'/>",
        "<parameter name='IP' value='10.77.1.5'/>",
        "<port isolated='yes'/>",
    ] {
        assert!(xml.body.contains(want), "{want} not in {}", xml.body);
    }
    let r = post(&d.socket, "/v1/domains/qosguest/start", None);
    assert_eq!(r.status, 200, "{}\n{}", r.body, d.log());
    let taps = taps_of(&ns, "qosguest");
    assert_eq!(taps.len(), 1, "{taps:?}");
    let tap = taps[0].clone();
    let q = qdiscs(&ns, &tap);
    assert!(q.contains(&"htb 1:".to_owned()), "{q:?}");
    let table = format!("novacron-nic-{tap}");
    let rules = ns.ok(&["nft", "list", "table", "bridge", &table]);
    assert!(
        rules.contains("ether saddr != 52:54:00:77:01:01")
            && rules.contains("10.77.1.5")
            && rules.contains(&format!("iifname != \"{tap}\""))
            && rules.contains("limit rate over 500000 bytes/second"),
        "{rules}"
    );
    let port: serde_json::Value =
        serde_json::from_str(&ns.ok(&["bridge", "-j", "-d", "link", "show", "dev", &tap])).unwrap();
    assert_eq!(port[0]["isolated"], true, "{port}");

    // A hot-added NIC with virsh's --inbound/--outbound gets them on its new tap too; bad
    // values are refused naming the field, nothing made.
    let attach = |body: &str| {
        curl(
            &d.socket,
            "POST",
            "/v1/domains/qosguest/interfaces",
            &[
                "-H",
                "Content-Type: application/json",
                "--data-binary",
                body,
            ],
        )
    };
    for (body, field) in [
        (
            r#"{"type":"bridge","source":"qbr0","live":true,"inbound":"fast"}"#,
            "inbound",
        ),
        (
            r#"{"type":"bridge","source":"qbr0","live":true,"outbound":"100,200"}"#,
            "bandwidth.outbound.peak",
        ),
    ] {
        let r = attach(body);
        assert_eq!(r.status, 400, "{}", r.body);
        assert!(r.body.contains(field), "{field} not named: {}", r.body);
    }
    assert_eq!(
        taps_of(&ns, "qosguest"),
        taps,
        "a refused attach made a tap"
    );
    let r = attach(
        r#"{"type":"bridge","source":"qbr0","live":true,"inbound":"300,,16","outbound":"100"}"#,
    );
    assert_eq!(r.status, 200, "{}\n{}", r.body, d.log());
    let hot = r.json()["ifname"].as_str().unwrap().to_owned();
    assert_ne!(hot, tap);
    assert!(qdiscs(&ns, &hot).contains(&"htb 1:".to_owned()));
    let hot_rules = ns.ok(&[
        "nft",
        "list",
        "table",
        "bridge",
        &format!("novacron-nic-{hot}"),
    ]);
    assert!(
        hot_rules.contains("limit rate over 100000 bytes/second") && !hot_rules.contains("saddr"),
        "{hot_rules}"
    );

    // kill -9 and a new daemon: the running guest's table and qdiscs are adopted (still one
    // table), an orphan table of a tap that is gone is removed, one whose link exists stays.
    d.kill9();
    for t in ["novacron-nic-ncghost0", "novacron-nic-other0"] {
        ns.ok(&["nft", "add", "table", "bridge", t]);
    }
    let mut d = NsDaemon::start(&env, &ns);
    let tables = ns.ok(&["nft", "list", "tables"]);
    assert_eq!(
        tables.matches(&format!("table bridge {table}\n")).count(),
        1,
        "{tables}"
    );
    assert!(
        !tables.contains("novacron-nic-ncghost0"),
        "orphan kept: {tables}"
    );
    assert!(tables.contains("novacron-nic-other0"), "{tables}");
    ns.ok(&["nft", "delete", "table", "bridge", "novacron-nic-other0"]);
    assert_eq!(qdiscs(&ns, &tap), q);

    // Stopped: tap, qdiscs and table gone; the ruleset exactly as before the guest.
    let r = post(&d.socket, "/v1/domains/qosguest/destroy", None);
    assert_eq!(r.status, 200, "{}", r.body);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !taps_of(&ns, "qosguest").is_empty() {
        assert!(Instant::now() < deadline, "the tap stayed");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(ns.ruleset(), before, "the ruleset changed:\n{}", d.log());

    // A macvtap-backed NIC cannot take them: refused at define, nothing made.
    let bad = osless_xml(
        "qosbad",
        "<interface type='direct'><mac address='52:54:00:77:01:02'/>\
         <source dev='other0' mode='bridge'/><model type='virtio'/>\
         <filterref filter='clean-traffic'/></interface>",
    );
    let r = post(&d.socket, "/v1/domains", Some(&bad));
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(
        r.body.contains("devices.interfaces[0].filterref"),
        "{}",
        r.body
    );
    d.kill9();
}
