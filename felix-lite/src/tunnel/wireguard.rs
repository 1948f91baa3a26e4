//! WireGuard (`wireguard.manx`): encryption of pod traffic between nodes.
//!
//! Not a pool encapsulation (not a [`super::Tunnel`]): `FelixConfiguration.wireguardEnabled`
//! turns it on for every IPv4 pool, and a remote block of a peer that has published its
//! public key is then routed `dev wireguard.manx` instead of through the pool's tunnel or
//! straight to the node. The device's peers are the other nodes, each with its blocks as
//! allowed IPs and `<node IP>:<port>` as endpoint, so WireGuard's cryptokey routing picks
//! the peer of a destination. The UDP packets go to node addresses, which are never inside
//! a pool route, so no routing table or fwmark rule is needed to keep them off the device.
//!
//! The device is configured through the kernel's WireGuard generic netlink family
//! (`netlink-packet-wireguard` messages over a `NETLINK_GENERIC` socket). The private key
//! is generated once per node (32 random bytes, clamped as `wg genkey` does) into a
//! root-only file; it is never logged ([`PrivateKey`]'s `Debug` prints no key) and never
//! leaves the node: the public key is read back from the kernel, which computes it.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use ipnetwork::IpNetwork;
use netlink_packet_core::{
    NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NetlinkMessage, NetlinkPayload, NetlinkSerializable,
};
use netlink_packet_generic::GenlMessage;
use netlink_packet_generic::ctrl::nlas::GenlCtrlAttrs;
use netlink_packet_generic::ctrl::{GenlCtrl, GenlCtrlCmd};
use netlink_packet_wireguard::{
    WireguardAddressFamily, WireguardAllowedIp, WireguardAllowedIpAttr, WireguardAttribute,
    WireguardCmd, WireguardMessage, WireguardPeer, WireguardPeerAttribute, WireguardPeerFlags,
};

use crate::netlink::NlError;

/// The device felix-lite owns for WireGuard.
pub const DEVICE: &str = "wireguard.manx";
/// Bytes WireGuard adds over an IPv4 underlay: IPv4 (20), UDP (8), the data message header
/// (16) and the Poly1305 tag (16).
pub const OVERHEAD: u32 = 60;
/// Length of a Curve25519 key.
pub const KEY_LEN: usize = 32;

/// A Curve25519 public key.
pub type PublicKey = [u8; KEY_LEN];

/// This node's private key. Its `Debug` never prints the key.
#[derive(Clone, PartialEq, Eq)]
pub struct PrivateKey([u8; KEY_LEN]);

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PrivateKey(<redacted>)")
    }
}

impl PrivateKey {
    /// 32 random bytes from the kernel, clamped for Curve25519 (RFC 7748 §5, as `wg genkey`).
    pub fn generate() -> std::io::Result<PrivateKey> {
        let mut k = [0u8; KEY_LEN];
        std::fs::File::open("/dev/urandom")?.read_exact(&mut k)?;
        Ok(PrivateKey::clamped(k))
    }

    fn clamped(mut k: [u8; KEY_LEN]) -> PrivateKey {
        k[0] &= 248;
        k[31] &= 127;
        k[31] |= 64;
        PrivateKey(k)
    }

    /// The key in `path` (base64, as `wg genkey` writes it), or a new one written there
    /// first, readable by root only (mode 0600, its folder created 0700).
    pub fn load_or_create(path: &Path) -> std::io::Result<PrivateKey> {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let bytes = base64_decode(text.trim()).ok_or_else(|| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!(
                            "{} does not hold a base64 WireGuard key of 32 bytes; remove it \
                             to have a new key generated",
                            path.display()
                        ),
                    )
                })?;
                // Files written by hand may be wider than 0600: tighten them.
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
                Ok(PrivateKey::clamped(bytes))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::DirBuilder::new()
                        .recursive(true)
                        .mode(0o700)
                        .create(dir)?;
                }
                let key = PrivateKey::generate()?;
                let tmp = path.with_extension("tmp");
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(&tmp)?;
                writeln!(f, "{}", base64_encode(&key.0))?;
                f.sync_all()?;
                std::fs::rename(&tmp, path)?;
                Ok(key)
            }
            Err(e) => Err(e),
        }
    }

    pub(crate) fn bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

