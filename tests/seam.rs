//! The engine is vLLM's algorithm alone: it knows KV connectors only through the
//! `connector::KvConnector` trait, so a new connector never touches `src/engine/`.

use std::path::Path;

#[test]
fn the_engine_names_no_offload_backend() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/engine");
    let forbidden = [
        "lmcache",
        "native",
        "tiers::",
        "nativeoffload",
        "remotekind",
    ];
    let mut files = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        files += 1;
        let text = std::fs::read_to_string(&path).unwrap().to_lowercase();
        for (n, line) in text.lines().enumerate() {
            for word in forbidden {
                assert!(
                    !line.contains(word),
                    "{}:{}: names {word:?}: {line}",
                    path.display(),
                    n + 1
                );
            }
        }
    }
    assert!(files >= 5, "read {files} engine files");
}
