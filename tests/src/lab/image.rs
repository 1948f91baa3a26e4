//! The lab's container image: busybox from Debian's `busybox-static`, built
//! on this machine as a docker-archive tar (there is no image registry
//! here). `ctr images import` and `podman load` both read it.
//!
//! The archive is one layer (the static `/bin/busybox`, a symlink per applet
//! in `/bin`, a root `passwd`/`group`), its config (`Cmd ["sh"]`) and a
//! `manifest.json` tagging it [`IMAGE_REF`]. It is written once per lab
//! under the lab directory and reused by every node.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::netns::run;

/// The name the image is loaded under.
pub const IMAGE_REF: &str = "localhost/manx-busybox:latest";

/// Where Debian's `busybox-static` puts the binary.
pub const BUSYBOX: &str = "/bin/busybox";

/// Is the ELF file at `path` statically linked (no `PT_INTERP`)? A dynamic
/// busybox (Debian's `busybox` package) would not run in an image without
/// libc.
pub fn is_static_elf(path: &Path) -> Result<bool> {
    let b = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    if b.len() < 64 || &b[..4] != b"\x7fELF" || b[4] != 2 || b[5] != 1 {
        bail!("{} is not a 64-bit little-endian ELF file", path.display());
    }
    let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap()) as usize;
    let u16_at = |o: usize| u16::from_le_bytes(b[o..o + 2].try_into().unwrap()) as usize;
    let (phoff, phentsize, phnum) = (u64_at(0x20), u16_at(0x36), u16_at(0x38));
    for i in 0..phnum {
        let o = phoff + i * phentsize;
        if o + 4 > b.len() {
            bail!("{}: program header {i} out of the file", path.display());
        }
        // PT_INTERP = 3: a dynamic loader is named.
        if u32::from_le_bytes(b[o..o + 4].try_into().unwrap()) == 3 {
            return Ok(false);
        }
    }
    Ok(true)
}

/// What is missing to build the image, if anything (a message naming the
/// Debian package).
pub fn missing() -> Option<String> {
    let p = Path::new(BUSYBOX);
    if !p.exists() {
        return Some(format!("{BUSYBOX}: apt-get install -y busybox-static"));
    }
    match is_static_elf(p) {
        Ok(true) => None,
        Ok(false) => Some(format!(
            "{BUSYBOX} is dynamically linked: apt-get install -y busybox-static"
        )),
        Err(e) => Some(format!("{e:#}")),
    }
}

fn sha256_file(path: &Path) -> Result<String> {
    let out = run(Command::new("sha256sum").arg(path))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let hex = text.split_whitespace().next().unwrap_or_default();
    if hex.len() != 64 {
        bail!("sha256sum {}: unexpected output {text:?}", path.display());
    }
    Ok(hex.to_string())
}

