//! Allocator unit tests on the in-memory store.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use datastore::memory::MemoryStore;
use datastore::model::ipam::AffinityState;

use super::*;
use crate::topology::{Pool, StaticTopology};

struct Env {
    ipam: Arc<Ipam>,
    topo: StaticTopology,
    clock: Arc<ManualClock>,
}

fn env_with(pools: Vec<Pool>) -> Env {
    let topo = StaticTopology::new();
    for p in pools {
        topo.add_pool(p);
    }
    for n in ["n1", "n2", "n3"] {
        topo.add_node(n, &[("zone", if n == "n1" { "a" } else { "b" })]);
    }
    let clock = ManualClock::new(1_000_000);
    let ipam = Ipam::new(Arc::new(MemoryStore::new()), Arc::new(topo.clone()))
        .with_clock(clock.clone())
        .with_options(IpamOptions {
            empty_block_grace: Duration::from_secs(300),
            max_retries: 50,
            ..IpamOptions::default()
        });
    Env {
        ipam: Arc::new(ipam),
        topo,
        clock,
    }
}

fn env() -> Env {
    env_with(vec![
        Pool::new("v4", "10.0.0.0/24").unwrap(),
        Pool::new("v6", "fd10::/120").unwrap(),
    ])
}

fn args(handle: &str, node: &str, v4: usize, v6: usize) -> AutoAssignArgs {
    AutoAssignArgs {
        num_v4: v4,
        num_v6: v6,
        handle_id: handle.into(),
        hostname: node.into(),
        ..AutoAssignArgs::default()
    }
}

async fn assert_clean(ipam: &Ipam) {
    let r = ipam.check(None).await.unwrap();
    assert!(r.is_clean(), "{r}");
}

#[tokio::test]
async fn first_allocation_claims_an_affine_block_and_returns_block_prefix() {
    let e = env();
    let r = e
        .ipam
        .auto_assign(&args("net.c1", "n1", 1, 1))
        .await
        .unwrap();
    assert_eq!(r.ipv4.len(), 1);
    assert_eq!(r.ipv6.len(), 1);
    assert_eq!(r.ipv4[0].prefix(), 26);
    assert_eq!(r.ipv6[0].prefix(), 122);
    let affs = e.ipam.rw().list_affinities(Some("n1")).await.unwrap();
    assert_eq!(affs.len(), 2);
    assert!(
        affs.iter()
            .all(|a| a.value.state == AffinityState::Confirmed)
    );
    // The second allocation comes from the same block.
    let r2 = e
        .ipam
        .auto_assign(&args("net.c2", "n1", 1, 0))
        .await
        .unwrap();
    let block = IpNetwork::new(r.ipv4[0].ip(), 26).unwrap();
    assert!(block.contains(r2.ipv4[0].ip()));
    assert_ne!(r.ipv4[0].ip(), r2.ipv4[0].ip());
    assert_eq!(e.ipam.ips_by_handle("net.c1").await.unwrap().len(), 2);
    assert_clean(&e.ipam).await;
}

#[tokio::test]
async fn nodes_get_distinct_blocks_and_full_blocks_lead_to_new_claims() {
    let e = env();
    let a = e.ipam.auto_assign(&args("h1", "n1", 1, 0)).await.unwrap();
    let b = e.ipam.auto_assign(&args("h2", "n2", 1, 0)).await.unwrap();
    let ba = IpNetwork::new(a.ipv4[0].ip(), 26).unwrap().network();
    let bb = IpNetwork::new(b.ipv4[0].ip(), 26).unwrap().network();
    assert_ne!(ba, bb);
    // 64 more on n1: one block is not enough.
    let many = e.ipam.auto_assign(&args("h3", "n1", 64, 0)).await.unwrap();
    let ips: HashSet<_> = many.ipv4.iter().map(|n| n.ip()).collect();
    assert_eq!(ips.len(), 64);
    assert_eq!(
        e.ipam.affine_blocks("n1", false).await.unwrap().len(),
        2,
        "n1 claimed a second block"
    );
    assert_clean(&e.ipam).await;
}

