//! PLACEHOLDER: the xapi test peer launcher (being written).
