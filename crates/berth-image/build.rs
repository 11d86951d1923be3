//! Compiles `hello/hello.rs` into the tiny static `/hello` binary of the built-in hello-world image.
use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=hello/hello.rs");
    println!("cargo:rerun-if-changed=build.rs");
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    let target = std::env::var("TARGET").expect("TARGET");
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let out = out_dir.join("hello");
    let status = Command::new(&rustc)
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .args([
            "--target",
            &target,
            "--edition",
            "2021",
            "--crate-type",
            "bin",
            "-C",
            "target-feature=+crt-static",
            "-C",
            "opt-level=s",
            "-C",
            "panic=abort",
            "-C",
            "strip=symbols",
            "-C",
            "codegen-units=1",
            "-C",
            "lto=fat",
            "-C",
            "relocation-model=static",
            "-C",
            "debuginfo=0",
            "-o",
        ])
        .arg(&out)
        .arg(format!("--remap-path-prefix={}=.", manifest.display()))
        .arg(manifest.join("hello/hello.rs"))
        .status()
        .expect("failed to run rustc for hello/hello.rs");
    assert!(status.success(), "compiling hello/hello.rs failed");
}
