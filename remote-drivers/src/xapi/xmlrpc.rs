//! XML-RPC, XAPI's older wire format: calls encoded from JSON values, responses decoded into
//! JSON values so the rest of the adapter sees one value type whichever protocol the host
//! speaks.
//!
//! XAPI's conventions: 64-bit `int`s travel as `<string>` (so numbers are encoded as strings),
//! `bool` as `<boolean>`, maps as `<struct>`, sets as `<array>`. Responses are untrusted: parsed
//! with quick-xml under an element count and depth limit, no DTDs, no panics.

use serde_json::{Map, Value};

use crate::xml::Node;

/// `<methodCall>` for `method` with `params`.
pub(crate) fn encode_call(method: &str, params: &[Value]) -> String {
    let mut out = String::with_capacity(256);
    out.push_str("<?xml version=\"1.0\"?><methodCall><methodName>");
    out.push_str(&quick_xml::escape::escape(method));
    out.push_str("</methodName><params>");
    for p in params {
        out.push_str("<param>");
        encode_value(p, &mut out);
        out.push_str("</param>");
    }
    out.push_str("</params></methodCall>");
    out
}

fn encode_value(v: &Value, out: &mut String) {
    out.push_str("<value>");
    match v {
        Value::Null => out.push_str("<string></string>"),
        Value::Bool(b) => {
            out.push_str(if *b {
                "<boolean>1</boolean>"
            } else {
                "<boolean>0</boolean>"
            });
        }
        Value::Number(n) if n.is_f64() => {
            out.push_str("<double>");
            out.push_str(&n.to_string());
            out.push_str("</double>");
        }
        // XAPI: ints are 64-bit and encoded as strings of decimal digits.
        Value::Number(n) => {
            out.push_str("<string>");
            out.push_str(&n.to_string());
            out.push_str("</string>");
        }
        Value::String(s) => {
            out.push_str("<string>");
            out.push_str(&quick_xml::escape::escape(s.as_str()));
            out.push_str("</string>");
        }
        Value::Array(items) => {
            out.push_str("<array><data>");
            for i in items {
                encode_value(i, out);
            }
            out.push_str("</data></array>");
        }
        Value::Object(map) => {
            out.push_str("<struct>");
            for (k, v) in map {
                out.push_str("<member><name>");
                out.push_str(&quick_xml::escape::escape(k.as_str()));
                out.push_str("</name>");
                encode_value(v, out);
                out.push_str("</member>");
            }
            out.push_str("</struct>");
        }
    }
    out.push_str("</value>");
}

/// The answer as a bounded element tree (the crate's one XML reader), then into a value.
fn parse_tree(input: &str) -> Result<Node, String> {
    crate::xml::parse(input.as_bytes()).map_err(|e| e.to_string())
}

/// The single value of a `<methodResponse>`; a protocol-level `<fault>` is an error.
pub(crate) fn decode_response(body: &[u8]) -> Result<Value, String> {
    let text = std::str::from_utf8(body).map_err(|e| format!("XML-RPC answer: {e}"))?;
    let root = parse_tree(text)?;
    if root.name != "methodResponse" {
        return Err(format!(
            "expected <methodResponse>, got <{}>",
            root.name.as_str()
        ));
    }
    let first = root.children.first().ok_or("empty <methodResponse>")?;
    match first.name.as_str() {
        "params" => {
            let value = child(first, "param")
                .and_then(|p| child(p, "value"))
                .ok_or("<params> without <param><value>")?;
            to_value(value)
        }
        "fault" => {
            let fault = child(first, "value").map(to_value).transpose()?;
            Err(format!(
                "XML-RPC fault: {}",
                fault.map(|f| f.to_string()).unwrap_or_default()
            ))
        }
        other => Err(format!("unexpected <{other}> in <methodResponse>")),
    }
}

/// A lone `<value>...</value>` fragment (how XAPI stores a task's result).
pub(crate) fn decode_value(fragment: &str) -> Result<Value, String> {
    let root = parse_tree(fragment)?;
    if root.name != "value" {
        return Err(format!("expected <value>, got <{}>", root.name.as_str()));
    }
    to_value(&root)
}

fn child<'a>(node: &'a Node, name: &str) -> Option<&'a Node> {
    node.children.iter().find(|c| c.name == name)
}

