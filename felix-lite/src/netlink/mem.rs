//! An in-memory kernel for unit tests. It keeps the semantics felix-lite relies on (route keys,
//! `EEXIST` on add, `ESRCH` on delete, links owning their routes) and records every operation so
//! tests can count writes.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use ipnetwork::IpNetwork;

use super::{
    EEXIST, ENODEV, EOPNOTSUPP, ESRCH, KernelAddr, KernelLink, KernelRoute, LinkKind, LinkSpec,
    NeighTable, Neighbour, Netlink, NlError, RouteOp,
};

/// One recorded operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Dump links.
    DumpLinks,
    /// Dump addresses.
    DumpAddrs,
    /// Dump routes.
    DumpRoutes,
    /// Dump a neighbour table.
    DumpNeigh(NeighTable, u32),
    /// Create a link.
    AddLink(String),
    /// Delete a link.
    DelLink(u32),
    /// Set MTU / up.
    SetLink(u32, u32, bool),
    /// Add an address.
    AddAddr(u32, IpNetwork),
    /// Delete an address.
    DelAddr(u32, IpNetwork),
    /// One route write.
    Route(RouteOp),
    /// Create or replace a neighbour.
    SetNeigh(NeighTable, Neighbour),
    /// Delete a neighbour.
    DelNeigh(NeighTable, Neighbour),
}

impl Op {
    /// Whether the operation changes kernel state.
    pub fn is_write(&self) -> bool {
        !matches!(
            self,
            Op::DumpLinks | Op::DumpAddrs | Op::DumpRoutes | Op::DumpNeigh(..)
        )
    }
}

#[derive(Debug, Default)]
struct State {
    links: Vec<KernelLink>,
    addrs: Vec<KernelAddr>,
    routes: Vec<KernelRoute>,
    neighs: BTreeSet<(TableTag, Neighbour)>,
    next_index: u32,
    ipip_unsupported: bool,
    route_failures: HashMap<IpNetwork, i32>,
    log: Vec<Op>,
}

type TableTag = u8;

fn tag(t: NeighTable) -> TableTag {
    match t {
        NeighTable::Neigh => 0,
        NeighTable::Fdb => 1,
    }
}

/// The in-memory kernel. Starts with `lo` (index 1).
#[derive(Debug)]
pub struct MemNetlink {
    state: Mutex<State>,
}

impl Default for MemNetlink {
    fn default() -> Self {
        Self::new()
    }
}

