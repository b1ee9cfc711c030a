//! Opens MaxMind DB files the way Meridian does (read into memory, verified whole) and
//! prints how long it took, or why a file is rejected:
//! `cargo run --release -p meridian-geoip --example verify_db -- FILE...`.

use std::process::ExitCode;
use std::time::Instant;

use meridian_geoip::Locator;

fn main() -> ExitCode {
    let mut ok = true;
    for path in std::env::args_os().skip(1) {
        let path = std::path::PathBuf::from(path);
        let start = Instant::now();
        match Locator::open(&path, Vec::new()) {
            Ok(locator) => println!(
                "{}: ok: {} ({} bytes), read and verified in {:.1} ms",
                path.display(),
                locator.info().database_type,
                std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0),
                start.elapsed().as_secs_f64() * 1000.0
            ),
            Err(e) => {
                eprintln!("{e}");
                ok = false;
            }
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
