//! Validates request and response bodies against daemon/openapi.json.

use serde_json::{json, Value};

pub struct Spec(Value);

impl Spec {
    pub fn load() -> Spec {
        let text = include_str!("../../openapi.json");
        Spec(serde_json::from_str(text).expect("openapi.json is JSON"))
    }

    /// The schema for a response: path template, method, status, media type.
    fn response_schema(&self, template: &str, method: &str, status: u16) -> Option<&Value> {
        let responses = &self.0["paths"][template][method.to_ascii_lowercase()]["responses"];
        responses[status.to_string()]["content"]["application/json"]["schema"].as_object()?;
        Some(&responses[status.to_string()]["content"]["application/json"]["schema"])
    }

    fn validate(&self, schema: &Value, body: &Value) -> Result<(), String> {
        // References are "#/components/...": give the validator a root that has them.
        let root = json!({ "components": self.0["components"], "allOf": [schema] });
        let validator = jsonschema::validator_for(&root).map_err(|e| e.to_string())?;
        let errors: Vec<String> = validator
            .iter_errors(body)
            .map(|e| format!("{e} at {}", e.instance_path()))
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }

    /// Panics unless the spec documents `status` for this operation and `body` fits it.
    pub fn check_response(&self, template: &str, method: &str, status: u16, body: &str) {
        let schema = self
            .response_schema(template, method, status)
            .unwrap_or_else(|| panic!("{method} {template} -> {status} is not documented"));
        let value: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
        if let Err(e) = self.validate(schema, &value) {
            panic!("{method} {template} -> {status}: body does not match the spec: {e}\n{body}");
        }
    }

    /// Panics unless `body` fits the JSON request schema of this operation.
    pub fn check_request(&self, template: &str, method: &str, body: &Value) {
        let schema = &self.0["paths"][template][method.to_ascii_lowercase()]["requestBody"]
            ["content"]["application/json"]["schema"];
        assert!(
            schema.is_object(),
            "{method} {template} has no JSON request schema"
        );
        if let Err(e) = self.validate(schema, body) {
            panic!("request to {method} {template} does not match the spec: {e}");
        }
    }

    pub fn schema(&self, name: &str) -> Value {
        json!({"$ref": format!("#/components/schemas/{name}")})
    }

    pub fn check_value(&self, schema_name: &str, value: &Value) {
        if let Err(e) = self.validate(&self.schema(schema_name), value) {
            panic!("{schema_name}: {e}\n{value}");
        }
    }
}
