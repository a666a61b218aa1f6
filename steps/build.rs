//! Generates the gRPC code of `proto/step.proto` with protox (a protobuf compiler in Rust), so
//! no `protoc` is needed to build.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/step.proto");
    let descriptors = protox::compile(["proto/step.proto"], ["proto"])?;
    tonic_prost_build::configure().compile_fds(descriptors)?;
    Ok(())
}
