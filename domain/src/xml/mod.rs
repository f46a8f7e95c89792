//! libvirt domain XML: a bounded DOM (`tree`), the strict reader and the writer.

pub mod error;
pub(crate) mod read;
pub(crate) mod tree;
pub(crate) mod write;

pub use error::XmlError;
