//! Every `novactl` command line of README.md, run as written against a real novacrond (the
//! daemon is found through `NOVACRON_SOCKET`, the files the lines name are in the working
//! directory). novactl's unit tests check what each line parses to; this checks what it does.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::daemon::curl;
use common::readme::{novactl_lines, README};
use common::*;

struct Ran {
    code: i32,
    stdout: String,
    stderr: String,
}

fn command(dir: &Path, socket: &Path, words: &[String]) -> Command {
    assert_eq!(words[0], "novactl");
    let mut c = Command::new(env!("CARGO_BIN_EXE_novactl"));
    c.args(&words[1..])
        .current_dir(dir)
        .env("NOVACRON_SOCKET", socket)
        .env_remove("NOVACRON_TOKEN")
        .env_remove("NOVACRON_CACERT")
        .stdin(Stdio::null());
    c
}

fn run(dir: &Path, socket: &Path, words: &[String]) -> Ran {
    let out: Output = command(dir, socket, words).output().expect("novactl");
    let ran = Ran {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    eprintln!(
        "{} -> {}\n{}{}",
        words.join(" "),
        ran.code,
        ran.stdout,
        ran.stderr
    );
    ran
}

fn ok(ran: &Ran, line: &str) {
    assert_eq!(ran.code, 0, "{line}: {}", ran.stderr);
}

/// `novactl events` running in the background; its output lines as they come.
struct Follow {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Follow {
    /// Whether a line containing `what` comes within `timeout`.
    fn saw_within(&self, what: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(what) => return true,
                Ok(_) => {}
                Err(_) => return false,
            }
        }
        false
    }

    fn wait_for(&self, what: &str) {
        assert!(
            self.saw_within(what, Duration::from_secs(120)),
            "novactl events never printed {what:?}"
        );
    }
}

impl Drop for Follow {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn every_readme_novactl_line_does_what_it_says() {
    let env = Env::new();
    let d = env.start_daemon("");
    let dir = env.dir.path();
    let socket = d.socket.as_path();
    std::fs::write(dir.join("web1.xml"), osless("web1").to_xml()).unwrap();
    std::fs::write(
        dir.join("pve1.cred"),
        "user = root@pam\npassword = pve-secret-5\n",
    )
    .unwrap();
    let lines: HashMap<String, Vec<String>> = novactl_lines(README)
        .into_iter()
        .map(|w| (w.join(" "), w))
        .collect();
    let mut done = Vec::new();
    let mut line = |l: &str| -> Vec<String> {
        done.push(l.to_owned());
        lines
            .get(l)
            .unwrap_or_else(|| panic!("README.md no longer has {l:?}"))
            .clone()
    };

    let r = run(dir, socket, &line("novactl list --all"));
    ok(&r, "list");
    assert!(r.stdout.starts_with("NAME"), "{}", r.stdout);
    ok(
        &run(dir, socket, &line("novactl define -f web1.xml")),
        "define",
    );
    ok(&run(dir, socket, &line("novactl start web1")), "start");
    let r = run(dir, socket, &line("novactl info web1"));
    ok(&r, "info");
    assert!(r.stdout.contains("running"), "{}", r.stdout);
    // The events line follows what happens from here on.
    let mut events = command(dir, socket, &line("novactl events"));
    let mut child = events.stdout(Stdio::piped()).spawn().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let follow = Follow { child, lines: rx };
    let state = || curl(socket, "GET", "/v1/domains/web1", &[]).json()["state"].clone();
    // The stream may not be subscribed yet when the first suspend happens: until it has
    // shown one, suspend and resume again.
    let mut followed = false;
    for _ in 0..20 {
        ok(&run(dir, socket, &line("novactl suspend web1")), "suspend");
        assert_eq!(state(), "paused");
        followed = follow.saw_within("running -> paused", Duration::from_secs(3));
        ok(&run(dir, socket, &line("novactl resume web1")), "resume");
        assert_eq!(state(), "running");
        if followed {
            break;
        }
    }
    assert!(followed, "novactl events never showed a suspend");

    let r = run(dir, socket, &line("novactl qmp web1 query-status"));
    ok(&r, "qmp");
    assert!(r.stdout.contains("running"), "{}", r.stdout);

    // Host CPUs 2 and 3: pinned where the host has them, else refused naming them.
    let r = run(
        dir,
        socket,
        &line("novactl vcpupin web1 0 2-3 --live --config"),
    );
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let online = std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap_or_default();
    if cpus >= 4 && r.code == 0 {
        let pins = curl(socket, "GET", "/v1/domains/web1/pinning", &[]).json();
        assert!(pins.to_string().contains("2-3"), "{pins}");
    } else {
        assert_ne!(r.code, 0, "pinned to CPUs 2-3 on a host with CPUs {online}");
        assert!(r.stderr.contains("2-3"), "{}", r.stderr);
    }

