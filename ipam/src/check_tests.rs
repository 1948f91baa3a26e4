//! Check, GC and fault-injection tests on the in-memory store.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use datastore::memory::MemoryStore;

use super::*;
use crate::allocator::{AutoAssignArgs, IpamOptions, ManualClock};
use crate::blockrw::{FaultPlan, FaultPoint};
use crate::ops;
use crate::topology::{Pool, StaticTopology};

struct Env {
    ipam: Ipam,
    clock: Arc<ManualClock>,
    faults: Arc<FaultPlan>,
    topo: StaticTopology,
}

fn env() -> Env {
    let topo = StaticTopology::new();
    topo.add_pool(Pool::new("p", "10.0.0.0/24").unwrap());
    topo.add_node("n1", &[]).add_node("n2", &[]);
    let clock = ManualClock::new(10_000_000);
    let faults = FaultPlan::new();
    let ipam = Ipam::new(Arc::new(MemoryStore::new()), Arc::new(topo.clone()))
        .with_clock(clock.clone())
        .with_faults(faults.clone())
        .with_options(IpamOptions {
            empty_block_grace: Duration::from_secs(300),
            max_retries: 20,
            ..IpamOptions::default()
        });
    Env {
        ipam,
        clock,
        faults,
        topo,
    }
}

fn args(handle: &str, node: &str) -> AutoAssignArgs {
    AutoAssignArgs {
        num_v4: 1,
        handle_id: handle.into(),
        hostname: node.into(),
        ..AutoAssignArgs::default()
    }
}

/// Two GC rounds a grace period apart; returns the second round's report.
async fn gc_twice(e: &Env, live: Option<&HashSet<String>>) -> GcReport {
    let mut gc = Gc::new(GcOptions {
        grace: Duration::from_secs(60),
        reclaim_deleted_nodes: true,
    });
    let first = gc.run(&e.ipam, live).await.unwrap();
    assert!(first.released_addresses.is_empty() && first.fixed_handles.is_empty());
    e.clock.advance(Duration::from_secs(61));
    gc.run(&e.ipam, live).await.unwrap()
}

#[tokio::test]
async fn clean_store_checks_clean_and_report_round_trips() {
    let e = env();
    e.ipam.auto_assign(&args("h1", "n1")).await.unwrap();
    let r = e.ipam.check(None).await.unwrap();
    assert!(r.is_clean(), "{r}");
    assert_eq!(
        (r.blocks, r.allocations, r.handles, r.affinities),
        (1, 1, 1, 1)
    );
    let json = serde_json::to_string(&r).unwrap();
    assert_eq!(ops::parse_report(&json).unwrap(), r);
    assert!(r.to_string().contains("No problems found."));
}

/// A handle counting more than its block holds can no longer come from a
/// crash of ours (block and handle are one transaction) but can from an
/// older version or another writer: `check` reports it, GC trims it.
#[tokio::test]
async fn over_counting_handle_is_reported_and_gc_trims_it() {
    let e = env();
    let keep = e.ipam.auto_assign(&args("keep", "n1")).await.unwrap();
    let cidr = e.ipam.rw().list_block_cidrs(false).await.unwrap()[0];
    let stray = datastore::model::ipam::IPAMHandle {
        handle_id: "crashed".into(),
        block: [(cidr.to_string(), 1u64)].into(),
        deleted: false,
    };
    e.ipam
        .rw()
        .create_raw(&crate::keys::handle("crashed"), &stray)
        .await
        .unwrap();
    let r = e.ipam.check(None).await.unwrap();
    assert_eq!(r.handle_mismatches.len(), 1, "{r}");
    assert_eq!(r.handle_mismatches[0].handle_id, "crashed");
    assert!(r.leaked_addresses.is_empty(), "no address leaked: {r}");
    let g = gc_twice(&e, None).await;
    assert_eq!(g.fixed_handles, vec!["crashed".to_string()]);
    assert!(e.ipam.check(None).await.unwrap().is_clean());
    assert_eq!(
        e.ipam.ips_by_handle("keep").await.unwrap(),
        vec![keep.ipv4[0].ip()]
    );
}

