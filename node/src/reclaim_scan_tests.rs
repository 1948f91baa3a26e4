//! The scan on the in-memory store, with a fake link table and temp files
//! standing for netns paths.

use std::sync::Mutex;

use datastore::memory::MemoryStore;
use ipam::StaticTopology;
use ipam::allocator::AutoAssignArgs;
use ipam::topology::Pool;

use super::*;

#[derive(Default)]
struct FakeLinks(Mutex<HashSet<String>>);

impl FakeLinks {
    fn set(&self, names: &[&str]) {
        *self.0.lock().unwrap() = names.iter().map(|s| s.to_string()).collect();
    }
}

impl LinkSource for Arc<FakeLinks> {
    async fn link_names(&self) -> Result<HashSet<String>, String> {
        Ok(self.0.lock().unwrap().clone())
    }
}

struct Env {
    scanner: Scanner<Arc<FakeLinks>>,
    links: Arc<FakeLinks>,
    dir: tempfile::TempDir,
}

fn env(grace: Duration) -> Env {
    let store: Arc<dyn datastore::Datastore> = Arc::new(MemoryStore::new());
    let topo = StaticTopology::new();
    topo.add_pool(Pool::new("p", "10.66.0.0/24").unwrap());
    topo.add_node("n1", &[]);
    let ipam = Arc::new(Ipam::new(store.clone(), Arc::new(topo)));
    let links = Arc::new(FakeLinks::default());
    Env {
        scanner: Scanner {
            client: Client::new(store),
            ipam,
            node: "n1".into(),
            grace,
            links: links.clone(),
        },
        links,
        dir: tempfile::tempdir().unwrap(),
    }
}

impl Env {
    /// An endpoint as the CNI plugin writes it, with an address from IPAM
    /// under handle `net.<cid>`; its "netns" is a file in the temp dir.
    async fn pod(&self, cid: &str, node: &str) -> WorkloadEndpoint {
        let handle = format!("net.{cid}");
        let got = self
            .scanner
            .ipam
            .auto_assign(&AutoAssignArgs {
                num_v4: 1,
                handle_id: handle,
                hostname: "n1".into(),
                ..AutoAssignArgs::default()
            })
            .await
            .unwrap();
        let netns = self.dir.path().join(cid);
        std::fs::write(&netns, "").unwrap();
        let mut w = WorkloadEndpoint::new("default", format!("{node}-cni-{cid}-eth0"));
        w.spec.node = Some(node.into());
        w.spec.container_id = Some(cid.into());
        w.spec.ip_networks = got
            .ipv4
            .iter()
            .map(|n| ipnetwork::IpNetwork::new(n.ip(), 32).unwrap())
            .collect();
        w.spec.interface_name = Some(format!("cali{cid}"));
        let a = &mut w.metadata.annotations;
        a.insert(NETNS_ANNOTATION.into(), netns.display().to_string());
        a.insert(NETWORK_ANNOTATION.into(), "net".into());
        self.scanner.client.create(&w).await.unwrap()
    }

    async fn get(&self, w: &WorkloadEndpoint) -> Option<WorkloadEndpoint> {
        self.scanner
            .client
            .get_namespaced("default", &w.metadata.name)
            .await
            .unwrap()
    }

    async fn all(&self) -> Vec<WorkloadEndpoint> {
        self.scanner
            .client
            .list::<WorkloadEndpoint>()
            .await
            .unwrap()
            .0
    }

    fn kill_netns(&self, cid: &str) {
        std::fs::remove_file(self.dir.path().join(cid)).unwrap();
    }
}

fn name(w: &WorkloadEndpoint) -> String {
    format!("default/{}", w.metadata.name)
}

#[tokio::test]
async fn live_workloads_cost_no_write() {
    let e = env(Duration::ZERO);
    let a = e.pod("aaa", "n1").await;
    e.links.set(&["caliaaa", "eth0"]);
    let rev = e.scanner.client.store().revision().await.unwrap();
    for _ in 0..3 {
        assert_eq!(e.scanner.scan(&e.all().await).await, ScanReport::default());
    }
    assert_eq!(e.scanner.client.store().revision().await.unwrap(), rev);
    assert_eq!(e.get(&a).await.unwrap(), a);
}

