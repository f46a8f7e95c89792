//! Issue 16: `<disk type='network'>` against real servers. A real novacrond boots an OS-less
//! guest whose disks are served by `qemu-nbd` (over a Unix socket) and by an HTTP server with
//! byte ranges (over loopback TCP), both started here; QMP shows the nodes QEMU opened and the
//! guest's reads return the bytes the servers hold. An operator defining a network disk is
//! refused (403, the field named, audited): QEMU would connect from the host's position.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::daemon::{curl, curl_tcp, tcp_api, Reply};
use common::{audit_entries, osless, Env};

const XML: &[&str] = &["-H", "Content-Type: application/xml", "--data-binary"];
const TOKEN: &str = "op-s3cret";

/// A helper server this test started; killed (by its own pid) when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("run a system command");
    assert!(out.status.success(), "{cmd:?}: {out:?}");
}

/// `qemu-nbd` exporting `image` as `export` on a Unix socket QEMU's user may connect to.
fn qemu_nbd(image: &Path, format: &str, export: &str, socket: &Path) -> Server {
    let child = Command::new("qemu-nbd")
        .args([
            "--persistent",
            "--shared=4",
            "-f",
            format,
            "-x",
            export,
            "-k",
        ])
        .arg(socket)
        .arg(image)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("qemu-nbd (qemu-utils) must be installed");
    let server = Server(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::os::unix::net::UnixStream::connect(socket).is_err() {
        assert!(Instant::now() < deadline, "qemu-nbd never listened");
        std::thread::sleep(Duration::from_millis(20));
    }
    // QEMU runs as novacron-qemu: connecting needs write permission on the socket.
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    server
}

/// The range-capable HTTP server serving `dir`, and its port.
fn http_server(dir: &Path) -> (Server, u16) {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/range_http.py");
    let log = std::fs::File::create(dir.with_extension("log")).unwrap();
    let mut child = Command::new("python3")
        .arg("-u")
        .arg(script)
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("python3 must be installed");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("port: {line:?}"));
    (Server(child), port)
}

