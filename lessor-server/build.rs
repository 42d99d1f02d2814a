//! Generates the message types and service traits from `proto/` (needs `protoc`: Debian's
//! `protobuf-compiler`, or `PROTOC` pointing at one).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(true)
        .compile_protos(
            &["proto/etcdserverpb/rpc.proto", "proto/mvccpb/kv.proto"],
            &["proto"],
        )?;
    Ok(())
}
