//! TLS on the TCP API: a real novacrond with a certificate from a private CA (made here with
//! the openssl CLI), driven with real curl and the real novactl.

mod common;

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::daemon::curl;
use common::*;

const TOKEN: &str = "tls-secret";

/// A CA and a server certificate for `localhost` and 127.0.0.1, plus an unrelated CA.
struct Pki {
    ca: PathBuf,
    other_ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn make_pki(dir: &Path) -> Pki {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    for (name, cn) in [("ca", "NovaCron test CA"), ("other-ca", "Some other CA")] {
        let (key, pem, subj) = (
            format!("{name}.key"),
            format!("{name}.pem"),
            format!("/CN={cn}"),
        );
        let args = [&["req", "-x509"][..], &ec[..]].concat();
        let tail = ["-keyout", &key, "-out", &pem, "-days", "2", "-subj", &subj];
        openssl(dir, &[&args[..], &tail[..]].concat());
    }
    let args = [&["req"][..], &ec[..]].concat();
    let tail = [
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ];
    openssl(dir, &[&args[..], &tail[..]].concat());
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\n\
         keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ],
    );
    Pki {
        ca: dir.join("ca.pem"),
        other_ca: dir.join("other-ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
    }
}

fn api_config(port: u16, tls: Option<&Pki>) -> String {
    use sha2::Digest as _;
    let hash: String = sha2::Sha256::digest(TOKEN.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let tls = tls
        .map(|p| format!("tls_cert = {:?}\ntls_key = {:?}\n", p.cert, p.key))
        .unwrap_or_default();
    format!(
        "[api]\nlisten = \"127.0.0.1:{port}\"\n{tls}[[api.tokens]]\nname = \"ops\"\nsha256 = \"{hash}\"\nrole = \"operator\"\n"
    )
}

/// curl over TCP: (curl's exit status, HTTP status, body).
fn curl_tcp(args: &[&str], url: &str) -> (i32, u16, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "-o", "-", "-w", "\n%{http_code}"])
        .args(args)
        .arg(url)
        .output()
        .expect("curl must be installed");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (
        out.status.code().unwrap_or(-1),
        code.trim().parse().unwrap_or(0),
        body.to_owned(),
    )
}

