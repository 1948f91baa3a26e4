//! Robustness without a fuzzer: captured real-peer messages with random
//! mutations (bit flips, truncation, length edits) never make the decoder
//! panic, and whatever decodes re-encodes into bytes that decode to a fixed
//! point. The same check runs under cargo-fuzz in `fuzz/`.

use bgpd::packet::{EncodeError, SessionCaps, decode_message, encode_message};
use proptest::prelude::*;

use crate::packet_support::*;

fn check(bytes: &[u8], caps: &SessionCaps) {
    let Ok(Some((first, used))) = decode_message(bytes, caps) else {
        return;
    };
    assert!(used <= bytes.len());
    let sender = caps.reversed();
    let mut b1 = Vec::new();
    match encode_message(&first, &sender, &mut b1) {
        Ok(()) => {}
        Err(EncodeError::MessageTooLong { .. }) => return,
        Err(e) => panic!("decoded message does not encode: {e}: {first:?}"),
    }
    let (m2, _) = decode_message(&b1, caps)
        .unwrap_or_else(|e| panic!("our encoding does not decode: {e}: {first:?}"))
        .expect("complete");
    let mut b2 = Vec::new();
    encode_message(&m2, &sender, &mut b2).expect("second encoding");
    let (m3, _) = decode_message(&b2, caps)
        .expect("decodes")
        .expect("complete");
    assert_eq!(m2, m3, "not a fixed point");
}

fn corpus() -> &'static [(Vec<u8>, SessionCaps)] {
    static CORPUS: std::sync::OnceLock<Vec<(Vec<u8>, SessionCaps)>> = std::sync::OnceLock::new();
    CORPUS.get_or_init(load_corpus)
}

fn load_corpus() -> Vec<(Vec<u8>, SessionCaps)> {
    let mut out = Vec::new();
    for (a, b) in SESSIONS {
        for (name, reply) in [(a, b), (b, a)] {
            let sent = load_capture(name);
            let caps = receiver_caps(&sent, &load_capture(reply));
            for m in sent.messages {
                out.push((m.clone(), caps.clone()));
                // Also under pre-OPEN caps: 2-octet AS, no ADD-PATH.
                out.push((m, SessionCaps::default()));
            }
        }
    }
    out
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip { at: usize, bit: u8 },
    Set { at: usize, value: u8 },
    Truncate { keep: usize },
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    match *m {
        Mutation::Flip { at, bit } => {
            let i = at % bytes.len();
            bytes[i] ^= 1 << (bit % 8);
        }
        Mutation::Set { at, value } => {
            let i = at % bytes.len();
            bytes[i] = value;
        }
        Mutation::Truncate { keep } => {
            let len = (keep % bytes.len()).max(19);
            bytes.truncate(len);
            // Keep the header length consistent so the body parsers see it.
            let n = bytes.len() as u16;
            bytes[16..18].copy_from_slice(&n.to_be_bytes());
        }
    }
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (19usize..5000, any::<u8>()).prop_map(|(at, bit)| Mutation::Flip { at, bit }),
        (19usize..5000, any::<u8>()).prop_map(|(at, value)| Mutation::Set { at, value }),
        any::<usize>().prop_map(|keep| Mutation::Truncate { keep }),
    ]
}

#[test]
fn unmutated_corpus_passes_the_check() {
    for (bytes, caps) in corpus() {
        check(bytes, caps);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    // RFC 4271 §6 / RFC 7606: malformed input yields an error or a
    // treat-as-withdraw UPDATE, never a panic or an unstable re-encoding.
    #[test]
    fn mutated_captures_never_panic(
        pick in any::<prop::sample::Index>(),
        mutations in prop::collection::vec(mutation(), 1..4),
    ) {
        let corpus = corpus();
        let (mut bytes, caps) = corpus[pick.index(corpus.len())].clone();
        for m in &mutations {
            apply(&mut bytes, m);
        }
        check(&bytes, &caps);
    }
}
