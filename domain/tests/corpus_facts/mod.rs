//! Guest-visible facts of a domain XML document, read with quick-xml directly (not through our
//! reader or model), so the corpus test can check that what we write back keeps every setting
//! of the input without trusting the code under test to say what a setting is.
//!
//! A fact is `key = value`: the key is the element path with each element numbered among its
//! same-named siblings (`devices/disk[2]/driver[1]@cache`), or keyed by its identifying
//! attribute where the order is not meaningful (`clock/timer[rtc]`, `cpu/feature[vmx]`,
//! `devices/controller[pci#3]` = the third PCI controller). Sizes with a `unit` are converted to
//! KiB, so `<memory unit='MiB'>2</memory>` and `<memory>2048</memory>` are the same fact.

use std::collections::BTreeMap;

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

/// The top-level children of `<domain>` that configure the guest. `metadata`, `title` and
/// `description` are for people and tools (compared by the model round trip instead); the
/// host-only `resource` and `seclabel` nodes have no guest-visible effect.
const GUEST: &[&str] = &[
    "name",
    "uuid",
    "memory",
    "currentMemory",
    "maxMemory",
    "vcpu",
    "iothreads",
    "cputune",
    "numatune",
    "memtune",
    "memoryBacking",
    "os",
    "features",
    "cpu",
    "clock",
    "on_poweroff",
    "on_reboot",
    "on_crash",
    "pm",
    "devices",
];

/// Text-valued elements that libvirt reads as absent when empty (vagrant-libvirt's template
/// writes `<uuid></uuid>`, `<kernel></kernel>`, `<model fallback='allow'></model>`).
/// Sizes whose unit defaults to KiB when the element has no `unit`.
const SIZES: &[&str] = &[
    "memory",
    "currentMemory",
    "maxMemory",
    "hard_limit",
    "soft_limit",
    "swap_hard_limit",
    "min_guarantee",
    "size",
];

const EMPTY_IS_ABSENT: &[&str] = &["uuid", "kernel", "initrd", "cmdline", "dtb", "emulator"];

#[derive(Debug, Default)]
struct Node {
    name: String,
    attrs: Vec<(String, String)>,
    children: Vec<Node>,
    text: String,
}

fn start(e: &BytesStart) -> Result<Node, String> {
    let name = e.name().as_ref().to_owned();
    let mut attrs = Vec::new();
    for a in e.attributes() {
        let a = a.map_err(|err| err.to_string())?;
        let key = a.key.as_ref().to_owned();
        if key.starts_with("xmlns") {
            continue;
        }
        let value = a
            .normalized_value(quick_xml::XmlVersion::Implicit1_0)
            .map_err(|err| err.to_string())?
            .into_owned();
        attrs.push((key, value));
    }
    Ok(Node {
        name,
        attrs,
        ..Node::default()
    })
}

fn parse(xml: &str) -> Result<Node, String> {
    let mut reader = Reader::from_str(xml);
    let mut stack: Vec<Node> = Vec::new();
    loop {
        match reader.read_event().map_err(|e| e.to_string())? {
            Event::Start(e) => stack.push(start(&e)?),
            Event::Empty(e) => {
                let node = start(&e)?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(node),
                    None => return Ok(node),
                }
            }
            Event::End(_) => {
                let node = stack.pop().ok_or("unbalanced end tag")?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(node),
                    None => return Ok(node),
                }
            }
            Event::Text(t) => {
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&t.xml10_content());
                }
            }
            Event::GeneralRef(r) => {
                if let Some(top) = stack.last_mut() {
                    let name: &str = &r;
                    let c = match name {
                        "lt" => "<",
                        "gt" => ">",
                        "amp" => "&",
                        "apos" => "'",
                        "quot" => "\"",
                        _ => return Err(format!("unknown entity &{name};")),
                    };
                    top.text.push_str(c);
                }
            }
            Event::Eof => return Err("no root element".into()),
            _ => {}
        }
    }
}

fn attr<'a>(n: &'a Node, k: &str) -> Option<&'a str> {
    n.attrs
        .iter()
        .find(|(key, _)| key == k)
        .map(|(_, v)| v.as_str())
}