#[tokio::test]
async fn borrows_from_other_nodes_unless_strict_affinity() {
    // One block only: n1 claims it, n2 must borrow.
    let e = env_with(vec![Pool::new("small", "10.1.0.0/26").unwrap()]);
    e.ipam.auto_assign(&args("h1", "n1", 1, 0)).await.unwrap();
    let r = e.ipam.auto_assign(&args("h2", "n2", 1, 0)).await.unwrap();
    assert!(r.ipv4[0].ip().to_string().starts_with("10.1.0."));
    e.ipam
        .update_config(|c| c.strict_affinity = true)
        .await
        .unwrap();
    let err = e
        .ipam
        .auto_assign(&args("h3", "n2", 1, 0))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "no address for node n2: wanted 1: pool 10.1.0.0/26 has 1 blocks, all affine to other nodes, and strictAffinity is on"
    );
    // Nothing leaked by the failed attempt.
    assert!(e.ipam.rw().get_handle("h3").await.unwrap().is_none());
    assert_clean(&e.ipam).await;
}

#[tokio::test]
async fn claims_a_free_block_before_borrowing_and_borrows_only_when_none_is_left() {
    // Four /26 blocks. n2 holds one with room; n1 fills its own.
    let e = env_with(vec![Pool::new("p", "10.3.0.0/24").unwrap()]);
    let n2 = e.ipam.auto_assign(&args("h2", "n2", 1, 0)).await.unwrap();
    let n2_block = IpNetwork::new(n2.ipv4[0].ip(), 26).unwrap();
    e.ipam.auto_assign(&args("h1", "n1", 64, 0)).await.unwrap();
    // n1's block is full and two blocks are free: n1 claims one of them,
    // it does not borrow from n2's.
    let r = e.ipam.auto_assign(&args("h3", "n1", 1, 0)).await.unwrap();
    assert!(!n2_block.contains(r.ipv4[0].ip()), "borrowed {}", r.ipv4[0]);
    assert_eq!(e.ipam.affine_blocks("n1", false).await.unwrap().len(), 2);
    // n3 takes the last free block; n1 fills its second one.
    e.ipam.auto_assign(&args("h4", "n3", 1, 0)).await.unwrap();
    e.ipam.auto_assign(&args("h5", "n1", 63, 0)).await.unwrap();
    // Now no block can be claimed: n1 borrows (from n2's or n3's block).
    let b = e.ipam.auto_assign(&args("h6", "n1", 1, 0)).await.unwrap();
    let blocks = e.ipam.rw().list_blocks().await.unwrap();
    let holder = blocks
        .iter()
        .find(|x| x.value.cidr().contains(b.ipv4[0].ip()))
        .unwrap();
    assert_ne!(holder.value.affine_node(), Some("n1"));
    assert_eq!(blocks.len(), 4, "no fifth block");
    assert_eq!(e.ipam.affine_blocks("n1", false).await.unwrap().len(), 2);
    assert_clean(&e.ipam).await;
}

#[tokio::test]
async fn max_blocks_per_host_limits_claims() {
    let e = env_with(vec![
        Pool::new("p", "10.2.0.0/24").unwrap().with_block_size(28),
    ]);
    e.ipam
        .update_config(|c| {
            c.max_blocks_per_host = 2;
            c.strict_affinity = true;
        })
        .await
        .unwrap();
    let r = e.ipam.auto_assign(&args("h1", "n1", 32, 0)).await.unwrap();
    assert_eq!(r.ipv4.len(), 32);
    let err = e
        .ipam
        .auto_assign(&args("h2", "n1", 1, 0))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("maxBlocksPerHost=2"), "{err}");
    // The per-call override lifts it.
    let mut a = args("h3", "n1", 1, 0);
    a.max_blocks_per_host = Some(3);
    e.ipam.auto_assign(&a).await.unwrap();
    assert_clean(&e.ipam).await;
}

