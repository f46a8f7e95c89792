//! Virtual networks on a real host stack: a real novacrond inside a network namespace the
//! test makes (so its bridge, nftables table, ip_forward and dnsmasq are the namespace's),
//! real dnsmasq, real nft, and DHCP clients (busybox udhcpc) in further namespaces joined by
//! veth pairs. Every name starts with `n<pid>`; Drop guards remove every namespace (and kill
//! what runs in it) even when the test fails.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::daemon::{curl, Reply};
use common::Env;

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

/// A network namespace; dropping it kills what runs inside and deletes it.
struct Netns(String);

impl Netns {
    fn new(name: String) -> Netns {
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
    fn nft_ruleset(&self) -> String {
        let out = self.exec(&["nft", "list", "ruleset"]);
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
    /// `ip link` names and kinds, without counters (what must be as before).
    fn links(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .ip(&["-o", "link", "show"])
            .lines()
            .filter_map(|l| {
                l.split(": ")
                    .nth(1)
                    .map(|n| n.split('@').next().unwrap_or(n).to_owned())
            })
            .collect();
        v.sort();
        v
    }
    /// Pings until one answer or 15 s (a fresh lease's address may be configured a moment
    /// after dnsmasq recorded it).
    fn reaches(&self, addr: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if self.can_ping(addr) {
                return true;
            }
        }
        false
    }
    fn can_ping(&self, addr: &str) -> bool {
        self.exec(&["busybox", "ping", "-c", "1", "-W", "2", addr])
            .status
            .success()
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

fn post_xml(socket: &Path, path: &str, xml: &str) -> Reply {
    curl(
        socket,
        "POST",
        path,
        &["-H", "Content-Type: application/xml", "--data-binary", xml],
    )
}

/// Running (a zombie that nobody reaped yet is not).
fn pid_alive(pid: u64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, r)| !r.starts_with('Z')))
        .unwrap_or(false)
}

/// Plugs a client namespace into `bridge` (in `host`) by a veth pair and gives its end
/// `mac`; returns the host end's name.
fn plug(host: &Netns, bridge: &str, client: &Netns, port: &str, mac: &str) {
    host.ip(&[
        "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", &client.0,
    ]);
    host.ip(&["link", "set", port, "master", bridge, "up"]);
    client.ip(&["link", "set", "eth0", "address", mac, "up"]);
}

/// busybox udhcpc in `client`: returns the leased address (the script applies it and the
/// default route).
fn dhcp(client: &Netns, dir: &Path) -> Option<String> {
    let script = dir.join("udhcpc.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\ncase \"$1\" in bound|renew)\n  ip addr flush dev \"$interface\"\n  ip addr add \"$ip/$mask\" dev \"$interface\"\n  [ -n \"$router\" ] && ip route replace default via \"${router%% *}\"\n  echo \"$ip\" > \"$0.$interface.ip\";;\nesac\nexit 0\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let out = client.exec(&[
        "busybox",
        "udhcpc",
        "-i",
        "eth0",
        "-n",
        "-q",
        "-f",
        "-t",
        "10",
        "-T",
        "1",
        "-s",
        script.to_str().unwrap(),
    ]);
    if !out.status.success() {
        eprintln!("udhcpc: {}", String::from_utf8_lossy(&out.stderr));
        return None;
    }
    let ip = std::fs::read_to_string(dir.join("udhcpc.sh.eth0.ip")).ok()?;
    let _ = std::fs::remove_file(dir.join("udhcpc.sh.eth0.ip"));
    Some(ip.trim().to_owned())
}

