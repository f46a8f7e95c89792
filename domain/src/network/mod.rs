//! Virtual networks: the model, libvirt network XML in and out, JSON, and validation.

mod model;
mod read;
mod validate;
mod write;

#[cfg(test)]
mod tests;

pub use model::*;
pub use read::parse_network;
pub use validate::{
    check_conflicts, check_network, check_stored_network, ifname_problem, HostSubnet, MAX_IFNAME,
    MAX_NAME,
};
pub use write::network_xml;

/// A network definition from JSON (the same model, `deny_unknown_fields`).
pub fn parse_network_json(json: &str) -> Result<NetworkConfig, crate::Error> {
    if json.len() > crate::MAX_DOCUMENT_BYTES {
        return Err(crate::Error::InvalidConfig(format!(
            "JSON document is {} bytes, over the {} byte limit",
            json.len(),
            crate::MAX_DOCUMENT_BYTES
        )));
    }
    serde_json::from_str(json).map_err(|e| crate::Error::Invalid {
        message: format!("network JSON: {e}"),
        details: vec![crate::FieldError::new(
            format!("line {} column {}", e.line(), e.column()),
            e.to_string(),
        )],
    })
}
