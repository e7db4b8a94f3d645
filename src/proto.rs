//! Code generated from `proto/archive/v1/archive.proto`.

#![allow(missing_docs, clippy::all, clippy::pedantic)]

tonic::include_proto!("archive.v1");

/// The encoded descriptor set of the archive API and the well-known types it
/// imports, served by gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/archive_descriptor.bin"));
