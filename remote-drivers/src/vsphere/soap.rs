//! vim25 SOAP framing: the request envelope, the answer's body, and faults.
//!
//! A request is one method element in the `urn:vim25` namespace whose first child is `_this`
//! (the managed object called). An answer is `<MethodResponse><returnval>...` or a SOAP
//! `Fault` whose `detail` names the vim fault by its schema type (`InvalidPowerState`...).

use std::fmt::Write as _;

use super::xml::{self, escape, Node};

/// The vim25 version we speak. Every method and property this adapter uses exists since 6.5
/// and later servers answer older clients in the older schema.
pub const SOAP_ACTION: &str = "urn:vim25/6.5";

/// A managed object reference: its type and id (`VirtualMachine`, `vm-42`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MoRef {
    pub kind: String,
    pub value: String,
}

impl MoRef {
    pub fn new(kind: &str, value: &str) -> Self {
        Self {
            kind: kind.to_owned(),
            value: value.to_owned(),
        }
    }

    /// Reads a reference element (`<obj type="VirtualMachine">vm-42</obj>`).
    pub fn from_node(node: &Node) -> Option<Self> {
        let kind = node.attr("type")?;
        let value = node.text.trim();
        (!kind.is_empty() && !value.is_empty()).then(|| Self::new(kind, value))
    }
}

/// Builds one method call: `Request::new("PowerOnVM_Task", &vm).finish()`.
pub struct Request {
    method: &'static str,
    body: String,
}

impl Request {
    pub fn new(method: &'static str, this: &MoRef) -> Self {
        let mut r = Self {
            method,
            body: String::with_capacity(512),
        };
        r.moref("_this", this);
        r
    }

    pub fn moref(&mut self, element: &str, r: &MoRef) -> &mut Self {
        let _ = write!(
            self.body,
            "<{element} type=\"{}\">{}</{element}>",
            escape(&r.kind),
            escape(&r.value)
        );
        self
    }

    pub fn text(&mut self, element: &str, value: &str) -> &mut Self {
        let _ = write!(self.body, "<{element}>{}</{element}>", escape(value));
        self
    }

    /// Pre-built, already escaped XML (specs assembled by the callers with [`Request`]'s
    /// helpers or [`escape`]).
    pub fn raw(&mut self, xml: &str) -> &mut Self {
        self.body.push_str(xml);
        self
    }

    pub fn method(&self) -> &'static str {
        self.method
    }

    pub fn finish(&self) -> String {
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
             <soapenv:Envelope xmlns:soapenv=\"http://schemas.xmlsoap.org/soap/envelope/\" \
             xmlns:xsd=\"http://www.w3.org/2001/XMLSchema\" \
             xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\">\
             <soapenv:Body><{m} xmlns=\"urn:vim25\">{b}</{m}></soapenv:Body></soapenv:Envelope>",
            m = self.method,
            b = self.body
        )
    }
}

/// A vim fault as the server described it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// The vim fault type (`InvalidPowerState`), or the SOAP faultcode if no detail names one.
    pub name: String,
    /// `faultstring` (may be empty: vcsim leaves many blank).
    pub message: String,
    /// The fault's own fields (`requestedState`, `existingState`, `name`...), text only.
    pub fields: Vec<(String, String)>,
}

impl Fault {
    /// Reads a fault object: a SOAP `<detail>` child (`<InvalidPowerStateFault
    /// xsi:type="InvalidPowerState">`) or a task's `LocalizedMethodFault.fault`.
    pub fn from_detail(node: &Node, message: String) -> Self {
        let name = node
            .xsi_type()
            .map(str::to_owned)
            .unwrap_or_else(|| node.name.trim_end_matches("Fault").to_owned());
        let fields = node
            .children
            .iter()
            .filter(|c| c.children.is_empty() && !c.text.trim().is_empty())
            .map(|c| (c.name.clone(), c.text.trim().to_owned()))
            .collect();
        Self {
            name,
            message,
            fields,
        }
    }

    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What a SOAP answer turned out to be.
#[derive(Debug)]
pub enum Answer {
    /// The `<MethodResponse>` element.
    Response(Node),
    Fault(Fault),
}

#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error(transparent)]
    Xml(#[from] xml::XmlError),
    #[error("not a SOAP envelope: {0}")]
    NotSoap(String),
}

/// Parses an answer's envelope.
pub fn parse_answer(body: &[u8]) -> Result<Answer, ParseError> {
    let root = xml::parse(body)?;
    if root.name != "Envelope" {
        return Err(ParseError::NotSoap(format!("root element <{}>", root.name)));
    }
    let soap_body = root
        .child("Body")
        .ok_or_else(|| ParseError::NotSoap("no Body".into()))?;
    let first = soap_body
        .children
        .first()
        .ok_or_else(|| ParseError::NotSoap("empty Body".into()))?;
    if first.name == "Fault" {
        let message = first.child_text("faultstring").unwrap_or("").to_owned();
        let fault = match first.child("detail").and_then(|d| d.children.first()) {
            Some(detail) => Fault::from_detail(detail, message),
            None => Fault {
                name: first
                    .child_text("faultcode")
                    .unwrap_or("SoapFault")
                    .to_owned(),
                message,
                fields: Vec::new(),
            },
        };
        return Ok(Answer::Fault(fault));
    }
    Ok(Answer::Response(first.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_escapes_values() {
        let mut r = Request::new("Login", &MoRef::new("SessionManager", "SessionManager"));
        r.text("userName", "a<b").text("password", "p&\"q");
        let xml = r.finish();
        assert!(xml.contains("<userName>a&lt;b</userName>"), "{xml}");
        assert!(xml.contains("<password>p&amp;&quot;q</password>"), "{xml}");
        assert!(xml.contains("<Login xmlns=\"urn:vim25\"><_this type=\"SessionManager\">"));
    }

    #[test]
    fn faults_name_the_vim_type_and_keep_fields() {
        let body = br#"<?xml version="1.0"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body><soapenv:Fault><faultcode>ServerFaultCode</faultcode><faultstring>The attempted operation cannot be performed in the current state (Powered on).</faultstring><detail><InvalidPowerStateFault xmlns="urn:vim25" xsi:type="InvalidPowerState"><requestedState>poweredOff</requestedState><existingState>poweredOn</existingState></InvalidPowerStateFault></detail></soapenv:Fault></soapenv:Body></soapenv:Envelope>"#;
        let Answer::Fault(f) = parse_answer(body).unwrap() else {
            panic!("expected a fault")
        };
        assert_eq!(f.name, "InvalidPowerState");
        assert_eq!(f.field("existingState"), Some("poweredOn"));
        assert!(f.message.contains("current state"));
    }

    #[test]
    fn non_soap_is_refused() {
        assert!(matches!(
            parse_answer(b"<html><body>hi</body></html>"),
            Err(ParseError::NotSoap(_))
        ));
    }
}
