//! Replays every committed fuzz corpus (`b2bua/fuzz/corpus/<target>/`) through the same entry
//! points the fuzz targets drive (`b2bua::fuzzing`), so that what a campaign found, and every
//! input that reached new code, is run by plain `cargo test` in CI. A panic here is a
//! regression of something the fuzzer once found.

use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{target}: no corpus committed");
    for f in &files {
        let data = std::fs::read(f).unwrap();
        let outcome = std::panic::catch_unwind(|| run(&data));
        assert!(outcome.is_ok(), "{target}: {} panics", f.display());
    }
    println!("{target}: {} inputs replayed", files.len());
}

#[test]
fn sip_message() {
    replay("sip_message", b2bua::fuzzing::sip_message);
}

#[test]
fn tcp_framer() {
    replay("tcp_framer", b2bua::fuzzing::tcp_framer);
}

#[test]
fn sdp() {
    replay("sdp", b2bua::fuzzing::sdp);
}

#[test]
fn rtp() {
    replay("rtp", b2bua::fuzzing::rtp);
}

#[test]
fn radius_packet() {
    replay("radius_packet", b2bua::fuzzing::radius_packet);
}

#[test]
fn flow_yaml() {
    replay("flow_yaml", b2bua::fuzzing::flow_yaml);
}