/// `<value>` to a JSON value. Recursion depth is bounded by the tree's depth.
fn to_value(value: &Node) -> Result<Value, String> {
    let Some(inner) = value.children.first() else {
        // A bare `<value>text</value>` is a string.
        return Ok(Value::String(value.text.clone()));
    };
    Ok(match inner.name.as_str() {
        "string" => Value::String(inner.text.clone()),
        "i4" | "int" | "i8" => {
            let n: i64 = inner
                .text
                .trim()
                .parse()
                .map_err(|_| format!("bad <{}> '{}'", inner.name.as_str(), inner.text))?;
            Value::from(n)
        }
        "boolean" => match inner.text.trim() {
            "1" => Value::Bool(true),
            "0" => Value::Bool(false),
            other => return Err(format!("bad <boolean> '{other}'")),
        },
        "double" => {
            let f: f64 = inner
                .text
                .trim()
                .parse()
                .map_err(|_| format!("bad <double> '{}'", inner.text))?;
            serde_json::Number::from_f64(f)
                .map(Value::Number)
                .unwrap_or(Value::Null)
        }
        "dateTime.iso8601" | "base64" => Value::String(inner.text.trim().to_owned()),
        "nil" => Value::Null,
        "array" => {
            let data = child(inner, "data").ok_or("<array> without <data>")?;
            let items = data
                .children
                .iter()
                .filter(|c| c.name == "value")
                .map(to_value)
                .collect::<Result<Vec<_>, _>>()?;
            Value::Array(items)
        }
        "struct" => {
            let mut map = Map::new();
            for m in inner.children.iter().filter(|c| c.name == "member") {
                let name = child(m, "name").ok_or("<member> without <name>")?;
                let v = child(m, "value").ok_or("<member> without <value>")?;
                map.insert(name.text.clone(), to_value(v)?);
            }
            Value::Object(map)
        }
        other => return Err(format!("unknown XML-RPC type <{other}>")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn encodes_xapi_conventions() {
        let xml = encode_call("VM.start", &[json!("s<&>"), json!(42), json!(true)]);
        assert!(xml.contains("<methodName>VM.start</methodName>"), "{xml}");
        assert!(xml.contains("<string>s&lt;&amp;&gt;</string>"), "{xml}");
        assert!(
            xml.contains("<string>42</string>"),
            "ints as strings: {xml}"
        );
        assert!(xml.contains("<boolean>1</boolean>"), "{xml}");
    }

    #[test]
    fn decodes_a_status_struct_round_trip() {
        let body = r#"<?xml version='1.0'?><methodResponse><params><param><value><struct>
            <member><name>Status</name><value><string>Success</string></value></member>
            <member><name>Value</name><value><array><data><value>OpaqueRef:a</value>
            <value><i4>7</i4></value><value><boolean>0</boolean></value></data></array></value>
            </member></struct></value></param></params></methodResponse>"#;
        let v = decode_response(body.as_bytes()).unwrap();
        assert_eq!(
            v,
            json!({"Status": "Success", "Value": ["OpaqueRef:a", 7, false]})
        );
    }

    #[test]
    fn refuses_hostile_or_broken_xml() {
        let deep = format!(
            "<methodResponse>{}{}</methodResponse>",
            "<a>".repeat(100),
            "</a>".repeat(100)
        );
        assert!(decode_response(deep.as_bytes())
            .unwrap_err()
            .contains("deeper"));
        let dtd = "<!DOCTYPE x [<!ENTITY a 'b'>]><methodResponse/>";
        assert!(decode_response(dtd.as_bytes())
            .unwrap_err()
            .contains("DOCTYPE"));
        match decode_response(b"<methodResponse><params>") {
            Err(e) => assert_eq!(
                format!("{e:?}"),
                r#""malformed XML at byte 24: unclosed element""#
            ),
            Ok(_) => panic!("accepted"),
        }
        assert!(decode_response(b"<html>500</html>")
            .unwrap_err()
            .contains("methodResponse"));
        match decode_response(b"\xff\xfe") {
            Err(e) => assert_eq!(
                format!("{e:?}"),
                r#""XML-RPC answer: invalid utf-8 sequence of 1 bytes from index 0""#
            ),
            Ok(_) => panic!("accepted"),
        }
        let bad_int = "<methodResponse><params><param><value><i4>x</i4></value></param></params></methodResponse>";
        match decode_response(bad_int.as_bytes()) {
            Err(e) => assert_eq!(format!("{e:?}"), r#""bad <i4> 'x'""#),
            Ok(_) => panic!("accepted"),
        }
    }

    #[test]
    fn decodes_a_task_result_fragment() {
        assert_eq!(
            decode_value("<value>OpaqueRef:x</value>").unwrap(),
            json!("OpaqueRef:x")
        );
        assert_eq!(
            decode_value("<value><string>a&amp;b</string></value>").unwrap(),
            json!("a&b")
        );
    }
}