/// One peer of `wireguard.manx`: another node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireguardPeerSpec {
    /// Its WireGuard UDP endpoint: node address and port.
    pub endpoint: SocketAddr,
    /// Its blocks.
    pub allowed_ips: Vec<IpNetwork>,
}

/// The device wanted (beside the link itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireguardDevice {
    /// MTU.
    pub mtu: u32,
    /// UDP listening port.
    pub port: u16,
    /// Peers by public key.
    pub peers: BTreeMap<PublicKey, WireguardPeerSpec>,
}

/// The line logged (once) and reported when the kernel has no WireGuard.
pub fn unsupported_message() -> String {
    format!(
        "WireGuard is enabled (FelixConfiguration wireguardEnabled) but this kernel has no \
         WireGuard (CONFIG_WIREGUARD): {DEVICE} cannot be created, so no public key is \
         published and pod traffic to and from this node stays unencrypted in its pools' \
         own encapsulation; use a kernel with WireGuard (5.6 or later, or the wireguard \
         module) or set wireguardEnabled: false"
    )
}

/// The persistent-keepalive interval (seconds) a peer is added with for the length of one
/// message: the kernel sends a keepalive, and so a handshake initiation, the moment a peer's
/// interval goes from 0 to non-zero (`set_peer` in drivers/net/wireguard/netlink.c). See
/// [`set_device_message`].
const HANDSHAKE_KICK_SECS: u16 = 1;

/// The `WG_CMD_SET_DEVICE` message that makes `ifname` exactly `dev` with key `key`, given
/// the peers the kernel has now (`present`), and the peers it adds.
///
/// Peers are changed one by one, never replaced as a whole (`WGDEVICE_F_REPLACE_PEERS`
/// would remove every peer and re-add it, dropping every session of the node on any change
/// of any block or node): a peer of `dev` gets its endpoint and exactly its allowed IPs
/// (`WGPEER_F_REPLACE_ALLOWEDIPS`), which leave its session alone, and a peer of `present`
/// not in `dev` is removed (`WGPEER_F_REMOVE_ME`) last: a node's new key takes over its
/// allowed IPs from the old one (the kernel moves a prefix to the peer that inserts it)
/// before the old one goes, so no packet meanwhile finds no peer (WireGuard answers those
/// with ICMP host unreachable, and ping then pauses).
///
/// A peer not in `present` (a node that appeared or published a new key, e.g. after its key
/// file was deleted and manx-node restarted) is handshaken at once: it is added with a
/// keepalive interval, which makes the kernel send a handshake initiation immediately, and
/// [`end_handshake_kick_message`] sets the interval back to 0 (no persistent keepalive, as
/// Calico's default). Without that, a node with a new key whose first initiation reached a
/// peer before the peer knew the key would wait out WireGuard's 5 s REKEY_TIMEOUT before
/// trying again, and traffic only it sends would stop for those 5 s.
pub fn set_device_message(
    ifname: &str,
    key: &PrivateKey,
    dev: &WireguardDevice,
    present: &BTreeSet<PublicKey>,
) -> (WireguardMessage, Vec<PublicKey>) {
    let mut peers = Vec::with_capacity(dev.peers.len());
    let mut added = Vec::new();
    for (pk, p) in &dev.peers {
        let allowed = p
            .allowed_ips
            .iter()
            .map(|net| {
                WireguardAllowedIp(vec![
                    WireguardAllowedIpAttr::Family(if net.is_ipv4() {
                        WireguardAddressFamily::Ipv4
                    } else {
                        WireguardAddressFamily::Ipv6
                    }),
                    WireguardAllowedIpAttr::IpAddr(net.network()),
                    WireguardAllowedIpAttr::Cidr(net.prefix()),
                ])
            })
            .collect();
        let keepalive = if present.contains(pk) {
            0
        } else {
            added.push(*pk);
            HANDSHAKE_KICK_SECS
        };
        peers.push(WireguardPeer(vec![
            WireguardPeerAttribute::PublicKey(*pk),
            WireguardPeerAttribute::Flags(WireguardPeerFlags::ReplaceAllowedIps),
            WireguardPeerAttribute::Endpoint(p.endpoint),
            WireguardPeerAttribute::AllowedIps(allowed),
            // Last: the kernel sends the kick's keepalive after endpoint and allowed IPs are set.
            WireguardPeerAttribute::PersistentKeepalive(keepalive),
        ]));
    }
    peers.extend(
        present
            .iter()
            .filter(|pk| !dev.peers.contains_key(*pk))
            .map(|pk| {
                WireguardPeer(vec![
                    WireguardPeerAttribute::PublicKey(*pk),
                    WireguardPeerAttribute::Flags(WireguardPeerFlags::RemoveMe),
                ])
            }),
    );
    let msg = WireguardMessage {
        cmd: WireguardCmd::SetDevice,
        attributes: vec![
            WireguardAttribute::IfName(ifname.to_string()),
            WireguardAttribute::PrivateKey(*key.bytes()),
            WireguardAttribute::ListenPort(dev.port),
            WireguardAttribute::Peers(peers),
        ],
    };
    (msg, added)
}

