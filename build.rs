//! Generates the gRPC code and the descriptor set served by reflection.
//!
//! protox compiles the .proto files in pure Rust, so building needs no system
//! `protoc`. The descriptor set includes the imported well-known types
//! (google/protobuf/timestamp.proto) so reflection clients can resolve them.

use std::{env, fs, path::PathBuf};

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/archive/v1/archive.proto";
    println!("cargo:rerun-if-changed={proto}");

    let descriptors = protox::compile([proto], ["proto"])?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(
        out_dir.join("archive_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;

    tonic_prost_build::configure().compile_fds(descriptors)?;
    Ok(())
}
