//! Taps and macvtaps the daemon makes for guests: on a test bridge / a veth the test creates
//! (names `t<pid>...`, removed by a Drop guard), with a real daemon and real QEMU.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::daemon::{curl, Daemon};
use common::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Host links this test made; deleted (with the netns) whatever happens.
struct Net {
    links: Vec<String>,
    netns: Vec<String>,
}

impl Net {
    fn new() -> Net {
        Net {
            links: Vec::new(),
            netns: Vec::new(),
        }
    }

    fn name(suffix: &str) -> String {
        let n = format!("t{}{suffix}", std::process::id());
        assert!(n.len() <= 15, "{n}");
        n
    }

    /// A bridge with MTU 1400, up.
    fn bridge(&mut self, suffix: &str) -> String {
        let br = Self::name(suffix);
        ip(&["link", "add", &br, "mtu", "1400", "type", "bridge"]);
        self.links.push(br.clone());
        ip(&["link", "set", &br, "up"]);
        br
    }

    /// A veth pair whose peer lives in a new netns; returns (host end, netns).
    fn veth_to_netns(&mut self, suffix: &str) -> (String, String) {
        let (host, peer, ns) = (
            Self::name(&format!("{suffix}h")),
            Self::name(&format!("{suffix}p")),
            Self::name(&format!("{suffix}n")),
        );
        ip(&["netns", "add", &ns]);
        self.netns.push(ns.clone());
        ip(&["link", "add", &host, "type", "veth", "peer", "name", &peer]);
        self.links.push(host.clone());
        ip(&["link", "set", &peer, "netns", &ns]);
        ip(&["link", "set", &host, "up"]);
        ip(&["-n", &ns, "link", "set", &peer, "up"]);
        (host, ns)
    }