/// Build (or reuse) the busybox docker-archive under `dir`; returns the
/// archive's path.
pub fn busybox_archive(dir: &Path) -> Result<PathBuf> {
    let archive = dir.join("busybox.tar");
    if archive.exists() {
        return Ok(archive);
    }
    if let Some(m) = missing() {
        bail!("cannot build the lab's busybox image: {m}");
    }
    let work = dir.join("busybox-build");
    let _ = std::fs::remove_dir_all(&work);
    let rootfs = work.join("rootfs");
    for d in ["bin", "etc", "proc", "sys", "dev", "tmp", "root"] {
        std::fs::create_dir_all(rootfs.join(d))?;
    }
    std::fs::copy(BUSYBOX, rootfs.join("bin/busybox"))
        .with_context(|| format!("copying {BUSYBOX}"))?;
    let list = run(Command::new(BUSYBOX).arg("--list"))?;
    let mut applets = 0;
    for applet in String::from_utf8_lossy(&list.stdout).split_whitespace() {
        if applet == "busybox" || applet.contains('/') {
            continue;
        }
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet))?;
        applets += 1;
    }
    for needed in ["sh", "ping", "ip", "sleep"] {
        if !rootfs.join("bin").join(needed).exists() {
            bail!("{BUSYBOX} has no `{needed}` applet ({applets} applets)");
        }
    }
    std::fs::write(rootfs.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n")?;
    std::fs::write(rootfs.join("etc/group"), "root:x:0:\n")?;
    let img = work.join("img");
    std::fs::create_dir_all(&img)?;
    let layer = work.join("layer.tar");
    run(Command::new("tar")
        .args(["--numeric-owner", "--owner=0", "--group=0", "--sort=name"])
        .args(["--mtime=@0", "-C"])
        .arg(&rootfs)
        .arg("-cf")
        .arg(&layer)
        .arg("."))
    .context("packing the busybox layer (tar)")?;
    let layer_sha = sha256_file(&layer)?;
    std::fs::create_dir_all(img.join(&layer_sha))?;
    std::fs::rename(&layer, img.join(&layer_sha).join("layer.tar"))?;
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": {
            "Cmd": ["sh"],
            "Env": ["PATH=/bin"],
            "WorkingDir": "/",
        },
        "rootfs": { "type": "layers", "diff_ids": [format!("sha256:{layer_sha}")] },
        "history": [{ "created": "1970-01-01T00:00:00Z", "created_by": "manx-lab: busybox-static" }],
    });
    let config_path = work.join("config.json");
    std::fs::write(&config_path, serde_json::to_vec(&config)?)?;
    let config_sha = sha256_file(&config_path)?;
    std::fs::rename(&config_path, img.join(format!("{config_sha}.json")))?;
    let manifest = serde_json::json!([{
        "Config": format!("{config_sha}.json"),
        "RepoTags": [IMAGE_REF],
        "Layers": [format!("{layer_sha}/layer.tar")],
    }]);
    std::fs::write(img.join("manifest.json"), serde_json::to_vec(&manifest)?)?;
    let tmp = dir.join("busybox.tar.tmp");
    run(Command::new("tar")
        .args(["--numeric-owner", "--owner=0", "--group=0", "-C"])
        .arg(&img)
        .arg("-cf")
        .arg(&tmp)
        .args([
            "manifest.json".to_string(),
            format!("{config_sha}.json"),
            format!("{layer_sha}/layer.tar"),
        ]))
    .context("packing the busybox image (tar)")?;
    std::fs::rename(&tmp, &archive)?;
    let _ = std::fs::remove_dir_all(&work);
    Ok(archive)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_and_dynamic_elf_told_apart() {
        // This test binary is dynamically linked (Rust's default on glibc).
        let me = std::env::current_exe().unwrap();
        assert!(!is_static_elf(&me).unwrap());
        let dir = std::env::temp_dir().join(format!("manx-image-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("not-elf"), b"#!/bin/sh\n").unwrap();
        assert!(is_static_elf(&dir.join("not-elf")).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn archive_has_manifest_config_and_layer() {
        if missing().is_some() {
            eprintln!("SKIP: {}", missing().unwrap());
            return;
        }
        let dir = std::env::temp_dir().join(format!("manx-image-build-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let a = busybox_archive(&dir).unwrap();
        let out = Command::new("tar").arg("-tf").arg(&a).output().unwrap();
        let names = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(names.lines().any(|l| l == "manifest.json"), "{names}");
        assert!(names.lines().any(|l| l.ends_with("/layer.tar")), "{names}");
        let layer = names.lines().find(|l| l.ends_with("/layer.tar")).unwrap();
        let inner = Command::new("sh")
            .arg("-c")
            .arg(format!("tar -xOf '{}' '{layer}' | tar -tvf -", a.display()))
            .output()
            .unwrap();
        let listing = String::from_utf8_lossy(&inner.stdout);
        assert!(listing.contains("./bin/sh -> busybox"), "{listing}");
        assert!(listing.contains("./bin/ping -> busybox"), "{listing}");
        // Reused, not rebuilt.
        let mtime = std::fs::metadata(&a).unwrap().modified().unwrap();
        busybox_archive(&dir).unwrap();
        assert_eq!(std::fs::metadata(&a).unwrap().modified().unwrap(), mtime);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