fn wait_state(socket: &Path, name: &str, state: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = curl(socket, "GET", &format!("/v1/domains/{name}"), &[]);
        if r.status == 200 && r.json()["state"] == state {
            return;
        }
        assert!(Instant::now() < deadline, "{name} never {state}: {r:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn qmp(socket: &Path, name: &str, cmd: serde_json::Value) -> serde_json::Value {
    let r = curl(
        socket,
        "POST",
        &format!("/v1/domains/{name}/qmp"),
        &[
            "-H",
            "Content-Type: application/json",
            "-d",
            &cmd.to_string(),
        ],
    );
    assert_eq!(r.status, 200, "{cmd}: {r:?}");
    r.json()["return"].clone()
}

/// What QEMU reads through a disk node, checked against a byte pattern by QEMU itself
/// (HMP `qemu-io`, which prints its report on QEMU's stdout: the guest's QEMU log).
fn guest_reads(env: &Env, name: &str, node: &str, pattern: u8, len: &str) -> String {
    let socket = env.config.run_dir.join("novacrond.sock");
    let log = env.config.log_dir.join("qemu").join(format!("{name}.log"));
    let before = std::fs::read(&log).map(|b| b.len()).unwrap_or(0);
    let line = format!("qemu-io {node} \"read -P {pattern:#x} 0 {len}\"");
    qmp(
        &socket,
        name,
        serde_json::json!({"execute": "human-monitor-command",
                           "arguments": {"command-line": line}}),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read(&log).unwrap_or_default();
        let new = String::from_utf8_lossy(text.get(before..).unwrap_or_default()).into_owned();
        if new.contains("bytes at offset") {
            return new;
        }
        assert!(
            Instant::now() < deadline,
            "no qemu-io report in {}: {new}",
            log.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn guest_xml(name: &str, devices: &str) -> String {
    osless(name).to_xml().replace(
        "</domain>",
        &format!("<devices>{devices}</devices></domain>"),
    )
}

#[test]
fn a_guest_boots_with_disks_from_real_nbd_and_http_servers() {
    assert!(nix::unistd::geteuid().is_root(), "this test needs root");
    let env = Env::new();
    let daemon = env.start_daemon("");
    let sock = &daemon.socket;
    let srv = env.dir.path().join("srv");
    std::fs::create_dir(&srv).unwrap();
    std::fs::set_permissions(&srv, std::fs::Permissions::from_mode(0o755)).unwrap();

    // NBD: a qcow2 with a known pattern, exported over a Unix socket.
    let qcow = srv.join("nbd.qcow2");
    let q = qcow.to_str().unwrap();
    run(Command::new("qemu-img").args(["create", "-q", "-f", "qcow2", q, "16M"]));
    run(Command::new("qemu-io").args(["-f", "qcow2", "-c", "write -P 0xab 0 64k", q]));
    let nbd_sock = srv.join("nbd.sock");
    let _nbd = qemu_nbd(&qcow, "qcow2", "exp", &nbd_sock);

    // HTTP: a raw image with another pattern, served read-only with byte ranges.
    let www = srv.join("www");
    std::fs::create_dir(&www).unwrap();
    std::fs::write(www.join("disk.raw"), vec![0xcd; 4 << 20]).unwrap();
    let (_http, port) = http_server(&www);

    let devices = format!(
        "<disk type='network' device='disk'><driver name='qemu' type='raw'/>\
           <source protocol='nbd' name='exp'><host transport='unix' socket='{}'/></source>\
           <target dev='vdb' bus='virtio'/></disk>\
         <disk type='network' device='disk'><driver name='qemu' type='raw'/>\
           <source protocol='http' name='disk.raw'><host name='127.0.0.1' port='{port}'/></source>\
           <target dev='vdc' bus='virtio'/><readonly/></disk>\
         <interface type='user'><mac address='52:54:00:16:00:01'/><model type='virtio'/>\
           <driver name='qemu' queues='1' rx_queue_size='512' tx_queue_size='512'/></interface>",
        nbd_sock.display()
    );
    let mut args = XML.to_vec();
    let xml = guest_xml("netdisk", &devices);
    args.push(&xml);
    let r = curl(sock, "POST", "/v1/domains", &args);
    assert!(r.status == 200 || r.status == 201, "{r:?}");
    // Stored as written: the definition comes back with both sources.
    let r = curl(sock, "GET", "/v1/domains/netdisk/xml", &[]);
    assert!(
        r.body.contains("<source protocol='nbd' name='exp'>"),
        "{}",
        r.body
    );
    assert!(
        r.body
            .contains(&format!("<host name='127.0.0.1' port='{port}'/>")),
        "{}",
        r.body
    );
    assert!(r.body.contains("rx_queue_size='512'"), "{}", r.body);

    let r = curl(sock, "POST", "/v1/domains/netdisk/start", &[]);
    assert_eq!(r.status, 200, "{r:?}");
    wait_state(sock, "netdisk", "running");

    let nodes = qmp(
        sock,
        "netdisk",
        serde_json::json!({"execute": "query-named-block-nodes"}),
    );
    let node = |name: &str| {
        nodes
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["node-name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no node {name}: {nodes:#}"))
    };
    let nbd = node("disk0-storage");
    assert_eq!(nbd["drv"], "nbd", "{nbd:#}");
    let file = nbd["file"].as_str().unwrap_or_default();
    assert!(
        file.contains(&format!("socket={}", nbd_sock.display())) && file.contains("exp"),
        "{nbd:#}"
    );
    let http = node("disk1-storage");
    assert_eq!(http["drv"], "http", "{http:#}");
    assert_eq!(
        http["file"],
        format!("http://127.0.0.1:{port}/disk.raw"),
        "{http:#}"
    );
    assert_eq!(http["ro"], true, "{http:#}");
    assert_eq!(http["image"]["virtual-size"], 4 << 20, "{http:#}");
    let blocks = qmp(
        sock,
        "netdisk",
        serde_json::json!({"execute": "query-block"}),
    );
    let devs: Vec<&str> = blocks
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|b| b["qdev"].as_str())
        .collect();
    assert!(
        devs.iter().any(|d| d.contains("virtio-vdb"))
            && devs.iter().any(|d| d.contains("virtio-vdc")),
        "{blocks:#}"
    );

    // The bytes come from the servers: QEMU reads them through each node.
    let out = guest_reads(&env, "netdisk", "disk0", 0xab, "64k");
    assert!(out.contains("read 65536/65536 bytes"), "{out}");
    assert!(!out.contains("verification failed"), "{out}");
    let out = guest_reads(&env, "netdisk", "disk1", 0xcd, "64k");
    assert!(out.contains("read 65536/65536 bytes"), "{out}");
    assert!(!out.contains("verification failed"), "{out}");
    let http_log = std::fs::read_to_string(www.with_extension("log")).unwrap();
    assert!(http_log.contains("GET /disk.raw bytes="), "{http_log}");
    // And a wrong pattern is noticed: the check above can fail.
    let out = guest_reads(&env, "netdisk", "disk0", 0x11, "4k");
    assert!(out.contains("Pattern verification failed"), "{out}");

    // The NIC driver settings reached the device.
    let rx = qmp(
        sock,
        "netdisk",
        serde_json::json!({"execute": "qom-get",
                           "arguments": {"path": "/machine/peripheral/net0", "property": "rx_queue_size"}}),
    );
    assert_eq!(rx, 512);

    let r = curl(sock, "POST", "/v1/domains/netdisk/destroy", &[]);
    assert_eq!(r.status, 200, "{r:?}");
    wait_state(sock, "netdisk", "shutoff");
}

fn curl_token(port: u16, xml: &str) -> Reply {
    curl_tcp(
        port,
        TOKEN,
        "POST",
        "/v1/domains",
        &["-H", "Content-Type: application/xml", "--data-binary", xml],
    )
}

#[test]
fn an_operator_may_not_make_qemu_connect_anywhere() {
    let env = Env::new();
    let daemon = env.start_daemon(&tcp_api(&[("ops", TOKEN, "operator")]));
    let port = daemon.tcp_port();
    let images = env.config.state_dir.join("images");
    let cases = [
        (
            "ssrf-nbd",
            "<source protocol='nbd' name='x'><host name='127.0.0.1' port='22'/></source>",
            "devices.disks[0].source: nbd://127.0.0.1:22/x: nbd network disks are for admins only",
        ),
        (
            "ssrf-http",
            "<source protocol='http' name='latest/meta-data'><host name='169.254.169.254'/></source>",
            "devices.disks[0].source: http://169.254.169.254:80/latest/meta-data: http network \
             disks are for admins only (QEMU would connect from this host's network position",
        ),
        (
            // Even a socket inside the storage roots: QEMU connects to it by name.
            "nbd-unix",
            &format!(
                "<source protocol='nbd'><host transport='unix' socket='{}/n.sock'/></source>",
                images.display()
            ),
            "nbd network disks are for admins only",
        ),
    ];
    for (name, source, why) in &cases {
        let xml = guest_xml(
            name,
            &format!(
                "<disk type='network' device='disk'><driver name='qemu' type='raw'/>{source}\
                 <target dev='vda' bus='virtio'/><readonly/></disk>"
            ),
        );
        let r = curl_token(port, &xml);
        assert_eq!(r.status, 403, "{name}: {r:?}");
        assert_eq!(r.error_code(), "forbidden", "{name}: {r:?}");
        let msg = r.json()["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(msg.contains(why), "{name}: {msg}\nwanted: {why}");
        let entry = audit_entries(&env)
            .into_iter()
            .find(|e| e["op"] == "define" && e["domain"] == *name && e["result"] == "forbidden")
            .unwrap_or_else(|| panic!("{name}: refusal not audited: {:#?}", audit_entries(&env)));
        assert!(
            entry["error"]
                .as_str()
                .unwrap_or_default()
                .contains("devices.disks[0].source"),
            "{entry}"
        );
        assert_eq!(entry["actor"]["role"], "operator", "{entry}");
        assert_eq!(
            curl(&daemon.socket, "GET", &format!("/v1/domains/{name}"), &[]).status,
            404
        );
    }
    // Root (an admin on the socket) may define the same.
    let mut args = XML.to_vec();
    let xml = guest_xml(
        "admin-nbd",
        "<disk type='network' device='disk'><driver name='qemu' type='raw'/>\
         <source protocol='nbd' name='x'><host name='127.0.0.1' port='22'/></source>\
         <target dev='vda' bus='virtio'/></disk>",
    );
    args.push(&xml);
    let r = curl(&daemon.socket, "POST", "/v1/domains", &args);
    assert!(r.status == 200 || r.status == 201, "{r:?}");
}
