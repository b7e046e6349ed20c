//! Generates the gRPC service from `proto/` with protox, so no `protoc` is needed, and keeps
//! the file descriptor set for server reflection.

fn main() {
    println!("cargo:rerun-if-changed=proto");
    let files = protox::compile(["orders/v1/orders.proto"], ["proto"])
        .expect("proto/orders/v1/orders.proto compiles");
    let out = std::path::PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let descriptors = prost::Message::encode_to_vec(&files);
    std::fs::write(out.join("orders_descriptor.bin"), descriptors)
        .expect("the descriptor set is written");
    tonic_prost_build::configure()
        // The client (for tests and tools) without tonic's transport: callers bring a channel.
        .build_transport(false)
        .compile_fds(files)
        .expect("the orders service generates");
}
