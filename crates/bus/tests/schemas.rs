//! The committed event contract (docs/events/) is what the code generates: a proto field, event
//! type, hook message, subject or header that changed without `make schemas` fails here.

use tern_bus::schema::{SCHEMA_DIR, documents};

#[test]
fn the_committed_schemas_and_asyncapi_document_match_the_code() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let docs = documents();
    let mut drifted = Vec::new();
    for doc in &docs {
        match std::fs::read_to_string(root.join(&doc.path)) {
            Ok(text) if text == doc.text => {}
            Ok(_) => drifted.push(format!("{} differs", doc.path)),
            Err(e) => drifted.push(format!("{} cannot be read ({e})", doc.path)),
        }
    }
    let committed = std::fs::read_dir(root.join(SCHEMA_DIR)).map(|d| d.flatten().count()).unwrap_or(0);
    let schemas = docs.iter().filter(|d| d.path.starts_with(SCHEMA_DIR)).count();
    if committed != schemas {
        drifted.push(format!("{SCHEMA_DIR} holds {committed} files, the code generates {schemas} schemas"));
    }
    assert!(
        drifted.is_empty(),
        "the event schemas drifted from the code: run `make schemas` and commit docs/events/:\n  {}",
        drifted.join("\n  ")
    );
}
