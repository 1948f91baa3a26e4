//! Live interop: run `tests/it/data/captures/capture.sh` (BIRD 2 and GoBGP in
//! their own network namespaces), then check that every message they
//! exchanged decodes, re-encodes byte for byte and agrees with bgp-rs. The
//! committed captures are tested in `packet_captures.rs`; this one proves
//! it still holds against the peers installed now.

use std::process::Command;

use crate::packet_support;

fn missing_requirement() -> Option<String> {
    let uid = Command::new("id").arg("-u").output().ok()?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Some("not root (network namespaces need root)".into());
    }
    for tool in [
        "bird", "birdc", "gobgpd", "gobgp", "tcpdump", "tshark", "python3", "ip",
    ] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            return Some(format!("`{tool}` not installed"));
        }
    }
    None
}

// Many processes (BIRD, GoBGP, tcpdump) for ~20 s: heavy_.
#[test]
fn heavy_live_bird_gobgp_capture_round_trips() {
    if let Some(why) = missing_requirement() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "live capture test cannot run in CI: {why}"
        );
        eprintln!("skipping live BIRD/GoBGP capture: {why}");
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