/// The message that ends the handshake kick of [`set_device_message`]: the `added` peers'
/// keepalive interval back to 0. The initiation already under way and the keepalive queued
/// behind it are still sent (the kernel checks the interval only when its timer fires).
pub fn end_handshake_kick_message(ifname: &str, added: &[PublicKey]) -> WireguardMessage {
    WireguardMessage {
        cmd: WireguardCmd::SetDevice,
        attributes: vec![
            WireguardAttribute::IfName(ifname.to_string()),
            WireguardAttribute::Peers(
                added
                    .iter()
                    .map(|pk| {
                        WireguardPeer(vec![
                            WireguardPeerAttribute::PublicKey(*pk),
                            WireguardPeerAttribute::Flags(WireguardPeerFlags::UpdateOnly),
                            WireguardPeerAttribute::PersistentKeepalive(0),
                        ])
                    })
                    .collect(),
            ),
        ],
    }
}

/// What the kernel's WireGuard device holds (`WG_CMD_GET_DEVICE`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelDevice {
    /// The public key computed from its private key, if it has one.
    pub public_key: Option<PublicKey>,
    /// Its peers' public keys.
    pub peers: BTreeSet<PublicKey>,
}

impl KernelDevice {
    /// The device from the messages of a `WG_CMD_GET_DEVICE` dump (a device with many peers
    /// comes in several, each repeating the device's own attributes).
    pub fn from_dump<'a>(messages: impl IntoIterator<Item = &'a WireguardMessage>) -> Self {
        let mut dev = KernelDevice::default();
        for attr in messages.into_iter().flat_map(|m| m.attributes.iter()) {
            match attr {
                WireguardAttribute::PublicKey(k) if *k != [0u8; KEY_LEN] => {
                    dev.public_key = Some(*k)
                }
                WireguardAttribute::Peers(peers) => {
                    for p in peers {
                        if let Some(pk) = p.0.iter().find_map(|a| match a {
                            WireguardPeerAttribute::PublicKey(k) => Some(*k),
                            _ => None,
                        }) {
                            dev.peers.insert(pk);
                        }
                    }
                }
                _ => {}
            }
        }
        dev
    }
}

/// A `NETLINK_GENERIC` socket to the kernel's `wireguard` family, in the current network
/// namespace. Requests are synchronous: the kernel answers at once.
#[derive(Debug)]
pub struct WireguardSocket {
    socket: netlink_sys::Socket,
    family: u16,
    seq: u32,
}

impl WireguardSocket {
    /// Open the socket and resolve the family. `ENOENT` means the kernel has no WireGuard.
    pub fn open() -> Result<WireguardSocket, NlError> {
        let op = "open";
        let mut socket = netlink_sys::Socket::new(netlink_sys::protocols::NETLINK_GENERIC)
            .map_err(|e| io_error(op, "generic netlink socket", e))?;
        socket
            .bind_auto()
            .map_err(|e| io_error(op, "generic netlink socket", e))?;
        socket
            .connect(&netlink_sys::SocketAddr::new(0, 0))
            .map_err(|e| io_error(op, "generic netlink socket", e))?;
        let mut s = WireguardSocket {
            socket,
            family: 0,
            seq: 0,
        };
        let ctrl = GenlMessage::from_payload(GenlCtrl {
            cmd: GenlCtrlCmd::GetFamily,
            nlas: vec![GenlCtrlAttrs::FamilyName("wireguard".to_string())],
        });
        let answers = s.request(
            ctrl,
            NLM_F_REQUEST | NLM_F_ACK,
            "resolve family",
            "wireguard",
        )?;
        s.family = answers
            .iter()
            .flat_map(|m| m.payload.nlas.iter())
            .find_map(|a| match a {
                GenlCtrlAttrs::FamilyId(id) => Some(*id),
                _ => None,
            })
            .ok_or_else(|| NlError::other("resolve family", "wireguard", "no family id"))?;
        Ok(s)
    }

