//! Generates the gRPC test service (feature `grpc`) with protox, so no `protoc` is needed.

fn main() {
    #[cfg(feature = "grpc")]
    {
        println!("cargo:rerun-if-changed=proto");
        let files = protox::compile(["guardrail/test/v1/echo.proto"], ["proto"])
            .expect("the test proto compiles");
        tonic_prost_build::configure()
            .compile_fds(files)
            .expect("the test service generates");
    }
}
