//! `cargo bench -p vmkfs --features std`: the block-store throughput benchmark
//! (store vs raw device, 4 KiB random I/O) on a RAM device and on a host file.

use vmkfs::bench::{BenchDevice, BenchOptions, run};

fn main() {
    let mut failed = false;
    for device in [
        BenchDevice::Memory,
        BenchDevice::File(std::env::temp_dir().join("vmkfs-bench.img")),
    ] {
        let options = BenchOptions {
            device,
            ..BenchOptions::default()
        };
        match run(&options) {
            Ok(report) => println!("{report}\n"),
            Err(error) => {
                eprintln!("benchmark failed: {error}");
                failed = true;
            }
        }
    }
    if failed {
        std::process::exit(1);
    }
}