    // No peer answers at peer:8443: the migration fails and the guest keeps running here.
    let r = run(
        dir,
        socket,
        &line("novactl migrate web1 https://peer:8443 --destination-token T"),
    );
    assert_ne!(r.code, 0, "{}", r.stdout);
    assert!(r.stderr.contains("peer"), "{}", r.stderr);
    assert_eq!(state(), "running");

    // SeaBIOS ignores the power button: the timeout passes and --force powers it off. Run in
    // the background; the remote-host lines below do not touch web1.
    let shutdown = {
        let (dir, socket) = (dir.to_owned(), socket.to_owned());
        let words = line("novactl shutdown web1 --timeout 60 --force");
        std::thread::spawn(move || run(&dir, &socket, &words))
    };
    follow.wait_for("shutting_down");

    let r = run(dir, socket, &line("novactl hosts discover pve.example"));
    assert!(r.code == 0 || !r.stderr.is_empty(), "{}", r.stdout);
    assert!(
        format!("{}{}", r.stdout, r.stderr).contains("pve.example"),
        "{}",
        r.stdout
    );

    // The registration goes to the daemon (NOVACRON_SOCKET), the vendor's address as data
    // (the daemon reaches the vendor when it is first used; pve.example does not resolve).
    let register = line("novactl hosts register pve1 --driver proxmox --endpoint https://pve.example:8006 --credentials-file pve1.cred");
    ok(&run(dir, socket, &register), "register");
    let host = curl(socket, "GET", "/v1/hosts/pve1", &[]).json();
    let url = |h: &serde_json::Value| {
        h["url"]
            .as_str()
            .unwrap_or_default()
            .trim_end_matches('/')
            .to_owned()
    };
    assert_eq!(url(&host), "https://pve.example:8006", "{host}");
    assert!(!host.to_string().contains("pve-secret-5"), "{host}");
    let r = run(dir, socket, &line("novactl --host pve1 list --all"));
    assert_ne!(r.code, 0, "{}", r.stdout);
    assert!(r.stderr.contains("pve1"), "{}", r.stderr);
    let r = curl(socket, "DELETE", "/v1/hosts/pve1", &[]);
    assert_eq!(r.status, 204, "{}", r.body);
    // Against a vendor that answers (the fakepve peer, its CA given): the same line with
    // that one address, registered, and the vendor's guests reached through the daemon.
    let pve =
        novacron_tests::peers::fakepve::start(2).expect("fakepve (quickstart.sh installs it)");
    std::fs::write(
        dir.join("pve1.cred"),
        format!("user = {}\npassword = {}\n", pve.user, pve.password),
    )
    .unwrap();
    let mut local: Vec<String> = register
        .iter()
        .map(|w| w.replace("https://pve.example:8006", &pve.url))
        .collect();
    // A CA named in a request is read only from <state_dir>/pki.
    let pki = env.config.state_dir.join("pki");
    std::fs::create_dir_all(&pki).unwrap();
    let ca_file = pki.join("fakepve-ca.pem");
    std::fs::copy(&pve.ca_file, &ca_file).unwrap();
    local.extend(["--ca-file".to_owned(), ca_file.display().to_string()]);
    ok(&run(dir, socket, &local), "register");
    let host = curl(socket, "GET", "/v1/hosts/pve1", &[]).json();
    assert_eq!(url(&host), pve.url.trim_end_matches('/'), "{host}");
    assert_eq!(host["driver"], "proxmox", "{host}");
    assert!(!host.to_string().contains(&pve.password), "{host}");

    // The line as it was once written (--url for the vendor) is refused by clap before
    // anything is sent: the address it names hears nothing.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let old = format!(
        "novactl hosts register pve2 --driver proxmox --url http://{} --credentials-file pve1.cred",
        listener.local_addr().unwrap()
    );
    let words: Vec<String> = old.split(' ').map(str::to_owned).collect();
    let r = run(dir, socket, &words);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("--endpoint"), "{}", r.stderr);
    assert!(
        matches!(listener.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "novactl connected to the address given as --url"
    );
    assert_eq!(curl(socket, "GET", "/v1/hosts/pve2", &[]).status, 404);

    let r = run(dir, socket, &line("novactl --host pve1 list --all"));
    ok(&r, "--host list");
    assert!(r.stdout.contains("vm-000"), "{}", r.stdout);
    // fakepve has no web7: the vendor's answer comes back naming it.
    let r = run(dir, socket, &line("novactl --host pve1 start web7"));
    assert_ne!(r.code, 0, "{}", r.stdout);
    assert!(r.stderr.contains("web7"), "{}", r.stderr);

    let r = shutdown.join().unwrap();
    ok(&r, "shutdown");
    follow.wait_for("shutoff");
    assert_eq!(state(), "shutoff");

    // Every README line was run.
    let mut all: Vec<String> = lines.keys().cloned().collect();
    all.sort();
    done.sort();
    done.dedup();
    assert_eq!(done, all);
}