    /// Configure `ifname` as `dev` with `key`, changing only what differs from the kernel's
    /// peers (see [`set_device_message`]); returns the device as the kernel then has it.
    pub fn set_device(
        &mut self,
        ifname: &str,
        key: &PrivateKey,
        dev: &WireguardDevice,
    ) -> Result<KernelDevice, NlError> {
        let before = self.device(ifname)?;
        let (msg, added) = set_device_message(ifname, key, dev, &before.peers);
        self.set(msg, ifname)?;
        if !added.is_empty() {
            self.set(end_handshake_kick_message(ifname, &added), ifname)?;
        }
        self.device(ifname)
    }

    fn set(&mut self, msg: WireguardMessage, ifname: &str) -> Result<(), NlError> {
        let mut msg = GenlMessage::from_payload(msg);
        msg.set_resolved_family_id(self.family);
        self.request(
            msg,
            NLM_F_REQUEST | NLM_F_ACK,
            "set wireguard device",
            ifname,
        )?;
        Ok(())
    }

    /// The kernel's view of `ifname` (`WG_CMD_GET_DEVICE`): its public key and peers.
    pub fn device(&mut self, ifname: &str) -> Result<KernelDevice, NlError> {
        let mut msg = GenlMessage::from_payload(WireguardMessage {
            cmd: WireguardCmd::GetDevice,
            attributes: vec![WireguardAttribute::IfName(ifname.to_string())],
        });
        msg.set_resolved_family_id(self.family);
        let answers = self.request(
            msg,
            NLM_F_REQUEST | NLM_F_DUMP,
            "get wireguard device",
            ifname,
        )?;
        Ok(KernelDevice::from_dump(answers.iter().map(|m| &m.payload)))
    }

    /// Send one request; collect the answers up to the ACK or the end of the dump.
    fn request<F>(
        &mut self,
        msg: GenlMessage<F>,
        flags: u16,
        op: &str,
        object: &str,
    ) -> Result<Vec<GenlMessage<F>>, NlError>
    where
        GenlMessage<F>: NetlinkSerializable + netlink_packet_core::NetlinkDeserializable,
        F: std::fmt::Debug,
    {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let mut nl = NetlinkMessage::from(msg);
        nl.header.flags = flags;
        nl.header.sequence_number = seq;
        nl.finalize();
        let mut buf = vec![0u8; nl.buffer_len()];
        nl.serialize(&mut buf);
        self.socket
            .send(&buf, 0)
            .map_err(|e| io_error(op, object, e))?;
        let mut out = Vec::new();
        let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        loop {
            let (data, _) = self
                .socket
                .recv_from_full()
                .map_err(|e| io_error(op, object, e))?;
            let mut offset = 0;
            while offset < data.len() {
                let m = NetlinkMessage::<GenlMessage<F>>::deserialize(&data[offset..])
                    .map_err(|e| NlError::other(op, object, format!("decode: {e}")))?;
                let len = m.header.length as usize;
                if len == 0 {
                    break;
                }
                offset += (len + 3) & !3;
                if m.header.sequence_number != seq {
                    continue;
                }
                match m.payload {
                    NetlinkPayload::Error(e) => match e.code {
                        None => return Ok(out),
                        Some(code) => return Err(NlError::errno(op, object, -code.get())),
                    },
                    NetlinkPayload::Done(_) => return Ok(out),
                    NetlinkPayload::InnerMessage(inner) => {
                        out.push(inner);
                        if !dump && m.header.flags & netlink_packet_core::NLM_F_MULTIPART == 0 {
                            // A non-dump answer is followed by its ACK.
                            continue;
                        }
                    }
                    _ => {}
                }
            }
        }
    }
}

