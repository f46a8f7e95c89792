//! The one bounded XML reader of the vendor adapters: vSphere SOAP, WS-Man and PowerShell
//! CLIXML (Hyper-V), XML-RPC (XAPI). Vendor answers are untrusted input, so one set of limits
//! applies to all of them: size, depth and element count are capped, DTDs refused, and only
//! the five predefined entities and character references are expanded.
//!
//! Element names are kept without their namespace prefix (vendors prefix differently);
//! attribute names keep theirs, because vSphere's `type` (a managed object's type) and
//! `xsi:type` (the schema type) must stay apart ([`local`] strips a prefix where wanted).
//!
//! [`walk`] streams the elements and text runs; [`parse`] builds a tree of one root element.

use std::borrow::Cow;

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

/// What a document may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub bytes: usize,
    pub depth: usize,
    pub elements: usize,
}

/// The one set of limits for every vendor answer.
pub const LIMITS: Limits = Limits {
    // The adapters' HTTP body cap: no answer is read past it anyway.
    bytes: crate::http::MAX_BODY,
    // Deeper than any vendor answer: a XAPI map of records of maps is ~8 deep in XML-RPC,
    // SOAP and WS-Man envelopes a dozen.
    depth: 64,
    // A 10 000-VM XAPI `VM.get_all_records` is a few million elements, a 10 000-VM vSphere
    // inventory page well under two million; refuse far more.
    elements: 10_000_000,
};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XmlError {
    #[error("malformed XML at byte {at}: {message}")]
    Syntax { at: u64, message: String },
    #[error("XML larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("XML nested deeper than {limit} elements")]
    TooDeep { limit: usize },
    #[error("XML with more than {limit} elements")]
    TooManyElements { limit: usize },
    #[error("the answer is not UTF-8")]
    NotUtf8,
}

fn syntax(at: u64, message: impl Into<String>) -> XmlError {
    XmlError::Syntax {
        at,
        message: message.into(),
    }
}

/// What [`walk`] reports, in document order.
pub enum Item<'a> {
    /// An element opens; `path` holds the local names of its ancestors and itself, `attrs`
    /// its attributes (qualified names, values with entities resolved).
    Open {
        path: &'a [String],
        attrs: &'a [(String, String)],
    },
    /// Text (entities resolved) directly inside the innermost element of `path`.
    Text { path: &'a [String], text: &'a str },
    /// The innermost element of `path` closes.
    Close { path: &'a [String] },
}