#[tokio::test]
async fn reservations_are_never_handed_out() {
    let e = env_with(vec![
        Pool::new("p", "10.3.0.0/28").unwrap().with_block_size(28),
    ]);
    e.topo.add_reservation("10.3.0.0/30".parse().unwrap());
    let r = e.ipam.auto_assign(&args("h", "n1", 12, 0)).await.unwrap();
    assert!(r.ipv4.iter().all(|n| {
        n.ip()
            .to_string()
            .rsplit('.')
            .next()
            .unwrap()
            .parse::<u8>()
            .unwrap()
            >= 4
    }));
    assert!(e.ipam.auto_assign(&args("h2", "n1", 1, 0)).await.is_err());
    let err = e
        .ipam
        .assign_ip("10.3.0.1".parse().unwrap(), "h3", &Attrs::default(), "n1")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("reserved"), "{err}");
}

#[tokio::test]
async fn node_selector_and_allowed_uses_pick_pools() {
    let mut tunnel_only = Pool::new("tun", "10.9.0.0/24").unwrap();
    tunnel_only.allowed_uses = vec![IntendedUse::Tunnel];
    let e = env_with(vec![
        Pool::new("zone-a", "10.4.0.0/24")
            .unwrap()
            .with_selector("zone == 'a'"),
        Pool::new("zone-b", "10.5.0.0/24")
            .unwrap()
            .with_selector("zone == 'b'"),
        tunnel_only,
    ]);
    let a = e.ipam.auto_assign(&args("h1", "n1", 1, 0)).await.unwrap();
    assert!(a.ipv4[0].ip().to_string().starts_with("10.4."));
    let b = e.ipam.auto_assign(&args("h2", "n2", 1, 0)).await.unwrap();
    assert!(b.ipv4[0].ip().to_string().starts_with("10.5."));
    let mut t = args("tunnel-n1", "n1", 1, 0);
    t.intended_use = IntendedUse::Tunnel;
    t.ipv4_pools = vec!["tun".into()];
    let tr = e.ipam.auto_assign(&t).await.unwrap();
    assert!(tr.ipv4[0].ip().to_string().starts_with("10.9."));
    // A workload may not use the tunnel pool even if asked explicitly.
    let mut w = args("h3", "n1", 1, 0);
    w.ipv4_pools = vec!["10.9.0.0/24".into()];
    let err = e.ipam.auto_assign(&w).await.unwrap_err();
    assert!(err.to_string().contains("does not allow Workload"), "{err}");
    // A node no selector matches.
    e.topo.add_node("n4", &[("zone", "c")]);
    let err = e
        .ipam
        .auto_assign(&args("h4", "n4", 1, 0))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("nodeSelector"), "{err}");
}

#[tokio::test]
async fn disabled_pool_is_not_used() {
    let mut p = Pool::new("p", "10.6.0.0/24").unwrap();
    p.disabled = true;
    let e = env_with(vec![p]);
    let err = e
        .ipam
        .auto_assign(&args("h", "n1", 1, 0))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("disabled"), "{err}");
}

#[tokio::test]
async fn release_by_handle_is_idempotent_and_fifo_reuse() {
    let e = env();
    let r = e.ipam.auto_assign(&args("h1", "n1", 2, 1)).await.unwrap();
    let freed = e.ipam.release_by_handle("h1").await.unwrap();
    assert_eq!(freed.len(), 3);
    assert!(e.ipam.release_by_handle("h1").await.unwrap().is_empty());
    assert!(e.ipam.rw().get_handle("h1").await.unwrap().is_none());
    // The released addresses are not the next ones handed out.
    let r2 = e.ipam.auto_assign(&args("h2", "n1", 2, 0)).await.unwrap();
    for n in &r2.ipv4 {
        assert!(!r.ipv4.contains(n));
    }
    assert_clean(&e.ipam).await;
}

