//! Packing prefixes into UPDATEs that fit the session's maximum message
//! length (RFC 4271 §4.1: 4096 octets, RFC 8654: 65535 when negotiated).

use super::attribute::PathAttribute;
use super::error::EncodeError;
use super::nlri::{AfiSafi, Nlri, nlri_len};
use super::open::SessionCaps;
use super::update::Update;
use super::{Message, encode_message};

impl Update {
    /// Encoded size of the whole message (header included) for `caps`.
    pub fn encoded_len(&self, caps: &SessionCaps) -> Result<usize, EncodeError> {
        let mut out = Vec::new();
        let big = SessionCaps {
            extended_message: true,
            ..caps.clone()
        };
        encode_message(&Message::Update(self.clone()), &big, &mut out)?;
        Ok(out.len())
    }

    /// Split into UPDATEs that each fit `caps.max_message_len()`, keeping
    /// every prefix once: withdrawals first (IPv4 withdrawn field, then
    /// MP_UNREACH), then announcements with the same path attributes
    /// (IPv4 NLRI field, then MP_REACH). An UPDATE that fits is returned as
    /// is. Fails only if the attributes alone do not fit.
    pub fn split_to_fit(&self, caps: &SessionCaps) -> Result<Vec<Update>, EncodeError> {
        let max = caps.max_message_len();
        if self.encoded_len(caps)? <= max {
            return Ok(vec![self.clone()]);
        }
        let mut out = Vec::new();
        let v4 = AfiSafi::IPV4_UNICAST;

        // Withdrawals carry no path attributes besides MP_UNREACH.
        let plain = Update::default();
        pack(
            &plain,
            &self.withdrawn,
            caps.tx_path_ids(v4),
            max,
            caps,
            &mut out,
            |u, chunk| {
                u.withdrawn = chunk;
            },
        )?;
        if let Some(unreach) = self.mp_unreach() {
            let base = Update {
                attributes: vec![PathAttribute::MpUnreach(super::MpUnreach {
                    family: unreach.family,
                    withdrawn: Vec::new(),
                })],
                ..Update::default()
            };
            let ids = caps.tx_path_ids(unreach.family);
            pack(
                &base,
                &unreach.withdrawn,
                ids,
                max,
                caps,
                &mut out,
                |u, chunk| {
                    if let Some(PathAttribute::MpUnreach(m)) = u.attributes.first_mut() {
                        m.withdrawn = chunk;
                    }
                },
            )?;
        }

        // Announcements: the path attributes (without MP_UNREACH) on each.
        let attributes: Vec<PathAttribute> = self
            .attributes
            .iter()
            .filter(|a| !matches!(a, PathAttribute::MpUnreach(_)))
            .cloned()
            .collect();
        let announce = Update {
            attributes: attributes
                .iter()
                .filter(|a| !matches!(a, PathAttribute::MpReach(_)))
                .cloned()
                .collect(),
            attribute_flags: self.attribute_flags.clone(),
            ..Update::default()
        };
        pack(
            &announce,
            &self.nlri,
            caps.tx_path_ids(v4),
            max,
            caps,
            &mut out,
            |u, chunk| {
                u.nlri = chunk;
            },
        )?;
        if let Some(reach) = self.mp_reach() {
            let mut base = Update {
                attributes,
                attribute_flags: self.attribute_flags.clone(),
                ..Update::default()
            };
            // NEXT_HOP only goes with IPv4 NLRI in the NLRI field.
            base.attributes
                .retain(|a| !matches!(a, PathAttribute::NextHop(_)));
            for a in &mut base.attributes {
                if let PathAttribute::MpReach(r) = a {
                    r.nlri.clear();
                }
            }
            let ids = caps.tx_path_ids(reach.family);
            pack(&base, &reach.nlri, ids, max, caps, &mut out, |u, chunk| {
                for a in &mut u.attributes {
                    if let PathAttribute::MpReach(r) = a {
                        r.nlri = chunk.clone();
                    }
                }
            })?;
        }
        Ok(out)
    }
}