/// A name without its namespace prefix.
pub fn local(name: &str) -> &str {
    name.rsplit_once(':').map_or(name, |(_, l)| l)
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

fn attributes(e: &BytesStart<'_>, at: u64) -> Result<Vec<(String, String)>, XmlError> {
    let mut attrs = Vec::new();
    for a in e.attributes() {
        let a = a.map_err(|err| syntax(at, err.to_string()))?;
        let value = a
            .normalized_value(quick_xml::XmlVersion::Implicit1_0)
            .map_err(|err| syntax(at, err.to_string()))?;
        attrs.push((a.key.into_inner().to_owned(), value.into_owned()));
    }
    Ok(attrs)
}

/// Walks `input`, calling `visit` for each element and text run; every element must close.
pub fn walk(input: &str, mut visit: impl FnMut(Item<'_>)) -> Result<(), XmlError> {
    read(input, &LIMITS, |_, item| {
        visit(item);
        Ok(())
    })
}

/// The reader: the limits, the refusals and entity resolution, once. `visit` gets the byte
/// position of each item too, and may stop the walk with an error.
fn read(
    input: &str,
    limits: &Limits,
    mut visit: impl FnMut(u64, Item<'_>) -> Result<(), XmlError>,
) -> Result<(), XmlError> {
    if input.len() > limits.bytes {
        return Err(XmlError::TooLarge {
            limit: limits.bytes,
        });
    }
    let mut reader = Reader::from_str(input);
    let mut path: Vec<String> = Vec::new();
    let mut count = 0usize;
    loop {
        let at = reader.buffer_position();
        let ev = reader
            .read_event()
            .map_err(|e| syntax(reader.error_position(), e.to_string()))?;
        match ev {
            Event::Start(ref e) | Event::Empty(ref e) => {
                count += 1;
                if count > limits.elements {
                    return Err(XmlError::TooManyElements {
                        limit: limits.elements,
                    });
                }
                if path.len() >= limits.depth {
                    return Err(XmlError::TooDeep {
                        limit: limits.depth,
                    });
                }
                let attrs = attributes(e, at)?;
                path.push(e.local_name().into_inner().to_owned());
                visit(
                    at,
                    Item::Open {
                        path: &path,
                        attrs: &attrs,
                    },
                )?;
                if matches!(ev, Event::Empty(_)) {
                    visit(at, Item::Close { path: &path })?;
                    path.pop();
                }
            }
            Event::End(_) => {
                if path.is_empty() {
                    return Err(syntax(at, "unexpected end tag"));
                }
                visit(at, Item::Close { path: &path })?;
                path.pop();
            }
            // Text outside the root element (whitespace around it) belongs to no element.
            Event::Text(t) if !path.is_empty() => {
                let text = t.xml10_content();
                visit(
                    at,
                    Item::Text {
                        path: &path,
                        text: &text,
                    },
                )?;
            }
            Event::CData(t) if !path.is_empty() => {
                let text = t.xml10_content();
                visit(
                    at,
                    Item::Text {
                        path: &path,
                        text: &text,
                    },
                )?;
            }
            Event::GeneralRef(r) => {
                let ch = if r.is_char_ref() {
                    r.resolve_char_ref()
                        .map_err(|e| syntax(at, e.to_string()))?
                } else {
                    entity(&r)
                };
                let ch = ch.ok_or_else(|| syntax(at, format!("unknown entity &{};", &*r)))?;
                let mut buf = [0u8; 4];
                if !path.is_empty() {
                    let text = ch.encode_utf8(&mut buf);
                    visit(at, Item::Text { path: &path, text })?;
                }
            }
            // A DTD could define entities (billion laughs); no vendor answer carries one.
            Event::DocType(_) => return Err(syntax(at, "DOCTYPE is not allowed")),
            Event::Text(_) | Event::CData(_) => {}
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
            Event::Eof => break,
        }
    }
    if !path.is_empty() {
        return Err(syntax(reader.buffer_position(), "unclosed element"));
    }
    Ok(())
}

/// An element of a parsed tree.
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

/// Parses a whole document into its one root element.
pub fn parse(input: &[u8]) -> Result<Node, XmlError> {
    parse_with(input, &LIMITS)
}

fn parse_with(input: &[u8], limits: &Limits) -> Result<Node, XmlError> {
    let input = std::str::from_utf8(input).map_err(|_| XmlError::NotUtf8)?;
    let mut stack: Vec<Node> = Vec::new();
    let mut root: Option<Node> = None;
    read(input, limits, |at, item| {
        match item {
            Item::Open { path, attrs } => {
                if root.is_some() {
                    return Err(syntax(at, "content after the root element"));
                }
                stack.push(Node {
                    name: path.last().cloned().unwrap_or_default(),
                    attrs: attrs.to_vec(),
                    ..Node::default()
                });
            }
            Item::Text { text, .. } => {
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(text);
                }
            }
            Item::Close { .. } => {
                let node = stack
                    .pop()
                    .ok_or_else(|| syntax(at, "unexpected end tag"))?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(node),
                    None => root = Some(node),
                }
            }
        }
        Ok(())
    })?;
    root.ok_or_else(|| syntax(0, "no root element"))
}

/// Escapes text for an element body or an attribute value (either quote).
pub fn escape(s: &str) -> Cow<'_, str> {
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
        match parse(b"<a><b></a>") {
            Err(e) => assert_eq!(
                format!("{e:?}"),
                r#"Syntax { at: 6, message: "ill-formed document: expected `</b>`, but `</a>` was found" }"#
            ),
            Ok(_) => panic!("accepted"),
        }
        for (doc, message) in [
            ("", "no root element"),
            ("<a>", "unclosed element"),
            ("<a/><b/>", "content after the root element"),
            ("<a>&e;</a>", "unknown entity &e;"),
        ] {
            match parse(doc.as_bytes()) {
                Err(XmlError::Syntax { message: m, .. }) => assert_eq!(m, message, "{doc}"),
                other => panic!("{doc}: {other:?}"),
            }
        }
        assert_eq!(parse(&[0xff, 0xfe]), Err(XmlError::NotUtf8));
    }

    /// Each limit just inside and just past its bound (small bounds, so the test stays fast;
    /// the reader is the same), and the one set through both entry points every adapter uses.
    #[test]
    fn limits_hold_at_their_bounds() {
        let small = Limits {
            bytes: 100,
            depth: 3,
            elements: 5,
        };
        let count = |doc: &str| {
            let mut n = 0;
            read(doc, &small, |_, i| {
                n += usize::from(matches!(i, Item::Open { .. }));
                Ok(())
            })
            .map(|()| n)
        };
        let nested = |n: usize| "<a>".repeat(n) + &"</a>".repeat(n);
        assert_eq!(count(&nested(3)), Ok(3));
        assert_eq!(count(&nested(4)), Err(XmlError::TooDeep { limit: 3 }));
        let flat = |n: usize| format!("<r>{}</r>", "<a/>".repeat(n - 1));
        assert_eq!(count(&flat(5)), Ok(5));
        assert_eq!(count(&flat(6)), Err(XmlError::TooManyElements { limit: 5 }));
        let sized = |n: usize| format!("<r>{}</r>", "x".repeat(n - 7));
        assert_eq!(count(&sized(100)), Ok(1));
        assert_eq!(count(&sized(101)), Err(XmlError::TooLarge { limit: 100 }));
        assert_eq!(
            parse_with(sized(101).as_bytes(), &small),
            Err(XmlError::TooLarge { limit: 100 })
        );

        // The shared set, as the adapters see it.
        let deep = nested(LIMITS.depth + 1);
        let too_deep = Err(XmlError::TooDeep {
            limit: LIMITS.depth,
        });
        assert_eq!(parse(deep.as_bytes()).map(drop), too_deep);
        assert_eq!(walk(&deep, |_| {}), too_deep);
        assert!(parse(nested(LIMITS.depth).as_bytes()).is_ok());
    }

    #[test]
    fn walks_local_names_and_resolved_text() {
        let mut seen = Vec::new();
        walk(
            r#"<s:Env xmlns:s="x"><s:Body w:Code="7">a&lt;b<![CDATA[&c]]></s:Body></s:Env>"#,
            |item| match item {
                Item::Open { path, attrs } => {
                    seen.push(format!("open {} {attrs:?}", path.join("/")))
                }
                Item::Text { path, text } => seen.push(format!("text {} {text}", path.join("/"))),
                Item::Close { path } => seen.push(format!("close {}", path.join("/"))),
            },
        )
        .unwrap();
        assert_eq!(
            seen,
            [
                r#"open Env [("xmlns:s", "x")]"#,
                r#"open Env/Body [("w:Code", "7")]"#,
                "text Env/Body a",
                "text Env/Body <",
                "text Env/Body b",
                "text Env/Body &c",
                "close Env/Body",
                "close Env",
            ]
        );
        assert_eq!(local("w:Code"), "Code");
        assert_eq!(
            escape(r#"<a href="x">&'"#),
            "&lt;a href=&quot;x&quot;&gt;&amp;&apos;"
        );
    }
}
