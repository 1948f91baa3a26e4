//! A map keyed by prefix, in [`IpNetwork`] order, that keeps IPv4 and
//! IPv6 keys apart: an [`Ipv4Network`] key is 5 octets where an
//! [`IpNetwork`] is 18 (an IPv6 address and a tag, whatever the family).
//! The RIB holds a key per prefix per table (each Adj-RIB-In, the
//! Loc-RIB, the previous best paths of a burst): on an IPv4 table of 100k prefixes that is ~2.6 MB less, more
//! with the B-tree's half-empty nodes.

use std::collections::BTreeMap;

use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};

/// A `BTreeMap<IpNetwork, V>` in two halves.
#[derive(Debug, Clone)]
pub struct PrefixMap<V> {
    v4: BTreeMap<Ipv4Network, V>,
    v6: BTreeMap<Ipv6Network, V>,
}

impl<V> Default for PrefixMap<V> {
    fn default() -> Self {
        PrefixMap {
            v4: BTreeMap::new(),
            v6: BTreeMap::new(),
        }
    }
}

impl<V> PrefixMap<V> {
    /// The value of `prefix`.
    pub fn get(&self, prefix: &IpNetwork) -> Option<&V> {
        match prefix {
            IpNetwork::V4(p) => self.v4.get(p),
            IpNetwork::V6(p) => self.v6.get(p),
        }
    }

    /// Set the value of `prefix`; returns the one it replaced.
    pub fn insert(&mut self, prefix: IpNetwork, value: V) -> Option<V> {
        match prefix {
            IpNetwork::V4(p) => self.v4.insert(p, value),
            IpNetwork::V6(p) => self.v6.insert(p, value),
        }
    }

    /// Remove `prefix`; returns its value.
    pub fn remove(&mut self, prefix: &IpNetwork) -> Option<V> {
        match prefix {
            IpNetwork::V4(p) => self.v4.remove(p),
            IpNetwork::V6(p) => self.v6.remove(p),
        }
    }

    /// Set the value of `prefix` unless it has one.
    pub fn insert_if_absent(&mut self, prefix: IpNetwork, value: V) {
        match prefix {
            IpNetwork::V4(p) => {
                self.v4.entry(p).or_insert(value);
            }
            IpNetwork::V6(p) => {
                self.v6.entry(p).or_insert(value);
            }
        }
    }

    /// The value of `prefix`, inserted as the default if missing.
    pub fn get_or_default(&mut self, prefix: IpNetwork) -> &mut V
    where
        V: Default,
    {
        match prefix {
            IpNetwork::V4(p) => self.v4.entry(p).or_default(),
            IpNetwork::V6(p) => self.v6.entry(p).or_default(),
        }
    }

    /// Entries.
    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    /// No entries.
    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    /// Entries in prefix order (IPv4 first, as [`IpNetwork`] sorts).
    pub fn iter(&self) -> impl Iterator<Item = (IpNetwork, &V)> {
        let v4 = self.v4.iter().map(|(p, v)| (IpNetwork::V4(*p), v));
        let v6 = self.v6.iter().map(|(p, v)| (IpNetwork::V6(*p), v));
        v4.chain(v6)
    }

    /// Entries in prefix order, values to change.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (IpNetwork, &mut V)> {
        let v4 = self.v4.iter_mut().map(|(p, v)| (IpNetwork::V4(*p), v));
        let v6 = self.v6.iter_mut().map(|(p, v)| (IpNetwork::V6(*p), v));
        v4.chain(v6)
    }

    /// Values in prefix order.
    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.v4.values().chain(self.v6.values())
    }

    /// Values in prefix order, to change.
    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut V> {
        self.v4.values_mut().chain(self.v6.values_mut())
    }

    /// Keys in prefix order, consuming the map.
    pub fn into_keys(self) -> impl Iterator<Item = IpNetwork> {
        let v4 = self.v4.into_keys().map(IpNetwork::V4);
        let v6 = self.v6.into_keys().map(IpNetwork::V6);
        v4.chain(v6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn behaves_as_a_btreemap_of_ipnetwork() {
        let keys = [
            "2001:db8::/64",
            "10.0.0.64/26",
            "10.0.0.0/26",
            "10.0.0.0/24",
            "::/0",
            "192.0.2.0/24",
        ];
        let mut ours = PrefixMap::default();
        let mut std = BTreeMap::new();
        for (i, k) in keys.iter().enumerate() {
            let k: IpNetwork = k.parse().unwrap();
            assert_eq!(ours.insert(k, i), std.insert(k, i));
        }
        assert_eq!(ours.insert(keys[1].parse().unwrap(), 9), Some(1));
        std.insert(keys[1].parse().unwrap(), 9);
        let got: Vec<_> = ours.iter().map(|(k, v)| (k, *v)).collect();
        let want: Vec<_> = std.iter().map(|(k, v)| (*k, *v)).collect();
        assert_eq!(got, want, "same order, same values");
        assert_eq!(ours.len(), 6);
        ours.insert_if_absent(keys[2].parse().unwrap(), 7);
        assert_eq!(ours.get(&keys[2].parse().unwrap()), Some(&2), "kept");
        *ours.get_or_default("198.51.100.0/24".parse().unwrap()) += 1;
        assert_eq!(ours.get(&"198.51.100.0/24".parse().unwrap()), Some(&1));
        assert_eq!(ours.remove(&"::/0".parse().unwrap()), Some(4));
        assert_eq!(ours.get(&"::/0".parse().unwrap()), None);
        assert_eq!(ours.len(), 6);
        assert!(std::mem::size_of::<Ipv4Network>() < std::mem::size_of::<IpNetwork>() / 3);
        let keys: Vec<_> = ours.into_keys().map(|k| k.to_string()).collect();
        assert_eq!(keys.first().map(String::as_str), Some("10.0.0.0/24"));
        assert_eq!(keys.last().map(String::as_str), Some("2001:db8::/64"));
    }
}
