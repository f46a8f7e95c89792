//! daemon/openapi.json is valid OpenAPI 3.1 by a standard validator (`openapi-spec-validator`
//! from PyPI, installed by quickstart.sh), so client generators can read it. A missing
//! validator fails the test: it must run wherever the suite runs.

use std::path::{Path, PathBuf};
use std::process::Command;

fn spec() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi.json")
}

/// Runs the validator on `file`: `Ok` or its report.
fn validate(file: &Path) -> Result<(), String> {
    let out = Command::new("python3")
        .args(["-m", "openapi_spec_validator", "--schema", "3.1"])
        .args(["--validation-errors", "all"])
        .arg(file)
        .output()
        .expect("run python3 (quickstart.sh installs it)");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !report.contains("No module named openapi_spec_validator"),
        "openapi-spec-validator is not installed: ./quickstart.sh test installs it (or pip install openapi-spec-validator)"
    );
    if out.status.success() {
        Ok(())
    } else {
        Err(report)
    }
}

#[test]
fn openapi_json_is_valid_openapi_3_1() {
    if let Err(report) = validate(&spec()) {
        panic!("daemon/openapi.json is not valid OpenAPI 3.1:\n{report}");
    }
}

/// The validator is really checking: the spec with one path parameter undeclared (the
/// mistake it once had) is refused, naming it.
#[test]
fn the_validator_refuses_an_undeclared_path_parameter() {
    let mut spec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(spec()).expect("read openapi.json"))
            .expect("openapi.json is JSON");
    let op = &mut spec["paths"]["/v1/domains/{name}/xml"]["get"];
    op["parameters"]
        .as_array_mut()
        .expect("parameters")
        .retain(|p| p["in"] != "path");
    let dir = tempfile::tempdir().expect("tempdir");
    let broken = dir.path().join("openapi.json");
    std::fs::write(&broken, spec.to_string()).expect("write");
    let report = validate(&broken).expect_err("a spec with an undeclared path parameter passed");
    assert!(
        report.contains("Path parameter 'name'") && report.contains("/v1/domains/{name}/xml"),
        "{report}"
    );
}
