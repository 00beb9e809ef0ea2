//! Graph wire types: lenient parsing of what bots send, exact rendering of what Graph writes.
//!
//! Input is read from `serde_json::Value` so that unknown properties, missing `@odata.type`s and
//! enum values in any casing are accepted; output is built in Graph's property order with its
//! `@odata` annotations and explicit `null`s.

pub mod call;
pub mod notification;
pub mod operation;
pub mod participant;

/// Case-insensitive match of an `@odata.type` value against a Graph type name, with or without
/// the leading `#` and the namespace.
pub fn is_odata_type(value: &str, name: &str) -> bool {
    let v = value.trim_start_matches('#');
    let v = v
        .strip_prefix("microsoft.graph.")
        .or_else(|| v.strip_prefix("Microsoft.Graph."))
        .unwrap_or(v);
    v.eq_ignore_ascii_case(name)
}

/// `"#microsoft.graph.<name>"`.
pub fn odata_type(name: &str) -> String {
    format!("#microsoft.graph.{name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odata_types_match_with_or_without_namespace_and_in_any_case() {
        assert!(is_odata_type("#microsoft.graph.call", "call"));
        assert!(is_odata_type("microsoft.graph.Call", "call"));
        assert!(is_odata_type("call", "call"));
        assert!(!is_odata_type("#microsoft.graph.participant", "call"));
    }
}
