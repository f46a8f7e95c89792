//! The dashboard's first render with 1 000 domains, in Debian's headless Chromium (driven
//! through chromedriver, as daemon/tests/dashboard.rs does), against the same page whose API
//! answers come from a trivial server in this process.
//!
//! A real novacrond gets 1 000 domain definitions (not running: the list is what is measured).
//! The page is loaded logged in (token in sessionStorage), and the time is from navigation
//! start to the first frame painted with the 1 000-row table in it (the page's
//! `window.novacron.firstPaintMs`, taken after the animation frame that shows the table).
//!
//! Baseline, same process, paired rounds with alternating order: the very same page (the
//! daemon's own asset bytes, ETags and headers) served by a static server here whose
//! `/v1/domains` is the daemon's answer captured once, `/v1/hosts` empty, `/v1/events` an
//! idle stream. The ratio is what the daemon's API adds to the browser's own work. Also
//! printed: `GET /v1/domains` by a reference client (curl, one request, one connection).
//! Goal (issue 20): ≤ 1 s. Last, event to screen with those 1 000 rows shown (five guests
//! started, from each state event's timestamp to its row's update; goal ≤ 100 ms).
//!
//! cargo bench -p novacron-benches --bench dashboard [-- ROUNDS]

#[path = "../../daemon/tests/dashboard/webdriver.rs"]
#[allow(dead_code)]
mod webdriver;

use std::collections::HashMap;
use std::convert::Infallible;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use futures_util::stream::{self, BoxStream, StreamExt as _};
use http_body_util::StreamBody;
use hyper::body::Frame;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use novacron_benches::daemon::{
    millis, novacrond_binary, osless, spawn_daemon, verdict, wait_until, Env, Reaper,
};
use novacron_benches::median;

const N: usize = 1000;
const TOKEN: &str = "dashboard-bench-token";
/// The page's scripts and style (the vendor libraries load only on a domain's page).
const ASSETS: &[&str] = &[
    "",
    "app.css",
    "app.js",
    "api.js",
    "list.js",
    "domain.js",
    "chart.js",
];

