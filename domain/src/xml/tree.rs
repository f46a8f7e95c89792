//! A small bounded DOM built with quick-xml. The reader works on this tree so every check can
//! name the element path and line, and so unknown nodes are found by listing, not by luck.

use std::str::FromStr;

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

use super::error::XmlError;

pub const MAX_DEPTH: usize = 32;
pub const MAX_ELEMENTS: usize = 50_000;

/// Children that libvirt adds on every device and that never affect the guest: `<alias>`
/// names QEMU's device id, which we assign ourselves.
const IGNORED_EVERYWHERE: &[&str] = &["alias"];

#[derive(Debug)]
pub struct Element {
    pub name: String,
    pub path: String,
    pub line: u32,
    pub attrs: Vec<(String, String)>,
    pub children: Vec<Element>,
    pub text: String,
    /// Verbatim inner XML; only captured for `<metadata>`.
    pub raw_inner: Option<String>,
}

struct Lines(Vec<usize>);

impl Lines {
    fn new(s: &str) -> Self {
        Lines(
            s.bytes()
                .enumerate()
                .filter(|(_, b)| *b == b'\n')
                .map(|(i, _)| i)
                .collect(),
        )
    }
    fn line(&self, offset: u64) -> u32 {
        let off = usize::try_from(offset).unwrap_or(usize::MAX);
        u32::try_from(self.0.partition_point(|nl| *nl < off) + 1).unwrap_or(u32::MAX)
    }
}

fn syntax(line: u32, message: impl Into<String>) -> XmlError {
    XmlError::Syntax {
        line,
        message: message.into(),
    }
}

fn resolve_entity(name: &str) -> Option<char> {
    Some(match name {
        "lt" => '<',
        "gt" => '>',
        "amp" => '&',
        "apos" => '\'',
        "quot" => '"',
        _ => return None,
    })
}

