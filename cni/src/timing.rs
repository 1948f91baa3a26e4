//! Per-step timings of one invocation, to see where ADD and DEL spend their
//! time (process start, IPAM exec, netlink, datastore write…).
//!
//! Off by default. When `MANX_CNI_TIMING` names a file, the plugin appends
//! one JSON line per invocation to it:
//!
//! ```json
//! {"cmd":"ADD","container":"c1","start_unix_ns":1700000000000000000,
//!  "total_us":5321,"steps":[["parse",40],["ipam",3120],["netlink",1500]]}
//! ```
//!
//! Steps named in parentheses ran alongside the others (their time is
//! inside another step's). `start_unix_ns` is the wall clock when the invocation began, so a caller
//! that noted when it spawned the process can tell the exec overhead apart.
//! Every step is also logged at debug level. The file is appended with one
//! `write` (no fsync): lines of concurrent plugins do not interleave.

use std::io::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The variable naming the timing file.
pub const TIMING_VAR: &str = "MANX_CNI_TIMING";

/// Records the time between successive [`StepTimer::step`] calls.
#[derive(Debug)]
pub struct StepTimer {
    started: Instant,
    started_unix_ns: u128,
    inner: Mutex<Steps>,
}

#[derive(Debug)]
struct Steps {
    last: Instant,
    steps: Vec<(&'static str, Duration)>,
}

impl Default for StepTimer {
    fn default() -> Self {
        Self::start()
    }
}

impl StepTimer {
    /// A timer started now.
    pub fn start() -> StepTimer {
        let now = Instant::now();
        StepTimer {
            started: now,
            started_unix_ns: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0),
            inner: Mutex::new(Steps {
                last: now,
                steps: Vec::new(),
            }),
        }
    }

    /// Ends step `name`: the time since the previous step (or the start).
    /// A name used twice adds up.
    pub fn step(&self, name: &'static str) {
        let now = Instant::now();
        let mut s = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let took = now - s.last;
        s.last = now;
        tracing::debug!(step = name, us = took.as_micros() as u64, "timing");
        match s.steps.iter_mut().find(|(n, _)| *n == name) {
            Some((_, d)) => *d += took,
            None => s.steps.push((name, took)),
        }
    }

    /// Records `took` for `name` without moving the step mark: the
    /// duration of work that ran alongside the current step (the IPAM plugin
    /// beside the veth creation). Name such parts `(like-this)`: readers of
    /// the record do not add them to the total.
    pub fn record(&self, name: &'static str, took: Duration) {
        let mut s = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        tracing::debug!(
            step = name,
            us = took.as_micros() as u64,
            "timing (overlapped)"
        );
        match s.steps.iter_mut().find(|(n, _)| *n == name) {
            Some((_, d)) => *d += took,
            None => s.steps.push((name, took)),
        }
    }

    /// The steps so far, in first-seen order.
    pub fn steps(&self) -> Vec<(&'static str, Duration)> {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .steps
            .clone()
    }

    /// The record as one JSON object.
    pub fn to_json(&self, cmd: &str, container: &str) -> serde_json::Value {
        let steps: Vec<serde_json::Value> = self
            .steps()
            .into_iter()
            .map(|(n, d)| serde_json::json!([n, d.as_micros() as u64]))
            .collect();
        serde_json::json!({
            "cmd": cmd,
            "container": container,
            "start_unix_ns": self.started_unix_ns,
            "total_us": self.started.elapsed().as_micros() as u64,
            "steps": steps,
        })
    }

    /// Appends the record to the file `MANX_CNI_TIMING` names, if set
    /// (`lookup` reads the environment). Failing to write is logged, never
    /// an error of the command.
    pub fn finish(&self, lookup: impl Fn(&str) -> Option<String>, cmd: &str, container: &str) {
        let Some(path) = lookup(TIMING_VAR).filter(|p| !p.is_empty()) else {
            return;
        };
        let mut line = self.to_json(cmd, container).to_string();
        line.push('\n');
        let res = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(line.as_bytes()));
        if let Err(e) = res {
            tracing::warn!(path, error = %e, "cannot append to the {TIMING_VAR} file");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_accumulate_in_order() {
        let t = StepTimer::start();
        t.step("a");
        std::thread::sleep(Duration::from_millis(2));
        t.step("b");
        t.step("a");
        t.record("(c)", Duration::from_millis(7));
        let steps = t.steps();
        let names: Vec<_> = steps.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, ["a", "b", "(c)"]);
        assert_eq!(steps[2].1, Duration::from_millis(7));
        let steps = &steps[..2];
        assert!(steps[1].1 >= Duration::from_millis(2));
        let total: Duration = steps.iter().map(|(_, d)| *d).sum();
        let j = t.to_json("ADD", "c1");
        assert!(j["total_us"].as_u64().unwrap() >= total.as_micros() as u64);
        assert_eq!(j["steps"][1][0], "b");
        assert_eq!(j["cmd"], "ADD");
    }

    #[test]
    fn finish_appends_one_line_per_call_only_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t.jsonl");
        let path = file.display().to_string();
        let t = StepTimer::start();
        t.step("x");
        t.finish(|_| None, "ADD", "c1");
        assert!(!file.exists());
        t.finish(|k| (k == TIMING_VAR).then(|| path.clone()), "ADD", "c1");
        t.finish(|k| (k == TIMING_VAR).then(|| path.clone()), "DEL", "c1");
        let text = std::fs::read_to_string(&file).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1]["cmd"], "DEL");
        assert_eq!(lines[0]["steps"][0][0], "x");
    }
}
