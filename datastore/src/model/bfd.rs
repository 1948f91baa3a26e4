//! `BGPPeer.spec.bfd` and `BGPConfiguration.spec.nodeMeshBFD`: BFD (RFC
//! 5880 asynchronous mode, RFC 5881 single hop) on BGP sessions. A Manx
//! extension: Calico has no such field, so a Calico manifest never sets it
//! and applies unchanged.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::model::meta::parse_go_duration;
use crate::model::validate::Checker;

/// Default Desired Min TX and Required Min RX interval.
pub const DEFAULT_BFD_INTERVAL: Duration = Duration::from_millis(300);
/// Default Detect Mult.
pub const DEFAULT_BFD_MULTIPLIER: u8 = 3;
/// The shortest interval accepted: below this a loaded node misses its own
/// transmit times and flaps sessions.
pub const MIN_BFD_INTERVAL: Duration = Duration::from_millis(10);
/// The longest interval accepted (the packet field holds up to ~71 min; a
/// minute already detects slower than BGP's own hold timer would).
pub const MAX_BFD_INTERVAL: Duration = Duration::from_secs(60);

/// BFD settings of a set of BGP sessions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BFDSpec {
    /// Default `true`: writing the block asks for BFD; `false` turns it off
    /// and keeps the timers written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Go duration: Required Min RX Interval (default `300ms`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_rx: Option<String>,
    /// Go duration: Desired Min TX Interval (default `300ms`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_tx: Option<String>,
    /// Detect Mult: packets missed before the session is declared down
    /// (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multiplier: Option<u32>,
}

/// What a valid, enabled [`BFDSpec`] asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BfdTimers {
    pub min_rx: Duration,
    pub min_tx: Duration,
    pub multiplier: u8,
}

impl Default for BfdTimers {
    fn default() -> Self {
        BfdTimers {
            min_rx: DEFAULT_BFD_INTERVAL,
            min_tx: DEFAULT_BFD_INTERVAL,
            multiplier: DEFAULT_BFD_MULTIPLIER,
        }
    }
}

impl BFDSpec {
    /// The timers when BFD is enabled; `None` when `enabled: false`. A
    /// value validation refuses gives its default here.
    pub fn timers(&self) -> Option<BfdTimers> {
        let BFDSpec {
            enabled,
            min_rx,
            min_tx,
            multiplier,
        } = self;
        if *enabled == Some(false) {
            return None;
        }
        let interval = |v: &Option<String>| {
            v.as_deref()
                .and_then(|s| parse_go_duration(s).ok())
                .filter(|d| (MIN_BFD_INTERVAL..=MAX_BFD_INTERVAL).contains(d))
                .unwrap_or(DEFAULT_BFD_INTERVAL)
        };
        Some(BfdTimers {
            min_rx: interval(min_rx),
            min_tx: interval(min_tx),
            multiplier: multiplier
                .and_then(|m| u8::try_from(m).ok())
                .filter(|&m| m >= 1)
                .unwrap_or(DEFAULT_BFD_MULTIPLIER),
        })
    }

    /// Check every field; `field` is the block's path (`spec.bfd`).
    pub(crate) fn check(&self, c: &mut Checker, field: &str) {
        for (value, name) in [(&self.min_rx, "minRx"), (&self.min_tx, "minTx")] {
            let Some(text) = value else { continue };
            match parse_go_duration(text) {
                Err(why) => c.error(&format!("{field}.{name}"), why),
                Ok(d) if !(MIN_BFD_INTERVAL..=MAX_BFD_INTERVAL).contains(&d) => c.error(
                    &format!("{field}.{name}"),
                    format!("{text:?} is out of range 10ms..=60s (default 300ms)"),
                ),
                Ok(_) => {}
            }
        }
        if let Some(m) = self.multiplier
            && !(1..=255).contains(&m)
        {
            c.error(
                &format!("{field}.multiplier"),
                format!("{m} is out of range 1..=255 (default 3)"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_300ms_times_3_and_enabled() {
        let t = BFDSpec::default().timers().unwrap();
        assert_eq!(t, BfdTimers::default());
        assert_eq!(
            (t.min_rx, t.min_tx, t.multiplier),
            (Duration::from_millis(300), Duration::from_millis(300), 3)
        );
        let off = BFDSpec {
            enabled: Some(false),
            min_rx: Some("100ms".into()),
            ..BFDSpec::default()
        };
        assert_eq!(off.timers(), None);
    }

    #[test]
    fn bad_values_are_refused_by_field() {
        let spec = BFDSpec {
            enabled: None,
            min_rx: Some("5ms".into()),
            min_tx: Some("fast".into()),
            multiplier: Some(0),
        };
        let mut c = Checker::new("bgppeer", "tor");
        spec.check(&mut c, "spec.bfd");
        let errs = c.finish().unwrap_err().to_string();
        assert!(errs.contains("spec.bfd.minRx") && errs.contains("out of range 10ms..=60s"));
        assert!(errs.contains("spec.bfd.minTx"), "{errs}");
        assert!(errs.contains("spec.bfd.multiplier") && errs.contains("1..=255"));
        let ok = BFDSpec {
            enabled: Some(true),
            min_rx: Some("100ms".into()),
            min_tx: Some("50ms".into()),
            multiplier: Some(5),
        };
        let mut c = Checker::new("bgppeer", "tor");
        ok.check(&mut c, "spec.bfd");
        assert!(c.finish().is_ok());
        assert_eq!(
            ok.timers().unwrap(),
            BfdTimers {
                min_rx: Duration::from_millis(100),
                min_tx: Duration::from_millis(50),
                multiplier: 5
            }
        );
    }
}