impl MemNetlink {
    /// A kernel with only `lo`.
    pub fn new() -> Self {
        let s = State {
            links: vec![KernelLink {
                index: 1,
                name: "lo".into(),
                kind: LinkKind::Other(None),
                mtu: 65536,
                mac: None,
                up: true,
            }],
            next_index: 2,
            ..State::default()
        };
        MemNetlink {
            state: Mutex::new(s),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Make creating `ipip` links fail with `EOPNOTSUPP`, as on a kernel without IPIP.
    pub fn set_ipip_unsupported(&self, unsupported: bool) {
        self.lock().ipip_unsupported = unsupported;
    }

    /// Add a link without recording an operation (test setup). Returns its index.
    pub fn add_host_link(&self, name: &str, mtu: u32, addrs: &[IpNetwork]) -> u32 {
        let mut s = self.lock();
        let index = s.next_index;
        s.next_index += 1;
        s.links.push(KernelLink {
            index,
            name: name.into(),
            kind: LinkKind::Other(Some("veth".into())),
            mtu,
            mac: Some(crate::types::MacAddr([0x02, 0, 0, 0, 0, index as u8])),
            up: true,
        });
        for a in addrs {
            s.addrs.push(KernelAddr {
                index,
                addr: *a,
                global: !a.ip().is_loopback(),
            });
        }
        index
    }

    /// Set a link admin state without recording an operation (test setup).
    pub fn set_host_link_up(&self, name: &str, up: bool) {
        let mut s = self.lock();
        if let Some(l) = s.links.iter_mut().find(|l| l.name == name) {
            l.up = up;
        }
    }

    /// Insert a route without recording an operation (test setup: other daemons' routes,
    /// stale routes from a previous run).
    pub fn insert_route(&self, r: KernelRoute) {
        self.lock().routes.push(r);
    }

    /// Make every later write for `dst` fail with `errno` until cleared with errno 0.
    pub fn fail_route(&self, dst: IpNetwork, errno: i32) {
        let mut s = self.lock();
        if errno == 0 {
            s.route_failures.remove(&dst);
        } else {
            s.route_failures.insert(dst, errno);
        }
    }

    /// Every recorded operation, oldest first.
    pub fn log(&self) -> Vec<Op> {
        self.lock().log.clone()
    }

    /// Forget the recorded operations.
    pub fn clear_log(&self) {
        self.lock().log.clear();
    }

    /// Number of recorded write operations.
    pub fn writes(&self) -> usize {
        self.lock().log.iter().filter(|o| o.is_write()).count()
    }

    /// The current routes.
    pub fn route_table(&self) -> Vec<KernelRoute> {
        self.lock().routes.clone()
    }

    /// Index of a link by name.
    pub fn index_of(&self, name: &str) -> Option<u32> {
        self.lock()
            .links
            .iter()
            .find(|l| l.name == name)
            .map(|l| l.index)
    }

    /// The current neighbours / FDB entries of a table.
    pub fn neighbour_table(&self, table: NeighTable) -> Vec<Neighbour> {
        self.lock()
            .neighs
            .iter()
            .filter(|(t, _)| *t == tag(table))
            .map(|(_, n)| n.clone())
            .collect()
    }

    /// The current link list.
    pub fn link_list(&self) -> Vec<KernelLink> {
        self.lock().links.clone()
    }

    /// The current address list.
    pub fn address_list(&self) -> Vec<KernelAddr> {
        self.lock().addrs.clone()
    }
}

fn same_key(a: &KernelRoute, b: &KernelRoute) -> bool {
    a.dst == b.dst && a.table == b.table
}

fn apply_one(s: &mut State, op: &RouteOp) -> Result<(), NlError> {
    let r = op.route();
    if let Some(e) = s.route_failures.get(&r.dst) {
        return Err(NlError::errno("route", r.dst.to_string(), *e));
    }
    if let Some(oif) = r.oif
        && !matches!(op, RouteOp::Delete(_))
        && !s.links.iter().any(|l| l.index == oif)
    {
        return Err(NlError::errno("add route", r.to_string(), ENODEV));
    }
    match op {
        RouteOp::Add(r) => {
            if s.routes.iter().any(|x| same_key(x, r)) {
                return Err(NlError::errno("add route", r.to_string(), EEXIST));
            }
            s.routes.push(r.clone());
        }
        RouteOp::Replace(r) => {
            if let Some(x) = s.routes.iter_mut().find(|x| same_key(x, r)) {
                *x = r.clone();
            } else {
                s.routes.push(r.clone());
            }
        }
        RouteOp::Delete(r) => {
            // Like the kernel: a non-zero protocol in the request must match.
            let pos = s
                .routes
                .iter()
                .position(|x| same_key(x, r) && (r.protocol == 0 || x.protocol == r.protocol));
            match pos {
                Some(p) => {
                    s.routes.remove(p);
                }
                None => return Err(NlError::errno("delete route", r.to_string(), ESRCH)),
            }
        }
    }
    Ok(())
}

#[async_trait]
impl Netlink for MemNetlink {
    async fn links(&self) -> Result<Vec<KernelLink>, NlError> {
        let mut s = self.lock();
        s.log.push(Op::DumpLinks);
        Ok(s.links.clone())
    }

    async fn add_link(&self, spec: &LinkSpec) -> Result<(), NlError> {
        let mut s = self.lock();
        s.log.push(Op::AddLink(spec.name.clone()));
        if spec.kind == LinkKind::Ipip && s.ipip_unsupported {
            return Err(NlError::errno("add link", &spec.name, EOPNOTSUPP));
        }
        if s.links.iter().any(|l| l.name == spec.name) {
            return Err(NlError::errno("add link", &spec.name, EEXIST));
        }
        let index = s.next_index;
        s.next_index += 1;
        s.links.push(KernelLink {
            index,
            name: spec.name.clone(),
            kind: spec.kind.clone(),
            mtu: spec.mtu,
            mac: spec.mac,
            up: false,
        });
        Ok(())
    }

    async fn del_link(&self, index: u32) -> Result<(), NlError> {
        let mut s = self.lock();
        s.log.push(Op::DelLink(index));
        let Some(pos) = s.links.iter().position(|l| l.index == index) else {
            return Err(NlError::errno("delete link", index.to_string(), ENODEV));
        };
        s.links.remove(pos);
        s.addrs.retain(|a| a.index != index);
        s.routes.retain(|r| r.oif != Some(index));
        s.neighs.retain(|(_, n)| n.index != index);
        Ok(())
    }

    async fn set_link(&self, index: u32, mtu: u32, up: bool) -> Result<(), NlError> {
        let mut s = self.lock();
        s.log.push(Op::SetLink(index, mtu, up));
        let Some(l) = s.links.iter_mut().find(|l| l.index == index) else {
            return Err(NlError::errno("set link", index.to_string(), ENODEV));
        };
        l.mtu = mtu;
        l.up = up;
        Ok(())
    }

    async fn addresses(&self) -> Result<Vec<KernelAddr>, NlError> {
        let mut s = self.lock();
        s.log.push(Op::DumpAddrs);
        Ok(s.addrs.clone())
    }

    async fn add_address(&self, index: u32, addr: IpNetwork) -> Result<(), NlError> {
        let mut s = self.lock();
        s.log.push(Op::AddAddr(index, addr));
        if s.addrs.iter().any(|a| a.index == index && a.addr == addr) {
            return Err(NlError::errno("add address", addr.to_string(), EEXIST));
        }
        s.addrs.push(KernelAddr {
            index,
            addr,
            global: true,
        });
        Ok(())
    }

    async fn del_address(&self, index: u32, addr: IpNetwork) -> Result<(), NlError> {
        let mut s = self.lock();
        s.log.push(Op::DelAddr(index, addr));
        let before = s.addrs.len();
        s.addrs.retain(|a| !(a.index == index && a.addr == addr));
        if s.addrs.len() == before {
            return Err(NlError::errno(
                "delete address",
                addr.to_string(),
                super::ENOENT,
            ));
        }
        Ok(())
    }

    async fn routes(&self) -> Result<Vec<KernelRoute>, NlError> {
        let mut s = self.lock();
        s.log.push(Op::DumpRoutes);
        Ok(s.routes.clone())
    }

    async fn apply_routes(&self, ops: Vec<RouteOp>) -> Vec<Result<(), NlError>> {
        let mut s = self.lock();
        ops.into_iter()
            .map(|op| {
                let res = apply_one(&mut s, &op);
                s.log.push(Op::Route(op));
                res
            })
            .collect()
    }

    async fn neighbours(&self, table: NeighTable, index: u32) -> Result<Vec<Neighbour>, NlError> {
        let mut s = self.lock();
        s.log.push(Op::DumpNeigh(table, index));
        Ok(s.neighs
            .iter()
            .filter(|(t, n)| *t == tag(table) && n.index == index)
            .map(|(_, n)| n.clone())
            .collect())
    }

    async fn set_neighbour(&self, table: NeighTable, n: &Neighbour) -> Result<(), NlError> {
        let mut s = self.lock();
        s.log.push(Op::SetNeigh(table, n.clone()));
        if !s.links.iter().any(|l| l.index == n.index) {
            return Err(NlError::errno("set neighbour", n.ip.to_string(), ENODEV));
        }
        // Replace semantics: an ARP entry is keyed by IP, an FDB entry by MAC.
        s.neighs.retain(|(t, x)| {
            !(*t == tag(table)
                && x.index == n.index
                && match table {
                    NeighTable::Neigh => x.ip == n.ip,
                    NeighTable::Fdb => x.mac == n.mac,
                })
        });
        s.neighs.insert((tag(table), n.clone()));
        Ok(())
    }

    async fn del_neighbour(&self, table: NeighTable, n: &Neighbour) -> Result<(), NlError> {
        let mut s = self.lock();
        s.log.push(Op::DelNeigh(table, n.clone()));
        if !s.neighs.remove(&(tag(table), n.clone())) {
            return Err(NlError::errno(
                "delete neighbour",
                IpAddr::to_string(&n.ip),
                super::ENOENT,
            ));
        }
        Ok(())
    }
}
