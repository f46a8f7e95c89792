//! A network's own `<bandwidth>` (libvirt's network-wide limits) on a real kernel: a real
//! novacrond in a network namespace the test makes, its network's bridge with clients
//! (namespaces plugged in by veth pairs, standing in for guests) and floods through it:
//! inbound (towards the guests) shaped on the bridge, outbound (from them to the host)
//! policed on its ingress, traffic between two guests limited by neither (as libvirt); a
//! kill -9 and restart adopts both (their counters run on), a restart that finds one gone
//! (or the network's nft table, or its dnsmasq) puts it back in place, the bridge and the
//! guests' ports on it kept, and one whose checks fail takes them as present; stop, and a start that fails half-way, leave the
//! namespace's links, qdiscs and ruleset as they were. Names start with `w<pid>`.

mod common;

use std::path::Path;
use std::time::Instant;

use common::daemon::{curl, Reply};
use common::flood::Transfer;
use common::netns::{Netns, NsDaemon};
use common::Env;

fn post_xml(socket: &Path, path: &str, xml: &str) -> Reply {
    curl(
        socket,
        "POST",
        path,
        &["-H", "Content-Type: application/xml", "--data-binary", xml],
    )
}

fn ns_ok(ns: &Netns, args: &[&str]) -> String {
    let out = ns.exec(args);
    assert!(
        out.status.success(),
        "{args:?} in {}: {}{}",
        ns.0,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every qdisc in `ns` as `dev kind handle` (what must be as before).
fn qdiscs(ns: &Netns) -> Vec<String> {
    let v: Vec<serde_json::Value> =
        serde_json::from_str(&ns_ok(ns, &["tc", "-j", "qdisc", "show"])).unwrap();
    let mut out: Vec<String> = v
        .iter()
        .map(|q| format!("{} {} {}", q["dev"], q["kind"], q["handle"]))
        .collect();
    out.sort();
    out
}

/// Bytes our htb root on `dev` has sent (None: no htb root).
fn htb_sent(ns: &Netns, dev: &str) -> Option<u64> {
    let out = ns.exec(&["tc", "-s", "-j", "qdisc", "show", "dev", dev]);
    let v: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).ok()?;
    v.iter()
        .find(|q| q["kind"] == "htb" && q["handle"] == "1:")
        .and_then(|q| q["bytes"].as_u64())
}

/// Packets the policer of network `net` dropped (None: no policer table).
fn policed(ns: &Netns, net: &str) -> Option<u64> {
    let out = ns.exec(&[
        "nft",
        "-j",
        "list",
        "counter",
        "netdev",
        &format!("novacron-{net}"),
        "over_limit",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    v["nftables"]
        .as_array()?
        .iter()
        .find_map(|o| o.get("counter")?.get("packets")?.as_u64())
}

/// `(rx_bytes, tx_bytes)` of a link.
fn bytes(ns: &Netns, dev: &str) -> (u64, u64) {
    let v: serde_json::Value =
        serde_json::from_str(&ns.ip(&["-j", "-s", "link", "show", "dev", dev])).unwrap();
    let s = &v[0]["stats64"];
    (
        s["rx"]["bytes"].as_u64().unwrap(),
        s["tx"]["bytes"].as_u64().unwrap(),
    )
}

/// IP bytes this namespace's stack received (`/proc/net/netstat` IpExt InOctets): counted
/// after the ingress hooks, so what the policer let through.
fn in_octets(ns: &Netns) -> u64 {
    let netstat = ns_ok(ns, &["cat", "/proc/net/netstat"]);
    let mut ipext = netstat.lines().filter(|l| l.starts_with("IpExt: "));
    let (head, vals) = (ipext.next().unwrap(), ipext.next().unwrap());
    let i = head
        .split_whitespace()
        .position(|h| h == "InOctets")
        .unwrap();
    vals.split_whitespace().nth(i).unwrap().parse().unwrap()
}

/// A 2 s flood from `from` to `dst`; `arrived` is what `count` says before and after.
fn flood(from: &Netns, dst: &str, count: impl Fn() -> u64) -> Transfer {
    common::flood::flood(&from.0, dst, count)
}

/// Far above `rate`: not limited.
#[track_caller]
fn free(t: &Transfer, what: &str, rate: f64) {
    eprintln!("{what}: arrived {} B in {:.2} s", t.arrived, t.sending);
    assert!(
        t.arrived as f64 > 4.0 * rate * t.window,
        "{what} was throttled: {} B in {:.2} s",
        t.arrived,
        t.window
    );
}

/// Plugs `client` into `bridge` (in `host`) by a veth pair `port`/eth0 with `addr`.
fn plug(host: &Netns, bridge: &str, client: &Netns, port: &str, addr: &str) {
    host.ip(&[
        "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", &client.0,
    ]);
    host.ip(&["link", "set", port, "master", bridge, "up"]);
    client.ip(&["addr", "add", addr, "dev", "eth0"]);
    client.ip(&["link", "set", "eth0", "up"]);
}

/// Pings until one answer or 15 s (a fresh veth port needs a moment to carry).
fn reaches(ns: &Netns, addr: &str) -> bool {
    let deadline = Instant::now() + std::time::Duration::from_secs(15);
    while Instant::now() < deadline {
        if ns.can_ping(addr) {
            return true;
        }
    }
    false
}

/// The index of `bridge` and its ports (sorted).
fn bridge_and_ports(ns: &Netns, bridge: &str) -> (u64, Vec<String>) {
    let v: serde_json::Value =
        serde_json::from_str(&ns.ip(&["-j", "link", "show", "dev", bridge])).unwrap();
    let index = v[0]["ifindex"].as_u64().expect("ifindex");
    let v: serde_json::Value =
        serde_json::from_str(&ns.ip(&["-j", "link", "show", "master", bridge])).unwrap();
    let mut ports: Vec<String> = v
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l["ifname"].as_str().map(str::to_owned))
        .collect();
    ports.sort();
    (index, ports)
}

fn pid_alive(pid: u64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit(')')
            .next()
            .is_some_and(|r| !r.trim_start().starts_with('Z'))
    })
}