fn to_kib(value: u64, unit: &str) -> Option<u64> {
    let (mul, div): (u64, u64) = match unit {
        "b" | "bytes" => (1, 1024),
        "KB" => (1000, 1024),
        "k" | "KiB" => (1, 1),
        "MB" => (1_000_000, 1024),
        "M" | "MiB" => (1024, 1),
        "GB" => (1_000_000_000, 1024),
        "G" | "GiB" => (1 << 20, 1),
        "TB" => (1_000_000_000_000, 1024),
        "T" | "TiB" => (1 << 30, 1),
        _ => return None,
    };
    Some(value.checked_mul(mul)?.div_ceil(div))
}

/// Whether `n` carries nothing: libvirt treats such an element as absent.
fn is_empty(n: &Node) -> bool {
    n.attrs.is_empty() && n.children.is_empty() && n.text.trim().is_empty()
}

/// Runtime-only or default-spelled-out attributes: the same table as the reader's module
/// documentation (`domain/src/xml/read/mod.rs`), each accepted there as guest-neutral. Anything
/// not listed here is a guest-visible fact the written XML must keep.
fn neutral(parent: Option<&Node>, n: &Node, k: &str, v: &str) -> bool {
    let p = parent.map_or("", |p| p.name.as_str());
    let p_attr = |a: &str| parent.and_then(|p| attr(p, a));
    match (p, n.name.as_str(), k) {
        // The tap and port libvirt allocated at start.
        ("interface", "target", "dev") => true,
        ("interface", "source", "portid" | "bridge") => p_attr("type") == Some("network"),
        // The pty libvirt allocated.
        ("serial" | "console", "source", "path") => p_attr("type") == Some("pty"),
        (_, "console", "tty") => true,
        // Live guest-agent connection state; backing-chain bookkeeping; the default tray.
        ("channel", "target", "state") | ("disk", "source", "index") => true,
        ("disk", "target", "tray") => v == "closed",
        // The port chosen at start when libvirt picks one.
        (_, "graphics", "port" | "tlsPort") => v == "-1" || attr(n, "autoport") == Some("yes"),
        // Spelled-out default cache mode (libvirt reads it as absent).
        ("disk", "driver", "cache") => v == "default",
        // `<listen type='address'>` mirrors `graphics@listen` (the reader checks they agree).
        ("graphics", "listen", "type") => v == "address",
        ("graphics", "listen", "address") => p_attr("listen") == Some(v),
        // The single head, primary: the default.
        ("video", "model", "heads") => v == "1",
        ("video", "model", "primary") => v == "yes",
        // The QEMU device libvirt derives from the model, spelled out.
        ("controller", "model", "name") => p_attr("model") == Some(v),
        ("target", "model", "name") => v == "isa-serial",
        // libvirt's default for host-passthrough.
        (_, "cpu", "migratable") => v == "on",
        _ => false,
    }
}

