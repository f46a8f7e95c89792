//! Imports run one way (ARCHITECTURE.md): faces → ops → service → qemu/host/persist, and the
//! configuration imports nothing above it. This reads the daemon's sources and fails naming
//! each file that imports upward, so a cycle cannot creep back in unnoticed.
//!
//! Paths are resolved the way rustc does for `crate::`, `super::` and `self::`, including
//! grouped forms (`use crate::{api, service}`); comments are ignored.

use std::path::{Path, PathBuf};

/// For a file's top-level module: the top-level modules it must not name.
fn forbidden(layer: &str) -> &'static [&'static str] {
    const FACES: &[&str] = &["api", "client", "ops"];
    const ABOVE_LOWER: &[&str] = &["api", "client", "ops", "service", "driver"];
    match layer {
        "service" => FACES,
        // Below the service: the host helpers, QEMU processes, state on disk, and the HTTP
        // transport the service uses to reach peer daemons.
        "persist" | "host" | "qemu" | "http_client" | "paths" => ABOVE_LOWER,
        // Configuration types are owned below the faces and the service.
        "config" => ABOVE_LOWER,
        _ => &[],
    }
}

/// The module path of a source file (`src/service/migration/mod.rs` → service, migration).
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).expect("file under src");
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().expect("a file name");
    let stem = last.trim_end_matches(".rs");
    if stem != "mod" && stem != "lib" {
        parts.push(stem.to_owned());
    }
    parts
}

/// Drops `//` comments (doc comments included) so prose naming a module is not an import.
fn strip_comments(text: &str) -> String {
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Every top-level module a source names through `crate::`, `super::` or `self::` paths,
/// with the line it is on.
fn named_modules(module: &[String], text: &str) -> Vec<(usize, String)> {
    let text = strip_comments(text);
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let starts_word = i == 0 || !(is_ident(bytes[i - 1]) || bytes[i - 1] == b':');
        let head = ["crate::", "super::", "self::"]
            .into_iter()
            .find(|h| starts_word && bytes[i..].starts_with(h.as_bytes()));
        let Some(head) = head else {
            i += 1;
            continue;
        };
        let line = text[..i].matches('\n').count() + 1;
        // The absolute prefix the path starts from.
        let mut base: Vec<String> = match head {
            "crate::" => Vec::new(),
            "self::" => module.to_vec(),
            _ => module[..module.len().saturating_sub(1)].to_vec(),
        };
        let mut j = i + head.len();
        while text[j..].starts_with("super::") {
            base.pop();
            j += "super::".len();
        }
        let firsts: Vec<String> = if text[j..].starts_with('{') {
            // A group: the first segment of each top-level item.
            let mut depth = 0;
            let mut items = Vec::new();
            let mut item = String::new();
            for &b in &bytes[j..] {
                match b {
                    b'{' => {
                        depth += 1;
                        if depth > 1 {
                            item.push('{');
                        }
                    }
                    b'}' => {
                        depth -= 1;
                        if depth == 0 {
                            items.push(std::mem::take(&mut item));
                            break;
                        }
                        item.push('}');
                    }
                    b',' if depth == 1 => items.push(std::mem::take(&mut item)),
                    _ => item.push(char::from(b)),
                }
            }
            items
                .iter()
                .map(|s| {
                    s.trim()
                        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                        .next()
                        .unwrap_or("")
                        .to_owned()
                })
                .collect()
        } else {
            let end = bytes[j..]
                .iter()
                .position(|&b| !is_ident(b))
                .map_or(bytes.len(), |p| j + p);
            vec![text[j..end].to_owned()]
        };
        for first in firsts.into_iter().filter(|f| !f.is_empty() && f != "self") {
            let top = base.first().cloned().unwrap_or(first);
            out.push((line, top));
        }
        i = j;
    }
    out
}

/// The upward imports of one file: `(line, module)` pairs.
fn violations(module: &[String], text: &str) -> Vec<(usize, String)> {
    let Some(layer) = module.first() else {
        return Vec::new();
    };
    let banned = forbidden(layer);
    named_modules(module, text)
        .into_iter()
        .filter(|(_, top)| banned.contains(&top.as_str()))
        .collect()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn no_import_runs_upward() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut checked = 0;
    let mut wrong = Vec::new();
    for file in &files {
        let module = module_of(&src, file);
        if module.first().is_none_or(|m| forbidden(m).is_empty()) {
            continue;
        }
        checked += 1;
        let text = std::fs::read_to_string(file).expect("read source");
        for (line, top) in violations(&module, &text) {
            wrong.push(format!(
                "{}:{line} imports crate::{top}",
                file.strip_prefix(&src).unwrap_or(file).display()
            ));
        }
    }
    // The layers exist: a renamed directory must not make this test pass vacuously.
    assert!(checked > 40, "only {checked} files checked");
    assert!(
        wrong.is_empty(),
        "imports running upward (faces → ops → service → qemu/host/persist; config below all):\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_scanner_sees_every_form_of_path() {
    let m = |s: &str| s.split('/').map(str::to_owned).collect::<Vec<_>>();
    let tops = |module: &str, text: &str| {
        violations(&m(module), text)
            .into_iter()
            .map(|(_, t)| t)
            .collect::<Vec<_>>()
    };
    assert_eq!(tops("service/x", "use crate::client::Client;"), ["client"]);
    assert_eq!(
        tops("service/a/b", "let c = super::super::super::api::x();"),
        ["api"]
    );
    assert_eq!(
        tops(
            "qemu/spawn",
            "use crate::{host::x, service::events::{A, B}};"
        ),
        ["service"]
    );
    assert_eq!(
        tops("config", "pub dbus: crate::api::dbus::DbusConfig,"),
        ["api"]
    );
    // Allowed directions and prose are not flagged.
    assert!(tops("service/x", "use crate::host::kvm; use super::domain::Run;").is_empty());
    assert!(tops("service/x", "// see crate::client::Client\nlet x = 1;").is_empty());
    assert!(tops("api/http/routes", "use crate::service::Service;").is_empty());
}