fn novactl(args: &[&str], envs: &[(&str, &Path)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_novactl"));
    cmd.args(args)
        .env_remove("NOVACRON_TOKEN")
        .env_remove("NOVACRON_CACERT")
        .env_remove("NOVACRON_SOCKET")
        .stdin(Stdio::null());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().expect("run novactl")
}

#[test]
fn https_needs_a_token_and_plain_http_is_refused() {
    let env = Env::new();
    let pki = make_pki(env.dir.path());
    // Port 0: the daemon binds a free port and logs it (no window for anyone to take it).
    let d = env.start_daemon(&api_config(0, Some(&pki)));
    let port = d.tcp_port();
    let xml = osless("sec1").to_xml();
    let r = curl(
        &d.socket,
        "POST",
        "/v1/domains",
        &["-H", "Content-Type: application/xml", "--data-binary", &xml],
    );
    assert_eq!(r.status, 201, "{}", r.body);

    let ca = pki.ca.to_str().unwrap();
    let auth = format!("Authorization: Bearer {TOKEN}");
    for host in ["localhost", "127.0.0.1"] {
        let url = format!("https://{host}:{port}/v1/domains");
        let (rc, code, body) = curl_tcp(&["--cacert", ca, "-H", &auth], &url);
        assert_eq!((rc, code), (0, 200), "{host}: {body}");
        assert!(body.contains("\"sec1\""), "{body}");
        let (rc, code, body) = curl_tcp(&["--cacert", ca], &url);
        assert_eq!((rc, code), (0, 401), "{host}: {body}");
        assert!(body.contains("unauthorized"), "{body}");
    }
    // The certificate is checked: another CA does not vouch for it.
    let url = format!("https://localhost:{port}/v1/domains");
    let other = pki.other_ca.to_str().unwrap();
    let (rc, code, _) = curl_tcp(&["--cacert", other, "-H", &auth], &url);
    assert!(
        rc != 0 && code == 0,
        "curl with the wrong CA: rc {rc} status {code}"
    );
    // Plain HTTP to the TLS port gets no HTTP answer.
    let plain = format!("http://127.0.0.1:{port}/v1/domains");
    let (rc, code, body) = curl_tcp(&["-k", "-H", &auth], &plain);
    assert!(
        rc != 0 && code == 0,
        "plain HTTP to the TLS port: rc {rc} status {code} {body}"
    );

    // A client that connects and never starts the handshake holds up nobody: another client
    // is served while the silent one is still connected, i.e. before its handshake deadline
    // could have freed anything (ordering, not a stopwatch).
    let mut silent = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let (rc, code, body) = curl_tcp(&["--cacert", ca, "-H", &auth], &url);
    assert_eq!((rc, code), (0, 200), "{body}");
    silent.set_nonblocking(true).unwrap();
    let mut byte = [0u8; 1];
    match std::io::Read::read(&mut silent, &mut byte) {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("the silent client was cut off before another was served: {other:?}"),
    }
}

#[test]
fn novactl_speaks_https_and_checks_the_certificate() {
    let env = Env::new();
    let pki = make_pki(env.dir.path());
    // Port 0: the daemon binds a free port and logs it (no window for anyone to take it).
    let d = env.start_daemon(&api_config(0, Some(&pki)));
    let port = d.tcp_port();
    let xml = osless("sec2").to_xml();
    let r = curl(
        &d.socket,
        "POST",
        "/v1/domains",
        &["-H", "Content-Type: application/xml", "--data-binary", &xml],
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let url = format!("https://127.0.0.1:{port}");
    let ca = pki.ca.to_str().unwrap();

    let out = novactl(
        &[
            "--url", &url, "--cacert", ca, "--token", TOKEN, "list", "--all", "--json",
        ],
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(list[0]["name"], "sec2", "{list}");

    // The CA from the environment; localhost matches the certificate's DNS name.
    let local = format!("https://localhost:{port}");
    let out = novactl(
        &["--url", &local, "--token", TOKEN, "info", "sec2", "--json"],
        &[("NOVACRON_CACERT", &pki.ca)],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Wrong CA, and no CA (the public roots do not know ours): cannot connect, exit 8.
    let other = pki.other_ca.to_str().unwrap();
    for extra in [&["--cacert", other][..], &[][..]] {
        let args = [
            &["--url", &url, "--token", TOKEN][..],
            extra,
            &["list", "--json"][..],
        ]
        .concat();
        let out = novactl(&args, &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(8), "{extra:?}: {stderr}");
        assert!(stderr.contains(&url), "{stderr}");
        assert!(stderr.contains("certificate"), "{stderr}");
    }
    // Right CA, wrong token: the daemon's answer, exit 7.
    let out = novactl(
        &["--url", &url, "--cacert", ca, "--token", "nope", "list"],
        &[],
    );
    assert_eq!(out.status.code(), Some(7));
    // An unusable CA file is a bad input (5); a CA with plain http is a usage error (2).
    let missing = env.dir.path().join("missing.pem");
    let out = novactl(
        &["--url", &url, "--cacert", missing.to_str().unwrap(), "list"],
        &[],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{stderr}");
    assert!(stderr.contains("missing.pem"), "{stderr}");
    let http = format!("http://127.0.0.1:{port}");
    let out = novactl(&["--url", &http, "--cacert", ca, "list"], &[]);
    assert_eq!(out.status.code(), Some(2));
    // https to a plain-HTTP daemon port fails the handshake: exit 8 too.
    let env2 = Env::new();
    let d2 = env2.start_daemon(&api_config(0, None));
    let plain_port = d2.tcp_port();
    let out = novactl(
        &[
            "--url",
            &format!("https://127.0.0.1:{plain_port}"),
            "--cacert",
            ca,
            "list",
        ],
        &[],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(8), "{stderr}");
    assert!(stderr.contains("TLS"), "{stderr}");
    let log = std::fs::read_to_string(&d2.log).unwrap_or_default();
    assert!(log.contains("clear text"), "no plain-TCP warning: {log}");
}

#[test]
fn a_bad_certificate_or_key_stops_the_daemon_with_the_file_named() {
    let env = Env::new();
    let pki = make_pki(env.dir.path());
    // The daemon refuses the certificate before it binds anything.
    let port = 0;
    let cases = [
        (
            env.dir.path().join("absent.pem"),
            pki.key.clone(),
            "absent.pem",
        ),
        (pki.cert.clone(), pki.ca.clone(), "ca.pem"),
        // The CA's key does not belong to the server certificate.
        (pki.cert.clone(), env.dir.path().join("ca.key"), "ca.key"),
    ];
    for (cert, key, named) in cases {
        let bad = Pki {
            cert,
            key,
            ca: pki.ca.clone(),
            other_ca: pki.other_ca.clone(),
        };
        let config = env.write_config(&api_config(port, Some(&bad)));
        let mut child = Command::new(env!("CARGO_BIN_EXE_novacrond"))
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("novacrond kept running with a bad TLS file ({named})");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!status.success());
        assert!(stderr.contains(named), "{named}: {stderr}");
    }
}
