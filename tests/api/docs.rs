//! The reference in `docs/` against what the server serves: every control API route of the
//! OpenAPI document has its heading in `docs/CONTROL-API.md`, and every heading there is served.

use std::collections::BTreeSet;

use crate::helpers::{Backend, spawn_app};

const HTTP_METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// The routes `docs/CONTROL-API.md` documents: one heading per route, written
/// ``### `METHOD PATH` ``.
fn documented_routes(doc: &str) -> BTreeSet<(String, String)> {
    doc.lines()
        .filter_map(|line| line.strip_prefix("### `")?.strip_suffix('`'))
        .filter_map(|route| {
            let (method, path) = route.split_once(' ')?;
            Some((method.to_string(), path.to_string()))
        })
        .collect()
}

#[tokio::test]
async fn the_control_api_reference_names_every_route_the_openapi_document_has_and_no_other() {
    let app = spawn_app(Backend::Memory).await;
    let r = app.admin("GET", "/openapi.json", None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let served: BTreeSet<(String, String)> = r.body["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(path, item)| {
            HTTP_METHODS
                .iter()
                .filter(|m| item.get(**m).is_some())
                .map(|m| (m.to_uppercase(), path.clone()))
        })
        .collect();
    assert!(!served.is_empty());

    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/CONTROL-API.md"))
        .expect("docs/CONTROL-API.md");
    let documented = documented_routes(&doc);

    let missing: Vec<_> = served.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "routes of openapi.json with no \"### `METHOD PATH`\" heading in docs/CONTROL-API.md: {missing:?}"
    );
    let extra: Vec<_> = documented.difference(&served).collect();
    assert!(
        extra.is_empty(),
        "headings in docs/CONTROL-API.md for routes openapi.json does not have: {extra:?}"
    );
}

#[test]
fn a_route_heading_is_read_as_method_and_path() {
    let routes = documented_routes(
        "# Title\n### `GET /_switchboard/v1/calls`\ntext `GET /x`\n### Not a route\n",
    );
    assert_eq!(
        routes.into_iter().collect::<Vec<_>>(),
        vec![("GET".to_string(), "/_switchboard/v1/calls".to_string())]
    );
}