/// Parse `input` into a tree rooted at its single root element. `capture_raw` names elements
/// (direct children of the root) whose inner XML is kept verbatim instead of parsed.
pub fn parse(input: &str, capture_raw: &[&str]) -> Result<Element, XmlError> {
    if input.len() > crate::MAX_DOCUMENT_BYTES {
        return Err(XmlError::TooLarge(input.len()));
    }
    let lines = Lines::new(input);
    let mut reader = Reader::from_str(input);
    let mut stack: Vec<(Element, Vec<(String, u32)>)> = Vec::new();
    let mut root: Option<Element> = None;
    let mut count = 0usize;
    loop {
        let start_pos = reader.buffer_position();
        let ev = reader
            .read_event()
            .map_err(|e| syntax(lines.line(reader.error_position()), e.to_string()))?;
        let line = lines.line(start_pos);
        match ev {
            Event::Start(e) | Event::Empty(e) if root.is_some() => {
                return Err(syntax(
                    line,
                    format!("content after the root element: <{}>", name_of(&e)),
                ));
            }
            Event::Start(ref e) | Event::Empty(ref e) => {
                count += 1;
                if count > MAX_ELEMENTS {
                    return Err(XmlError::TooManyElements);
                }
                let is_empty = matches!(ev, Event::Empty(_));
                let mut el = open(e, line, &mut stack)?;
                if stack.len() >= MAX_DEPTH {
                    return Err(XmlError::TooDeep {
                        path: el.path,
                        line,
                    });
                }
                if !is_empty && stack.len() == 1 && capture_raw.contains(&el.name.as_str()) {
                    let end = e.to_end().into_owned();
                    let span = reader.read_to_end(end.name()).map_err(|err| {
                        syntax(lines.line(reader.error_position()), err.to_string())
                    })?;
                    let (a, b) = (usize::try_from(span.start), usize::try_from(span.end));
                    let raw = match (a, b) {
                        (Ok(a), Ok(b)) => input.get(a..b),
                        _ => None,
                    };
                    let raw = raw.ok_or_else(|| syntax(line, "bad span"))?;
                    // Re-emitted verbatim later: it must be well-formed on its own.
                    check_fragment(raw, line)?;
                    el.raw_inner = Some(raw.to_owned());
                    attach(el, &mut stack, &mut root);
                } else if is_empty {
                    attach(el, &mut stack, &mut root);
                } else {
                    stack.push((el, Vec::new()));
                }
            }
            Event::End(_) => {
                let (el, _) = stack
                    .pop()
                    .ok_or_else(|| syntax(line, "unexpected end tag"))?;
                attach(el, &mut stack, &mut root);
            }
            Event::Text(t) => {
                let text = t.xml10_content();
                match stack.last_mut() {
                    // Indentation between child elements carries no data; skipping it saves
                    // an allocation per element. Leaf text (title, description) is kept exactly.
                    Some((el, _)) if !el.children.is_empty() && text.trim().is_empty() => {}
                    Some((el, _)) => el.text.push_str(&text),
                    None if text.trim().is_empty() => {}
                    None => return Err(syntax(line, "text outside the root element")),
                }
            }
            Event::CData(t) => match stack.last_mut() {
                Some((el, _)) => el.text.push_str(&t.xml10_content()),
                None => return Err(syntax(line, "CDATA outside the root element")),
            },
            Event::GeneralRef(r) => {
                let ch = if r.is_char_ref() {
                    r.resolve_char_ref()
                        .map_err(|e| syntax(line, e.to_string()))?
                } else {
                    resolve_entity(&r)
                };
                let ch = ch.ok_or_else(|| syntax(line, format!("unknown entity &{};", &*r)))?;
                match stack.last_mut() {
                    Some((el, _)) => el.text.push(ch),
                    None => return Err(syntax(line, "text outside the root element")),
                }
            }
            // DTDs can define entities; libvirt never writes them and we do not expand them.
            Event::DocType(_) => return Err(syntax(line, "DOCTYPE is not allowed")),
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
            Event::Eof => break,
        }
    }
    if let Some((el, _)) = stack.last() {
        return Err(syntax(
            lines.line(reader.buffer_position()),
            format!("unclosed element <{}>", el.name),
        ));
    }
    root.ok_or_else(|| syntax(1, "no root element"))
}

/// Verify a verbatim fragment is balanced, well-formed XML within our limits.
pub fn check_fragment(raw: &str, line: u32) -> Result<(), XmlError> {
    let wrapped = format!("<r>{raw}</r>");
    parse(&wrapped, &[]).map(|_| ()).map_err(|e| match e {
        XmlError::Syntax { line: l, message } => {
            syntax(line.saturating_add(l).saturating_sub(1), message)
        }
        other => other,
    })
}

fn name_of(e: &BytesStart<'_>) -> String {
    e.name().as_ref().to_owned()
}

fn open(
    e: &BytesStart<'_>,
    line: u32,
    stack: &mut [(Element, Vec<(String, u32)>)],
) -> Result<Element, XmlError> {
    let name = name_of(e);
    // Built by hand, not with format!: this runs for every element and dominated parse time.
    let path = match stack.last_mut() {
        Some((parent, seen)) => {
            let n = match seen.iter_mut().find(|(k, _)| *k == name) {
                Some((_, n)) => {
                    *n = n.saturating_add(1);
                    *n
                }
                None => {
                    seen.push((name.clone(), 1));
                    1
                }
            };
            let mut p = String::with_capacity(parent.path.len() + name.len() + 6);
            p.push_str(&parent.path);
            p.push('/');
            p.push_str(&name);
            // Index only repeated siblings: the first is `disk`, the second `disk[2]`.
            if n > 1 {
                p.push('[');
                p.push_str(&n.to_string());
                p.push(']');
            }
            p
        }
        None => name.clone(),
    };
    let mut attrs = Vec::new();
    for a in e.attributes() {
        let a = a.map_err(|err| syntax(line, format!("bad attribute in <{name}>: {err}")))?;
        let key = a.key.as_ref().to_owned();
        let value = a
            .normalized_value(quick_xml::XmlVersion::Implicit1_0)
            .map_err(|err| syntax(line, format!("bad value for {path}@{key}: {err}")))?
            .into_owned();
        attrs.push((key, value));
    }
    Ok(Element {
        name,
        path,
        line,
        attrs,
        children: Vec::new(),
        text: String::new(),
        raw_inner: None,
    })
}

