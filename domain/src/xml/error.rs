//! XML reader errors: each names the element/attribute path and the 1-based line.

/// `path` looks like `domain/devices/disk[2]/driver@cache` (1-based sibling index in `[]`,
/// only when there are several siblings of that name).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XmlError {
    #[error("XML document is {0} bytes, over the {max} byte limit", max = crate::MAX_DOCUMENT_BYTES)]
    TooLarge(usize),
    #[error("malformed XML at line {line}: {message}")]
    Syntax { line: u32, message: String },
    #[error("XML nested deeper than {max} levels at {path} (line {line})", max = super::tree::MAX_DEPTH)]
    TooDeep { path: String, line: u32 },
    #[error("XML has more than {max} elements", max = super::tree::MAX_ELEMENTS)]
    TooManyElements,
    #[error("root element must be <domain>, found <{found}> (line {line})")]
    NotADomain { found: String, line: u32 },
    #[error("unsupported element <{name}> at {path} (line {line})")]
    UnsupportedElement {
        name: String,
        path: String,
        line: u32,
    },
    #[error("unsupported attribute {path} (line {line})")]
    UnsupportedAttribute { path: String, line: u32 },
    #[error("unsupported value '{value}' for {path} (line {line}); supported: {supported}")]
    UnsupportedValue {
        path: String,
        line: u32,
        value: String,
        supported: String,
    },
    #[error("missing {what} at {path} (line {line})")]
    Missing {
        what: String,
        path: String,
        line: u32,
    },
    #[error("element {path} given more than once (line {line})")]
    Duplicate { path: String, line: u32 },
    #[error("invalid value for {path} (line {line}): {message}")]
    Invalid {
        path: String,
        line: u32,
        message: String,
    },
    /// A libvirt feature refused on purpose, with the reason.
    #[error("{path} (line {line}) is not supported: {reason}")]
    NotSupported {
        path: String,
        line: u32,
        reason: String,
    },
}

impl XmlError {
    /// Path of the offending node, when the error has one.
    pub fn path(&self) -> Option<&str> {
        match self {
            Self::TooDeep { path, .. }
            | Self::UnsupportedElement { path, .. }
            | Self::UnsupportedAttribute { path, .. }
            | Self::UnsupportedValue { path, .. }
            | Self::Missing { path, .. }
            | Self::Duplicate { path, .. }
            | Self::Invalid { path, .. }
            | Self::NotSupported { path, .. } => Some(path),
            _ => None,
        }
    }

    /// 1-based line of the offending node, when known.
    pub fn line(&self) -> Option<u32> {
        match self {
            Self::Syntax { line, .. }
            | Self::TooDeep { line, .. }
            | Self::NotADomain { line, .. }
            | Self::UnsupportedElement { line, .. }
            | Self::UnsupportedAttribute { line, .. }
            | Self::UnsupportedValue { line, .. }
            | Self::Missing { line, .. }
            | Self::Duplicate { line, .. }
            | Self::Invalid { line, .. }
            | Self::NotSupported { line, .. } => Some(*line),
            _ => None,
        }
    }
}