fn walk(n: &Node, parent: Option<&Node>, key: &str, out: &mut BTreeMap<String, String>) {
    let text = n.text.trim();
    let unit = attr(n, "unit").or(SIZES.contains(&n.name.as_str()).then_some("KiB"));
    let sized = unit.and_then(|u| to_kib(text.parse().ok()?, u));
    // A size in an attribute with its unit beside it (`<cell memory='8' unit='GiB'/>`).
    // A NUMA cell's `memory` without a unit is KiB, as libvirt reads it.
    let sized_attr = match (attr(n, "unit"), attr(n, "memory")) {
        (Some(u), Some(m)) => m.parse().ok().and_then(|m| to_kib(m, u)),
        (None, Some(m)) if n.name == "cell" => m.parse().ok(),
        _ => None,
    };
    for (k, v) in &n.attrs {
        if neutral(parent, n, k, v) {
            continue;
        }
        match (k.as_str(), sized_attr) {
            ("unit", Some(_)) => continue,
            ("memory", Some(kib)) => {
                out.insert(format!("{key}@memory#kib"), kib.to_string());
                continue;
            }
            _ => {}
        }
        if k == "unit" && sized.is_some() {
            continue;
        }
        out.insert(format!("{key}@{k}"), v.clone());
    }
    match sized {
        Some(kib) => {
            out.insert(format!("{key}#kib"), kib.to_string());
        }
        // One UUID, whichever of libvirt's spellings.
        None if n.name == "uuid" && parent.is_none() => {
            out.insert(
                format!("{key}#text"),
                text.replace('-', "").to_ascii_lowercase(),
            );
        }
        None if !text.is_empty() && n.children.is_empty() => {
            out.insert(format!("{key}#text"), text.to_owned());
        }
        None if n.attrs.is_empty() && n.children.is_empty() => {
            // A flag element such as <acpi/>.
            out.insert(key.to_owned(), "present".to_owned());
        }
        None => {}
    }
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for c in &n.children {
        // QEMU device ids, our own to assign; runtime backing-chain bookkeeping.
        if c.name == "alias" || (n.name == "disk" && c.name == "backingStore") {
            continue;
        }
        if EMPTY_IS_ABSENT.contains(&c.name.as_str()) && is_empty(c) {
            continue;
        }
        // cpu/model with only a fallback and no name: libvirt reads it as no model.
        if n.name == "cpu" && c.name == "model" && c.text.trim().is_empty() {
            continue;
        }
        let id = child_id(n, c, &mut seen);
        walk(c, Some(n), &format!("{key}/{id}"), out);
    }
}

/// How a child is told apart from its siblings: by its identifying attribute where libvirt
/// has one and order does not matter, else by its position among same-named siblings (of the
/// same `type` for controllers, whose order between types is not meaningful).
fn child_id(parent: &Node, c: &Node, seen: &mut BTreeMap<String, usize>) -> String {
    let by_attr = match (parent.name.as_str(), c.name.as_str()) {
        ("clock", "timer") | ("cpu", "feature") => attr(c, "name"),
        _ => None,
    };
    if let Some(a) = by_attr {
        return format!("{}[{a}]", c.name);
    }
    let class = match c.name.as_str() {
        "controller" => format!("{}#", attr(c, "type").unwrap_or("")),
        _ => String::new(),
    };
    let slot = seen.entry(format!("{}/{class}", c.name)).or_default();
    *slot += 1;
    format!("{}[{class}{}]", c.name, slot)
}

/// The guest-visible facts of a domain document.
pub fn facts(xml: &str) -> Result<BTreeMap<String, String>, String> {
    let root = parse(xml)?;
    if root.name != "domain" {
        return Err(format!("root is <{}>", root.name));
    }
    let mut out = BTreeMap::new();
    for (k, v) in &root.attrs {
        if k != "id" {
            out.insert(format!("domain@{k}"), v.clone());
        }
    }
    for c in root
        .children
        .iter()
        .filter(|c| GUEST.contains(&c.name.as_str()))
    {
        if EMPTY_IS_ABSENT.contains(&c.name.as_str()) && is_empty(c) {
            continue;
        }
        walk(c, None, &c.name, &mut out);
    }
    Ok(out)
}

/// What `output` lost or changed of `input`'s facts: `(key, input value, output value)`.
pub fn lost(
    input: &BTreeMap<String, String>,
    output: &BTreeMap<String, String>,
) -> Vec<(String, String, Option<String>)> {
    input
        .iter()
        .filter(|(k, v)| output.get(*k) != Some(v))
        .map(|(k, v)| (k.clone(), v.clone(), output.get(k).cloned()))
        .collect()
}

/// Facts that choose what the guest is, so writing one the input did not have changes the
/// guest (the example: a `<cpu>` with only a topology written back with
/// `<model>qemu64</model>`). Other additions are defaults spelled out and not reported.
const IDENTITY: &[&str] = &[
    "cpu@mode",
    "cpu/model[1]#text",
    "os/type[1]@arch",
    "os/type[1]@machine",
    "os/loader[1]#text",
];

/// Identity facts `output` has that `input` lacks: `(key, output value)`.
pub fn added(
    input: &BTreeMap<String, String>,
    output: &BTreeMap<String, String>,
) -> Vec<(String, String)> {
    output
        .iter()
        .filter(|(k, _)| IDENTITY.contains(&k.as_str()) && !input.contains_key(*k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}