#[tokio::test]
async fn release_ips_updates_handles() {
    let e = env();
    let r = e.ipam.auto_assign(&args("h1", "n1", 2, 0)).await.unwrap();
    let freed = e.ipam.release_ips(&[r.ipv4[0].ip()]).await.unwrap();
    assert_eq!(freed, vec![r.ipv4[0].ip()]);
    let h = e.ipam.rw().get_handle("h1").await.unwrap().unwrap();
    assert_eq!(h.value.block.values().sum::<u64>(), 1);
    assert!(
        e.ipam
            .release_ips(&[r.ipv4[0].ip()])
            .await
            .unwrap()
            .is_empty()
    );
    assert_clean(&e.ipam).await;
}

#[tokio::test]
async fn stale_release_with_old_sequence_is_ignored() {
    let e = env_with(vec![
        Pool::new("p", "10.7.0.0/30").unwrap().with_block_size(30),
    ]);
    let r = e.ipam.auto_assign(&args("old", "n1", 1, 0)).await.unwrap();
    let ip = r.ipv4[0].ip();
    let cidr: IpNetwork = "10.7.0.0/30".parse().unwrap();
    let seq = e
        .ipam
        .rw()
        .get_block(&cidr)
        .await
        .unwrap()
        .unwrap()
        .value
        .sequence_of(ip)
        .unwrap();
    e.ipam.release_by_handle("old").await.unwrap();
    // Reuse: fill the block so `ip` is handed out again.
    let again = e.ipam.auto_assign(&args("new", "n1", 4, 0)).await.unwrap();
    assert!(again.ipv4.iter().any(|n| n.ip() == ip));
    let freed = e.ipam.release_checked(&[(ip, Some(seq))]).await.unwrap();
    assert!(freed.is_empty(), "stale release freed a reused address");
    assert!(e.ipam.ips_by_handle("new").await.unwrap().contains(&ip));
    assert_clean(&e.ipam).await;
}

#[tokio::test]
async fn assign_ip_claims_block_and_rejects_duplicates() {
    let e = env();
    let ip: IpAddr = "10.0.0.77".parse().unwrap();
    e.ipam
        .assign_ip(ip, "h1", &Attrs::default(), "n2")
        .await
        .unwrap();
    let err = e
        .ipam
        .assign_ip(ip, "h2", &Attrs::default(), "n2")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("already allocated"), "{err}");
    assert!(e.ipam.rw().get_handle("h2").await.unwrap().is_none());
    assert_eq!(e.ipam.affine_blocks("n2", false).await.unwrap().len(), 1);
    let err = e
        .ipam
        .assign_ip(
            "192.168.0.1".parse().unwrap(),
            "h3",
            &Attrs::default(),
            "n2",
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not in any IP pool"), "{err}");
    assert_clean(&e.ipam).await;
}

#[tokio::test]
async fn empty_block_loses_affinity_after_grace() {
    let e = env();
    e.ipam.auto_assign(&args("h1", "n1", 1, 0)).await.unwrap();
    e.ipam.release_by_handle("h1").await.unwrap();
    assert!(
        e.ipam.release_empty_blocks(None).await.unwrap().is_empty(),
        "too early"
    );
    e.clock.advance(Duration::from_secs(301));
    let released = e.ipam.release_empty_blocks(None).await.unwrap();
    assert_eq!(released.len(), 1);
    assert!(e.ipam.rw().list_blocks().await.unwrap().is_empty());
    assert!(e.ipam.rw().list_affinities(None).await.unwrap().is_empty());
    // A block in use keeps its affinity however long.
    e.ipam.auto_assign(&args("h2", "n1", 1, 0)).await.unwrap();
    e.clock.advance(Duration::from_secs(3600));
    assert!(e.ipam.release_empty_blocks(None).await.unwrap().is_empty());
    assert_clean(&e.ipam).await;
}

