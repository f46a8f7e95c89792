//! PLACEHOLDER: the vcsim test peer launcher (being written).
