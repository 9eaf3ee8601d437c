//! The image cache answers from its inputs alone (no agent build, no module resolution), and
//! still rebuilds the image when an agent source changes: this test changes one, in a way that
//! changes the agent binary, and puts it back.

mod common;

use common::{run, text};

/// Puts a source file back as it was, even when the test fails.
struct Restore(std::path::PathBuf, String);

impl Drop for Restore {
    fn drop(&mut self) {
        std::fs::write(&self.0, &self.1).unwrap();
    }
}

fn image() -> String {
    let out = run(&["image"]);
    assert_eq!(out.status.code(), Some(0));
    text(&out.stderr)
}

#[test]
fn a_changed_agent_source_rebuilds_the_image_and_an_unchanged_one_does_not() {
    image();
    let again = image();
    assert!(again.contains("is up to date"), "{again}");
    assert!(!again.contains("cargo build"), "a cache hit builds nothing:\n{again}");

    let path = common::root().join("guest/src/stat.rs");
    let original = std::fs::read_to_string(&path).unwrap();
    let _restore = Restore(path.clone(), original.clone());
    // A message the agent prints: the binary changes with it.
    let message = "unknown (filesystem does not report it)";
    assert!(original.contains(message), "guest/src/stat.rs no longer has {message:?}");
    let changed = format!("{message} [image cache test {}]", std::process::id());
    std::fs::write(&path, original.replace(message, &changed)).unwrap();
    let changed = image();
    assert!(changed.contains("cargo build"), "the agent is built again:\n{changed}");
    assert!(changed.contains("built image"), "a new image:\n{changed}");

    drop(_restore);
    let back = image();
    assert!(back.contains("is up to date"), "the first image again:\n{back}");
}