fn attach(el: Element, stack: &mut [(Element, Vec<(String, u32)>)], root: &mut Option<Element>) {
    match stack.last_mut() {
        Some((parent, _)) => parent.children.push(el),
        None => *root = Some(el),
    }
}

/// Parse an integer as libvirt does: decimal, or hex with `0x`.
pub fn parse_int<T: TryFrom<u64>>(s: &str) -> Option<T> {
    let s = s.trim();
    let v = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok()?,
        None => s.parse::<u64>().ok()?,
    };
    T::try_from(v).ok()
}

impl Element {
    fn attr_path(&self, attr: &str) -> String {
        format!("{}@{}", self.path, attr)
    }

    /// Reject any attribute or child not listed (plus the global ignorables).
    pub fn allow(&self, attrs: &[&str], children: &[&str]) -> Result<(), XmlError> {
        self.allow_attrs(attrs)?;
        self.allow_children(children)
    }

    pub fn allow_attrs(&self, attrs: &[&str]) -> Result<(), XmlError> {
        if let Some((k, _)) = self
            .attrs
            .iter()
            .find(|(k, _)| !attrs.contains(&k.as_str()))
        {
            return Err(XmlError::UnsupportedAttribute {
                path: self.attr_path(k),
                line: self.line,
            });
        }
        Ok(())
    }

    pub fn allow_children(&self, children: &[&str]) -> Result<(), XmlError> {
        if let Some(c) = self.children.iter().find(|c| {
            !children.contains(&c.name.as_str()) && !IGNORED_EVERYWHERE.contains(&c.name.as_str())
        }) {
            return Err(c.unsupported());
        }
        Ok(())
    }

    pub fn unsupported(&self) -> XmlError {
        XmlError::UnsupportedElement {
            name: self.name.clone(),
            path: self.path.clone(),
            line: self.line,
        }
    }

    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn req_attr(&self, name: &str) -> Result<&str, XmlError> {
        self.attr(name).ok_or_else(|| XmlError::Missing {
            what: format!("attribute '{name}'"),
            path: self.attr_path(name),
            line: self.line,
        })
    }

    pub fn invalid_attr(&self, name: &str, message: impl Into<String>) -> XmlError {
        XmlError::Invalid {
            path: self.attr_path(name),
            line: self.line,
            message: message.into(),
        }
    }

    pub fn invalid_text(&self, message: impl Into<String>) -> XmlError {
        XmlError::Invalid {
            path: self.path.clone(),
            line: self.line,
            message: message.into(),
        }
    }

    pub fn unsupported_value(
        &self,
        attr: Option<&str>,
        value: &str,
        supported: &[&str],
    ) -> XmlError {
        XmlError::UnsupportedValue {
            path: attr.map_or_else(|| self.path.clone(), |a| self.attr_path(a)),
            line: self.line,
            value: value.to_owned(),
            supported: supported.join(", "),
        }
    }

    /// Attribute parsed with `FromStr`.
    pub fn attr_parse<T: FromStr>(&self, name: &str) -> Result<Option<T>, XmlError>
    where
        T::Err: std::fmt::Display,
    {
        match self.attr(name) {
            None => Ok(None),
            Some(v) => v
                .trim()
                .parse()
                .map(Some)
                .map_err(|e| self.invalid_attr(name, format!("'{v}': {e}"))),
        }
    }

