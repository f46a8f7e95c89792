//! The web dashboard (`/ui/`) in Debian's headless Chromium, driven through chromedriver,
//! against a real novacrond with a real OS-less KVM guest: log in (a wrong token is refused),
//! see the guest running, stop it with a bulk action and see the state change without a
//! reload, start it again, open its page (definition, figures), read SeaBIOS's banner in its
//! serial console (xterm.js) and see its screen (noVNC) drawn. Screenshots are kept under
//! target/test-artifacts/dashboard/.

mod common;
#[path = "dashboard/webdriver.rs"]
mod webdriver;

use std::path::{Path, PathBuf};

use common::daemon::{curl, curl_tcp, tcp_api};
use common::*;
use webdriver::Browser;

const TOKEN: &str = "dashboard-test-token";

fn artifacts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts/dashboard")
}

/// The dashboard's VNC ports (the brief's range for this test: 6200-6299).
fn vnc_port() -> u16 {
    6200 + (std::process::id() % 100) as u16
}

/// An OS-less guest whose SeaBIOS writes to the serial console and draws on a VNC display.
fn guest_xml(name: &str) -> String {
    let ty = match novacron_tests::osless_accel() {
        novacron_tests::Accel::Kvm => "kvm",
        novacron_tests::Accel::Tcg => "qemu",
    };
    format!(
        "<domain type='{ty}'>
           <name>{name}</name>
           <memory unit='MiB'>64</memory>
           <vcpu>1</vcpu>
           <os><type arch='x86_64' machine='q35'>hvm</type><bios useserial='yes'/></os>
           <features><acpi/></features>
           <devices>
             <serial type='pty'><target port='0'/></serial>
             <console type='pty'><target type='serial' port='0'/></console>
             <graphics type='vnc' port='{}' autoport='no' listen='127.0.0.1'/>
             <video><model type='vga'/></video>
           </devices>
         </domain>",
        vnc_port()
    )
}