/// kill -9 `pid` and wait (bounded) until it is gone or a zombie.
fn kill_and_wait(pid: u64) {
    ok_run("kill", &["-9", &pid.to_string()]);
    let deadline = Instant::now() + std::time::Duration::from_secs(10);
    while pid_alive(pid) {
        assert!(Instant::now() < deadline, "{pid} did not die");
        std::thread::yield_now();
    }
}

fn ok_run(cmd: &str, args: &[&str]) {
    let out = common::netns::run(cmd, args);
    assert!(out.status.success(), "{cmd} {args:?}: {out:?}");
}

fn kill9(d: &mut NsDaemon) {
    let _ = d.child.kill();
    let _ = d.child.wait();
}

// inbound 400 kB/s with a 32 KiB burst; outbound 200 kB/s, burst 16 KiB (the policer's
// bucket holds at least one second of the rate).
const LIMITS: &str = "<bandwidth><inbound average='400' burst='32'/>\
    <outbound average='200' burst='16'/></bandwidth>";

#[test]
fn a_network_limit_throttles_its_bridge_survives_a_daemon_kill_and_goes_at_stop() {
    let p = format!("w{}", std::process::id());
    let env = Env::new();
    let host = Netns::new(format!("{p}h"));
    let (links_before, qdiscs_before) = (host.links(), qdiscs(&host));
    let rules_before = ns_ok(&host, &["nft", "list", "ruleset"]);
    let mut d = NsDaemon::start(&env, &host);

    let (net, br) = (format!("{p}n"), format!("{p}b"));
    let xml = format!(
        "<network><name>{net}</name><forward mode='nat'/><bridge name='{br}' stp='off'/>\
         {LIMITS}<ip address='10.87.0.1' prefix='24'/></network>"
    );
    let r = post_xml(&d.socket, "/v1/networks", &xml);
    assert_eq!(r.status, 201, "{r:?}");
    let dumped = curl(&d.socket, "GET", &format!("/v1/networks/{net}/xml"), &[]);
    assert!(
        dumped.body.contains("<inbound average='400' burst='32'/>")
            && dumped.body.contains("<outbound average='200' burst='16'/>"),
        "{}",
        dumped.body
    );
    // Defining changes nothing on the host.
    assert_eq!(qdiscs(&host), qdiscs_before);

    let r = curl(&d.socket, "POST", &format!("/v1/networks/{net}/start"), &[]);
    assert_eq!(r.status, 200, "{r:?}\n{}", d.log());
    assert_eq!(
        htb_sent(&host, &br).map(|_| ()),
        Some(()),
        "{:?}",
        qdiscs(&host)
    );
    let table = ns_ok(
        &host,
        &["nft", "list", "table", "netdev", &format!("novacron-{net}")],
    );
    assert!(
        table.contains(&format!("hook ingress device \"{br}\""))
            && table.contains("limit rate over 200000 bytes/second"),
        "{table}"
    );

    // Two "guests" on the bridge.
    let (g1, g2) = (Netns::new(format!("{p}c")), Netns::new(format!("{p}e")));
    plug(&host, &br, &g1, &format!("{p}p1"), "10.87.0.5/24");
    plug(&host, &br, &g2, &format!("{p}p2"), "10.87.0.6/24");
    assert!(reaches(&g1, "10.87.0.1") && reaches(&g1, "10.87.0.6"));

    // Towards the guests (the host sends out of the bridge): shaped.
    let inn = flood(&host, "10.87.0.5", || bytes(&g1, "eth0").0);
    inn.held("inbound", 400_000.0, 32.0 * 1024.0, false);
    // From the guests into the host: policed, the drops counted.
    let drops = policed(&host, &net).expect("policer counter");
    let out = flood(&g1, "10.87.0.1", || in_octets(&host));
    out.held("outbound", 200_000.0, 200_000.0, true);
    let drops_after = policed(&host, &net).expect("policer counter");
    assert!(drops_after > drops, "no drop counted");
    // Between two guests (bridged, never passed up to the host): neither limit.
    free(
        &flood(&g1, "10.87.0.6", || bytes(&g2, "eth0").0),
        "guest to guest",
        400_000.0,
    );

    // kill -9 and a new daemon: both adopted as they are (their counters run on; a new
    // qdisc or table would start from zero).
    let sent = htb_sent(&host, &br).expect("htb");
    kill9(&mut d);
    let mut d = NsDaemon::start(&env, &host);
    let info = curl(&d.socket, "GET", &format!("/v1/networks/{net}"), &[]).json();
    assert_eq!(info["info"]["active"], true, "{info}\n{}", d.log());
    assert!(d.log().contains("adopted a running network"), "{}", d.log());
    assert!(htb_sent(&host, &br).expect("htb after restart") >= sent);
    assert!(policed(&host, &net).expect("policer after restart") >= drops_after);
    let inn = flood(&host, "10.87.0.5", || bytes(&g1, "eth0").0);
    inn.held("inbound after the restart", 400_000.0, 32.0 * 1024.0, false);

    // A restart that finds a piece gone (an admin's `tc qdisc del`, a firewall reload's
    // `nft flush ruleset`, a dead dnsmasq) or replaced puts it back in place: the bridge
    // stays (same index), the guests' ports stay on it and carry; a missing policer
    // comes back fresh (its counter from zero). libvirt's way on a libvirtd restart.
    let (index, ports) = bridge_and_ports(&host, &br);
    assert_eq!(ports, [format!("{p}p1"), format!("{p}p2")]);
    let inet = format!("novacron-{net}");
    type Case<'a> = (&'a str, Vec<Vec<&'a str>>, bool);
    let cases: Vec<Case> = vec![
        (
            "shaper",
            vec![vec!["tc", "qdisc", "del", "dev", &br, "root"]],
            false,
        ),
        (
            "shaper replaced by hand",
            vec![vec![
                "tc", "qdisc", "replace", "dev", &br, "root", "handle", "2:", "htb",
            ]],
            false,
        ),
        (
            "policer",
            vec![vec!["nft", "delete", "table", "netdev", &inet]],
            false,
        ),
        (
            "all: shaper, both tables and dnsmasq",
            vec![
                vec!["tc", "qdisc", "del", "dev", &br, "root"],
                vec!["nft", "delete", "table", "netdev", &inet],
                vec!["nft", "delete", "table", "inet", &inet],
            ],
            true,
        ),
    ];
    for (what, removes, kill_dnsmasq) in cases {
        let before = curl(&d.socket, "GET", &format!("/v1/networks/{net}"), &[]).json();
        let dnsmasq = before["info"]["dnsmasq_pid"].as_u64().expect("dnsmasq pid");
        kill9(&mut d);
        for r in &removes {
            ns_ok(&host, r);
        }
        if kill_dnsmasq {
            kill_and_wait(dnsmasq);
        }
        d = NsDaemon::start(&env, &host);
        let info = curl(&d.socket, "GET", &format!("/v1/networks/{net}"), &[]).json();
        assert_eq!(info["info"]["active"], true, "{what}: {info}\n{}", d.log());
        assert_eq!(
            bridge_and_ports(&host, &br),
            (index, ports.clone()),
            "{what}: the bridge was made again\n{}",
            d.log()
        );
        assert!(
            htb_sent(&host, &br).is_some(),
            "{what}: {:?}",
            qdiscs(&host)
        );
        let drops = policed(&host, &net);
        assert!(drops.is_some(), "{what}: no policer\n{}", d.log());
        if removes.iter().any(|r| r.contains(&"netdev")) {
            assert_eq!(drops, Some(0), "{what}: policer not put back fresh");
        }
        ns_ok(&host, &["nft", "list", "table", "inet", &inet]);
        let pid = info["info"]["dnsmasq_pid"].as_u64().expect("dnsmasq pid");
        assert!(pid_alive(pid), "{what}: dnsmasq {pid} not running");
        assert_eq!(
            pid != dnsmasq,
            kill_dnsmasq,
            "{what}: dnsmasq {dnsmasq} -> {pid}"
        );
        assert!(
            reaches(&g1, "10.87.0.1") && reaches(&g1, "10.87.0.6"),
            "{what}"
        );
    }
    // The shaper put back holds.
    let inn = flood(&host, "10.87.0.5", || bytes(&g1, "eth0").0);
    inn.held("inbound after the repair", 400_000.0, 32.0 * 1024.0, false);

    // A restart whose checks fail (tc and nft not answering: transient) takes the pieces as
    // present: nothing is torn down, nothing applied again (the counters run on).
    let shims = env.dir.path().join("shims");
    std::fs::create_dir_all(&shims).unwrap();
    for (tool, fails) in [("tc", "*-j\\ qdisc\\ show*"), ("nft", "list\\ tables*")] {
        let f = shims.join(tool);
        std::fs::write(
            &f,
            format!(
                "#!/bin/sh\ncase \"$*\" in {fails}) echo '{tool}: not answering (test)' >&2; exit 1;; esac\n\
                 exec /usr/sbin/{tool} \"$@\"\n"
            ),
        )
        .unwrap();
        ok_run("chmod", &["0755", f.to_str().unwrap()]);
    }
    let sent = htb_sent(&host, &br).expect("htb");
    let drops = policed(&host, &net).expect("policer");
    kill9(&mut d);
    let path = format!(
        "{}:{}",
        shims.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    d = NsDaemon::start_with(&env, &host, &[("PATH", path)]);
    let info = curl(&d.socket, "GET", &format!("/v1/networks/{net}"), &[]).json();
    assert_eq!(info["info"]["active"], true, "{info}\n{}", d.log());
    assert!(d.log().contains("taken as present"), "{}", d.log());
    assert_eq!(
        bridge_and_ports(&host, &br),
        (index, ports.clone()),
        "{}",
        d.log()
    );
    assert!(htb_sent(&host, &br).expect("htb") >= sent);
    assert!(policed(&host, &net).expect("policer") >= drops);
    kill9(&mut d);
    d = NsDaemon::start(&env, &host);

    // Stop: no qdisc, no table, no link of ours; the namespace as before.
    let r = curl(&d.socket, "POST", &format!("/v1/networks/{net}/stop"), &[]);
    assert_eq!(r.status, 200, "{r:?}");
    for port in ["p1", "p2"] {
        host.ip(&["link", "del", &format!("{p}{port}")]);
    }
    assert_eq!(qdiscs(&host), qdiscs_before);
    assert_eq!(host.links(), links_before);
    assert_eq!(ns_ok(&host, &["nft", "list", "ruleset"]), rules_before);
    kill9(&mut d);
}

#[test]
fn a_start_that_fails_after_the_limits_leaves_the_host_as_it_was() {
    let p = format!("w{}", std::process::id());
    let env = Env::new();
    let host = Netns::new(format!("{p}f"));
    // Someone else's DHCP server socket: the network's dnsmasq, started after the bridge,
    // its limits and its table, cannot bind and the start fails there.
    let mut squatter = std::process::Command::new("ip")
        .args(["netns", "exec", &host.0, "python3", "-c"])
        .arg(
            "import socket, sys, time\n\
             s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
             s.bind(('0.0.0.0', 67))\nprint('bound', flush=True)\ntime.sleep(600)\n",
        )
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(squatter.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "bound");
    let (links_before, qdiscs_before) = (host.links(), qdiscs(&host));
    let rules_before = ns_ok(&host, &["nft", "list", "ruleset"]);
    let mut d = NsDaemon::start(&env, &host);

    let net = format!("{p}n");
    let xml = format!(
        "<network><name>{net}</name><forward mode='nat'/><bridge name='{p}b' stp='off'/>\
         {LIMITS}<ip address='10.88.0.1' prefix='24'><dhcp>\
         <range start='10.88.0.10' end='10.88.0.20'/></dhcp></ip></network>"
    );
    let r = post_xml(&d.socket, "/v1/networks", &xml);
    assert_eq!(r.status, 201, "{r:?}");
    let r = curl(&d.socket, "POST", &format!("/v1/networks/{net}/start"), &[]);
    assert!(r.status >= 400, "{r:?}");
    assert!(r.body.contains("DHCP"), "{r:?}");
    assert!(
        d.log().contains("network start failed; undoing"),
        "{}",
        d.log()
    );
    let info = curl(&d.socket, "GET", &format!("/v1/networks/{net}"), &[]).json();
    assert_eq!(info["info"]["active"], false, "{info}");
    assert_eq!(qdiscs(&host), qdiscs_before);
    assert_eq!(host.links(), links_before);
    assert_eq!(ns_ok(&host, &["nft", "list", "ruleset"]), rules_before);

    // The same network starts once the port is free, and stops clean.
    let _ = squatter.kill();
    let _ = squatter.wait();
    let r = curl(&d.socket, "POST", &format!("/v1/networks/{net}/start"), &[]);
    assert_eq!(r.status, 200, "{r:?}\n{}", d.log());
    assert!(policed(&host, &net).is_some());
    let r = curl(&d.socket, "POST", &format!("/v1/networks/{net}/stop"), &[]);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(qdiscs(&host), qdiscs_before);
    assert_eq!(host.links(), links_before);
    assert_eq!(ns_ok(&host, &["nft", "list", "ruleset"]), rules_before);
    kill9(&mut d);
}

#[test]
fn limits_on_a_bridge_that_is_not_ours_are_refused_naming_the_field() {
    let p = format!("w{}", std::process::id());
    let env = Env::new();
    let host = Netns::new(format!("{p}r"));
    let mut d = NsDaemon::start(&env, &host);
    for (xml, says) in [
        (
            format!(
                "<network><name>{p}hb</name><forward mode='bridge'/><bridge name='br0'/>\
                 {LIMITS}</network>"
            ),
            "not ours to shape",
        ),
        (
            format!(
                "<network><name>{p}mv</name><forward mode='private'><interface dev='eth9'/>\
                 </forward>{LIMITS}</network>"
            ),
            "macvtap network",
        ),
        (
            format!(
                "<network><name>{p}pk</name><bridge name='{p}b'/>\
                 <bandwidth><inbound average='400' peak='100'/></bandwidth>\
                 <ip address='10.89.0.1' prefix='24'/></network>"
            ),
            "peak 100 is below average 400",
        ),
    ] {
        let r = post_xml(&d.socket, "/v1/networks", &xml);
        assert_eq!(r.status, 400, "{r:?}");
        let path = r.json()["error"]["details"][0]["path"].clone();
        assert!(
            path == "bandwidth" || path == "bandwidth.inbound.peak",
            "{r:?}"
        );
        assert!(r.body.contains(says), "{says}: {r:?}");
    }
    let list = curl(&d.socket, "GET", "/v1/networks", &[]).json();
    let names: Vec<&str> = list["networks"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n["name"].as_str())
        .collect();
    assert!(!names.iter().any(|n| n.starts_with(&p)), "{names:?}");
    kill9(&mut d);
}

#[test]
fn a_network_of_the_same_name_under_another_daemon_keeps_its_tables() {
    // Two daemons on one host (the migration tests' setup), each with a network 'N' of
    // that name on its own bridge: our tables are named after the network, so each
    // daemon checks a table is about its bridge before replacing or deleting it.
    let p = format!("x{}", std::process::id());
    let (env_a, env_b) = (Env::new(), Env::new());
    let host = Netns::new(format!("{p}h"));
    let (links_before, rules_before) = (host.links(), ns_ok(&host, &["nft", "list", "ruleset"]));
    let mut a = NsDaemon::start(&env_a, &host);
    let mut b = NsDaemon::start(&env_b, &host);
    let net = format!("{p}n");
    let t = format!("novacron-{net}");
    let def = |br: &str, subnet: &str| {
        format!(
            "<network><name>{net}</name><forward mode='nat'/><bridge name='{br}' stp='off'/>\
             {LIMITS}<ip address='{subnet}.1' prefix='24'/></network>"
        )
    };
    let (ba, bb) = (format!("{p}a"), format!("{p}b"));
    for (d, br, subnet) in [(&a, &ba, "10.86.0"), (&b, &bb, "10.85.0")] {
        let r = post_xml(&d.socket, "/v1/networks", &def(br, subnet));
        assert_eq!(r.status, 201, "{r:?}");
    }
    // Both our tables there and about `br` (false when either is missing).
    let tables = |br: &str| {
        let list = |family: &str| {
            String::from_utf8_lossy(&host.exec(&["nft", "list", "table", family, &t]).stdout)
                .into_owned()
        };
        list("inet").contains(&format!("iifname \"{br}\""))
            && list("netdev").contains(&format!("device \"{br}\""))
    };
    let start = |d: &NsDaemon| curl(&d.socket, "POST", &format!("/v1/networks/{net}/start"), &[]);
    let r = start(&a);
    assert_eq!(r.status, 200, "{r:?}\n{}", a.log());
    assert!(tables(&ba));

    // B's start would replace A's tables: refused, naming them; nothing of B's made.
    let links = host.links();
    let r = start(&b);
    assert_eq!(r.status, 400, "{r:?}\n{}", b.log());
    assert_eq!(r.json()["error"]["details"][0]["path"], "name", "{r:?}");
    assert!(r.body.contains(&format!("'inet {t}'")), "{r:?}");
    assert!(tables(&ba), "A's tables replaced");
    assert_eq!(host.links(), links);

    // A's tables gone (a firewall reload), B starts; A's stop then leaves B's tables alone.
    ns_ok(&host, &["nft", "delete", "table", "inet", &t]);
    ns_ok(&host, &["nft", "delete", "table", "netdev", &t]);
    let r = start(&b);
    assert_eq!(r.status, 200, "{r:?}\n{}", b.log());
    assert!(tables(&bb));
    let r = curl(&a.socket, "POST", &format!("/v1/networks/{net}/stop"), &[]);
    assert_eq!(r.status, 200, "{r:?}");
    assert!(tables(&bb), "A's stop deleted B's tables\n{}", a.log());
    assert!(!host.links().contains(&ba));

    let r = curl(&b.socket, "POST", &format!("/v1/networks/{net}/stop"), &[]);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(host.links(), links_before);
    assert_eq!(ns_ok(&host, &["nft", "list", "ruleset"]), rules_before);
    kill9(&mut a);
    kill9(&mut b);
}