/// Steady state is one store write per allocation and per release: the
/// memory store gives each transaction one revision, so the revision moves
/// by exactly one.
#[tokio::test]
async fn allocation_and_release_are_one_write_each() {
    let e = env();
    let store = e.ipam.rw().store().clone();
    // A claim with its first allocation: pending affinity, then block +
    // confirmed affinity + handle in one transaction.
    let before = store.revision().await.unwrap();
    e.ipam.auto_assign(&args("first", "n1")).await.unwrap();
    assert_eq!(store.revision().await.unwrap(), before + 2, "claim");
    assert_eq!(e.ipam.ips_by_handle("first").await.unwrap().len(), 1);
    assert!(e.ipam.check(None).await.unwrap().is_clean());
    for i in 0..5 {
        let before = store.revision().await.unwrap();
        let h = format!("h{i}");
        e.ipam.auto_assign(&args(&h, "n1")).await.unwrap();
        assert_eq!(
            store.revision().await.unwrap(),
            before + 1,
            "allocation {h}"
        );
        let before = store.revision().await.unwrap();
        assert_eq!(e.ipam.release_by_handle(&h).await.unwrap().len(), 1);
        assert_eq!(store.revision().await.unwrap(), before + 1, "release {h}");
        assert!(e.ipam.rw().get_handle(&h).await.unwrap().is_none());
    }
    assert!(e.ipam.check(None).await.unwrap().is_clean());
}

#[tokio::test]
async fn crash_after_block_allocate_is_a_leak_only_for_dead_handles() {
    let e = env();
    e.faults.arm(FaultPoint::AfterBlockAllocate, 1);
    assert!(e.ipam.auto_assign(&args("dead", "n1")).await.is_err());
    let live_one = e.ipam.auto_assign(&args("live", "n1")).await.unwrap();
    // Structurally consistent (handle and block agree) ...
    assert!(e.ipam.check(None).await.unwrap().is_clean());
    // ... but with the live set, the dead handle's address is a leak.
    let live: HashSet<String> = ["live".to_string()].into();
    let r = e.ipam.check(Some(&live)).await.unwrap();
    assert_eq!(r.leaked_addresses.len(), 1, "{r}");
    let g = gc_twice(&e, Some(&live)).await;
    assert_eq!(g.released_addresses.len(), 1);
    assert!(e.ipam.check(Some(&live)).await.unwrap().is_clean());
    assert_eq!(
        e.ipam.ips_by_handle("live").await.unwrap(),
        vec![live_one.ipv4[0].ip()]
    );
    assert!(e.ipam.rw().get_handle("dead").await.unwrap().is_none());
}

#[tokio::test]
async fn crash_during_claim_is_repaired() {
    {
        let point = FaultPoint::AfterAffinityPending;
        let e = env();
        e.faults.arm(point, 1);
        assert!(e.ipam.auto_assign(&args("h", "n1")).await.is_err());
        let r = e.ipam.check(None).await.unwrap();
        assert_eq!(r.dangling_affinities.len(), 1, "{point:?}: {r}");
        let g = gc_twice(&e, None).await;
        assert_eq!(g.fixed_affinities.len(), 1, "{point:?}: {g:?}");
        let r = e.ipam.check(None).await.unwrap();
        // The handle was written before the claim crashed: GC trims it too.
        assert!(r.dangling_affinities.is_empty(), "{point:?}: {r}");
        // Allocation works afterwards.
        e.ipam.auto_assign(&args("h2", "n1")).await.unwrap();
    }
}

/// A block created with its affinity still pending (what an interrupted
/// claim of an older version left): the node's next allocation confirms the
/// affinity and uses the block; nothing is dangling.
#[tokio::test]
async fn block_with_pending_affinity_is_confirmed_and_used() {
    use datastore::model::ipam::{AffinityState, BlockAffinity};
    let e = env();
    let cidr: ipnetwork::IpNetwork = "10.0.0.64/26".parse().unwrap();
    let aff = BlockAffinity {
        state: AffinityState::Pending,
        node: "n1".into(),
        cidr,
        deleted: false,
    };
    let rw = e.ipam.rw();
    rw.create_raw(&crate::keys::affinity("n1", &cidr), &aff)
        .await
        .unwrap();
    rw.create_block(&crate::block::Block::new(cidr, Some("n1")).unwrap())
        .await
        .unwrap();
    let got = e.ipam.auto_assign(&args("h", "n1")).await.unwrap();
    assert!(cidr.contains(got.ipv4[0].ip()), "{got:?} not from {cidr}");
    let a = rw.get_affinity("n1", &cidr).await.unwrap().unwrap();
    assert_eq!(a.value.state, AffinityState::Confirmed);
    assert!(e.ipam.check(None).await.unwrap().is_clean());
}

