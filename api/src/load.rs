//! Reading documents from text: YAML (a superset of JSON) with the path of any type error kept,
//! so a bad field is reported as `routes[0].split[1].weight: invalid type ...`.

use std::path::Path;

use serde::de::DeserializeOwned;

use crate::errors::Errors;
use crate::table::Table;
use crate::validate::validate_table;

/// Parses YAML or JSON text into `T`. A syntax or type error comes back located: the field path
/// when serde knows it, and the line and column when the parser does.
pub fn parse_yaml_or_json<T: DeserializeOwned>(text: &str) -> Result<T, Errors> {
    let de = serde_yaml::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let mut errors = Errors::default();
        let path = if path == "." { String::new() } else { path };
        let message = inner.to_string();
        // serde_yaml already names the path at the front; say it once.
        let message = message
            .strip_prefix(&format!("{path}: "))
            .map(str::to_string)
            .unwrap_or(message);
        errors.push(path, message);
        errors
    })
}

/// Reads a document's text; a failure comes back as a located error naming the file.
pub fn read_text(path: &Path) -> Result<String, Errors> {
    std::fs::read_to_string(path).map_err(|e| {
        let mut errors = Errors::default();
        errors.push("", format!("cannot read {}: {e}", path.display()));
        errors
    })
}

/// Reads, parses and validates a routing table file.
pub fn read_table(path: &Path) -> Result<Table, Errors> {
    parse_table(&read_text(path)?)
}

/// Parses and validates a routing table from text.
pub fn parse_table(text: &str) -> Result<Table, Errors> {
    let table: Table = parse_yaml_or_json(text)?;
    validate_table(&table)?;
    Ok(table)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_errors_carry_the_field_path() {
        let text = "version: 1\nroutes:\n  - name: a\n    split:\n      - subset: s@v1\n        weight: lots\nsubsets: []\n";
        let err = parse_table(text).expect_err("a string weight must be rejected");
        let shown = err.to_string();
        assert!(
            shown.starts_with("routes[0].split[0].weight:"),
            "got: {shown}"
        );
    }

    #[test]
    fn unknown_keys_are_errors() {
        let text = "version: 1\nroutes: []\nsubsets: []\nsurprise: true\n";
        let err = parse_table(text).expect_err("unknown keys must be rejected");
        assert!(err.to_string().contains("surprise"), "got: {err}");
    }
}
