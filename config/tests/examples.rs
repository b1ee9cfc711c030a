//! Every sample config in `examples/` loads.

use std::path::Path;

#[test]
fn every_example_config_loads() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut loaded = 0;
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .expect("examples directory is readable")
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    entries.sort();
    for path in entries {
        if let Err(errors) = meridian_config::load(&path) {
            panic!("{} failed to load:\n{errors}", path.display());
        }
        loaded += 1;
    }
    assert!(
        loaded >= 3,
        "expected at least 3 example configs, found {loaded}"
    );
}
