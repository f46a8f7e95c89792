//! attach-interface's queues/vlan/target fields and live domiftune, with a real daemon and
//! real QEMU (OS-less guest) on a test bridge (`t<pid>...`, removed by a Drop guard): the
//! multi-queue tap is checked on the host (QEMU's queue descriptors, IFF_MULTI_QUEUE) and in QEMU (the
//! device's `mq`); the tuned limits in tc and in the tap's nftables table, in the answer, in
//! the definition (`--config`); a daemon kill -9 leaves the tuned limits on the adopted taps
//! (and in the ledger) for a later tune, destroy takes them, and a `--config` tune is on the
//! NIC's tap at the next start.

mod common;

use std::process::Command;

use common::daemon::{curl, Daemon, Reply};
use common::*;

struct Links(Vec<String>);

impl Drop for Links {
    fn drop(&mut self) {
        for l in &self.0 {
            let _ = Command::new("ip").args(["link", "del", l]).output();
        }
    }
}

fn name(suffix: &str) -> String {
    let n = format!("t{}{suffix}", std::process::id());
    assert!(n.len() <= 15, "{n}");
    n
}

fn ok(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().expect(cmd);
    assert!(
        out.status.success(),
        "{cmd} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn osless_xml(name: &str, devices: &str) -> String {
    let ty = match novacron_tests::osless_accel() {
        novacron_tests::Accel::Kvm => "kvm",
        novacron_tests::Accel::Tcg => "qemu",
    };
    format!(
        "<domain type='{ty}'><name>{name}</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>\
         <os><type arch='x86_64' machine='q35'>hvm</type></os><features><acpi/></features>\
         <devices>{devices}</devices></domain>"
    )
}

fn post_json(d: &Daemon, path: &str, body: serde_json::Value) -> Reply {
    let body = body.to_string();
    curl(
        &d.socket,
        "POST",
        path,
        &[
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            &body,
        ],
    )
}

fn qmp(d: &Daemon, domain: &str, cmd: &str, args: serde_json::Value) -> serde_json::Value {
    let r = post_json(
        d,
        &format!("/v1/domains/{domain}/qmp"),
        serde_json::json!({ "execute": cmd, "arguments": args }),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()
}

/// The rate of our htb class 1:1 on `dev` as tc prints it (`8Mbit` for 1000 kB/s), or None
/// without the class (this iproute2 has no JSON for classes).
fn class_rate(dev: &str) -> Option<String> {
    let text = ok("tc", &["class", "show", "dev", dev]);
    let line = text.lines().find(|l| l.starts_with("class htb 1:1 "))?;
    let mut words = line.split_whitespace();
    words.find(|w| *w == "rate")?;
    words.next().map(str::to_owned)
}

/// How many open descriptors of any process are queues of tap `dev` (tun's fdinfo `iff:`).
fn tap_queue_fds(dev: &str) -> usize {
    let want = format!("iff:\t{dev}\n");
    let mut n = 0;
    for p in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(fds) = std::fs::read_dir(p.path().join("fdinfo")) else {
            continue;
        };
        for f in fds.flatten() {
            if std::fs::read_to_string(f.path()).is_ok_and(|t| t.contains(&want)) {
                n += 1;
            }
        }
    }
    n
}

/// The tap's own nftables table, or "" when it has none.
fn tap_table(dev: &str) -> String {
    Command::new("nft")
        .args(["list", "table", "bridge", &format!("novacron-nic-{dev}")])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

#[tokio::test]
async fn multi_queue_hotplug_named_tap_and_live_domiftune() {
    let env = Env::new();
    let br = name("q");
    let mut links = Links(vec![br.clone()]);
    ok("ip", &["link", "add", &br, "type", "bridge"]);
    ok("ip", &["link", "set", &br, "up"]);
    let d = env.start_daemon("hotplug_slots = 2");
    let started_mac = "52:54:00:dd:00:01";
    let xml = osless_xml(
        "tunenic",
        &format!(
            "<interface type='bridge'><mac address='{started_mac}'/><source bridge='{br}'/>\
             <model type='virtio'/></interface>"
        ),
    );
    let r = curl(
        &d.socket,
        "POST",
        "/v1/domains",
        &["-H", "Content-Type: application/xml", "--data-binary", &xml],
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(
        curl(&d.socket, "POST", "/v1/domains/tunenic/start", &[]).status,
        200
    );

    // A VLAN on a bridge that does not filter VLANs: refused by name, nothing made.
    let target = name("mq");
    let r = post_json(
        &d,
        "/v1/domains/tunenic/interfaces",
        serde_json::json!({ "type": "bridge", "source": br, "vlan": 42, "target": target,
                            "live": true }),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("vlan_filtering"), "{}", r.body);
    assert!(
        Command::new("ip")
            .args(["link", "show", &target])
            .output()
            .unwrap()
            .stdout
            .is_empty(),
        "a refused attach left its tap"
    );

    // Two queues under the asked name.
    let mac = "52:54:00:dd:00:02";
    let r = post_json(
        &d,
        "/v1/domains/tunenic/interfaces",
        serde_json::json!({ "type": "bridge", "source": br, "mac": mac, "queues": 2,
                            "target": target, "live": true }),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    links.0.push(target.clone());
    assert_eq!(r.json()["ifname"], target.as_str(), "{}", r.body);
    // Two queue descriptors of that tap held by QEMU (tun's fdinfo names the tap). sysfs
    // shows one queue: QEMU detaches the second until a guest driver turns multi-queue on.
    assert_eq!(
        tap_queue_fds(&target),
        2,
        "QEMU should hold two queues of {target}"
    );
    let flags = ok("cat", &[&format!("/sys/class/net/{target}/tun_flags")]);
    let flags = u32::from_str_radix(flags.trim().trim_start_matches("0x"), 16).unwrap();
    assert_ne!(flags & 0x100, 0, "IFF_MULTI_QUEUE missing: {flags:#x}");
    // QEMU's device: the hot-added NIC is net1 (net0 is the started one).
    let mq = qmp(
        &d,
        "tunenic",
        "qom-get",
        serde_json::json!({ "path": "/machine/peripheral/net1", "property": "mq" }),
    );
    assert_eq!(mq["return"], serde_json::json!(true), "{mq}");

    // domiftune by link name: both directions on.
    let tune = |iface: &str, body: serde_json::Value| {
        post_json(
            &d,
            &format!("/v1/domains/tunenic/interfaces/{iface}/bandwidth"),
            body,
        )
    };
    let r = tune(
        &target,
        serde_json::json!({ "inbound": "1000", "outbound": "500" }),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.json()["bandwidth"]["inbound"]["average"],
        1000,
        "{}",
        r.body
    );
    assert_eq!(class_rate(&target).as_deref(), Some("8Mbit"));
    assert!(
        tap_table(&target).contains("limit rate over 500000 bytes/second"),
        "{}",
        tap_table(&target)
    );
    // Inbound raised, outbound cleared: the class follows, the table goes.
    let r = tune(
        mac,
        serde_json::json!({ "inbound": "2000", "outbound": "0" }),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(class_rate(&target).as_deref(), Some("16Mbit"));
    assert_eq!(tap_table(&target), "");
    // A read answers what is on the tap (kept in the ledger).
    let r = tune(&target, serde_json::json!({}));
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["scope"], "live");
    assert_eq!(v["bandwidth"]["inbound"]["average"], 2000, "{v}");
    assert!(v["bandwidth"].get("outbound").is_none(), "{v}");
    // Bad input: named, nothing changed.
    let r = tune(&target, serde_json::json!({ "inbound": "fast" }));
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("inbound"), "{}", r.body);
    assert_eq!(class_rate(&target).as_deref(), Some("16Mbit"));
    let r = tune("52:54:00:dd:00:99", serde_json::json!({ "inbound": "10" }));
    assert_eq!(r.status, 400, "{}", r.body);

    // The started NIC, live and in the definition at once.
    let r = tune(
        started_mac,
        serde_json::json!({ "inbound": "300", "live": true, "config": true }),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let started_tap = r.json()["ifname"].as_str().unwrap().to_owned();
    assert_eq!(class_rate(&started_tap).as_deref(), Some("2400Kbit"));
    let r = tune(started_mac, serde_json::json!({}));
    assert_eq!(
        r.json()["bandwidth"]["inbound"]["average"],
        300,
        "{}",
        r.body
    );
    let r = tune(started_mac, serde_json::json!({ "config": true }));
    assert_eq!(r.json()["scope"], "config", "{}", r.body);
    assert_eq!(
        r.json()["bandwidth"]["inbound"]["average"],
        300,
        "{}",
        r.body
    );

    assert_eq!(
        curl(&d.socket, "POST", "/v1/domains/tunenic/destroy", &[]).status,
        200
    );
    // Stopped, the XML is the definition: it kept the --config change.
    let xml = curl(&d.socket, "GET", "/v1/domains/tunenic/xml", &[]);
    assert!(xml.body.contains("average='300'"), "{}", xml.body);
}

/// The NIC ledger's entry (`<run>/nics/<domain>.json`) of the link `ifname`.
fn ledgered(env: &Env, domain: &str, ifname: &str) -> serde_json::Value {
    let path = env.config.run_dir.join(format!("nics/{domain}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    v["links"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|l| l["ifname"] == ifname)
        .cloned()
        .unwrap_or_else(|| panic!("{ifname} not in the ledger: {text}"))
}

fn link_exists(dev: &str) -> bool {
    Command::new("ip")
        .args(["link", "show", "dev", dev])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[tokio::test]
async fn tuned_limits_survive_a_daemon_kill_and_a_config_tune_comes_with_the_next_start() {
    let env = Env::new();
    let br = name("r");
    let _links = Links(vec![br.clone()]);
    ok("ip", &["link", "add", &br, "type", "bridge"]);
    ok("ip", &["link", "set", &br, "up"]);
    let d = env.start_daemon("");
    let (live_mac, config_mac) = ("52:54:00:dd:01:01", "52:54:00:dd:01:02");
    let nic = |mac: &str| {
        format!(
            "<interface type='bridge'><mac address='{mac}'/><source bridge='{br}'/>\
             <model type='virtio'/></interface>"
        )
    };
    let xml = osless_xml("tunerst", &format!("{}{}", nic(live_mac), nic(config_mac)));
    let r = curl(
        &d.socket,
        "POST",
        "/v1/domains",
        &["-H", "Content-Type: application/xml", "--data-binary", &xml],
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let r = curl(&d.socket, "POST", "/v1/domains/tunerst/start", &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    let tune = |d: &Daemon, iface: &str, body: serde_json::Value| {
        post_json(
            d,
            &format!("/v1/domains/tunerst/interfaces/{iface}/bandwidth"),
            body,
        )
    };

    // One NIC tuned live (both directions), the other in the definition only.
    let r = tune(
        &d,
        live_mac,
        serde_json::json!({ "inbound": "1000", "outbound": "500" }),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let live_tap = r.json()["ifname"].as_str().unwrap().to_owned();
    let r = tune(
        &d,
        config_mac,
        serde_json::json!({ "inbound": "700,,32", "config": true }),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["scope"], "config", "{}", r.body);
    let r = tune(&d, config_mac, serde_json::json!({}));
    let config_tap = r.json()["ifname"].as_str().unwrap().to_owned();
    // --config alone leaves the running tap as it was.
    assert_eq!(class_rate(&config_tap), None);
    assert_eq!(r.json()["bandwidth"], serde_json::json!({}), "{}", r.body);
    assert_eq!(class_rate(&live_tap).as_deref(), Some("8Mbit"));
    let tuned = ledgered(&env, "tunerst", &live_tap)["tuned"].clone();
    assert_eq!(tuned["bandwidth"]["inbound"]["average"], 1000, "{tuned}");

    // kill -9; a new daemon adopts the taps with their limits as they were.
    drop(d);
    let d = env.start_daemon("");
    let r = curl(&d.socket, "GET", "/v1/domains/tunerst", &[]);
    assert_eq!(r.json()["state"], "running", "{}", r.body);
    assert!(link_exists(&live_tap) && link_exists(&config_tap));
    assert_eq!(class_rate(&live_tap).as_deref(), Some("8Mbit"));
    assert!(
        tap_table(&live_tap).contains("limit rate over 500000 bytes/second"),
        "{}",
        tap_table(&live_tap)
    );
    assert_eq!(class_rate(&config_tap), None);
    assert_eq!(
        ledgered(&env, "tunerst", &live_tap)["tuned"],
        tuned,
        "the ledger lost the live tune"
    );
    // The read answers what is on the tap (from the kept ledger), not the definition.
    let r = tune(&d, live_mac, serde_json::json!({}));
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["scope"], "live", "{v}");
    assert_eq!(v["bandwidth"]["inbound"]["average"], 1000, "{v}");
    assert_eq!(v["bandwidth"]["outbound"]["average"], 500, "{v}");
    // A later tune works on the adopted tap: inbound raised, outbound cleared.
    let r = tune(
        &d,
        &live_tap,
        serde_json::json!({ "inbound": "2000", "outbound": "0" }),
    );
    assert_eq!(
        r.status,
        200,
        "{}\n{}",
        r.body,
        std::fs::read_to_string(&d.log).unwrap_or_default()
    );
    assert_eq!(class_rate(&live_tap).as_deref(), Some("16Mbit"));
    assert_eq!(tap_table(&live_tap), "");
    let tuned = ledgered(&env, "tunerst", &live_tap)["tuned"].clone();
    assert_eq!(tuned["bandwidth"]["inbound"]["average"], 2000, "{tuned}");
    assert!(tuned["bandwidth"].get("outbound").is_none(), "{tuned}");

    // Destroyed: the taps go, and with them their qdiscs and tables.
    let r = curl(&d.socket, "POST", "/v1/domains/tunerst/destroy", &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    for tap in [&live_tap, &config_tap] {
        assert!(!link_exists(tap), "{tap} outlived its guest");
        assert_eq!(tap_table(tap), "", "{tap}'s table outlived it");
    }

    // The definition carries the --config limit, not the live one; the next start puts it
    // on the new tap of that NIC, and the live-only tune is gone with the old run.
    let xml = curl(&d.socket, "GET", "/v1/domains/tunerst/xml", &[]).body;
    assert!(xml.contains("<inbound average='700' burst='32'/>"), "{xml}");
    assert_eq!(xml.matches("<bandwidth>").count(), 1, "{xml}");
    let r = curl(&d.socket, "POST", "/v1/domains/tunerst/start", &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    let r = tune(&d, config_mac, serde_json::json!({}));
    assert_eq!(
        r.json()["bandwidth"]["inbound"]["average"],
        700,
        "{}",
        r.body
    );
    let config_tap = r.json()["ifname"].as_str().unwrap().to_owned();
    assert_eq!(class_rate(&config_tap).as_deref(), Some("5600Kbit"));
    let r = tune(&d, live_mac, serde_json::json!({}));
    assert_eq!(r.json()["bandwidth"], serde_json::json!({}), "{}", r.body);
    let live_tap = r.json()["ifname"].as_str().unwrap().to_owned();
    assert_eq!(class_rate(&live_tap), None);
    assert_eq!(tap_table(&live_tap), "");
    let r = curl(&d.socket, "POST", "/v1/domains/tunerst/destroy", &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(!link_exists(&config_tap));
}