/// The packet count of the first rule in `chain` of our table that contains `needle`.
fn counter(ns: &Netns, table: &str, chain: &str, needle: &str) -> u64 {
    let out = ns.exec(&["nft", "list", "chain", "inet", table, chain]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.contains(needle))
        .and_then(|l| {
            let mut w = l.split_whitespace();
            w.find(|x| *x == "packets")
                .and_then(|_| w.next())
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

#[test]
fn a_nat_network_serves_dhcp_masquerades_survives_a_daemon_kill_and_leaves_the_host_as_it_was() {
    let pid = std::process::id();
    let p = format!("n{pid}");
    let env = Env::new();
    let host = Netns::new(format!("{p}d"));
    let wan = Netns::new(format!("{p}w"));
    let c1 = Netns::new(format!("{p}c"));
    let c2 = Netns::new(format!("{p}e"));
    // The "WAN": a peer namespace beyond the daemon's, reachable only through masquerade
    // (it has no route back to the guests' subnet).
    let (wa, wb) = (format!("{p}wa"), format!("{p}wb"));
    host.ip(&[
        "link", "add", &wa, "type", "veth", "peer", "name", &wb, "netns", &wan.0,
    ]);
    host.ip(&["addr", "add", "198.51.100.1/24", "dev", &wa]);
    host.ip(&["link", "set", &wa, "up"]);
    wan.ip(&["addr", "add", "198.51.100.2/24", "dev", &wb]);
    wan.ip(&["link", "set", &wb, "up"]);
    let links_before = host.links();
    let rules_before = host.nft_ruleset();

    let mut d = NsDaemon::start(&env, &host);
    let net = format!("{p}nat");
    let br = format!("{p}br");
    let table = format!("novacron-{net}");
    let xml = format!(
        "<network><name>{net}</name><forward mode='nat'/><bridge name='{br}' stp='off'/>\
         <ip address='10.77.0.1' netmask='255.255.255.0'><dhcp>\
         <range start='10.77.0.10' end='10.77.0.50'/>\
         <host mac='52:54:00:aa:bb:02' ip='10.77.0.7' name='second'/>\
         </dhcp></ip></network>"
    );
    let r = post_xml(&d.socket, "/v1/networks", &xml);
    assert_eq!(r.status, 201, "{r:?}");
    // Defining changes nothing on the host.
    assert_eq!(host.links(), links_before);

    // Bad input: each refused with the field named, the host unchanged.
    let long = xml
        .replace(&format!("name='{br}'"), "name='abcdefghijklmnop'")
        .replace(&net, "toolong");
    let r = post_xml(&d.socket, "/v1/networks", &long);
    assert_eq!(r.status, 400, "{r:?}");
    assert_eq!(
        r.json()["error"]["details"][0]["path"],
        "bridge.name",
        "{r:?}"
    );
    let overlap =
        format!("<network><name>{p}ov</name><ip address='10.77.0.129' prefix='25'/></network>");
    let r = post_xml(&d.socket, "/v1/networks", &overlap);
    assert_eq!(r.status, 400, "{r:?}");
    assert!(r.body.contains(&format!("network '{net}'")), "{r:?}");
    let on_host =
        format!("<network><name>{p}ov</name><ip address='198.51.100.129' prefix='25'/></network>");
    let r = post_xml(&d.socket, "/v1/networks", &on_host);
    assert_eq!(r.status, 400, "{r:?}");
    assert!(r.body.contains(&format!("on {wa}")), "{r:?}");

    let t0 = Instant::now();
    let r = curl(&d.socket, "POST", &format!("/v1/networks/{net}/start"), &[]);
    let started = t0.elapsed();
    assert_eq!(r.status, 200, "{r:?}\n{}", d.log());
    let info = r.json();
    assert_eq!(info["active"], true);
    let dnsmasq = info["dnsmasq_pid"].as_u64().expect("dnsmasq pid");
    assert!(pid_alive(dnsmasq));
    assert!(host.links().contains(&br), "{:?}", host.links());
    assert!(host.nft_ruleset().contains(&format!("table inet {table}")));
    eprintln!("network start (bridge + nft + dnsmasq ready): {started:?}");

    // A DHCP client on the bridge gets a lease from the range; the static host its address.
    plug(&host, &br, &c1, &format!("{p}p1"), "52:54:00:aa:bb:01");
    plug(&host, &br, &c2, &format!("{p}p2"), "52:54:00:aa:bb:02");
    let ip1 = dhcp(&c1, env.dir.path()).expect("c1 lease");
    assert!(ip1.starts_with("10.77.0."), "{ip1}");
    let ip2 = dhcp(&c2, env.dir.path()).expect("c2 lease");
    assert_eq!(ip2, "10.77.0.7");
    let leases = curl(&d.socket, "GET", &format!("/v1/networks/{net}/leases"), &[]).json();
    let macs: Vec<&str> = leases["leases"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["mac"].as_str())
        .collect();
    assert!(macs.contains(&"52:54:00:aa:bb:01"), "{leases}");

    // The gateway, the other client, and the WAN through masquerade (its counter rises).
    assert!(c1.can_ping("10.77.0.1"));
    assert!(c1.can_ping(&ip2));
    let before = counter(&host, &table, "postrouting", "masquerade");
    assert!(c1.can_ping("198.51.100.2"), "{}", host.nft_ruleset());
    assert!(counter(&host, &table, "postrouting", "masquerade") > before);

    // An isolated network: DHCP and the gateway, nothing beyond (our reject counts it).
    let iso = format!("{p}iso");
    let iso_xml = format!(
        "<network><name>{iso}</name><bridge name='{p}ib' stp='off'/>\
         <ip address='10.79.0.1' prefix='24'><dhcp><range start='10.79.0.10' end='10.79.0.20'/>\
         </dhcp></ip></network>"
    );
    assert_eq!(post_xml(&d.socket, "/v1/networks", &iso_xml).status, 201);
    let r = curl(&d.socket, "POST", &format!("/v1/networks/{iso}/start"), &[]);
    assert_eq!(r.status, 200, "{r:?}");
    let c3 = Netns::new(format!("{p}i"));
    plug(
        &host,
        &format!("{p}ib"),
        &c3,
        &format!("{p}p3"),
        "52:54:00:aa:bb:03",
    );
    let ip3 = dhcp(&c3, env.dir.path()).expect("isolated lease");
    assert!(ip3.starts_with("10.79.0."), "{ip3}");
    assert!(c3.reaches("10.79.0.1"));
    let itable = format!("novacron-{iso}");
    let rejected = counter(&host, &itable, "forward", "reject");
    // Its default route points at the gateway, which refuses to forward.
    c3.ip(&["route", "replace", "default", "via", "10.79.0.1"]);
    assert!(
        !c3.can_ping("198.51.100.2"),
        "an isolated network reached the WAN"
    );
    assert!(counter(&host, &itable, "forward", "reject") > rejected);
    let r = curl(&d.socket, "POST", &format!("/v1/networks/{iso}/stop"), &[]);
    assert_eq!(r.status, 200, "{r:?}");
    host.ip(&["link", "del", &format!("{p}p3")]);

    // kill -9: a new daemon adopts the running network (same dnsmasq), which keeps working.
    d.kill9();
    let mut d2 = NsDaemon::start(&env, &host);
    let info = curl(&d2.socket, "GET", &format!("/v1/networks/{net}"), &[]).json();
    assert_eq!(info["info"]["active"], true, "{info}\n{}", d2.log());
    assert_eq!(info["info"]["dnsmasq_pid"].as_u64(), Some(dnsmasq));
    assert!(c1.can_ping("198.51.100.2"));

    // While no daemon runs, a firewall reload takes our table (`nft flush ruleset` would)
    // and dnsmasq dies. The next daemon puts both back in place and keeps the bridge (same
    // index) with the guests' ports on it: they reach the WAN through a masquerade that
    // counts again, and get leases from the new dnsmasq. (Tearing the network down and
    // starting it again would leave their ports on a deleted bridge: cut off.)
    let index = |ns: &Netns, dev: &str| -> u64 {
        let v: serde_json::Value =
            serde_json::from_str(&ns.ip(&["-j", "link", "show", "dev", dev])).unwrap();
        v[0]["ifindex"].as_u64().expect("ifindex")
    };
    let master = |port: &str| -> String {
        let v: serde_json::Value =
            serde_json::from_str(&host.ip(&["-j", "link", "show", "dev", port])).unwrap();
        v[0]["master"].as_str().unwrap_or_default().to_owned()
    };
    let br_index = index(&host, &br);
    d2.kill9();
    let out = host.exec(&["nft", "delete", "table", "inet", &table]);
    assert!(out.status.success(), "{out:?}");
    ok("kill", &["-9", &dnsmasq.to_string()]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while pid_alive(dnsmasq) {
        assert!(Instant::now() < deadline, "dnsmasq {dnsmasq} did not die");
        std::thread::yield_now();
    }
    let mut d2 = NsDaemon::start(&env, &host);
    let info = curl(&d2.socket, "GET", &format!("/v1/networks/{net}"), &[]).json();
    assert_eq!(info["info"]["active"], true, "{info}\n{}", d2.log());
    assert_eq!(
        index(&host, &br),
        br_index,
        "bridge made again\n{}",
        d2.log()
    );
    for port in ["p1", "p2"] {
        assert_eq!(master(&format!("{p}{port}")), br, "{}", d2.log());
    }
    assert!(host.nft_ruleset().contains(&format!("table inet {table}")));
    assert_eq!(counter(&host, &table, "postrouting", "masquerade"), 0);
    let dnsmasq = info["info"]["dnsmasq_pid"].as_u64().expect("new dnsmasq");
    assert!(pid_alive(dnsmasq), "{}", d2.log());
    assert!(c1.can_ping("10.77.0.1"));
    assert!(c1.can_ping("198.51.100.2"), "{}", host.nft_ruleset());
    assert!(counter(&host, &table, "postrouting", "masquerade") > 0);
    assert_eq!(dhcp(&c2, env.dir.path()).as_deref(), Some("10.77.0.7"));

    // A table an earlier daemon wrote (other rules and no version comment: here the rules
    // before the guest-to-guest accept) is written again by the next daemon, in place.
    d2.kill9();
    let listed = |host: &Netns| {
        let out = host.exec(&["nft", "list", "table", "inet", &table]);
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let same_bridge = format!("iifname \"{br}\" oifname \"{br}\"");
    let earlier: Vec<String> = listed(&host)
        .lines()
        .filter(|l| !l.contains("comment \"novacron ruleset") && !l.contains(&same_bridge))
        .map(str::to_owned)
        .collect();
    let script = env.dir.path().join("earlier.nft");
    std::fs::write(
        &script,
        format!(
            "table inet {table}\ndelete table inet {table}\n{}\n",
            earlier.join("\n")
        ),
    )
    .unwrap();
    let out = host.exec(&["nft", "-f", script.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    assert!(!listed(&host).contains(&same_bridge));
    let d2 = NsDaemon::start(&env, &host);
    let now = listed(&host);
    assert!(
        now.contains("comment \"novacron ruleset 2\"") && now.contains(&same_bridge),
        "the earlier daemon's table was kept: {now}\n{}",
        d2.log()
    );
    assert_eq!(index(&host, &br), br_index, "{}", d2.log());
    assert!(c1.can_ping("198.51.100.2"), "{}", host.nft_ruleset());

    // A network a domain uses cannot be undefined (the domain is named).
    let nic = format!(
        "<interface type='network'><source network='{net}'/><model type='virtio'/></interface>"
    );
    let dom = common::osless(&format!("{p}user")).to_xml();
    let dom = if dom.contains("</devices>") {
        dom.replace("</devices>", &format!("{nic}</devices>"))
    } else {
        dom.replace("</domain>", &format!("<devices>{nic}</devices></domain>"))
    };
    let r = post_xml(&d2.socket, "/v1/domains", &dom);
    assert_eq!(r.status, 201, "{r:?}");
    let r = curl(&d2.socket, "DELETE", &format!("/v1/networks/{net}"), &[]);
    assert_eq!(r.status, 400, "{r:?}");
    assert!(r.body.contains(&format!("'{p}user'")), "{r:?}");
    let r = curl(&d2.socket, "DELETE", &format!("/v1/domains/{p}user"), &[]);
    assert_eq!(r.status, 204, "{r:?}");

    // Stop: the bridge, our table and dnsmasq go; the host is as before.
    let r = curl(&d2.socket, "POST", &format!("/v1/networks/{net}/stop"), &[]);
    assert_eq!(r.status, 200, "{r:?}");
    assert!(!pid_alive(dnsmasq));
    host.ip(&["link", "del", &format!("{p}p1")]);
    host.ip(&["link", "del", &format!("{p}p2")]);
    assert_eq!(host.links(), links_before);
    assert_eq!(host.nft_ruleset(), rules_before);
    let r = curl(&d2.socket, "DELETE", &format!("/v1/networks/{net}"), &[]);
    assert_eq!(r.status, 204, "{r:?}");
}

#[test]
fn the_test_guest_on_a_nat_network_gets_a_lease_and_the_host_reaches_it_but_an_isolated_port_does_not(
) {
    let p = format!("n{}", std::process::id());
    let env = Env::new();
    let host = Netns::new(format!("{p}g"));
    let links_before = host.links();
    let rules_before = host.nft_ruleset();
    let d = NsDaemon::start(&env, &host);
    let net = format!("{p}gn");
    let xml = format!(
        "<network><name>{net}</name><forward mode='nat'/><bridge name='{p}gb' stp='off'/>\
         <port isolated='yes'/><ip address='10.78.0.1' prefix='24'><dhcp><range start='10.78.0.10' end='10.78.0.20'/>\
         </dhcp></ip></network>"
    );
    assert_eq!(post_xml(&d.socket, "/v1/networks", &xml).status, 201);
    let r = curl(&d.socket, "POST", &format!("/v1/networks/{net}/start"), &[]);
    assert_eq!(r.status, 200, "{r:?}");

    let name = format!("{p}guest");
    let mac = "52:54:00:4e:77:01";
    let nic = format!(
        "<interface type='network'><source network='{net}'/><mac address='{mac}'/><model type='virtio'/></interface>"
    );
    let dom = common::linux(&name, "novacron.dhcp=1").to_xml();
    let dom = if dom.contains("</devices>") {
        dom.replace("</devices>", &format!("{nic}</devices>"))
    } else {
        dom.replace("</domain>", &format!("<devices>{nic}</devices></domain>"))
    };
    let r = post_xml(&d.socket, "/v1/domains", &dom);
    assert_eq!(r.status, 201, "{r:?}");
    let r = curl(&d.socket, "POST", &format!("/v1/domains/{name}/start"), &[]);
    assert_eq!(r.status, 200, "{r:?}\n{}", d.log());

    // The guest's udhcpc gets a lease (TCG boot: a generous deadline, polled).
    let deadline = Instant::now() + Duration::from_secs(180);
    let ip = loop {
        let v = curl(&d.socket, "GET", &format!("/v1/networks/{net}/leases"), &[]).json();
        if let Some(ip) = v["leases"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|l| l["mac"] == mac)
            .and_then(|l| l["ip"].as_str())
        {
            break ip.to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "no lease for {mac}: {v}\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    assert!(ip.starts_with("10.78.0."), "{ip}");
    assert!(host.reaches(&ip), "the host cannot reach the guest at {ip}");

    // Another isolated port (a namespace standing in for a second guest): it reaches the
    // gateway, never the guest, because the daemon made the guest's tap an isolated port.
    let other = Netns::new(format!("{p}h"));
    let port = format!("{p}gp");
    plug(&host, &format!("{p}gb"), &other, &port, "52:54:00:4e:77:02");
    host.ip(&[
        "link",
        "set",
        "dev",
        &port,
        "type",
        "bridge_slave",
        "isolated",
        "on",
    ]);
    let other_ip = dhcp(&other, env.dir.path()).expect("second client lease");
    assert!(other_ip.starts_with("10.78.0."));
    assert!(other.reaches("10.78.0.1"));
    assert!(!other.can_ping(&ip), "an isolated port reached the guest");
    host.ip(&["link", "del", &port]);

    let r = curl(
        &d.socket,
        "POST",
        &format!("/v1/domains/{name}/destroy"),
        &[],
    );
    assert_eq!(r.status, 200, "{r:?}");
    let r = curl(&d.socket, "POST", &format!("/v1/networks/{net}/stop"), &[]);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(host.links(), links_before);
    assert_eq!(host.nft_ruleset(), rules_before);
}

/// `nft list ruleset` without the counters' figures (they rise with traffic).
fn without_counts(ruleset: &str) -> String {
    ruleset
        .lines()
        .map(|l| {
            let mut out = Vec::new();
            let mut w = l.split_whitespace();
            while let Some(t) = w.next() {
                if t == "packets" || t == "bytes" {
                    w.next();
                    continue;
                }
                out.push(t);
            }
            out.join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The daemon's links for `domain` in `ns` (ifalias `novacron:<domain>`): (name, index,
/// bridge, isolated port).
fn guest_links(ns: &Netns, domain: &str) -> Vec<(String, u64, String, bool)> {
    let v: Vec<serde_json::Value> =
        serde_json::from_str(&ns.ip(&["-j", "-d", "link", "show"])).expect("ip -j");
    let mut out: Vec<_> = v
        .into_iter()
        .filter(|l| l["ifalias"] == format!("novacron:{domain}"))
        .map(|l| {
            (
                l["ifname"].as_str().unwrap_or_default().to_owned(),
                l["ifindex"].as_u64().unwrap_or_default(),
                l["master"].as_str().unwrap_or_default().to_owned(),
                l["linkinfo"]["info_slave_data"]["isolated"] == true,
            )
        })
        .collect();
    out.sort();
    out
}

/// The test guest's command shell, driven from this (synchronous) test.
struct Shell {
    rt: tokio::runtime::Runtime,
    sh: novacron_tests::GuestShell,
    name: String,
}

impl Shell {
    fn connect(env: &Env, name: &str) -> Shell {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let socket = env
            .config
            .run_dir
            .join("domains")
            .join(format!("{name}.d"))
            .join(format!("{}.sock", novacron_tests::COMMAND_CHANNEL));
        let sh = rt
            .block_on(novacron_tests::GuestShell::connect(
                &socket,
                Duration::from_secs(30),
            ))
            .unwrap_or_else(|e| panic!("{name}'s command shell: {e:#}"));
        Shell {
            rt,
            sh,
            name: name.to_owned(),
        }
    }
    fn run(&mut self, cmd: &str) -> (i32, String) {
        self.rt
            .block_on(self.sh.run(cmd, Duration::from_secs(60)))
            .unwrap_or_else(|e| panic!("{} `{cmd}`: {e:#}", self.name))
    }
    /// One ping from the guest (TCG: a 3 s answer deadline).
    fn ping(&mut self, addr: &str) -> bool {
        self.run(&format!("ping -c 1 -W 3 {addr}")).0 == 0
    }
    /// Pings until one answer or 120 s (the guest's udhcpc configures its leases a moment
    /// after dnsmasq recorded them; TCG is slow).
    fn reaches(&mut self, addr: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            if self.ping(addr) {
                return true;
            }
        }
        false
    }
}

#[test]
fn two_guests_on_two_networks_reach_each_other_only_where_ports_are_not_isolated_and_survive_a_daemon_kill(
) {
    let p = format!("n{}", std::process::id());
    let env = Env::new();
    let host = Netns::new(format!("{p}k"));
    let links_before = host.links();
    let rules_before = host.nft_ruleset();
    let forward_before =
        String::from_utf8_lossy(&host.exec(&["cat", "/proc/sys/net/ipv4/ip_forward"]).stdout)
            .into_owned();
    let mut d = NsDaemon::start(&env, &host);

    // Two NAT networks: "open" (guests see each other) and "iso" (isolated ports). Static
    // leases by MAC, so each guest's addresses are known.
    let (open, iso) = (format!("{p}op"), format!("{p}is"));
    let guests = [(format!("{p}ga"), 11u8), (format!("{p}gb"), 12u8)];
    let mac = |net: u8, host: u8| format!("52:54:00:{net:02x}:00:{host:02x}");
    for (net, octet, isolated) in [(&open, 81u8, false), (&iso, 82u8, true)] {
        let hosts: String = guests
            .iter()
            .map(|(_, h)| format!("<host mac='{}' ip='10.{octet}.0.{h}'/>", mac(octet, *h)))
            .collect();
        let port = if isolated {
            "<port isolated='yes'/>"
        } else {
            ""
        };
        let xml = format!(
            "<network><name>{net}</name><forward mode='nat'/><bridge name='{net}b' stp='off'/>\
             {port}<ip address='10.{octet}.0.1' prefix='24'><dhcp>\
             <range start='10.{octet}.0.100' end='10.{octet}.0.120'/>{hosts}</dhcp></ip></network>"
        );
        let r = post_xml(&d.socket, "/v1/networks", &xml);
        assert_eq!(r.status, 201, "{r:?}");
        let r = curl(&d.socket, "POST", &format!("/v1/networks/{net}/start"), &[]);
        assert_eq!(r.status, 200, "{r:?}\n{}", d.log());
    }

    // Two test guests, each with a NIC on both networks and the command shell.
    for (g, h) in &guests {
        let nics: String = [(&open, 81u8), (&iso, 82u8)]
            .iter()
            .map(|(net, octet)| {
                format!(
                    "<interface type='network'><source network='{net}'/><mac address='{}'/>\
                     <model type='virtio'/></interface>",
                    mac(*octet, *h)
                )
            })
            .collect();
        let xml = novacron_tests::test_guest_domain_xml_with(
            g,
            "novacron.dhcp=1",
            &format!("{nics}{}", novacron_tests::COMMAND_CHANNEL_XML),
        )
        .unwrap();
        let r = post_xml(&d.socket, "/v1/domains", &xml);
        assert_eq!(r.status, 201, "{r:?}");
        let r = curl(&d.socket, "POST", &format!("/v1/domains/{g}/start"), &[]);
        assert_eq!(r.status, 200, "{r:?}\n{}", d.log());
    }
    let mut a = Shell::connect(&env, &guests[0].0);
    let mut b = Shell::connect(&env, &guests[1].0);

    // Both reach both gateways (their leases are configured) ...
    for sh in [&mut a, &mut b] {
        assert!(
            sh.reaches("10.81.0.1"),
            "{} has no address on open",
            sh.name
        );
        assert!(sh.reaches("10.82.0.1"), "{} has no address on iso", sh.name);
    }
    // ... each other on the open network, never on the isolated one.
    assert!(a.reaches("10.81.0.12"), "guest a cannot reach guest b");
    assert!(b.reaches("10.81.0.11"), "guest b cannot reach guest a");
    assert!(!a.ping("10.82.0.12"), "isolated ports: a reached b");
    assert!(!b.ping("10.82.0.11"), "isolated ports: b reached a");

    // A hot-added NIC with a MAC the other guest has: refused, nothing made.
    let taps_a = guest_links(&host, &guests[0].0);
    assert_eq!(taps_a.len(), 2, "{taps_a:?}");
    let body = serde_json::json!({
        "type": "network", "source": open, "mac": mac(81, 12), "live": true
    })
    .to_string();
    let r = curl(
        &d.socket,
        "POST",
        &format!("/v1/domains/{}/interfaces", guests[0].0),
        &[
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            &body,
        ],
    );
    assert_eq!(r.status, 400, "{r:?}");
    assert!(
        r.body
            .contains(&format!("already used by domain '{}'", guests[1].0)),
        "{r:?}"
    );
    assert_eq!(guest_links(&host, &guests[0].0), taps_a);

    // What the daemon made, before the kill.
    let facts = |d: &NsDaemon| {
        let pids: Vec<Option<u64>> = [&open, &iso]
            .iter()
            .map(|n| {
                curl(&d.socket, "GET", &format!("/v1/networks/{n}"), &[]).json()["info"]
                    ["dnsmasq_pid"]
                    .as_u64()
            })
            .collect();
        let taps: Vec<_> = guests.iter().map(|(g, _)| guest_links(&host, g)).collect();
        (
            pids,
            taps,
            without_counts(&host.nft_ruleset()),
            host.links(),
        )
    };
    let before_kill = facts(&d);
    assert!(before_kill.0.iter().all(Option::is_some), "{before_kill:?}");
    for taps in &before_kill.1 {
        let bridges: Vec<&str> = taps.iter().map(|t| t.2.as_str()).collect();
        assert_eq!(bridges, [format!("{open}b"), format!("{iso}b")], "{taps:?}");
        assert_eq!(
            taps.iter().map(|t| t.3).collect::<Vec<_>>(),
            [false, true],
            "{taps:?}"
        );
    }

    // kill -9: the guests keep their network while no daemon runs.
    d.kill9();
    assert!(a.reaches("10.81.0.12"), "a lost b with the daemon gone");
    assert!(
        b.reaches("10.82.0.1"),
        "b lost its iso gateway with the daemon gone"
    );

    // A new daemon adopts it all: the same dnsmasq processes, taps (same index, bridge,
    // isolation), bridges and rules; DHCP still answers; isolation still holds.
    let d = NsDaemon::start(&env, &host);
    let after = facts(&d);
    assert_eq!(after, before_kill, "{}", d.log());
    for (g, _) in &guests {
        let v = curl(&d.socket, "GET", &format!("/v1/domains/{g}"), &[]).json();
        assert_eq!(v["state"], "running", "{v}");
    }
    let (rc, out) = a.run("udhcpc -n -q -t 5 -T 2 -i eth0 -s /usr/share/udhcpc/default.script");
    assert_eq!(rc, 0, "a's DHCP renewal after the restart: {out}");
    assert!(a.reaches("10.81.0.12"));
    assert!(!a.ping("10.82.0.12"), "isolation lost after the restart");

    // Stopping everything leaves the namespace as it was: no interface, no rule, no dnsmasq
    // (nothing runs in it but the daemon), ip_forward as before.
    for (g, _) in &guests {
        let r = curl(&d.socket, "POST", &format!("/v1/domains/{g}/destroy"), &[]);
        assert_eq!(r.status, 200, "{r:?}");
    }
    for n in [&open, &iso] {
        let r = curl(&d.socket, "POST", &format!("/v1/networks/{n}/stop"), &[]);
        assert_eq!(r.status, 200, "{r:?}");
    }
    for pid in before_kill.0.iter().flatten() {
        assert!(!pid_alive(*pid), "dnsmasq {pid} outlived its network");
    }
    assert_eq!(host.links(), links_before);
    assert_eq!(host.nft_ruleset(), rules_before);
    let forward_after =
        String::from_utf8_lossy(&host.exec(&["cat", "/proc/sys/net/ipv4/ip_forward"]).stdout)
            .into_owned();
    assert_eq!(forward_after, forward_before);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let pids = run("ip", &["netns", "pids", &host.0]);
        let pids: Vec<u64> = String::from_utf8_lossy(&pids.stdout)
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .filter(|p| pid_alive(*p))
            .collect();
        if pids == [u64::from(d.child.id())] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "left running in the namespace besides the daemon: {pids:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Turns on `net.bridge.bridge-nf-call-iptables` in `ns` (per namespace since Linux 5.3),
/// loading br_netfilter first where it is missing: bridged IPv4 then passes the IP forward
/// hook, as on any host with Docker. Err names why it cannot be.
fn bridged_traffic_through_ip_hooks(ns: &Netns) -> Result<(), String> {
    const SYSCTL: &str = "/proc/sys/net/bridge/bridge-nf-call-iptables";
    if !Path::new(SYSCTL).exists() {
        let loaded = Command::new("modprobe").arg("br_netfilter").output();
        if !Path::new(SYSCTL).exists() {
            return Err(format!(
                "no {SYSCTL}: br_netfilter is not loaded and `modprobe br_netfilter` failed \
                 ({loaded:?})"
            ));
        }
    }
    let value = |ns: &Netns| {
        String::from_utf8_lossy(&ns.exec(&["cat", SYSCTL]).stdout)
            .trim()
            .to_owned()
    };
    if value(ns) != "1" {
        ns.exec(&["sh", "-c", &format!("echo 1 > {SYSCTL}")]);
    }
    match value(ns).as_str() {
        "1" => Ok(()),
        v => Err(format!("{SYSCTL} in {} stays {v:?} after writing 1", ns.0)),
    }
}

#[test]
fn guests_on_one_bridge_reach_each_other_when_bridged_traffic_passes_the_ip_firewall_but_an_isolated_network_reaches_nothing_beyond(
) {
    let p = format!("n{}x", std::process::id());
    let env = Env::new();
    let host = Netns::new(format!("{p}d"));
    if let Err(why) = bridged_traffic_through_ip_hooks(&host) {
        eprintln!(
            "SKIPPED: bridged traffic does not pass the IP firewall here, so our forward \
             rules never see guest-to-guest frames and there is nothing to test: {why}"
        );
        return;
    }
    // The "WAN" beyond the host, as in the NAT test; it gets a route back to the isolated
    // network, so only our rules stand between them (ip_forward is on: the NAT network).
    let wan = Netns::new(format!("{p}w"));
    let (wa, wb) = (format!("{p}wa"), format!("{p}wb"));
    host.ip(&[
        "link", "add", &wa, "type", "veth", "peer", "name", &wb, "netns", &wan.0,
    ]);
    host.ip(&["addr", "add", "203.0.113.1/24", "dev", &wa]);
    host.ip(&["link", "set", &wa, "up"]);
    wan.ip(&["addr", "add", "203.0.113.2/24", "dev", &wb]);
    wan.ip(&["link", "set", &wb, "up"]);
    wan.ip(&["route", "add", "10.83.0.0/24", "via", "203.0.113.1"]);

    let d = NsDaemon::start(&env, &host);
    // An isolated network, and a NAT network bound to one uplink (`forward dev`), whose
    // accept rule names that uplink and so does not cover bridge-to-bridge traffic either.
    let (iso, nat) = (format!("{p}i"), format!("{p}n"));
    let (ib, nb) = (format!("{p}ib"), format!("{p}nb"));
    for xml in [
        format!(
            "<network><name>{iso}</name><bridge name='{ib}' stp='off'/>\
             <ip address='10.83.0.1' prefix='24'><dhcp><range start='10.83.0.10' end='10.83.0.20'/>\
             </dhcp></ip></network>"
        ),
        format!(
            "<network><name>{nat}</name><forward mode='nat' dev='{wa}'/><bridge name='{nb}' stp='off'/>\
             <ip address='10.84.0.1' prefix='24'><dhcp><range start='10.84.0.10' end='10.84.0.20'/>\
             </dhcp></ip></network>"
        ),
    ] {
        let r = post_xml(&d.socket, "/v1/networks", &xml);
        assert_eq!(r.status, 201, "{r:?}");
    }
    for n in [&iso, &nat] {
        let r = curl(&d.socket, "POST", &format!("/v1/networks/{n}/start"), &[]);
        assert_eq!(r.status, 200, "{r:?}\n{}", d.log());
    }

    // Two stand-in guests on each bridge, with leases.
    let mut guests = Vec::new();
    for (i, br) in [&ib, &ib, &nb, &nb].into_iter().enumerate() {
        let ns = Netns::new(format!("{p}{i}"));
        let port = format!("{p}p{i}");
        plug(
            &host,
            br,
            &ns,
            &port,
            &format!("52:54:00:83:00:{:02x}", i + 1),
        );
        let ip = dhcp(&ns, env.dir.path()).unwrap_or_else(|| panic!("lease for guest {i}"));
        guests.push((ns, port, ip));
    }
    let (ia, ib_, na, nb_) = (&guests[0], &guests[1], &guests[2], &guests[3]);

    // Each pair reaches each other, both ways, through our same-bridge accept: its counter
    // rises, which proves these frames did pass the IP forward hook (br_netfilter in effect).
    for (table, br, a, b) in [
        (format!("novacron-{iso}"), &ib, ia, ib_),
        (format!("novacron-{nat}"), &nb, na, nb_),
    ] {
        let cross = format!("iifname \"{br}\" oifname \"{br}\"");
        let before = counter(&host, &table, "forward", &cross);
        assert!(
            a.0.reaches(&b.2),
            "{} cannot reach {} on {br}:\n{}",
            a.2,
            b.2,
            host.nft_ruleset()
        );
        assert!(b.0.reaches(&a.2), "{} cannot reach {} on {br}", b.2, a.2);
        assert!(
            counter(&host, &table, "forward", &cross) > before,
            "guest-to-guest frames on {br} bypassed the IP forward hook:\n{}",
            host.nft_ruleset()
        );
    }
    // The NAT network still reaches its uplink's side.
    assert!(na.0.can_ping("203.0.113.2"), "{}", host.nft_ruleset());

    // The isolated network: the gateway, nothing beyond, either way (our reject counts it).
    let itable = format!("novacron-{iso}");
    let rejected = counter(&host, &itable, "forward", "reject");
    // The rule that stops what comes in for the bridge (the first `reject` is the outgoing one).
    let rejected_in = || {
        let out = host.exec(&["nft", "list", "chain", "inet", &itable, "forward"]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with(&format!("oifname \"{ib}\" counter")) && l.ends_with("reject"))
            .and_then(|l| l.split_whitespace().skip_while(|w| *w != "packets").nth(1))
            .and_then(|n| n.parse::<u64>().ok())
            .expect("the incoming reject rule")
    };
    let rejected_in_before = rejected_in();
    for g in [ia, ib_] {
        assert!(g.0.can_ping("10.83.0.1"), "{} lost its gateway", g.2);
        g.0.ip(&["route", "replace", "default", "via", "10.83.0.1"]);
        assert!(
            !g.0.can_ping("203.0.113.2"),
            "{} on an isolated network reached the WAN",
            g.2
        );
        assert!(
            !wan.can_ping(&g.2),
            "the WAN reached {} on an isolated network",
            g.2
        );
    }
    assert!(counter(&host, &itable, "forward", "reject") > rejected);
    assert!(
        rejected_in() > rejected_in_before,
        "the WAN's pings were not stopped on their way in:\n{}",
        host.nft_ruleset()
    );

    // Port isolation (the bridge's own flag) still keeps guests apart on the same bridge: it
    // acts before the IP hook, so our accept does not undo it.
    for g in [ia, ib_] {
        host.ip(&[
            "link",
            "set",
            "dev",
            &g.1,
            "type",
            "bridge_slave",
            "isolated",
            "on",
        ]);
    }
    assert!(!ia.0.can_ping(&ib_.2), "isolated ports: a reached b");
    assert!(!ib_.0.can_ping(&ia.2), "isolated ports: b reached a");
    assert!(
        ia.0.can_ping("10.83.0.1"),
        "an isolated port lost its gateway"
    );

    for n in [&iso, &nat] {
        let r = curl(&d.socket, "POST", &format!("/v1/networks/{n}/stop"), &[]);
        assert_eq!(r.status, 200, "{r:?}");
    }
}
