use super::*;
use proptest::prelude::*;

fn none(_: IpAddr) -> bool {
    false
}

fn v4(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn default_sizes_give_64_addresses() {
    let b4 = Block::new("10.0.0.0/26".parse().unwrap(), Some("n1")).unwrap();
    let b6 = Block::new("fd10::/122".parse().unwrap(), None).unwrap();
    assert_eq!(b4.size(), 64);
    assert_eq!(b6.size(), 64);
    assert_eq!(b4.affinity(), Some("host:n1"));
    assert_eq!(b4.affine_node(), Some("n1"));
    assert_eq!(b6.ip(63), v4("fd10::3f"));
}

#[test]
fn rejects_unaligned_and_huge_blocks() {
    assert!(matches!(
        Block::new("10.0.0.5/26".parse().unwrap(), None),
        Err(BlockError::NotAligned { .. })
    ));
    assert!(matches!(
        Block::new("10.0.0.0/8".parse().unwrap(), None),
        Err(BlockError::TooLarge { .. })
    ));
}

#[test]
fn released_address_is_reused_last() {
    let mut b = Block::new("10.0.0.0/30".parse().unwrap(), None).unwrap();
    let a = Attrs::handle("h");
    let got: Vec<_> = b.allocate(2, &a, &none).into_iter().map(|x| x.0).collect();
    assert_eq!(got, vec![v4("10.0.0.0"), v4("10.0.0.1")]);
    b.release(v4("10.0.0.0"), None, 1).unwrap();
    let got: Vec<_> = b.allocate(2, &a, &none).into_iter().map(|x| x.0).collect();
    // .2 and .3 were free longer than .0.
    assert_eq!(got, vec![v4("10.0.0.2"), v4("10.0.0.3")]);
    let got: Vec<_> = b.allocate(1, &a, &none).into_iter().map(|x| x.0).collect();
    assert_eq!(got, vec![v4("10.0.0.0")]);
    assert!(b.allocate(1, &a, &none).is_empty());
}

#[test]
fn reserved_addresses_are_skipped_but_keep_their_place() {
    let mut b = Block::new("10.0.0.0/30".parse().unwrap(), None).unwrap();
    let reserved = |ip: IpAddr| ip == v4("10.0.0.0");
    let got = b.allocate(4, &Attrs::handle("h"), &reserved);
    assert_eq!(got.len(), 3);
    assert_eq!(b.available(&reserved), 0);
    assert_eq!(b.free_count(), 1);
    b.check_invariants().unwrap();
}

#[test]
fn stale_release_does_not_free_reused_address() {
    let mut b = Block::new("10.0.0.0/31".parse().unwrap(), None).unwrap();
    let (ip, seq) = b.allocate(1, &Attrs::handle("old"), &none)[0];
    assert_eq!(
        b.release(ip, Some(seq), 5).unwrap(),
        Release::Released {
            handle_id: Some("old".into())
        }
    );
    assert_eq!(b.empty_since_ms(), Some(5));
    // Fill the block so `ip` is handed out again to a new owner.
    let again = b.allocate(2, &Attrs::handle("new"), &none);
    assert!(again.iter().any(|(i, _)| *i == ip));
    assert_eq!(b.empty_since_ms(), None);
    assert!(matches!(
        b.release(ip, Some(seq), 6).unwrap(),
        Release::Stale { .. }
    ));
    assert_eq!(
        b.attributes_of(ip).unwrap().handle_id.as_deref(),
        Some("new")
    );
}

#[test]
fn assign_specific_ip_and_conflict() {
    let mut b = Block::new("10.0.0.0/29".parse().unwrap(), None).unwrap();
    b.assign(v4("10.0.0.5"), &Attrs::handle("a")).unwrap();
    let err = b.assign(v4("10.0.0.5"), &Attrs::handle("b")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "block 10.0.0.0/29: address 10.0.0.5 is already allocated (handle a)"
    );
    assert!(matches!(
        b.assign(v4("10.0.1.5"), &Attrs::handle("b")),
        Err(BlockError::OutOfRange { .. })
    ));
    let got = b.allocate(8, &Attrs::handle("c"), &none);
    assert_eq!(got.len(), 7);
    assert!(got.iter().all(|(ip, _)| *ip != v4("10.0.0.5")));
}

#[test]
fn release_handle_and_attribute_compaction() {
    let mut b = Block::new("10.0.0.0/29".parse().unwrap(), None).unwrap();
    b.allocate(2, &Attrs::handle("a"), &none);
    b.allocate(2, &Attrs::handle("b"), &none);
    b.allocate(1, &Attrs::handle("a"), &none);
    assert_eq!(b.to_model().attributes.len(), 2, "attributes are shared");
    let freed = b.release_handle("a", 9);
    assert_eq!(freed.len(), 3);
    let m = b.to_model();
    assert_eq!(m.attributes.len(), 1);
    assert_eq!(m.attributes[0].handle_id.as_deref(), Some("b"));
    b.check_invariants().unwrap();
}

#[test]
fn model_round_trip_and_corruption_detected() {
    let mut b = Block::new("fd10::/125".parse().unwrap(), Some("n2")).unwrap();
    let attrs = Attrs {
        handle_id: "net.c1".into(),
        node: Some("n2".into()),
        namespace: Some("default".into()),
        pod: Some("p".into()),
        intended_use: IntendedUse::Workload,
        extra: BTreeMap::new(),
    };
    b.allocate(3, &attrs, &none);
    b.release(b.ip(1), None, 0).unwrap();
    let m = b.to_model();
    assert_eq!(m.attributes[0].secondary["pod"], "p");
    assert_eq!(m.attributes[0].secondary["type"], "Workload");
    let back = Block::from_model(m.clone()).unwrap();
    assert_eq!(back, b);
    let mut bad = m.clone();
    bad.unallocated.push(0);
    assert!(matches!(
        Block::from_model(bad),
        Err(BlockError::Corrupt { .. })
    ));
    let mut bad = m;
    bad.allocations.pop();
    assert!(matches!(
        Block::from_model(bad),
        Err(BlockError::Corrupt { .. })
    ));
}

#[derive(Debug, Clone)]
enum Op {
    Alloc(usize, u8),
    ReleaseNth(usize),
    ReleaseStale(usize),
    ReleaseHandle(u8),
    Assign(u32, u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (1usize..6, 0u8..4).prop_map(|(n, h)| Op::Alloc(n, h)),
        (0usize..64).prop_map(Op::ReleaseNth),
        (0usize..64).prop_map(Op::ReleaseStale),
        (0u8..4).prop_map(Op::ReleaseHandle),
        (0u32..16, 0u8..4).prop_map(|(o, h)| Op::Assign(o, h)),
    ]
}

proptest! {
    /// Any sequence of allocate/release keeps every invariant, the free queue
    /// is FIFO, sequence numbers never go back, and the stored form
    /// round-trips.
    #[test]
    fn allocate_release_sequences_keep_invariants(
        ops in proptest::collection::vec(op(), 1..120),
        v6 in any::<bool>(),
    ) {
        let cidr: IpNetwork = if v6 { "fd00:10::/124".parse().unwrap() } else { "10.1.0.0/28".parse().unwrap() };
        let mut b = Block::new(cidr, Some("n")).unwrap();
        // Model: what we believe is allocated: ip -> (handle, seq).
        let mut model: BTreeMap<IpAddr, (String, u64)> = BTreeMap::new();
        // Old (ip, seq) pairs that were released: replaying them must be stale or no-op.
        let mut released: Vec<(IpAddr, u64)> = Vec::new();
        let mut last_seq = 0;
        for op in ops {
            match op {
                Op::Alloc(n, h) => {
                    let before_free = b.free_count() as usize;
                    let got = b.allocate(n, &Attrs::handle(format!("h{h}")), &|_| false);
                    prop_assert_eq!(got.len(), n.min(before_free));
                    for (ip, seq) in got {
                        prop_assert!(model.insert(ip, (format!("h{h}"), seq)).is_none(), "{} handed out twice", ip);
                    }
                }
                Op::ReleaseNth(i) => {
                    if let Some((&ip, (_, seq))) = model.iter().nth(i % model.len().max(1)) {
                        let seq = *seq;
                        let r = b.release(ip, Some(seq), 1).unwrap();
                        prop_assert!(matches!(r, Release::Released { .. }), "{:?}", r);
                        model.remove(&ip);
                        released.push((ip, seq));
                        // FIFO: the released ordinal is now at the back of the queue.
                        prop_assert_eq!(b.to_model().unallocated.last().copied(), b.ordinal(ip));
                    }
                }
                Op::ReleaseStale(i) => {
                    if !released.is_empty() {
                        let (ip, seq) = released[i % released.len()];
                        let r = b.release(ip, Some(seq), 1).unwrap();
                        match model.get(&ip) {
                            Some((_, cur)) if *cur != seq => prop_assert!(matches!(r, Release::Stale { .. }), "{:?}", r),
                            Some(_) => prop_assert!(false, "seq reused for {}", ip),
                            None => prop_assert_eq!(r, Release::NotAllocated),
                        }
                    }
                }
                Op::ReleaseHandle(h) => {
                    let handle = format!("h{h}");
                    let mut freed = b.release_handle(&handle, 2);
                    freed.sort();
                    let expect: Vec<IpAddr> = model.iter().filter(|(_, (hh, _))| *hh == handle).map(|(ip, _)| *ip).collect();
                    prop_assert_eq!(&freed, &expect);
                    for ip in freed {
                        let (_, seq) = model.remove(&ip).unwrap();
                        released.push((ip, seq));
                    }
                }
                Op::Assign(o, h) => {
                    let ip = b.ip(o % b.size());
                    let r = b.assign(ip, &Attrs::handle(format!("h{h}")));
                    match model.entry(ip) {
                        std::collections::btree_map::Entry::Occupied(_) => prop_assert!(r.is_err()),
                        std::collections::btree_map::Entry::Vacant(v) => {
                            v.insert((format!("h{h}"), r.unwrap()));
                        }
                    }
                }
            }
            prop_assert!(b.sequence_number() >= last_seq);
            last_seq = b.sequence_number();
            if let Err(e) = b.check_invariants() { prop_assert!(false, "{}", e); }
            prop_assert_eq!(b.in_use() as usize, model.len());
            for (ip, (h, seq)) in &model {
                prop_assert_eq!(b.attributes_of(*ip).unwrap().handle_id.as_deref(), Some(h.as_str()));
                prop_assert_eq!(b.sequence_of(*ip), Some(*seq));
            }
            prop_assert_eq!(b.is_empty(), model.is_empty());
        }
        let back = Block::from_model(b.to_model()).unwrap();
        prop_assert_eq!(back, b);
    }
}