#[tokio::test]
async fn gone_netns_and_veth_is_marked_then_reclaimed_after_grace() {
    let e = env(Duration::ZERO);
    let a = e.pod("aaa", "n1").await;
    let b = e.pod("bbb", "n1").await;
    e.links.set(&["caliaaa", "calibbb"]);
    e.kill_netns("aaa");
    e.links.set(&["calibbb"]);
    let r = e.scanner.scan(&e.all().await).await;
    assert_eq!(r.marked, vec![name(&a)], "{r:?}");
    let marked = e.get(&a).await.unwrap();
    let ann = &marked.metadata.annotations;
    let since: u64 = ann[STALE_SINCE_ANNOTATION].parse().unwrap();
    assert_eq!(ann[RECLAIM_AT_ANNOTATION], since.to_string(), "grace 0");
    assert!(
        ann[STALE_REASON_ANNOTATION].contains("is gone; veth caliaaa is gone"),
        "{ann:?}"
    );
    // The mark is what `ipam check` reports.
    let report = e.scanner.ipam.check(None).await.unwrap();
    assert_eq!(report.stale_workloads.len(), 1, "{report}");
    assert_eq!(report.stale_workloads[0].name, a.metadata.name);

    // A stale cache (the unmarked endpoint) changes nothing: the scan reads
    // it fresh and reclaims because the mark is there and the grace is 0.
    let r = e.scanner.scan(std::slice::from_ref(&a)).await;
    assert_eq!(r.reclaimed, vec![name(&a)], "{r:?}");
    assert!(e.get(&a).await.is_none());
    assert!(
        e.scanner
            .ipam
            .ips_by_handle("net.aaa")
            .await
            .unwrap()
            .is_empty()
    );
    // The live one is untouched.
    assert_eq!(e.get(&b).await.unwrap(), b);
    assert_eq!(
        e.scanner.ipam.ips_by_handle("net.bbb").await.unwrap().len(),
        1
    );
    // Idempotent: a scan over the old cache finds nothing to do.
    assert_eq!(
        e.scanner.scan(&[a.clone(), b.clone()]).await,
        ScanReport::default()
    );
    assert!(e.scanner.ipam.check(None).await.unwrap().is_clean());
}

#[tokio::test]
async fn never_reclaimed_while_the_veth_exists() {
    let e = env(Duration::ZERO);
    let a = e.pod("aaa", "n1").await;
    e.links.set(&["caliaaa"]);
    e.kill_netns("aaa");
    let r = e.scanner.scan(&e.all().await).await;
    assert_eq!(r.marked, vec![name(&a)]);
    for _ in 0..5 {
        let r = e.scanner.scan(&e.all().await).await;
        assert!(r.reclaimed.is_empty(), "{r:?}");
    }
    let w = e.get(&a).await.unwrap();
    let ann = &w.metadata.annotations;
    assert!(!ann.contains_key(RECLAIM_AT_ANNOTATION), "{ann:?}");
    assert!(
        ann[STALE_REASON_ANNOTATION].ends_with("veth caliaaa still exists"),
        "{ann:?}"
    );
    assert_eq!(
        e.scanner.ipam.ips_by_handle("net.aaa").await.unwrap().len(),
        1
    );
    // The veth goes too: marked long enough ago (grace 0), reclaimed.
    e.links.set(&[]);
    let r = e.scanner.scan(&e.all().await).await;
    assert_eq!(r.reclaimed, vec![name(&a)], "{r:?}");
}

#[tokio::test]
async fn within_grace_waits_and_a_returning_workload_is_cleared() {
    let e = env(Duration::from_secs(300));
    let a = e.pod("aaa", "n1").await;
    e.links.set(&[]);
    assert_eq!(e.scanner.scan(&e.all().await).await.marked, vec![name(&a)]);
    let rev = e.scanner.client.store().revision().await.unwrap();
    for _ in 0..3 {
        assert_eq!(e.scanner.scan(&e.all().await).await, ScanReport::default());
    }
    assert_eq!(
        e.scanner.client.store().revision().await.unwrap(),
        rev,
        "waiting writes nothing"
    );
    let w = e.get(&a).await.unwrap();
    let since: u64 = w.metadata.annotations[STALE_SINCE_ANNOTATION]
        .parse()
        .unwrap();
    assert_eq!(
        w.metadata.annotations[RECLAIM_AT_ANNOTATION],
        (since + 300).to_string()
    );
    // Back (a restarted runtime re-created it): the mark goes.
    e.links.set(&["caliaaa"]);
    assert_eq!(e.scanner.scan(&e.all().await).await.cleared, vec![name(&a)]);
    let w = e.get(&a).await.unwrap();
    assert!(
        MARK_KEYS
            .iter()
            .all(|k| !w.metadata.annotations.contains_key(*k)),
        "{:?}",
        w.metadata.annotations
    );
    // Netns gone, veth still there: marked without a reclaim time; then
    // the veth goes: the mark keeps its time and gains its reclaim time.
    e.kill_netns("aaa");
    assert_eq!(e.scanner.scan(&e.all().await).await.marked, vec![name(&a)]);
    let w = e.get(&a).await.unwrap();
    assert!(!w.metadata.annotations.contains_key(RECLAIM_AT_ANNOTATION));
    let since: u64 = w.metadata.annotations[STALE_SINCE_ANNOTATION]
        .parse()
        .unwrap();
    e.links.set(&[]);
    assert_eq!(e.scanner.scan(&e.all().await).await.marked, vec![name(&a)]);
    let w = e.get(&a).await.unwrap();
    assert_eq!(
        w.metadata.annotations[STALE_SINCE_ANNOTATION],
        since.to_string()
    );
    assert_eq!(
        w.metadata.annotations[RECLAIM_AT_ANNOTATION],
        (since + 300).to_string()
    );
    assert!(
        w.metadata.annotations[STALE_REASON_ANNOTATION].ends_with("veth caliaaa is gone"),
        "{:?}",
        w.metadata.annotations
    );
    // Back again, netns file too.
    std::fs::write(e.dir.path().join("aaa"), "").unwrap();
    e.links.set(&["caliaaa"]);
    assert_eq!(e.scanner.scan(&e.all().await).await.cleared, vec![name(&a)]);
    let w = e.get(&a).await.unwrap();
    assert!(
        MARK_KEYS
            .iter()
            .all(|k| !w.metadata.annotations.contains_key(*k)),
        "{:?}",
        w.metadata.annotations
    );
    assert!(e.scanner.ipam.check(None).await.unwrap().is_clean());
}