#[tokio::test]
async fn reclaim_deleted_node() {
    let e = env_with(vec![
        Pool::new("small", "10.8.0.0/26")
            .unwrap()
            .with_block_size(27),
    ]);
    let mut a = args("n1-pod", "n1", 1, 0);
    a.attrs.pod = Some("p1".into());
    e.ipam.auto_assign(&a).await.unwrap();
    // n1's second block gets a borrower from n2 (n2 has its own first).
    e.ipam
        .auto_assign(&args("n2-pod", "n2", 1, 0))
        .await
        .unwrap();
    e.ipam
        .auto_assign(&args("n2-pod2", "n2", 31, 0))
        .await
        .unwrap();
    let borrowed = e
        .ipam
        .auto_assign(&args("n2-pod3", "n2", 1, 0))
        .await
        .unwrap();
    e.topo.remove_node("n1");
    let report = e.ipam.check(None).await.unwrap();
    assert_eq!(report.deleted_node_blocks.len(), 1, "{report}");
    let rr = e.ipam.reclaim_node("n1").await.unwrap();
    assert_eq!(rr.released_ips.len(), 1);
    assert_eq!(rr.unaffined_blocks.len(), 1, "{rr:?}");
    assert!(
        e.ipam
            .rw()
            .list_affinities(Some("n1"))
            .await
            .unwrap()
            .is_empty()
    );
    // n2's borrowed address survived.
    assert_eq!(
        e.ipam.ips_by_handle("n2-pod3").await.unwrap(),
        vec![borrowed.ipv4[0].ip()]
    );
    assert_clean(&e.ipam).await;
}

#[tokio::test]
async fn concurrent_allocations_never_duplicate() {
    let e = env_with(vec![Pool::new("p", "10.10.0.0/22").unwrap()]);
    let mut tasks = Vec::new();
    for i in 0..64 {
        let ipam = e.ipam.clone();
        tasks.push(tokio::spawn(async move {
            let node = format!("n{}", 1 + i % 3);
            let mut got = Vec::new();
            for j in 0..5 {
                let r = ipam
                    .auto_assign(&args(&format!("h{i}-{j}"), &node, 1, 0))
                    .await
                    .unwrap();
                got.push(r.ipv4[0].ip());
            }
            got
        }));
    }
    let mut all = HashSet::new();
    for t in tasks {
        for ip in t.await.unwrap() {
            assert!(all.insert(ip), "{ip} handed out twice");
        }
    }
    assert_eq!(all.len(), 320);
    assert_clean(&e.ipam).await;
}

#[test]
fn del_sweeps_at_most_once_per_interval_per_host() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(MemoryStore::new());
    let topo = Arc::new(StaticTopology::new());
    let with = |lock: Option<std::path::PathBuf>, grace: u64| {
        Ipam::new(store.clone(), topo.clone()).with_options(IpamOptions {
            claim_lock_dir: lock,
            empty_block_grace: Duration::from_secs(grace),
            ..IpamOptions::default()
        })
    };
    let host = with(Some(dir.path().join("locks")), 300);
    assert!(host.del_sweep_due("n1"), "first DEL on the host sweeps");
    assert!(
        !host.del_sweep_due("n1"),
        "the next one within a minute does not"
    );
    assert!(host.del_sweep_due("n2"), "per node");
    // Another process on the host sees the same stamp.
    assert!(!with(Some(dir.path().join("locks")), 300).del_sweep_due("n1"));
    // A grace of 0 s: every DEL sweeps; no lock folder: likewise.
    assert!(with(Some(dir.path().join("locks")), 0).del_sweep_due("n1"));
    let bare = with(None, 300);
    assert!(bare.del_sweep_due("n1") && bare.del_sweep_due("n1"));
}
