//! PLACEHOLDER: the fakepve test peer launcher (being written).
