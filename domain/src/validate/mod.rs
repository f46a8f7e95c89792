//! Semantic validation. `validate` consumes a `DomainConfig` and returns a `ValidatedDomain`,
//! the only input the argv builder and `Driver::define` accept, so nothing unchecked can
//! reach QEMU. All problems are collected, each with the field path it concerns.
//!
//! Host-dependent checks (does host node 1 exist, are 1G pages reserved) are the host
//! layer's job; the model exposes the ids and sizes it needs.

mod devices;
mod filesystem;
pub(crate) mod machine;
mod memory_devices;
pub(crate) mod netdisk;
mod nic_host;
pub mod nic_qos;
mod platform;
mod resources;
mod spice;

use crate::model::*;

/// Guest RAM ceiling: 16 TiB (QEMU x86 limits are near; bounds arithmetic on input).
pub const MAX_MEMORY_KIB: u64 = 1 << 34;
pub const MAX_NAME_LEN: usize = 64;
pub const MAX_NUMA_CELLS: usize = 64;
pub const MAX_IOTHREADS: u32 = 64;
const MAX_TEXT: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("must not be empty")]
    Empty,
    #[error("is longer than {max} bytes")]
    TooLong { max: usize },
    #[error("contains '{found}'; allowed: {allowed}")]
    BadChar { found: char, allowed: &'static str },
    #[error("must not start with '.' (names become file names)")]
    LeadingDot,
    #[error("value {value} is outside {min}..={max}")]
    OutOfRange { value: i128, min: i128, max: i128 },
    #[error("duplicate {0}")]
    Duplicate(String),
    #[error("refers to {0}, which does not exist")]
    DanglingReference(String),
    #[error("{0}")]
    Inconsistent(String),
    #[error("unsupported: {0}")]
    Unsupported(String),
    #[error("must be an absolute path without control characters or surrounding whitespace")]
    BadPath,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {problem}")]
pub struct ValidationError {
    /// Field path in the JSON model, e.g. `devices.disks[1].target.dev`.
    pub path: String,
    pub problem: Problem,
}

/// At least one `ValidationError`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationErrors(pub Vec<ValidationError>);

impl std::fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ValidationErrors {}

impl ValidationErrors {
    pub fn has(&self, path: &str) -> bool {
        self.0.iter().any(|e| e.path == path)
    }
}

/// A `DomainConfig` that passed `validate`. Read-only by construction.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(transparent)]
pub struct ValidatedDomain(DomainConfig);

impl ValidatedDomain {
    pub fn config(&self) -> &DomainConfig {
        &self.0
    }
    pub fn into_inner(self) -> DomainConfig {
        self.0
    }
}

impl std::ops::Deref for ValidatedDomain {
    type Target = DomainConfig;
    fn deref(&self) -> &DomainConfig {
        &self.0
    }
}

pub(super) struct V {
    errs: Vec<ValidationError>,
}

impl V {
    pub(super) fn err(&mut self, path: impl Into<String>, problem: Problem) {
        self.errs.push(ValidationError {
            path: path.into(),
            problem,
        });
    }
    pub(super) fn range(
        &mut self,
        path: impl Into<String>,
        value: impl Into<i128>,
        min: impl Into<i128>,
        max: impl Into<i128>,
    ) {
        let (value, min, max) = (value.into(), min.into(), max.into());
        if value < min || value > max {
            self.err(path, Problem::OutOfRange { value, min, max });
        }
    }
    pub(super) fn path(&mut self, path: impl Into<String>, p: &str) {
        let ok = p.starts_with('/')
            && p.len() <= 4096
            && !p.chars().any(char::is_control)
            && p.trim_end() == p;
        if !ok {
            self.err(path, Problem::BadPath);
        }
    }
    /// A token that ends up inside a QEMU option or a host interface name.
    pub(super) fn token(
        &mut self,
        path: impl Into<String>,
        s: &str,
        max: usize,
        allowed: &'static str,
        ok: fn(char) -> bool,
    ) {
        let path = path.into();
        if s.is_empty() {
            self.err(path, Problem::Empty);
        } else if s.len() > max {
            self.err(path, Problem::TooLong { max });
        } else if let Some(c) = s.chars().find(|c| !ok(*c)) {
            self.err(path, Problem::BadChar { found: c, allowed });
        }
    }
    pub(super) fn text(&mut self, path: impl Into<String>, s: &str, multiline: bool) {
        let path = path.into();
        if s.len() > MAX_TEXT {
            self.err(path, Problem::TooLong { max: MAX_TEXT });
        } else if let Some(c) = s
            .chars()
            .find(|c| c.is_control() && !(multiline && (*c == '\n' || *c == '\t')))
        {
            self.err(
                path,
                Problem::BadChar {
                    found: c,
                    allowed: "printable text",
                },
            );
        }
    }
}

pub(super) fn ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')
}

pub fn validate(d: DomainConfig) -> Result<ValidatedDomain, ValidationErrors> {
    let mut v = V { errs: Vec::new() };
    check(&mut v, &d);
    if v.errs.is_empty() {
        Ok(ValidatedDomain(d))
    } else {
        Err(ValidationErrors(v.errs))
    }
}

fn check(v: &mut V, d: &DomainConfig) {
    name(v, &d.name);
    if d.uuid.is_some_and(|u| u.is_nil()) {
        v.err(
            "uuid",
            Problem::Inconsistent("the nil UUID is not allowed".into()),
        );
    }
    if let Some(t) = &d.title {
        v.text("title", t, false);
    }
    if let Some(t) = &d.description {
        v.text("description", t, true);
    }
    if let Some(m) = &d.metadata {
        if m.len() > MAX_TEXT {
            v.err("metadata", Problem::TooLong { max: MAX_TEXT });
        } else if let Err(e) = crate::xml::tree::check_fragment(m, 1) {
            v.err(
                "metadata",
                Problem::Inconsistent(format!("not well-formed XML: {e}")),
            );
        }
    }
    resources::memory(v, d);
    memory_devices::memory_devices(v, d);
    resources::vcpu(v, d);
    resources::cpu(v, d);
    resources::cputune(v, d);
    resources::numatune(v, d);
    resources::memtune(v, d);
    resources::memory_backing(v, d);
    platform::os(v, d);
    platform::clock(v, d);
    platform::features(v, d);
    if d.on_poweroff == Some(LifecycleAction::Preserve) {
        v.err(
            "on_poweroff",
            Problem::Unsupported("'preserve' on poweroff".into()),
        );
    }
    devices::devices(v, d);
    spice::spice(v, &d.devices);
}

fn name(v: &mut V, n: &str) {
    v.token(
        "name",
        n,
        MAX_NAME_LEN,
        "ASCII letters, digits, '_', '-', '.', '+'",
        |c| ident_char(c) || c == '+',
    );
    if n.starts_with('.') {
        v.err("name", Problem::LeadingDot);
    }
}
