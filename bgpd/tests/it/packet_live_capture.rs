//! Live interop: run `tests/it/data/captures/capture.sh` (BIRD 2 and GoBGP in
//! their own network namespaces), then check that every message they
//! exchanged decodes, re-encodes byte for byte and agrees with bgp-rs. The
//! committed captures are tested in `packet_captures.rs`; this one proves
//! it still holds against the peers installed now.

use std::process::Command;

use testkit::Prereqs;

use crate::packet_support;

// Many processes (BIRD, GoBGP, tcpdump) for ~20 s: heavy_.
#[test]
fn heavy_live_bird_gobgp_capture_round_trips() {
    if !Prereqs::new()
        .root()
        .commands(&[
            "bird", "birdc", "gobgpd", "gobgp", "tcpdump", "tshark", "python3", "ip",
        ])
        .ok()
    {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let script = packet_support::captures_dir().join("capture.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg(dir.path())
        .output()
        .expect("run capture.sh");
    assert!(
        out.status.success(),
        "capture.sh failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut checked = 0;
    for (a, b) in packet_support::SESSIONS {
        checked += packet_support::check_session(dir.path(), a, b);
    }
    assert!(checked >= 20, "only {checked} messages captured");
}