fn define_and_start(socket: &Path, name: &str) {
    let xml = guest_xml(name);
    let r = curl(
        socket,
        "POST",
        "/v1/domains",
        &["-H", "Content-Type: application/xml", "--data-binary", &xml],
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let r = curl(socket, "POST", &format!("/v1/domains/{name}/start"), &[]);
    assert_eq!(r.status, 200, "{}", r.body);
}

/// The state cell of a machine's row in the table, as the page shows it.
fn state_cell(name: &str) -> String {
    format!(
        "const tr = document.querySelector('tr[data-key=\"L:{name}\"]'); \
         return tr ? tr.cells[4].textContent : null;"
    )
}

#[test]
fn dashboard_in_chromium_lists_and_stops_a_guest_live() {
    let env = Env::new();
    let daemon = env.start_daemon(&tcp_api(&[("ui", TOKEN, "operator")]));
    let port = daemon.tcp_port();
    let vm = format!("dash-{}", std::process::id());
    define_and_start(&daemon.socket, &vm);

    // The page is served without a token, with its type and policy; the API still wants one.
    let r = curl_tcp(port, "", "GET", "/ui/", &["-D", "-"]);
    assert_eq!(r.status, 200);
    assert!(
        r.content_type.starts_with("text/html"),
        "{}",
        r.content_type
    );
    assert!(
        r.body
            .to_ascii_lowercase()
            .contains("content-security-policy: default-src 'none'"),
        "{}",
        r.body
    );
    let r = curl_tcp(port, "", "GET", "/ui/app.js", &[]);
    assert!(
        r.content_type.starts_with("text/javascript"),
        "{}",
        r.content_type
    );
    assert_eq!(
        curl_tcp(port, "", "GET", "/ui/../v1/domains", &["--path-as-is"]).status,
        404
    );
    assert_eq!(
        curl_tcp(port, "nope", "GET", "/v1/domains", &[]).status,
        401
    );

    let browser = Browser::start(&artifacts());
    browser.goto(&format!("http://127.0.0.1:{port}/ui/"));

    // A wrong token: an error on the login form, nothing else.
    browser.wait_for(
        "the login form",
        10,
        "return document.querySelector('#token');",
    );
    browser.type_into("#token", "not-the-token");
    browser.click("form.login button[type=submit]");
    let said = browser.wait_for(
        "the login error",
        10,
        "const t = document.querySelector('#login-error')?.textContent; return t || null;",
    );
    assert!(
        said.as_str().unwrap_or_default().contains("not accepted"),
        "{said}"
    );
    browser.screenshot("login-refused");
    assert_eq!(
        browser.js("return sessionStorage.getItem('novacron.token');"),
        serde_json::Value::Null
    );

    // The right token: the table, with the guest running.
    browser.type_into("#token", TOKEN);
    browser.click("form.login button[type=submit]");
    let state = browser.wait_for("the guest's row", 15, &state_cell(&vm));
    assert_eq!(state, "running");
    browser.wait_for(
        "the event stream",
        10,
        "return document.body.dataset.live === '1';",
    );
    browser.screenshot("list-running");
    // Filters: by name in the page, by tag through the daemon (`?tag=`).
    let r = curl(
        &daemon.socket,
        "PUT",
        &format!("/v1/domains/{vm}/metadata"),
        &[
            "-H",
            "Content-Type: application/json",
            "-d",
            r#"{"tags": ["web"]}"#,
        ],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let rows =
        |n: usize| format!("return document.querySelectorAll('#vms tbody tr').length === {n};");
    browser.type_into("#f-name", "no-such-vm");
    browser.wait_for("the name filter to hide the guest", 5, &rows(0));
    browser.type_into("#f-name", "dash-");
    browser.wait_for("the name filter to show the guest", 5, &rows(1));
    browser.type_into("#f-tag", "db");
    browser.wait_for("the tag filter to hide the guest", 10, &rows(0));
    browser.type_into("#f-tag", "web");
    browser.wait_for("the tag filter to show the guest", 10, &rows(1));
    // Set on this page load: still there afterwards means no reload happened.
    browser.js("window.notReloaded = true; return null;");

    // Bulk action, by keyboard: Space selects the guest, Enter on Destroy runs it.
    browser.keys(&format!("tr[data-key=\"L:{vm}\"] input.sel"), " ");
    browser.wait_for(
        "the selection",
        5,
        "return document.querySelector('#sel-count').textContent === '1 selected';",
    );
    browser.keys("button[data-action=destroy]", "\u{E007}");
    browser.wait_for(
        "the state to become shutoff",
        15,
        &format!("return ({})() === 'shutoff';", fn_of(&state_cell(&vm))),
    );
    let result = browser.wait_for(
        "the per-VM result",
        15,
        "const li = document.querySelector('#results li'); \
         return li && /done|failed|refused/.test(li.textContent) ? li.textContent : null;",
    );
    assert!(
        result
            .as_str()
            .unwrap_or_default()
            .ends_with("destroy done"),
        "{result}"
    );
    assert_eq!(browser.js("return window.notReloaded === true;"), true);
    browser.screenshot("list-destroyed");
    // The daemon agrees.
    let r = curl(&daemon.socket, "GET", &format!("/v1/domains/{vm}"), &[]);
    assert_eq!(r.json()["state"], "shutoff");

    // And back: bulk start, the row turns running again by event.
    browser.click("button[data-action=start]");
    browser.wait_for(
        "the state to become running",
        15,
        &format!("return ({})() === 'running';", fn_of(&state_cell(&vm))),
    );
    let latencies = browser.js("return window.novacron.eventLatencies;");
    eprintln!("event to screen (ms, event time to DOM update): {latencies}");

    // The domain page: its definition and the figures.
    browser.click(&format!("a[href=\"#/domain/{vm}\"]"));
    browser.wait_for(
        "the definition",
        10,
        &format!(
            "return document.querySelector('#xml')?.textContent.includes('<name>{vm}</name>');"
        ),
    );
    browser.wait_for(
        "a memory figure",
        15,
        "const o = document.querySelectorAll('figure.chart output')[1]; \
         return o && /iB/.test(o.textContent) ? o.textContent : null;",
    );
    browser.screenshot("domain-page");

    // Its serial console in xterm.js: SeaBIOS's banner from the history.
    browser.click("#open-console");
    let text = browser.wait_for(
        "SeaBIOS's banner in the terminal",
        20,
        "const t = window.novacron.term; if (!t) return null; \
         const b = t.buffer.active; let s = ''; \
         for (let i = 0; i < b.length; i++) s += b.getLine(i).translateToString(true) + '\\n'; \
         return s.includes('SeaBIOS (version') ? s : null;",
    );
    eprintln!("terminal: {}", text.as_str().unwrap_or_default().trim());
    browser.screenshot("serial-console");

    // Its screen in noVNC: a canvas shown at a visible size, with lit pixels (SeaBIOS's text on
    // the VGA console).
    browser.click("#open-screen");
    let lit = browser.wait_for(
        "a non-blank screen",
        20,
        "const c = document.querySelector('#screen canvas'); \
         if (!c || !c.width || !c.height) return null; \
         const box = c.getBoundingClientRect(); \
         if (box.width < 100 || box.height < 100) return null; \
         const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; \
         let lit = 0; for (let i = 0; i < d.length; i += 4) if (d[i] | d[i + 1] | d[i + 2]) lit++; \
         return lit > 100 ? lit : null;",
    );
    eprintln!("screen: {lit} lit pixels");
    browser.js("document.querySelector('#screen').scrollIntoView(); return null;");
    browser.screenshot("screen");
}

/// Wraps a function body as an expression that can be called.
fn fn_of(body: &str) -> String {
    format!("function () {{ {body} }}")
}