fn main() -> Result<()> {
    let rounds: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(7);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;

    let env = Env::new()?;
    let reaper = Reaper::default();
    let hash: String = {
        use sha2::Digest as _;
        sha2::Sha256::digest(TOKEN.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    let config = env.write_config_file_with(&format!(
        "[api]\nlisten = \"127.0.0.1:0\"\n[[api.tokens]]\nname = \"bench\"\nsha256 = \"{hash}\"\nrole = \"operator\"\n"
    ))?;
    let log = env.dir.path().join("daemon.log");
    let daemon = spawn_daemon(&novacrond_binary()?, &config, &log)?;
    reaper.daemon(daemon.id());
    reaper.records(env.records_dir());
    let socket = env.config.run_dir.join("novacrond.sock");
    wait_until("the daemon socket", Duration::from_secs(20), || {
        socket.exists()
    })?;
    let port = tcp_port(&log)?;
    define_all(env.dir.path(), &socket)?;

    // The baseline's material: the page's bytes and headers, and the daemon's list.
    let mut files = HashMap::new();
    for name in ASSETS {
        files.insert(format!("/ui/{name}"), fetch(port, &format!("/ui/{name}"))?);
    }
    let t = Instant::now();
    let list = fetch(port, "/v1/domains")?;
    let curl_once = millis(t.elapsed());
    let listed: serde_json::Value = serde_json::from_slice(&list.body)?;
    if listed.as_array().map(Vec::len) != Some(N) {
        bail!(
            "the daemon lists {:?} domains, not {N}",
            listed.as_array().map(Vec::len)
        );
    }
    files.insert("/v1/domains".into(), list);
    let static_port = rt.block_on(serve_static(Arc::new(files)))?;

    let artifacts =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-artifacts/dashboard");
    let browser = webdriver::Browser::start(&artifacts);
    let daemon_url = format!("http://127.0.0.1:{port}/ui/");
    let static_url = format!("http://127.0.0.1:{static_port}/ui/");
    for url in [&daemon_url, &static_url] {
        login(&browser, url);
        // One load each to warm the browser's caches (ETags) and the daemon.
        render(&browser, url);
    }
    let (mut via_daemon, mut via_static, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    let (mut builds_d, mut builds_s) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let (d, s) = if round % 2 == 0 {
            let d = render(&browser, &daemon_url);
            (d, render(&browser, &static_url))
        } else {
            let s = render(&browser, &static_url);
            (render(&browser, &daemon_url), s)
        };
        println!(
            "  round {round}: daemon {:7.1} ms (table {:5.1})  static {:7.1} ms (table {:5.1})",
            d.0, d.1, s.0, s.1
        );
        ratios.push(d.0 / s.0);
        via_daemon.push(d.0);
        via_static.push(s.0);
        builds_d.push(d.1);
        builds_s.push(s.1);
    }
    browser.screenshot("list-1000");
    let (d, s) = (median(via_daemon), median(via_static));
    println!(
        "dashboard first render, {N} domains, headless Chromium, {rounds} paired rounds \
         (median ms, navigation start to the table painted)"
    );
    println!(
        "  daemon API                    {d:8.1}  goal <= 1000 ms: {}",
        verdict(d <= 1000.0)
    );
    println!("  static server, same page      {s:8.1}");
    println!("  ratio (median per round)      {:8.2}x", median(ratios));
    println!(
        "  of which building the table   {:8.1} (daemon) {:8.1} (static)",
        median(builds_d),
        median(builds_s)
    );
    println!(
        "  GET /v1/domains by curl       {curl_once:8.1}  (one request, {} bytes)",
        listed.to_string().len()
    );
    event_to_screen(&browser, &daemon_url, &socket)?;
    drop(browser);
    drop(daemon);
    Ok(())
}

/// Event to screen with the 1 000-row list shown: five guests started through the API, each
/// row's state cell watched until it says running; the page records, per state event, the
/// time from the event's timestamp to its DOM update. Goal (issue 20): ≤ 100 ms.
fn event_to_screen(browser: &webdriver::Browser, url: &str, socket: &Path) -> Result<()> {
    render(browser, url);
    browser.wait_for(
        "the event stream",
        20,
        "return document.body.dataset.live === '1';",
    );
    for i in 0..5 {
        let name = format!("bulk-{i:04}");
        let out = Command::new("curl")
            .args(["-sS", "-f", "-X", "POST", "--unix-socket"])
            .arg(socket)
            .arg(format!("http://localhost/v1/domains/{name}/start"))
            .output()?;
        if !out.status.success() {
            bail!("start {name}: {}", String::from_utf8_lossy(&out.stderr));
        }
        browser.wait_for(
            "the row to turn running",
            30,
            &format!(
                "const tr = document.querySelector('tr[data-key=\"L:{name}\"]'); \
                 return tr && tr.cells[4].textContent === 'running';"
            ),
        );
    }
    let got = browser.js("return window.novacron.eventLatencies;");
    let ms: Vec<f64> = got
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_f64()).collect())
        .unwrap_or_default();
    if ms.is_empty() {
        bail!("the page recorded no event latencies: {got}");
    }
    let all = format!("{ms:?}");
    let m = median(ms);
    println!(
        "  event to screen (state events, ms) {m:6.1} median of {all}  goal <= 100 ms: {}",
        verdict(m <= 100.0)
    );
    Ok(())
}