/// Greedily fill copies of `base` with `items` (via `set`) so that each
/// encodes within `max`.
fn pack(
    base: &Update,
    items: &[Nlri],
    add_path: bool,
    max: usize,
    caps: &SessionCaps,
    out: &mut Vec<Update>,
    set: impl Fn(&mut Update, Vec<Nlri>),
) -> Result<(), EncodeError> {
    if items.is_empty() {
        return Ok(());
    }
    // +2: an attribute growing past 255 octets gains a length octet.
    let base_len = base.encoded_len(caps)? + 2;
    if base_len >= max {
        return Err(EncodeError::MessageTooLong { len: base_len, max });
    }
    let mut chunk = Vec::new();
    let mut size = base_len;
    for item in items {
        let len = nlri_len(item, add_path);
        if size + len > max && !chunk.is_empty() {
            let mut u = base.clone();
            set(&mut u, std::mem::take(&mut chunk));
            out.push(u);
            size = base_len;
        }
        chunk.push(*item);
        size += len;
    }
    let mut u = base.clone();
    set(&mut u, chunk);
    out.push(u);
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    use super::super::{AsPath, MpReach, Origin, Prefix, decode_message};
    use super::*;

    // RFC 4271 §4.1: no UPDATE over 4096 octets; every prefix sent once.
    #[test]
    fn split_keeps_every_prefix_and_fits() {
        let v4: Vec<Nlri> = (0..3000u32)
            .map(|i| {
                Nlri::new(
                    Prefix::new(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | (i << 6))), 26).unwrap(),
                )
            })
            .collect();
        let v6: Vec<Nlri> = (0..1000u128)
            .map(|i| {
                Nlri::new(
                    Prefix::new(
                        IpAddr::V6(Ipv6Addr::from((0xfd42u128 << 112) | (i << 64))),
                        64,
                    )
                    .unwrap(),
                )
            })
            .collect();
        let update = Update {
            withdrawn: v4[..1000].to_vec(),
            attributes: vec![
                PathAttribute::Origin(Origin::Igp),
                PathAttribute::AsPath(AsPath::from_sequence(vec![65001])),
                PathAttribute::NextHop(Ipv4Addr::new(198, 18, 200, 1)),
                PathAttribute::MpReach(MpReach {
                    family: AfiSafi::IPV6_UNICAST,
                    next_hops: vec!["fd42:18:200::1".parse().unwrap()],
                    nlri: v6.clone(),
                }),
                PathAttribute::Communities((0..50).collect()),
            ],
            nlri: v4[1000..].to_vec(),
            ..Update::default()
        };
        let caps = SessionCaps {
            four_octet_as: true,
            ..SessionCaps::default()
        };
        let parts = update.split_to_fit(&caps).unwrap();
        assert!(parts.len() > 5);
        let (mut withdrawn, mut nlri, mut reach) = (Vec::new(), Vec::new(), Vec::new());
        for part in &parts {
            let mut bytes = Vec::new();
            encode_message(&Message::Update(part.clone()), &caps, &mut bytes).unwrap();
            assert!(bytes.len() <= 4096);
            let Some((Message::Update(back), _)) = decode_message(&bytes, &caps).unwrap() else {
                panic!("not an UPDATE")
            };
            assert!(
                !back.treat_as_withdraw,
                "every part keeps the mandatory attributes"
            );
            withdrawn.extend(back.withdrawn.clone());
            nlri.extend(back.nlri.clone());
            reach.extend(back.mp_reach().map(|r| r.nlri.clone()).unwrap_or_default());
        }
        assert_eq!(withdrawn, update.withdrawn);
        assert_eq!(nlri, update.nlri);
        assert_eq!(reach, v6);
    }

    #[test]
    fn small_update_is_unchanged() {
        let u = Update::end_of_rib(AfiSafi::IPV4_UNICAST);
        assert_eq!(u.split_to_fit(&SessionCaps::default()).unwrap(), vec![u]);
    }
}