#[tokio::test]
async fn other_nodes_endpoints_and_unknown_veths_are_left_alone() {
    let e = env(Duration::ZERO);
    let other = e.pod("ooo", "n2").await;
    let mut unknown = e.pod("uuu", "n1").await;
    unknown.spec.interface_name = None;
    let unknown = e.scanner.client.update(&unknown).await.unwrap();
    e.links.set(&[]);
    e.kill_netns("ooo");
    for _ in 0..2 {
        assert_eq!(e.scanner.scan(&e.all().await).await, ScanReport::default());
    }
    assert_eq!(e.get(&other).await.unwrap(), other);
    assert_eq!(e.get(&unknown).await.unwrap(), unknown);
}

#[tokio::test]
async fn without_a_recorded_network_every_handle_of_the_container_is_released() {
    let e = env(Duration::ZERO);
    let mut a = e.pod("aaa", "n1").await;
    a.metadata.annotations.remove(NETWORK_ANNOTATION);
    let a = e.scanner.client.update(&a).await.unwrap();
    e.links.set(&[]);
    e.scanner.scan(&e.all().await).await;
    let r = e.scanner.scan(&e.all().await).await;
    assert_eq!(r.reclaimed, vec![name(&a)]);
    assert!(
        e.scanner
            .ipam
            .ips_by_handle("net.aaa")
            .await
            .unwrap()
            .is_empty()
    );
}

#[test]
fn settings_are_read_and_bad_ones_refused_by_name() {
    let c = ReclaimConfig::from_values(None, None).unwrap();
    assert_eq!(
        (c.grace, c.interval),
        (reclaim::DEFAULT_GRACE, Some(DEFAULT_SCAN))
    );
    let c = ReclaimConfig::from_values(Some("2"), Some("0.5")).unwrap();
    assert_eq!(
        (c.grace, c.interval),
        (Duration::from_secs(2), Some(Duration::from_millis(500)))
    );
    assert_eq!(
        ReclaimConfig::from_values(None, Some("0"))
            .unwrap()
            .interval,
        None
    );
    for bad in ["-1", "soon", "NaN", "0.001"] {
        let e = ReclaimConfig::from_values(None, Some(bad)).unwrap_err();
        assert!(e.contains(SCAN_ENV) && e.contains(bad), "{e}");
    }
    let e = ReclaimConfig::from_values(Some("1.5"), None).unwrap_err();
    assert!(e.contains(reclaim::GRACE_ENV), "{e}");
}

/// A new sandbox of the same pod (same endpoint name, new container id,
/// its veth up) replaced the stale endpoint after the cache was read: the
/// scan reads it fresh and leaves it and its addresses alone. (The old
/// container's handle is then no endpoint's: `manxctl ipam check` reports
/// it as belonging to no live workload, and its GC releases it.)
#[tokio::test]
async fn a_replacing_sandbox_is_never_reclaimed_from_a_stale_cache() {
    let e = env(Duration::ZERO);
    let old = e.pod("old", "n1").await;
    e.links.set(&[]);
    e.scanner.scan(&e.all().await).await;
    let marked = e.get(&old).await.unwrap();
    assert!(
        marked
            .metadata
            .annotations
            .contains_key(STALE_SINCE_ANNOTATION)
    );
    // The new sandbox's ADD replaces the endpoint (as the plugin's put does).
    let new = e.pod("new", "n1").await;
    let mut replacing = new.clone();
    replacing.metadata.name = old.metadata.name.clone();
    replacing.metadata.resource_version = None;
    e.scanner.client.apply(&replacing).await.unwrap();
    e.links.set(&["calinew"]);
    let r = e.scanner.scan(std::slice::from_ref(&marked)).await;
    assert_eq!(r, ScanReport::default(), "{r:?}");
    let now = e.get(&old).await.unwrap();
    assert_eq!(now.spec.container_id.as_deref(), Some("new"));
    assert_eq!(
        e.scanner.ipam.ips_by_handle("net.new").await.unwrap().len(),
        1
    );
}