    /// An interface the daemon did not make, carrying a marker-like alias all the same.
    fn foreign(&mut self, suffix: &str, alias: &str) -> String {
        let n = Self::name(suffix);
        ip(&["link", "add", &n, "type", "bridge"]);
        self.links.push(n.clone());
        ip(&["link", "set", &n, "alias", alias]);
        n
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for l in &self.links {
            let _ = Command::new("ip").args(["link", "del", l]).output();
        }
        for n in &self.netns {
            let _ = Command::new("ip").args(["netns", "del", n]).output();
        }
    }
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `ip -j -d link` facts of one link, or None when there is no such link.
fn link(name: &str) -> Option<serde_json::Value> {
    let out = Command::new("ip")
        .args(["-j", "-d", "link", "show", "dev", name])
        .output()
        .expect("ip");
    if !out.status.success() {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ip -j");
    v.get(0).cloned()
}

/// Every link whose ifalias is the daemon's marker for `domain`.
fn links_of(domain: &str) -> Vec<serde_json::Value> {
    let out = Command::new("ip")
        .args(["-j", "link", "show"])
        .output()
        .expect("ip");
    let v: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).expect("ip -j");
    v.into_iter()
        .filter(|l| l["ifalias"] == format!("novacron:{domain}"))
        .collect()
}

async fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
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

fn define(d: &Daemon, xml: &str) -> common::daemon::Reply {
    curl(
        &d.socket,
        "POST",
        "/v1/domains",
        &["-H", "Content-Type: application/xml", "--data-binary", xml],
    )
}

fn act(d: &Daemon, name: &str, action: &str) -> common::daemon::Reply {
    curl(
        &d.socket,
        "POST",
        &format!("/v1/domains/{name}/{action}"),
        &[],
    )
}

fn spawn_daemon(env: &Env) -> Daemon {
    env.start_daemon("")
}

fn kill_9(d: Daemon) {
    let pid = Pid::from_raw(d.child.id() as i32);
    kill(pid, Signal::SIGKILL).expect("kill -9 the daemon");
    drop(d);
}

#[tokio::test]
async fn bridge_and_macvtap_nics_are_made_removed_and_adopted() {
    let env = Env::new();
    let mut net = Net::new();
    let br = net.bridge("b");
    let (veth, _ns) = net.veth_to_netns("v");
    let d = spawn_daemon(&env);

    // A tap on the bridge: a port of it, with the bridge's MTU, the host-side MAC and our
    // marker; a macvtap on the veth with the guest's MAC.
    let r = define(
        &d,
        &osless_xml(
            "tapguest",
            &format!(
                "<interface type='bridge'><mac address='52:54:00:aa:00:01'/>\
                 <source bridge='{br}'/><model type='virtio'/></interface>"
            ),
        ),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let r = define(
        &d,
        &osless_xml(
            "mvtguest",
            &format!(
                "<interface type='direct'><mac address='52:54:00:aa:00:02'/>\
                 <source dev='{veth}' mode='bridge'/><model type='virtio'/></interface>"
            ),
        ),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    for g in ["tapguest", "mvtguest"] {
        let r = act(&d, g, "start");
        assert_eq!(r.status, 200, "start {g}: {}", r.body);
    }
    let taps = links_of("tapguest");
    assert_eq!(taps.len(), 1, "{taps:?}");
    let tap = taps[0].clone();
    let tap_name = tap["ifname"].as_str().unwrap().to_owned();
    assert!(
        tap_name.starts_with("nc") && tap_name.len() <= 15,
        "{tap_name}"
    );
    assert_eq!(tap["master"], br.as_str(), "{tap}");
    assert_eq!(tap["mtu"], 1400, "{tap}");
    assert_eq!(tap["address"], "fe:54:00:aa:00:01", "{tap}");
    assert!(
        tap["flags"].as_array().unwrap().iter().any(|f| f == "UP"),
        "{tap}"
    );
    let tun = link(&tap_name).expect("tap");
    assert_eq!(tun["linkinfo"]["info_kind"], "tun", "{tun}");
    assert_eq!(tun["linkinfo"]["info_data"]["type"], "tap", "{tun}");
    // Not persistent: QEMU holds it.
    assert_eq!(tun["linkinfo"]["info_data"]["persist"], false, "{tun}");

    let mvts = links_of("mvtguest");
    assert_eq!(
        mvts.len(),
        1,
        "{}",
        String::from_utf8_lossy(
            &Command::new("ip")
                .args(["-d", "link"])
                .output()
                .unwrap()
                .stdout
        )
    );
    let mvt_name = mvts[0]["ifname"].as_str().unwrap().to_owned();
    assert_eq!(mvts[0]["address"], "52:54:00:aa:00:02", "{:?}", mvts[0]);
    assert_eq!(mvts[0]["link"], veth.as_str(), "{:?}", mvts[0]);
    let mvt = link(&mvt_name).expect("macvtap");
    assert_eq!(mvt["linkinfo"]["info_kind"], "macvtap", "{mvt}");
    assert_eq!(mvt["linkinfo"]["info_data"]["mode"], "bridge", "{mvt}");

    // A foreign interface wearing our marker and another with the name pattern: untouched.
    let foreign = net.foreign("f", "novacron:mvtguest");

    // kill -9 of the daemon; the macvtap guest's QEMU dies while no daemon watches.
    kill_9(d);
    let mvt_pid = recorded_pid(&env, "mvtguest");
    kill(Pid::from_raw(mvt_pid as i32), Signal::SIGKILL).unwrap();
    wait_for(
        "the macvtap guest's QEMU to exit",
        Duration::from_secs(10),
        || !pid_alive(mvt_pid),
    )
    .await;
    // The macvtap is persistent: only the daemon can remove it.
    assert!(
        link(&mvt_name).is_some(),
        "macvtap gone before the daemon ran"
    );

    let d = spawn_daemon(&env);
    assert!(
        link(&mvt_name).is_none(),
        "a stopped guest's macvtap was kept"
    );
    assert!(link(&foreign).is_some(), "a foreign interface was deleted");
    // The running guest keeps its tap, still on the bridge.
    let tun = link(&tap_name).expect("the running guest lost its tap");
    assert_eq!(tun["master"], br.as_str(), "{tun}");

    // Stopping it removes the tap; starting again makes it again.
    assert_eq!(act(&d, "tapguest", "destroy").status, 200);
    wait_for("the tap to go", Duration::from_secs(10), || {
        link(&tap_name).is_none()
    })
    .await;
    assert_eq!(act(&d, "mvtguest", "start").status, 200);
    assert!(link(&mvt_name).is_some());
    assert_eq!(act(&d, "mvtguest", "destroy").status, 200);
    assert!(link(&mvt_name).is_none(), "destroy left the macvtap");
    assert!(link(&foreign).is_some());
}

#[tokio::test]
async fn bad_nic_sources_are_refused_and_leave_nothing() {
    let env = Env::new();
    let d = spawn_daemon(&env);
    let missing = Net::name("nob");
    let r = define(
        &d,
        &osless_xml(
            "nobridge",
            &format!(
                "<interface type='bridge'><source bridge='{missing}'/>\
                 <model type='virtio'/></interface>"
            ),
        ),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let r = act(&d, "nobridge", "start");
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.error_code(), "invalid_config", "{}", r.body);
    assert!(
        r.body.contains("devices.interfaces[0].source.bridge"),
        "{}",
        r.body
    );
    assert!(
        r.body.contains(&format!("no bridge '{missing}'")),
        "{}",
        r.body
    );
    assert!(links_of("nobridge").is_empty());
    let r = curl(&d.socket, "GET", "/v1/domains/nobridge", &[]);
    assert_eq!(r.json()["state"], "shutoff", "{}", r.body);

    // An interface name over 15 bytes.
    let r = define(
        &d,
        &osless_xml(
            "longname",
            "<interface type='direct'><source dev='a-name-of-16-byt' mode='bridge'/>\
             <model type='virtio'/></interface>",
        ),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(
        r.body.contains("devices.interfaces[0].source.dev"),
        "{}",
        r.body
    );
    assert!(r.body.contains("longer than 15 bytes"), "{}", r.body);
    assert_eq!(
        curl(&d.socket, "GET", "/v1/domains/longname", &[]).status,
        404
    );

    // A MAC another domain has: refused, naming it; nothing defined.
    let nic = "<interface type='user'><mac address='52:54:00:bb:00:01'/>\
               <model type='virtio'/></interface>";
    assert_eq!(define(&d, &osless_xml("macone", nic)).status, 201);
    let r = define(&d, &osless_xml("mactwo", nic));
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("devices.interfaces[0].mac"), "{}", r.body);
    assert!(
        r.body.contains("already used by domain 'macone'"),
        "{}",
        r.body
    );
    assert_eq!(
        curl(&d.socket, "GET", "/v1/domains/mactwo", &[]).status,
        404
    );
    // Redefining the owner with its own MAC is fine.
    assert_eq!(define(&d, &osless_xml("macone", nic)).status, 200);
}

fn nics(d: &Daemon, name: &str) -> Vec<serde_json::Value> {
    let r = curl(
        &d.socket,
        "GET",
        &format!("/v1/domains/{name}/interfaces"),
        &[],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    r.json().as_array().cloned().unwrap_or_default()
}

fn json_body(body: &serde_json::Value) -> Vec<String> {
    vec![
        "-H".into(),
        "Content-Type: application/json".into(),
        "--data-binary".into(),
        body.to_string(),
    ]
}

#[tokio::test]
async fn nic_hotplug_on_an_osless_guest_and_its_unanswered_detach() {
    let env = Env::new();
    let mut net = Net::new();
    let br = net.bridge("h");
    // One free root port (the definition's own): define reserves no more.
    let d = env.start_daemon("hotplug_slots = 1");
    let xml = osless_xml(
        "hotnic",
        "<controller type='pci' index='0' model='pcie-root'/>\
         <controller type='pci' index='1' model='pcie-root-port'/>",
    );
    assert_eq!(define(&d, &xml).status, 201);
    assert_eq!(act(&d, "hotnic", "start").status, 200);
    assert!(nics(&d, "hotnic").is_empty());

    // Attach: the tap is made on the bridge and QEMU has the device.
    let attach = |body: serde_json::Value| {
        let args = json_body(&body);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        curl(&d.socket, "POST", "/v1/domains/hotnic/interfaces", &args)
    };
    let r = attach(serde_json::json!({
        "type": "bridge", "source": br, "mac": "52:54:00:cc:00:01", "live": true
    }));
    assert_eq!(r.status, 200, "{}", r.body);
    let ifname = r.json()["ifname"].as_str().expect("ifname").to_owned();
    let tap = link(&ifname).expect("the hot-added tap");
    assert_eq!(tap["master"], br.as_str(), "{tap}");
    assert_eq!(tap["address"], "fe:54:00:cc:00:01", "{tap}");
    let listed = nics(&d, "hotnic");
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["mac"], "52:54:00:cc:00:01");
    assert_eq!(listed[0]["ifname"], ifname.as_str());
    let qmp_path = |cmd: &str, path: &str| {
        let body = serde_json::json!({ "execute": cmd, "arguments": { "path": path } });
        let args = json_body(&body);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let r = curl(&d.socket, "POST", "/v1/domains/hotnic/qmp", &args);
        assert_eq!(r.status, 200, "{}", r.body);
        r.body
    };
    let peripherals = qmp_path("qom-list", "/machine/peripheral");
    assert!(
        peripherals.contains("\"child<virtio-net-pci>\""),
        "QEMU has no virtio-net-pci: {peripherals}"
    );

    // No free root port left: refused, nothing made.
    let r = attach(serde_json::json!({ "type": "bridge", "source": br, "live": true }));
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("no free PCIe root port"), "{}", r.body);
    assert_eq!(links_of("hotnic").len(), 1);

    // Link down, as the guest sees it.
    let args = json_body(&serde_json::json!({ "state": "down" }));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let r = curl(
        &d.socket,
        "POST",
        "/v1/domains/hotnic/interfaces/52:54:00:cc:00:01/link",
        &args,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(nics(&d, "hotnic")[0]["link"], "down");

    // Detach: the OS-less guest never releases the device: a timeout, the NIC still there.
    let r = curl(
        &d.socket,
        "DELETE",
        "/v1/domains/hotnic/interfaces/52:54:00:cc:00:01?live=true&wait_secs=2",
        &[],
    );
    assert_eq!(r.status, 504, "{}", r.body);
    assert_eq!(r.error_code(), "timeout", "{}", r.body);
    assert!(
        link(&ifname).is_some(),
        "the tap went though the NIC stayed"
    );
    assert_eq!(nics(&d, "hotnic").len(), 1);
    // The async slot is free again: the domain takes other jobs.
    assert_eq!(act(&d, "hotnic", "suspend").status, 200);
    assert_eq!(act(&d, "hotnic", "resume").status, 200);

    // Stopping the guest removes the hot-added tap too.
    assert_eq!(act(&d, "hotnic", "destroy").status, 200);
    wait_for("the hot-added tap to go", Duration::from_secs(10), || {
        link(&ifname).is_none()
    })
    .await;
    assert!(links_of("hotnic").is_empty());
}

/// Descriptors of `/dev/net/tun` (taps) the QEMU of `domain` holds.
fn qemu_tun_fds(domain: &str) -> usize {
    let out = Command::new("pgrep")
        .args(["-f", &format!("guest={domain},")])
        .output()
        .expect("pgrep");
    let pids = String::from_utf8_lossy(&out.stdout).to_string();
    let pid = pids
        .lines()
        .next()
        .expect("the guest's QEMU")
        .trim()
        .to_owned();
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("QEMU's descriptors")
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|t| t.to_str() == Some("/dev/net/tun"))
        .count()
}

#[tokio::test]
async fn a_nic_hotplug_qemu_refuses_leaves_no_descriptor_netdev_or_tap_behind() {
    let env = Env::new();
    let mut net = Net::new();
    let br = net.bridge("f");
    let d = env.start_daemon("hotplug_slots = 1");
    // Three root ports: the daemon plugs into pci.1 and pci.3; the test's decoy sits on pci.2.
    let xml = osless_xml(
        "hotfail",
        "<controller type='pci' index='0' model='pcie-root'/>\
         <controller type='pci' index='1' model='pcie-root-port'/>\
         <controller type='pci' index='2' model='pcie-root-port'/>\
         <controller type='pci' index='3' model='pcie-root-port'/>",
    );
    assert_eq!(define(&d, &xml).status, 201);
    assert_eq!(act(&d, "hotfail", "start").status, 200);
    let qmp = |cmd: &str, args: serde_json::Value| {
        let body = serde_json::json!({ "execute": cmd, "arguments": args });
        let args = json_body(&body);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        curl(&d.socket, "POST", "/v1/domains/hotfail/qmp", &args)
    };
    let attach = || {
        let body = serde_json::json!({ "type": "bridge", "source": br, "live": true });
        let args = json_body(&body);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        curl(&d.socket, "POST", "/v1/domains/hotfail/interfaces", &args)
    };
    assert_eq!(qemu_tun_fds("hotfail"), 0);

    // A netdev made behind the daemon's back under the name its first NIC's used to get:
    // the NIC is plugged on a netdev of its own, never on that one.
    let r = qmp(
        "netdev_add",
        serde_json::json!({ "type": "user", "id": "hostnet0" }),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let r = attach();
    assert_eq!(r.status, 200, "{}", r.body);
    let r = qmp(
        "qom-get",
        serde_json::json!({ "path": "/machine/peripheral/net0", "property": "netdev" }),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.body.contains("hostnet0-"),
        "the NIC is on someone else's netdev: {}",
        r.body
    );
    assert_eq!(qemu_tun_fds("hotfail"), 1);

    // The second NIC's device id taken (an rng on pci.2): getfd and netdev_add succeed,
    // device_add fails (all sent in one batch); the netdev is deleted, which closes the
    // tap's descriptor in QEMU, the tap is removed, nothing recorded.
    let r = qmp(
        "device_add",
        serde_json::json!({ "driver": "virtio-rng-pci", "id": "net1", "bus": "pci.2" }),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let r = attach();
    assert!(r.status >= 400, "{} {}", r.status, r.body);
    assert!(r.body.contains("net1"), "the device_add error: {}", r.body);
    assert_eq!(
        qemu_tun_fds("hotfail"),
        1,
        "QEMU kept the netdev and its tap"
    );
    assert_eq!(links_of("hotfail").len(), 1, "{:?}", links_of("hotfail"));
    assert_eq!(nics(&d, "hotfail").len(), 1);

    assert_eq!(act(&d, "hotfail", "destroy").status, 200);
}