fn io_error(op: &str, object: &str, e: std::io::Error) -> NlError {
    match e.raw_os_error() {
        Some(errno) => NlError::errno(op, object, errno),
        None => NlError::other(op, object, e.to_string()),
    }
}

/// The WireGuard endpoint of a node: its uplink address and the port.
pub fn endpoint(node_ip: IpAddr, port: u16) -> SocketAddr {
    SocketAddr::new(node_ip, port)
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding, as `wg` prints keys and Calico stores
/// `status.wireguardPublicKey`.
pub fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk.len();
        let v = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= n {
                out.push(B64[((v >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A 32-byte key from its base64 text, or None if it is not one.
pub fn base64_decode(text: &str) -> Option<[u8; KEY_LEN]> {
    let t = text.as_bytes();
    if t.len() != 44 || t[43] != b'=' {
        return None;
    }
    let mut out = Vec::with_capacity(33);
    for chunk in t.chunks(4) {
        let mut v = 0u32;
        let mut pads = 0;
        for &c in chunk {
            let d = match c {
                b'=' => {
                    pads += 1;
                    0
                }
                _ if pads > 0 => return None,
                _ => B64.iter().position(|&b| b == c)? as u32,
            };
            v = (v << 6) | d;
        }
        let bytes = v.to_be_bytes();
        out.extend_from_slice(&bytes[1..4 - pads]);
    }
    out.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::{Emitable, ParseableParametrized};
    use netlink_packet_generic::GenlHeader;

    #[test]
    fn base64_matches_wg_and_round_trips() {
        // `wg pubkey` of the all-zero-but-clamped key is not needed: check the codec on a
        // known vector (RFC 4648 §10) and on 32-byte keys.
        assert_eq!(base64_encode(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64_encode(b"fo"), "Zm8=");
        let key: [u8; 32] = std::array::from_fn(|i| (i * 7 + 3) as u8);
        let text = base64_encode(&key);
        assert_eq!(text.len(), 44);
        assert_eq!(base64_decode(&text), Some(key));
        assert_eq!(base64_decode("not a key"), None);
        assert_eq!(base64_decode(&text.replace('=', "A")), None);
    }

    #[test]
    fn generated_keys_are_clamped_and_kept_root_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/wireguard.key");
        let k = PrivateKey::load_or_create(&path).unwrap();
        assert_eq!(k.0[0] & 7, 0);
        assert_eq!(k.0[31] & 0xc0, 0x40);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dir_mode = std::fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(dir_mode, 0o700);
        // The same key on the next start; a new one once the file is removed.
        assert_eq!(PrivateKey::load_or_create(&path).unwrap(), k);
        std::fs::remove_file(&path).unwrap();
        assert_ne!(PrivateKey::load_or_create(&path).unwrap(), k);
        assert_eq!(format!("{k:?}"), "PrivateKey(<redacted>)");
    }

    fn peer(endpoint: &str, block: &str) -> WireguardPeerSpec {
        WireguardPeerSpec {
            endpoint: endpoint.parse().unwrap(),
            allowed_ips: vec![block.parse().unwrap()],
        }
    }

    fn emit_and_parse(msg: &WireguardMessage) -> WireguardMessage {
        // Emit, then parse back as the kernel would read it.
        let mut buf = vec![0u8; msg.buffer_len()];
        msg.emit(&mut buf);
        let header = GenlHeader { cmd: 1, version: 1 };
        WireguardMessage::parse_with_param(&buf[..], header).unwrap()
    }

    /// Peers change one by one (never WGDEVICE_F_REPLACE_PEERS, which would drop every
    /// session): a gone peer is removed last, a kept one gets exactly its allowed IPs and no
    /// keepalive, a new one is kicked into a handshake (keepalive on, then off again).
    #[test]
    fn set_device_changes_peers_one_by_one_and_kicks_new_ones() {
        let key = PrivateKey::clamped([9; 32]);
        let dev = WireguardDevice {
            mtu: 1440,
            port: 51820,
            peers: BTreeMap::from([
                ([1; 32], peer("198.19.0.2:51820", "10.19.1.0/26")),
                ([3; 32], peer("198.19.0.3:51820", "10.19.3.0/26")),
            ]),
        };
        // In the kernel now: [3] (kept) and [2] (a node's old key, gone from the cluster).
        let present = BTreeSet::from([[2; 32], [3; 32]]);
        let (msg, added) = set_device_message(DEVICE, &key, &dev, &present);
        assert_eq!(added, vec![[1; 32]]);
        let back = emit_and_parse(&msg);
        assert_eq!(back, msg);
        assert!(
            !back
                .attributes
                .iter()
                .any(|a| matches!(a, WireguardAttribute::Flags(_))),
            "no device flags (no REPLACE_PEERS): {back:?}"
        );
        let WireguardAttribute::Peers(peers) = &back.attributes[3] else {
            panic!("peers last: {back:?}")
        };
        assert_eq!(
            peers.last().unwrap().0,
            vec![
                WireguardPeerAttribute::PublicKey([2; 32]),
                WireguardPeerAttribute::Flags(WireguardPeerFlags::RemoveMe),
            ],
            "the removal comes last"
        );
        assert_eq!(peers.len(), 3);
        let of = |k: [u8; 32]| {
            peers
                .iter()
                .find(|p| p.0.contains(&WireguardPeerAttribute::PublicKey(k)))
                .unwrap()
        };
        for (k, keepalive) in [([1; 32], HANDSHAKE_KICK_SECS), ([3; 32], 0)] {
            let p = of(k);
            assert!(p.0.contains(&WireguardPeerAttribute::Flags(
                WireguardPeerFlags::ReplaceAllowedIps
            )));
            assert!(p.0.contains(&WireguardPeerAttribute::Endpoint(dev.peers[&k].endpoint)));
            assert_eq!(
                p.0.last(),
                Some(&WireguardPeerAttribute::PersistentKeepalive(keepalive)),
                "{p:?}"
            );
        }
        let end = emit_and_parse(&end_handshake_kick_message(DEVICE, &added));
        let WireguardAttribute::Peers(peers) = &end.attributes[1] else {
            panic!("{end:?}")
        };
        assert_eq!(
            peers[0].0,
            vec![
                WireguardPeerAttribute::PublicKey([1; 32]),
                WireguardPeerAttribute::Flags(WireguardPeerFlags::UpdateOnly),
                WireguardPeerAttribute::PersistentKeepalive(0),
            ]
        );
        // The same device again: nothing added, nothing removed.
        let (msg, added) =
            set_device_message(DEVICE, &key, &dev, &BTreeSet::from([[1; 32], [3; 32]]));
        assert!(added.is_empty());
        let WireguardAttribute::Peers(peers) = &msg.attributes[3] else {
            panic!()
        };
        assert_eq!(peers.len(), 2);
    }

    /// A dump in two messages (many peers): the key once, the peers of both.
    #[test]
    fn kernel_device_collects_peers_across_dump_messages() {
        let part = |peer: [u8; 32]| WireguardMessage {
            cmd: WireguardCmd::GetDevice,
            attributes: vec![
                WireguardAttribute::IfName(DEVICE.into()),
                WireguardAttribute::PublicKey([7; 32]),
                WireguardAttribute::Peers(vec![WireguardPeer(vec![
                    WireguardPeerAttribute::PublicKey(peer),
                    WireguardPeerAttribute::PersistentKeepalive(0),
                ])]),
            ],
        };
        let msgs = [part([1; 32]), part([2; 32])];
        let dev = KernelDevice::from_dump(msgs.iter());
        assert_eq!(dev.public_key, Some([7; 32]));
        assert_eq!(dev.peers, BTreeSet::from([[1; 32], [2; 32]]));
        let empty = WireguardMessage {
            cmd: WireguardCmd::GetDevice,
            attributes: vec![WireguardAttribute::PublicKey([0; 32])],
        };
        assert_eq!(KernelDevice::from_dump([&empty]), KernelDevice::default());
    }

    #[test]
    fn on_this_kernel_the_family_is_present_or_missing_with_enoent() {
        // The build machines' kernel has no WireGuard: resolving the family fails with
        // ENOENT (the dataplane's "no WireGuard" case). A kernel with it resolves.
        match WireguardSocket::open() {
            Ok(s) => assert_ne!(s.family, 0),
            Err(e) => assert_eq!(e.errno, Some(libc::ENOENT), "{e}"),
        }
    }
}
