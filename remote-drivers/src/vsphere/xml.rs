//! A small bounded XML tree for SOAP answers, and escaping for the requests we write.
//!
//! vim25 answers are untrusted input: depth and element count are capped, DTDs refused, and
//! only the five predefined entities are expanded. Element names are kept without their
//! namespace prefix (vCenter and vcsim prefix differently); attributes keep theirs, because
//! `type` (a managed object's type) and `xsi:type` (the XML schema type) must stay apart.

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

pub const MAX_DEPTH: usize = 64;
/// A 10 000-VM inventory page with a dozen properties each stays well under this.
pub const MAX_ELEMENTS: usize = 2_000_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XmlError {
    #[error("malformed XML at byte {at}: {message}")]
    Syntax { at: u64, message: String },
    #[error("XML nested deeper than {MAX_DEPTH} elements")]
    TooDeep,
    #[error("XML with more than {MAX_ELEMENTS} elements")]
    TooManyElements,
    #[error("the answer is not UTF-8")]
    NotUtf8,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Node {
    /// Local name (prefix stripped).
    pub name: String,
    /// Qualified attribute names (`type`, `xsi:type`, `XMLSchema-instance:type`) and values.
    pub attrs: Vec<(String, String)>,
    pub text: String,
    pub children: Vec<Node>,
}

impl Node {
    pub fn child(&self, name: &str) -> Option<&Node> {
        self.children.iter().find(|c| c.name == name)
    }

    pub fn children_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Node> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }

    /// The text of child `name`, trimmed.
    pub fn child_text(&self, name: &str) -> Option<&str> {
        self.child(name).map(|c| c.text.trim())
    }

    /// An unprefixed attribute (`type` of a managed object reference).
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The schema type (`xsi:type`, whatever the prefix), without its own prefix (`xsd:int`
    /// gives `int`).
    pub fn xsi_type(&self) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| {
                k.split_once(':')
                    .is_some_and(|(p, l)| l == "type" && p != "xmlns")
            })
            .map(|(_, v)| v.rsplit(':').next().unwrap_or(v))
    }

    /// The first descendant named `name` (depth first).
    pub fn find(&self, name: &str) -> Option<&Node> {
        self.children.iter().find_map(|c| {
            if c.name == name {
                Some(c)
            } else {
                c.find(name)
            }
        })
    }
}

fn open(e: &BytesStart<'_>, at: u64) -> Result<Node, XmlError> {
    let mut node = Node {
        name: e.local_name().into_inner().to_owned(),
        ..Node::default()
    };
    for a in e.attributes() {
        let a = a.map_err(|err| XmlError::Syntax {
            at,
            message: err.to_string(),
        })?;
        let value = a
            .normalized_value(quick_xml::XmlVersion::Implicit1_0)
            .map_err(|err| XmlError::Syntax {
                at,
                message: err.to_string(),
            })?;
        node.attrs
            .push((a.key.into_inner().to_owned(), value.into_owned()));
    }
    Ok(node)
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

/// Parses a whole document into its root element.
pub fn parse(input: &[u8]) -> Result<Node, XmlError> {
    let input = std::str::from_utf8(input).map_err(|_| XmlError::NotUtf8)?;
    let mut reader = Reader::from_str(input);
    let mut stack: Vec<Node> = Vec::new();
    let mut root: Option<Node> = None;
    let mut count = 0usize;
    let syntax = |at: u64, message: String| XmlError::Syntax { at, message };
    loop {
        let at = reader.buffer_position();
        let ev = reader
            .read_event()
            .map_err(|e| syntax(reader.error_position(), e.to_string()))?;
        match ev {
            Event::Start(ref e) | Event::Empty(ref e) => {
                if root.is_some() {
                    return Err(syntax(at, "content after the root element".into()));
                }
                count += 1;
                if count > MAX_ELEMENTS {
                    return Err(XmlError::TooManyElements);
                }
                if stack.len() >= MAX_DEPTH {
                    return Err(XmlError::TooDeep);
                }
                let node = open(e, at)?;
                if matches!(ev, Event::Empty(_)) {
                    attach(node, &mut stack, &mut root);
                } else {
                    stack.push(node);
                }
            }
            Event::End(_) => {
                let node = stack
                    .pop()
                    .ok_or_else(|| syntax(at, "unexpected end tag".into()))?;
                attach(node, &mut stack, &mut root);
            }
            Event::Text(t) => {
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&t.xml10_content());
                }
            }
            Event::CData(t) => {
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&t.xml10_content());
                }
            }
            Event::GeneralRef(r) => {
                let ch = if r.is_char_ref() {
                    r.resolve_char_ref()
                        .map_err(|e| syntax(at, e.to_string()))?
                } else {
                    entity(&r)
                };
                let ch = ch.ok_or_else(|| syntax(at, format!("unknown entity &{};", &*r)))?;
                if let Some(top) = stack.last_mut() {
                    top.text.push(ch);
                }
            }
            // A DTD could define entities; SOAP never carries one.
            Event::DocType(_) => return Err(syntax(at, "DOCTYPE is not allowed".into())),
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
            Event::Eof => break,
        }
    }
    if !stack.is_empty() {
        return Err(syntax(reader.buffer_position(), "unclosed element".into()));
    }
    root.ok_or_else(|| syntax(0, "no root element".into()))
}

fn attach(node: Node, stack: &mut [Node], root: &mut Option<Node>) {
    match stack.last_mut() {
        Some(parent) => parent.children.push(node),
        None => *root = Some(node),
    }
}

/// Escapes text for an element body or a double-quoted attribute.
pub fn escape(s: &str) -> std::borrow::Cow<'_, str> {
    quick_xml::escape::escape(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_moref_type_apart_from_schema_type() {
        let doc = br#"<a xmlns:X="http://www.w3.org/2001/XMLSchema-instance"><val X:type="ManagedObjectReference" type="HostSystem">host-1</val><n>a &amp; b&#33;</n></a>"#;
        let root = parse(doc).unwrap();
        let val = root.child("val").unwrap();
        assert_eq!(val.attr("type"), Some("HostSystem"));
        assert_eq!(val.xsi_type(), Some("ManagedObjectReference"));
        assert_eq!(root.child_text("n"), Some("a & b!"));
    }

    #[test]
    fn refuses_doctype_deep_nesting_and_junk() {
        match parse(b"<!DOCTYPE x [<!ENTITY a 'b'>]><x>&a;</x>") {
            Err(e) => assert_eq!(
                format!("{e:?}"),
                r#"Syntax { at: 0, message: "DOCTYPE is not allowed" }"#
            ),
            Ok(_) => panic!("accepted"),
        }
        let deep = "<a>".repeat(MAX_DEPTH + 1) + &"</a>".repeat(MAX_DEPTH + 1);
        assert_eq!(parse(deep.as_bytes()), Err(XmlError::TooDeep));
        match parse(b"<a><b></a>") {
            Err(e) => assert_eq!(
                format!("{e:?}"),
                r#"Syntax { at: 6, message: "ill-formed document: expected `</b>`, but `</a>` was found" }"#
            ),
            Ok(_) => panic!("accepted"),
        }
        match parse(b"") {
            Err(e) => assert_eq!(
                format!("{e:?}"),
                r#"Syntax { at: 0, message: "no root element" }"#
            ),
            Ok(_) => panic!("accepted"),
        }
        match parse(&[0xff, 0xfe]) {
            Err(e) => assert_eq!(format!("{e:?}"), r#"NotUtf8"#),
            Ok(_) => panic!("accepted"),
        }
    }
}