#[tokio::test]
async fn crash_during_affinity_release_is_finished_by_gc() {
    for point in [
        FaultPoint::AfterAffinityPendingDeletion,
        FaultPoint::AfterBlockDelete,
    ] {
        let e = env();
        e.ipam.auto_assign(&args("h", "n1")).await.unwrap();
        e.ipam.release_by_handle("h").await.unwrap();
        e.clock.advance(Duration::from_secs(301));
        e.faults.arm(point, 1);
        assert!(e.ipam.release_empty_blocks(None).await.is_err());
        let r = e.ipam.check(None).await.unwrap();
        assert_eq!(r.dangling_affinities.len(), 1, "{point:?}: {r}");
        gc_twice(&e, None).await;
        assert!(e.ipam.check(None).await.unwrap().is_clean(), "{point:?}");
        assert!(e.ipam.rw().list_affinities(None).await.unwrap().is_empty());
    }
}

#[tokio::test]
async fn gc_waits_for_two_sightings_and_revalidates() {
    let e = env();
    e.faults.arm(FaultPoint::AfterBlockAllocate, 1);
    assert!(e.ipam.auto_assign(&args("dead", "n1")).await.is_err());
    let live: HashSet<String> = HashSet::new();
    let mut gc = Gc::new(GcOptions::default());
    let g1 = gc.run(&e.ipam, Some(&live)).await.unwrap();
    assert!(g1.released_addresses.is_empty());
    assert_eq!(g1.waiting, 1);
    // Not yet past the grace period.
    e.clock.advance(Duration::from_secs(10));
    assert!(
        gc.run(&e.ipam, Some(&live))
            .await
            .unwrap()
            .released_addresses
            .is_empty()
    );
    // Meanwhile the handle became live: never released.
    e.clock.advance(Duration::from_secs(120));
    let live: HashSet<String> = ["dead".to_string()].into();
    let g = gc.run(&e.ipam, Some(&live)).await.unwrap();
    assert!(g.released_addresses.is_empty());
    assert_eq!(e.ipam.ips_by_handle("dead").await.unwrap().len(), 1);
}

#[tokio::test]
async fn report_release_skips_reused_addresses() {
    let e = env();
    e.faults.arm(FaultPoint::AfterBlockAllocate, 1);
    assert!(e.ipam.auto_assign(&args("dead", "n1")).await.is_err());
    let live: HashSet<String> = HashSet::new();
    let report = e.ipam.check(Some(&live)).await.unwrap();
    let ip = report.leaked_addresses[0].ip;
    // The address is freed and handed out again before the report is used.
    e.ipam.release_by_handle("dead").await.unwrap();
    e.ipam
        .assign_ip(ip, "new", &crate::Attrs::default(), "n1")
        .await
        .unwrap();
    let s = ops::release_from_report(&e.ipam, &report).await.unwrap();
    assert!(s.released.is_empty());
    assert_eq!(s.skipped.len(), 1);
    assert_eq!(e.ipam.ips_by_handle("new").await.unwrap(), vec![ip]);
}

#[tokio::test]
async fn deleted_node_blocks_reported_and_reclaimed_by_gc() {
    let e = env();
    e.ipam.auto_assign(&args("h", "n2")).await.unwrap();
    e.topo.remove_node("n2");
    let r = e.ipam.check(None).await.unwrap();
    assert_eq!(r.deleted_node_blocks.len(), 1, "{r}");
    let g = gc_twice(&e, None).await;
    assert_eq!(g.reclaimed_nodes, vec!["n2".to_string()]);
    let r = e.ipam.check(None).await.unwrap();
    assert!(r.is_clean(), "{r}");
    assert_eq!(r.allocations, 0);
}

#[tokio::test]
async fn mis_sized_and_out_of_pool_blocks_are_reported() {
    let e = env();
    e.ipam.auto_assign(&args("h", "n1")).await.unwrap();
    // Someone shrank the pool's block size after blocks were made.
    e.topo
        .update_pool(Pool::new("p", "10.0.0.0/24").unwrap().with_block_size(28));
    let r = e.ipam.check(None).await.unwrap();
    assert_eq!(r.bad_blocks.len(), 1, "{r}");
    assert!(r.bad_blocks[0].reason.contains("blockSize 28"));
}