/// The port the daemon bound (it logs `HTTP API on TCP ... addr=...`).
fn tcp_port(log: &Path) -> Result<u16> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let port = text
            .lines()
            .rev()
            .filter(|l| l.contains("HTTP API on TCP"))
            .filter_map(|l| l.split_whitespace().find_map(|w| w.strip_prefix("addr=")))
            .filter_map(|a| a.parse::<std::net::SocketAddr>().ok())
            .next()
            .map(|a| a.port());
        if let Some(port) = port {
            return Ok(port);
        }
        if Instant::now() > deadline {
            bail!("novacrond logged no TCP address:\n{text}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Defines `bulk-0000`.. through one curl process (`--next` starts each request afresh).
fn define_all(dir: &Path, socket: &Path) -> Result<()> {
    let mut args: Vec<String> = Vec::new();
    for i in 0..N {
        let file = dir.join(format!("def-{i}.xml"));
        std::fs::write(&file, osless(&format!("bulk-{i:04}"))?.to_xml())?;
        if i > 0 {
            args.push("--next".into());
        }
        args.extend(
            [
                "-sS",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}\n",
                "--unix-socket",
            ]
            .map(String::from),
        );
        args.push(socket.display().to_string());
        args.extend(["-H", "Content-Type: application/xml", "--data-binary"].map(String::from));
        args.push(format!("@{}", file.display()));
        args.push("http://localhost/v1/domains".into());
    }
    let t = Instant::now();
    let out = Command::new("curl").args(&args).output().context("curl")?;
    let codes = String::from_utf8_lossy(&out.stdout);
    let ok = codes.lines().filter(|c| *c == "201").count();
    if ok != N {
        bail!("{ok} of {N} definitions accepted: {codes}");
    }
    println!("defined {N} domains in {:.1} s", t.elapsed().as_secs_f64());
    for i in 0..N {
        let _ = std::fs::remove_file(dir.join(format!("def-{i}.xml")));
    }
    Ok(())
}

/// A GET answer as the page got it: status line aside, its headers and body.
struct Answer {
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// `path` from the daemon over TCP with the token, by curl (headers kept for the copy).
fn fetch(port: u16, path: &str) -> Result<Answer> {
    let out = Command::new("curl")
        .args(["-sS", "-f", "-D", "/dev/stderr", "-H"])
        .arg(format!("Authorization: Bearer {TOKEN}"))
        .arg(format!("http://127.0.0.1:{port}{path}"))
        .output()?;
    if !out.status.success() {
        bail!("GET {path}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let head = String::from_utf8_lossy(&out.stderr);
    let headers = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .filter(|(k, _)| {
            !matches!(
                k.as_str(),
                "content-length" | "date" | "connection" | "transfer-encoding"
            )
        })
        .collect();
    Ok(Answer {
        headers,
        body: out.stdout,
    })
}

/// Logs in on `url`'s origin (the token goes into that origin's sessionStorage).
fn login(browser: &webdriver::Browser, url: &str) {
    browser.goto(url);
    browser.wait_for(
        "the login form",
        20,
        "return document.querySelector('#token');",
    );
    browser.type_into("#token", TOKEN);
    browser.click("form.login button[type=submit]");
    browser.wait_for(
        "the list",
        60,
        "return document.querySelector('main[data-loaded]') !== null;",
    );
}

/// One fresh load of the list: (ms from navigation start to the table painted, ms building
/// and laying out the table).
fn render(browser: &webdriver::Browser, url: &str) -> (f64, f64) {
    // A new document each time: about:blank between, so the same URL is a real navigation.
    browser.goto("about:blank");
    browser.goto(url);
    let painted = browser.wait_for(
        "the painted list",
        60,
        "return window.novacron && window.novacron.firstPaintMs;",
    );
    let rows = browser.js("return document.querySelectorAll('#vms tbody tr').length;");
    assert_eq!(rows, N, "rows in the table");
    let built = browser.js("return window.novacron.tableBuildMs;");
    (
        painted.as_f64().unwrap_or(f64::NAN),
        built.as_f64().unwrap_or(f64::NAN),
    )
}

/// The baseline server on a loopback port: the copied page and list, `/v1/host` and
/// `/v1/hosts` trivial, `/v1/events` an idle stream.
async fn serve_static(files: Arc<HashMap<String, Answer>>) -> Result<u16> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let files = files.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let files = files.clone();
                    async move { Ok::<_, Infallible>(answer(&files, req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(port)
}

type Body = http_body_util::StreamBody<BoxStream<'static, Result<Frame<Bytes>, Infallible>>>;

/// A whole body in one frame.
fn body(b: impl Into<Bytes>) -> Body {
    let b: Bytes = b.into();
    StreamBody::new(stream::once(async move { Ok(Frame::data(b)) }).boxed())
}

async fn answer(
    files: &HashMap<String, Answer>,
    req: Request<hyper::body::Incoming>,
) -> Response<Body> {
    let path = req.uri().path();
    let json = |text: &'static str| {
        Response::builder()
            .header("content-type", "application/json")
            .body(body(text))
            .unwrap()
    };
    match path {
        "/v1/host" => return json("{}"),
        "/v1/hosts" => return json("{\"hosts\": []}"),
        "/v1/events" => {
            // Open and silent: the page shows "live" and waits.
            let idle = stream::once(async { Ok(Frame::data(Bytes::from_static(b": hello\n\n"))) })
                .chain(stream::pending());
            return Response::builder()
                .header("content-type", "text/event-stream")
                .header("cache-control", "no-cache")
                .body(StreamBody::new(idle.boxed()))
                .unwrap();
        }
        _ => {}
    }
    let Some(a) = files.get(path) else {
        return Response::builder()
            .status(StatusCode::NOT_FOUND)
            .body(body("not here\n"))
            .unwrap();
    };
    let etag = a.headers.iter().find(|(k, _)| k == "etag").map(|(_, v)| v);
    let fresh = etag.is_some_and(|e| {
        req.headers()
            .get("if-none-match")
            .is_some_and(|v| v.as_bytes() == e.as_bytes())
    });
    let mut r = Response::builder();
    for (k, v) in &a.headers {
        r = r.header(k, v);
    }
    if fresh {
        r.status(StatusCode::NOT_MODIFIED)
            .body(body(Bytes::new()))
            .unwrap()
    } else {
        r.body(body(a.body.clone())).unwrap()
    }
}
