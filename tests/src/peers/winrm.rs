//! PLACEHOLDER: the winrm test peer launcher (being written).