#[tokio::test]
async fn show_and_configure_render() {
    let e = env();
    e.ipam.auto_assign(&args("h1", "n1")).await.unwrap();
    e.ipam.auto_assign(&args("h2", "n2")).await.unwrap();
    let s = ops::show(
        &e.ipam,
        ops::ShowOptions {
            show_blocks: true,
            show_borrowed: true,
        },
    )
    .await
    .unwrap();
    assert_eq!(s.pools[0].in_use, 2);
    assert_eq!(s.blocks.as_ref().unwrap().len(), 2);
    assert!(s.borrowed.as_ref().unwrap().is_empty());
    let text = s.to_string();
    assert!(text.starts_with("GROUPING"), "{text}");
    let pool_line: Vec<&str> = text.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(
        pool_line[..5],
        ["IP", "Pool", "10.0.0.0/24", "256", "2"],
        "{text}"
    );
    let ip = e.ipam.ips_by_handle("h1").await.unwrap()[0];
    let info = ops::show_ip(&e.ipam, ip).await.unwrap();
    assert!(info.allocated);
    assert!(info.to_string().contains("handle: h1"), "{info}");
    let cfg = ops::configure(&e.ipam, Some(true), None, None)
        .await
        .unwrap();
    assert!(cfg.strict_affinity);
    assert!(ops::render_config(&cfg).contains("true"));
    let rel = ops::release_ip(&e.ipam, ip).await.unwrap();
    assert_eq!(rel.released, vec![ip]);
    assert_eq!(ops::release_ip(&e.ipam, ip).await.unwrap().skipped.len(), 1);
}

/// Issue 16: an endpoint its node marked stale (netns/veth gone, no DEL) is
/// a problem at once, naming the endpoint, node, container, addresses and
/// when it is reclaimed; an unmarked endpoint and a marked one whose veth
/// still exists are told apart; the report round-trips, and an older
/// report without the field still parses.
#[tokio::test]
async fn stale_workloads_are_reported_with_their_reclaim_time() {
    use datastore::client::Client;
    use datastore::model::WorkloadEndpoint;

    let e = env();
    let client = Client::new(e.ipam.rw().store().clone());
    let now = e.ipam.now_ms() / 1000;
    let mk = |name: &str, cid: &str, ip: &str| {
        let mut w = WorkloadEndpoint::new("default", name);
        w.spec.node = Some("n1".into());
        w.spec.container_id = Some(cid.into());
        w.spec.ip_networks = vec![ip.parse().unwrap()];
        w.spec.interface_name = Some(format!("cali{cid}"));
        w
    };
    client
        .create(&mk("n1-cni-live-eth0", "live", "10.0.0.1/32"))
        .await
        .unwrap();
    let r = e.ipam.check(None).await.unwrap();
    assert!(r.is_clean(), "an unmarked endpoint is no problem: {r}");

    let mut gone = mk("n1-cni-gone-eth0", "gone", "10.0.0.2/32");
    let a = &mut gone.metadata.annotations;
    a.insert(STALE_SINCE_ANNOTATION.into(), (now - 20).to_string());
    a.insert(
        STALE_REASON_ANNOTATION.into(),
        "netns /run/netns/x is gone; veth caligone is gone".into(),
    );
    a.insert(RECLAIM_AT_ANNOTATION.into(), (now + 280).to_string());
    client.create(&gone).await.unwrap();
    let mut held = mk("n1-cni-held-eth0", "held", "10.0.0.3/32");
    held.metadata
        .annotations
        .insert(STALE_SINCE_ANNOTATION.into(), (now - 5).to_string());
    held.metadata.annotations.insert(
        STALE_REASON_ANNOTATION.into(),
        "netns /run/netns/y is gone".into(),
    );
    client.create(&held).await.unwrap();

    let r = e.ipam.check(None).await.unwrap();
    assert!(!r.is_clean());
    assert_eq!(r.stale_workloads.len(), 2, "{r}");
    let p = r.problems();
    let line = p
        .iter()
        .find(|l| l.contains("n1-cni-gone-eth0"))
        .unwrap_or_else(|| panic!("{p:?}"));
    assert_eq!(
        line,
        &format!(
            "workload endpoint default/n1-cni-gone-eth0 on node n1 (container gone, 10.0.0.2/32): \
             netns /run/netns/x is gone; veth caligone is gone since {} (20 s ago), reclaimed in 280 s; \
             the runtime never called CNI DEL",
            datastore::model::meta::rfc3339_from_unix(now - 20)
        )
    );
    let held_line = p.iter().find(|l| l.contains("n1-cni-held-eth0")).unwrap();
    assert!(
        held_line.contains("kept while its veth exists"),
        "{held_line}"
    );
    // Past its time: due at the next scan.
    e.clock.advance(Duration::from_secs(300));
    let r = e.ipam.check(None).await.unwrap();
    assert!(
        r.problems()
            .iter()
            .any(|l| l.contains("n1-cni-gone-eth0") && l.contains("at the node's next scan")),
        "{r}"
    );
    // JSON report round-trip; an older report without the field parses.
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(ops::parse_report(&json.to_string()).unwrap(), r);
    let mut old = json.clone();
    old.as_object_mut().unwrap().remove("stale_workloads");
    assert!(
        ops::parse_report(&old.to_string())
            .unwrap()
            .stale_workloads
            .is_empty()
    );
}
