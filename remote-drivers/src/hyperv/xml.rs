//! A bounded, namespace-agnostic walk over an XML document (WS-Man answers, PowerShell CLIXML):
//! local element names, attributes and text, with entities resolved. No DTDs, limited depth and
//! element count: these documents come from the network.

use quick_xml::events::Event;
use quick_xml::Reader;

const MAX_DEPTH: usize = 32;
const MAX_ELEMENTS: usize = 200_000;

pub enum Node<'a> {
    /// An element opens; `path` holds the local names of its ancestors and itself.
    Open {
        path: &'a [String],
        attrs: &'a [(String, String)],
    },
    /// Text (entities resolved) directly inside the innermost element of `path`.
    Text { path: &'a [String], text: &'a str },
}

fn local(name: &str) -> String {
    match name.rsplit_once(':') {
        Some((_, l)) => l.to_owned(),
        None => name.to_owned(),
    }
}

fn entity(name: &str) -> Option<char> {
    Some(match name {
        "lt" => '<',
        "gt" => '>',
        "amp" => '&',
        "apos" => '\'',
        "quot" => '"',
        _ => return None,
    })
}

/// Walks `input`, calling `visit` for each element and text run.
pub fn walk(input: &str, mut visit: impl FnMut(Node<'_>)) -> Result<(), String> {
    let mut reader = Reader::from_str(input);
    let mut path: Vec<String> = Vec::new();
    let mut count = 0usize;
    loop {
        let ev = reader
            .read_event()
            .map_err(|e| format!("XML at byte {}: {e}", reader.error_position()))?;
        match ev {
            Event::Start(ref e) | Event::Empty(ref e) => {
                count += 1;
                if count > MAX_ELEMENTS || path.len() >= MAX_DEPTH {
                    return Err("XML too large or too deeply nested".into());
                }
                let mut attrs = Vec::new();
                for a in e.attributes() {
                    let a = a.map_err(|err| format!("bad XML attribute: {err}"))?;
                    let value = a
                        .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                        .map_err(|err| format!("bad XML attribute value: {err}"))?
                        .into_owned();
                    attrs.push((local(a.key.as_ref()), value));
                }
                path.push(local(e.name().as_ref()));
                visit(Node::Open {
                    path: &path,
                    attrs: &attrs,
                });
                if matches!(ev, Event::Empty(_)) {
                    path.pop();
                }
            }
            Event::End(_) => {
                path.pop();
            }
            Event::Text(t) => {
                let text = t.xml10_content();
                if !path.is_empty() {
                    visit(Node::Text {
                        path: &path,
                        text: &text,
                    });
                }
            }
            Event::CData(t) => {
                let text = t.xml10_content();
                visit(Node::Text {
                    path: &path,
                    text: &text,
                });
            }
            Event::GeneralRef(r) => {
                let ch = if r.is_char_ref() {
                    r.resolve_char_ref().map_err(|e| e.to_string())?
                } else {
                    entity(r.as_ref())
                };
                let ch = ch.ok_or("unknown XML entity")?;
                let mut buf = [0u8; 4];
                visit(Node::Text {
                    path: &path,
                    text: ch.encode_utf8(&mut buf),
                });
            }
            Event::DocType(_) => return Err("XML DOCTYPE is not allowed".into()),
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
            Event::Eof => break,
        }
    }
    Ok(())
}

/// `&`, `<`, `>`, quotes escaped for element text and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}
