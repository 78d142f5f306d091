//! Compiles `proto/tern/v1/*.proto` with protox (pure Rust), so no system `protoc` is needed.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let files = [
        "tern/v1/common.proto",
        "tern/v1/commands.proto",
        "tern/v1/events.proto",
        "tern/v1/planner.proto",
        "tern/v1/state.proto",
        "tern/v1/hooks.proto",
    ];
    let fds = protox::compile(files, [&root])?;
    // The descriptor set, for gRPC server reflection.
    let out = PathBuf::from(std::env::var("OUT_DIR")?).join("tern_descriptor.bin");
    std::fs::write(out, prost::Message::encode_to_vec(&fds))?;
    tonic_prost_build::configure()
        // Deterministic bytes for the records kept in KV.
        .btree_map(".tern.v1.OperationRecord")
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    for file in files {
        println!("cargo:rerun-if-changed={}", root.join(file).display());
    }
    Ok(())
}
