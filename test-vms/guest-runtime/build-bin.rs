//! The build script of every test VM (`build = "../guest-runtime/build-bin.rs"` in
//! each `test-vms/<name>/Cargo.toml`): links the package's binary with the
//! guests' layout, `test-v../guest-runtime/link.ld`, without debug information
//! (the images stay small; symbols are kept, so `nm` still names a fault's
//! RIP). Does nothing for other targets.
fn main() {
    let manifest = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let script = std::path::Path::new(&manifest).join("../guest-runtime/link.ld");
    let script = script.canonicalize().unwrap_or(script);
    println!("cargo:rerun-if-changed={}", script.display());
    if std::env::var("TARGET").is_ok_and(|target| target == "x86_64-unknown-none") {
        println!("cargo:rustc-link-arg-bins=-T{}", script.display());
        println!("cargo:rustc-link-arg-bins=--strip-debug");
    }
}
