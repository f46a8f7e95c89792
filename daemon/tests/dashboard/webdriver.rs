//! Just enough of the W3C WebDriver protocol to drive Debian's headless Chromium through
//! chromedriver: JSON over HTTP/1.1 on loopback, one request per connection (no client crate
//! needed for that).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// chromedriver and the browser it runs; both end with this value.
pub struct Browser {
    driver: Child,
    port: u16,
    session: String,
    artifacts: PathBuf,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver on a port it picks and a fresh headless Chromium session.
    /// Screenshots go to `artifacts`.
    pub fn start(artifacts: &Path) -> Browser {
        std::fs::create_dir_all(artifacts).expect("artifacts dir");
        let log = artifacts.join("chromedriver.log");
        let mut driver = Command::new("chromedriver")
            .args(["--port=0", &format!("--log-path={}", log.display())])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (Debian package chromium-driver; ./quickstart.sh installs it)");
        let mut out = BufReader::new(driver.stdout.take().expect("piped"));
        let mut port = None;
        let mut line = String::new();
        while port.is_none() && out.read_line(&mut line).unwrap_or(0) > 0 {
            port = line
                .trim()
                .strip_prefix("ChromeDriver was started successfully on port ")
                .and_then(|p| p.trim_end_matches('.').parse::<u16>().ok());
            line.clear();
        }
        let port = port.expect("chromedriver did not say its port");
        // Keep draining its stdout so it never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut sink = Vec::new();
            let _ = out.read_to_end(&mut sink);
        });
        let profile = tempfile::tempdir().expect("profile dir");
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1280,1000",
            &format!("--user-data-dir={}", profile.path().display()),
        ];
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": args}
        }}});
        let mut browser = Browser {
            driver,
            port,
            session: String::new(),
            artifacts: artifacts.to_owned(),
            _profile: profile,
        };
        let reply = browser.call("POST", "/session", Some(&caps));
        browser.session = reply["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {reply}"))
            .to_owned();
        browser
    }

    /// One WebDriver command; panics on a WebDriver error (the test's failure message).
    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let (status, value) = self.try_call(method, path, body);
        assert!(status < 300, "WebDriver {method} {path}: {status} {value}");
        value
    }

    fn try_call(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let body = body.map(Value::to_string).unwrap_or_default();
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect chromedriver");
        s.set_read_timeout(Some(Duration::from_secs(60))).ok();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .expect("send to chromedriver");
        // chromedriver keeps the connection open whatever we ask: read by Content-Length.
        let mut reader = BufReader::new(s);
        let mut status = 0;
        let mut length = 0usize;
        let mut line = String::new();
        while reader.read_line(&mut line).unwrap_or(0) > 0 {
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if l.starts_with("HTTP/") {
                status = l
                    .split_whitespace()
                    .nth(1)
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(0);
            } else if let Some((k, v)) = l.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            line.clear();
        }
        let mut rest = vec![0; length];
        reader.read_exact(&mut rest).expect("read chromedriver");
        let json: Value = serde_json::from_slice(&rest).unwrap_or(Value::Null);
        (status, json["value"].clone())
    }

    fn url(&self, tail: &str) -> String {
        format!("/session/{}{tail}", self.session)
    }

    pub fn goto(&self, url: &str) {
        self.call("POST", &self.url("/url"), Some(&json!({ "url": url })));
    }

    /// Runs `script` (a function body; `arguments` available) in the page and returns its value.
    pub fn js(&self, script: &str) -> Value {
        self.call(
            "POST",
            &self.url("/execute/sync"),
            Some(&json!({"script": script, "args": []})),
        )
    }

    /// Polls `script` until it returns something other than null/false, or panics after
    /// `secs` with `what` (and a screenshot named after it).
    pub fn wait_for(&self, what: &str, secs: u64, script: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let (status, v) = self.try_call(
                "POST",
                &self.url("/execute/sync"),
                Some(&json!({"script": script, "args": []})),
            );
            if status < 300 && !v.is_null() && v != Value::Bool(false) {
                return v;
            }
            if Instant::now() > deadline {
                let slug: String = what
                    .chars()
                    .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
                    .collect();
                let file = self.screenshot(&format!("failed-{slug}"));
                panic!(
                    "timed out waiting for {what}: last {status} {v}; see {}",
                    file.display()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The first element matching `css` (its WebDriver id).
    pub fn find(&self, css: &str) -> String {
        let v = self.call(
            "POST",
            &self.url("/element"),
            Some(&json!({"using": "css selector", "value": css})),
        );
        v[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {v}"))
            .to_owned()
    }

    pub fn click(&self, css: &str) {
        let id = self.find(css);
        self.call(
            "POST",
            &self.url(&format!("/element/{id}/click")),
            Some(&json!({})),
        );
    }

    /// Types `text` into the element (real key events, as a user would).
    pub fn type_into(&self, css: &str, text: &str) {
        let id = self.find(css);
        self.call(
            "POST",
            &self.url(&format!("/element/{id}/clear")),
            Some(&json!({})),
        );
        self.call(
            "POST",
            &self.url(&format!("/element/{id}/value")),
            Some(&json!({ "text": text })),
        );
    }

    /// Sends keystrokes to the element (focusing it first), without clearing it: how a
    /// keyboard user toggles a checkbox (" ") or presses a button ("\u{E007}", Enter).
    pub fn keys(&self, css: &str, text: &str) {
        let id = self.find(css);
        self.call(
            "POST",
            &self.url(&format!("/element/{id}/value")),
            Some(&json!({ "text": text })),
        );
    }

    /// Saves a PNG of the viewport as `<artifacts>/<name>.png` and returns its path.
    pub fn screenshot(&self, name: &str) -> PathBuf {
        let (_, v) = self.try_call("GET", &self.url("/screenshot"), None);
        let path = self.artifacts.join(format!("{name}.png"));
        if let Some(b64) = v.as_str() {
            let _ = std::fs::write(&path, base64(b64));
        }
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.try_call("DELETE", &self.url(""), None);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Standard base64 (what WebDriver screenshots are) to bytes.
fn base64(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let digits: Vec<u8> = text.bytes().filter_map(value).collect();
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for chunk in digits.chunks(4) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &d)| n | (u32::from(d) << (18 - 6 * i)));
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..chunk.len().saturating_sub(1)]);
    }
    out
}
