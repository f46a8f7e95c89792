//! Embeds the web dashboard (`/ui/`) into the binary: the app's own files (`ui/src/`, plain ES
//! modules, committed) and the two libraries it uses from npm (`ui/node_modules/`, pinned in
//! `ui/package-lock.json`, installed by `./quickstart.sh` with `npm ci`). Without
//! `node_modules` the daemon still builds and serves the app; only its serial console and
//! screen say that the libraries were not built in.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// (directory or file under ui/node_modules, path under /ui/vendor/).
const VENDOR: &[(&str, &str)] = &[
    ("@xterm/xterm/lib/xterm.mjs", "xterm/xterm.mjs"),
    ("@xterm/xterm/css/xterm.css", "xterm/xterm.css"),
    ("@xterm/xterm/LICENSE", "xterm/LICENSE"),
    ("@novnc/novnc/core", "novnc/core"),
    ("@novnc/novnc/vendor", "novnc/vendor"),
    ("@novnc/novnc/LICENSE.txt", "novnc/LICENSE.txt"),
];

fn main() {
    let ui = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it")).join("ui");
    let mut assets = Vec::new();
    println!("cargo:rerun-if-changed={}", ui.join("src").display());
    collect(&ui.join("src"), "", &mut assets);
    let modules = ui.join("node_modules");
    println!("cargo:rerun-if-changed={}", modules.display());
    println!(
        "cargo:rerun-if-changed={}",
        ui.join("package-lock.json").display()
    );
    let mut vendored = true;
    for (from, to) in VENDOR {
        let path = modules.join(from);
        if !path.exists() {
            vendored = false;
            continue;
        }
        collect(&path, &format!("vendor/{to}"), &mut assets);
    }
    if !vendored {
        println!(
            "cargo:warning=daemon/ui/node_modules is incomplete: the dashboard is built without \
             xterm.js/noVNC (run `npm ci` in daemon/ui, as ./quickstart.sh does)"
        );
    }
    assets.sort();
    let mut out = String::from("&[\n");
    for (url, file) in &assets {
        let _ = writeln!(out, "    ({url:?}, include_bytes!({:?})),", file.display());
    }
    out.push(']');
    let dest = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets it")).join("ui_assets.rs");
    std::fs::write(dest, out).expect("cannot write ui_assets.rs");
}

/// Every file under `path` (or `path` itself), as (path under /ui/, file); the source maps and
/// dotfiles left out.
fn collect(path: &Path, url: &str, out: &mut Vec<(String, PathBuf)>) {
    if path.is_file() {
        out.push((url.to_owned(), path.to_owned()));
        return;
    }
    let Ok(entries) = std::fs::read_dir(path) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || name.ends_with(".map") {
            continue;
        }
        let child = if url.is_empty() {
            name
        } else {
            format!("{url}/{name}")
        };
        println!("cargo:rerun-if-changed={}", entry.path().display());
        collect(&entry.path(), &child, out);
    }
}
