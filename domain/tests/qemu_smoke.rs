//! Start the real `qemu-system-x86_64` with a golden argv and talk QMP to it: proves QEMU 7.2
//! accepts what the builder emits. Needs only QEMU on PATH; fails loudly without it.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

struct Guard(std::process::Child);
impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn qmp_line(r: &mut BufReader<UnixStream>) -> serde_json::Value {
    loop {
        let mut line = String::new();
        let n = r.read_line(&mut line).expect("read QMP");
        assert!(n > 0, "QMP connection closed");
        let v: serde_json::Value = serde_json::from_str(&line).expect("QMP JSON");
        // Skip asynchronous events.
        if v.get("event").is_none() {
            return v;
        }
    }
}

#[test]
fn qemu_accepts_golden_ci_runner_argv() {
    let status = Command::new("qemu-system-x86_64").arg("--version").output();
    let ok = status.as_ref().is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "qemu-system-x86_64 is required for this test (install qemu-system-x86): {status:?}"
    );

    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let golden = std::fs::read_to_string(root.join("tests/golden/ci-runner.argv")).expect("golden");
    let tmp = std::env::temp_dir().join(format!("novacron-smoke-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).expect("tmpdir");
    let t = tmp.to_str().expect("utf8 tmp");
    for img in ["ci-runner-42-root.img", "ci-runner-42-cache.img"] {
        std::fs::File::create(tmp.join(img))
            .and_then(|f| f.set_len(16 << 20))
            .expect("image");
    }
    // Only host-side paths are substituted; every guest-facing argument is the golden one.
    let mut argv: Vec<String> = golden
        .lines()
        .map(|l| {
            l.replace("/run/novacron/domains/ci-runner", t)
                .replace("/var/lib/novacron/images", t)
                .replace("127.0.0.1:3", &format!("unix:{t}/vnc.sock"))
        })
        .collect();
    argv[0] = "qemu-system-x86_64".into();
    let qmp = tmp.join("qmp.sock");

    let child = Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn qemu");
    let mut guard = Guard(child);
    let deadline = Instant::now() + Duration::from_secs(5);
    let stream = loop {
        if let Ok(s) = UnixStream::connect(&qmp) {
            break s;
        }
        if let Ok(Some(st)) = guard.0.try_wait() {
            let mut err = String::new();
            if let Some(mut e) = guard.0.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            panic!("qemu exited early ({st}): {err}\nargv: {argv:?}");
        }
        assert!(
            Instant::now() < deadline,
            "QMP socket did not appear within 5s"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut w = stream.try_clone().expect("clone");
    let mut r = BufReader::new(stream);
    let greeting = qmp_line(&mut r);
    assert!(greeting.get("QMP").is_some(), "greeting: {greeting}");
    w.write_all(b"{\"execute\":\"qmp_capabilities\"}\n")
        .expect("write");
    assert!(qmp_line(&mut r).get("return").is_some());
    w.write_all(b"{\"execute\":\"query-status\"}\n")
        .expect("write");
    let st = qmp_line(&mut r);
    assert_eq!(st["return"]["status"], "prelaunch", "{st}");
    w.write_all(b"{\"execute\":\"query-name\"}\n")
        .expect("write");
    assert_eq!(qmp_line(&mut r)["return"]["name"], "ci-runner-42");
    w.write_all(b"{\"execute\":\"quit\"}\n").expect("write");
    let _ = qmp_line(&mut r);
    let deadline = Instant::now() + Duration::from_secs(3);
    while guard.0.try_wait().expect("wait").is_none() {
        assert!(Instant::now() < deadline, "qemu did not quit");
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = std::fs::remove_dir_all(&tmp);
}