    /// Integer attribute (decimal or 0x hex).
    pub fn attr_int<T: TryFrom<u64>>(&self, name: &str) -> Result<Option<T>, XmlError> {
        match self.attr(name) {
            None => Ok(None),
            Some(v) => parse_int(v).map(Some).ok_or_else(|| {
                self.invalid_attr(name, format!("'{v}' is not an integer in range"))
            }),
        }
    }

    pub fn req_attr_int<T: TryFrom<u64>>(&self, name: &str) -> Result<T, XmlError> {
        self.req_attr(name)?;
        self.attr_int(name)?
            .ok_or_else(|| self.invalid_attr(name, "missing"))
    }

    /// Attribute mapped through a fixed table of `(xml, value)`.
    pub fn attr_enum<T: Copy>(
        &self,
        name: &str,
        table: &[(&str, T)],
    ) -> Result<Option<T>, XmlError> {
        match self.attr(name) {
            None => Ok(None),
            Some(v) => table
                .iter()
                .find(|(k, _)| *k == v)
                .map(|(_, t)| Some(*t))
                .ok_or_else(|| {
                    let names: Vec<&str> = table.iter().map(|(k, _)| *k).collect();
                    self.unsupported_value(Some(name), v, &names)
                }),
        }
    }

    pub fn req_attr_enum<T: Copy>(&self, name: &str, table: &[(&str, T)]) -> Result<T, XmlError> {
        self.req_attr(name)?;
        self.attr_enum(name, table)?
            .ok_or_else(|| self.invalid_attr(name, "missing"))
    }

    /// Require an attribute, if present, to have exactly one accepted value.
    pub fn attr_only(&self, name: &str, accepted: &[&str]) -> Result<(), XmlError> {
        match self.attr(name) {
            Some(v) if !accepted.contains(&v) => {
                Err(self.unsupported_value(Some(name), v, accepted))
            }
            _ => Ok(()),
        }
    }

    /// The single child named `name`, if any; a second one is an error.
    pub fn child(&self, name: &str) -> Result<Option<&Element>, XmlError> {
        let mut it = self.children.iter().filter(|c| c.name == name);
        let first = it.next();
        if let Some(dup) = it.next() {
            return Err(XmlError::Duplicate {
                path: dup.path.clone(),
                line: dup.line,
            });
        }
        Ok(first)
    }

    /// The single child named `name` whose value is its text, if any. An empty one
    /// (`<kernel/>`, `<uuid></uuid>`, no attributes or children) is absent, as libvirt
    /// reads text values (`virXPathString` gives NULL for an empty string): templates such
    /// as vagrant-libvirt's write them unfilled.
    pub fn text_child(&self, name: &str) -> Result<Option<&Element>, XmlError> {
        Ok(self
            .child(name)?
            .filter(|c| !(c.text.is_empty() && c.attrs.is_empty() && c.children.is_empty())))
    }

    pub fn req_child(&self, name: &str) -> Result<&Element, XmlError> {
        self.child(name)?.ok_or_else(|| XmlError::Missing {
            what: format!("element <{name}>"),
            path: format!("{}/{}", self.path, name),
            line: self.line,
        })
    }

    pub fn children_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }

    pub fn trimmed(&self) -> &str {
        self.text.trim()
    }

    /// Non-empty trimmed text content.
    pub fn req_text(&self) -> Result<&str, XmlError> {
        let t = self.trimmed();
        if t.is_empty() {
            return Err(XmlError::Missing {
                what: "text content".into(),
                path: self.path.clone(),
                line: self.line,
            });
        }
        Ok(t)
    }

    pub fn text_int<T: TryFrom<u64>>(&self) -> Result<T, XmlError> {
        let t = self.req_text()?;
        parse_int(t).ok_or_else(|| self.invalid_text(format!("'{t}' is not an integer in range")))
    }
}
