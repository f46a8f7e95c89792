//! libvirt domain XML: a bounded DOM (`tree`), the strict reader and the writer.

pub mod error;
pub(crate) mod read;
pub(crate) mod tree;
pub(crate) mod write;

pub use error::XmlError;

/// One `<disk>` element on its own (attach-disk's fragment), read by the same reader as a
/// whole definition's disks, so every disk form a definition accepts attaches too.
pub fn parse_memory_device(xml: &str) -> Result<crate::model::MemoryDevice, XmlError> {
    read::parse_memory_device(xml)
}

pub fn parse_disk(xml: &str) -> Result<crate::model::Disk, XmlError> {
    read::parse_disk(xml)
}
