//! Model benchmarks: manifest reading and selector matching, each against a
//! named baseline measured in the same run.
//!
//! * `parse_manifests` (split, untyped pass, typed pass, validation) vs
//!   `baseline: serde_norway → Value` (the bare YAML parse of the same text).
//! * `Selector::matches` vs `baseline: hand-written closure` doing the same
//!   label tests.
//!
//! Run: `cargo bench -p manx-datastore --bench model`.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use datastore::model::parse_manifests;
use datastore::selector::Selector;
use serde::Deserialize;

/// Best-of-`rounds` time of `f`.
fn best<F: FnMut()>(rounds: usize, mut f: F) -> Duration {
    (0..rounds)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .min()
        .unwrap_or_default()
}

fn manifest(n: usize) -> String {
    let mut text = String::new();
    for i in 0..n {
        text.push_str(&format!(
            "---\napiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: pool-{i}\n  labels:\n    team: t{}\nspec:\n  cidr: 10.{}.{}.0/24\n  blockSize: 28\n  ipipMode: CrossSubnet\n  natOutgoing: true\n  nodeSelector: rack == 'r{}' && !has(edge)\n",
            i % 7,
            i / 256,
            i % 256,
            i % 5
        ));
    }
    text
}

fn main() {
    let n = 1000;
    let text = manifest(n);

    let baseline = best(5, || {
        let mut count = 0;
        for doc in serde_norway::Deserializer::from_str(&text) {
            let v = serde_norway::Value::deserialize(doc).unwrap();
            count += usize::from(!v.is_null());
        }
        assert_eq!(count, n);
    });
    let ours = best(5, || {
        let r = parse_manifests(black_box(&text), "bench.yaml").unwrap();
        assert_eq!(r.len(), n);
    });
    println!(
        "parse_manifests: {n} IPPools in {:?} ({:.1} µs/object); baseline serde_norway→Value {:?}; ratio {:.2}x",
        ours,
        ours.as_secs_f64() * 1e6 / n as f64,
        baseline,
        ours.as_secs_f64() / baseline.as_secs_f64()
    );

    let sel = Selector::parse("(rack == 'r1' || rack == 'r2') && !has(edge) && zone in {'a', 'b'}")
        .unwrap();
    let sets: Vec<BTreeMap<String, String>> = (0..1000)
        .map(|i| {
            let mut m = BTreeMap::new();
            m.insert("rack".to_string(), format!("r{}", i % 4));
            m.insert("zone".to_string(), ["a", "b", "c"][i % 3].to_string());
            if i % 5 == 0 {
                m.insert("edge".to_string(), String::new());
            }
            m
        })
        .collect();
    let hand = |m: &BTreeMap<String, String>| {
        let rack = m.get("rack").map(String::as_str);
        (rack == Some("r1") || rack == Some("r2"))
            && !m.contains_key("edge")
            && matches!(m.get("zone").map(String::as_str), Some("a" | "b"))
    };
    let rounds = 200;
    let base = best(5, || {
        let mut hits = 0;
        for _ in 0..rounds {
            hits += sets.iter().filter(|m| hand(black_box(m))).count();
        }
        black_box(hits);
    });
    let mut expect = 0;
    let ours = best(5, || {
        let mut hits = 0;
        for _ in 0..rounds {
            hits += sets.iter().filter(|m| sel.matches(black_box(m))).count();
        }
        expect = hits;
    });
    assert_eq!(expect, rounds * sets.iter().filter(|m| hand(m)).count());
    let evals = (rounds * sets.len()) as f64;
    println!(
        "Selector::matches: {:.1} ns/eval; baseline hand-written closure {:.1} ns/eval; ratio {:.2}x",
        ours.as_secs_f64() * 1e9 / evals,
        base.as_secs_f64() * 1e9 / evals,
        ours.as_secs_f64() / base.as_secs_f64()
    );
}
