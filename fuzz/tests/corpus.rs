//! Replays every committed corpus entry and crash artifact through its target, under plain
//! `cargo test`: a bug libFuzzer found stays fixed, and the seeds keep exercising each
//! property on every CI run.

use std::fs;
use std::path::Path;

#[test]
fn every_committed_input_passes_its_target() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("libfuzzer");
    for (name, target) in guardrail_fuzz::TARGETS {
        let mut replayed = 0;
        for folder in ["corpus", "artifacts"] {
            let Ok(entries) = fs::read_dir(root.join(folder).join(name)) else {
                continue;
            };
            for entry in entries {
                let path = entry.expect("a readable corpus folder").path();
                let data = fs::read(&path).expect("a readable corpus file");
                let outcome = std::panic::catch_unwind(|| target(&data));
                assert!(outcome.is_ok(), "{name} fails on {}", path.display());
                replayed += 1;
            }
        }
        assert!(
            replayed > 0,
            "{name} has no committed corpus under {}",
            root.display()
        );
    }
}

#[test]
fn every_target_has_a_libfuzzer_entry_point() {
    let manifest =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("libfuzzer/Cargo.toml"))
            .expect("fuzz/libfuzzer/Cargo.toml");
    for (name, _) in guardrail_fuzz::TARGETS {
        assert!(
            manifest.contains(&format!("name = \"{name}\"")),
            "fuzz/libfuzzer/Cargo.toml has no [[bin]] {name}"
        );
    }
}
