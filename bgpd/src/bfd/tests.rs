use std::time::Duration;

use super::packet::LEN;
use super::*;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn sent(out: &[Output]) -> Vec<ControlPacket> {
    out.iter()
        .filter_map(|o| match o {
            Output::Send(p) => Some(*p),
            _ => None,
        })
        .collect()
}

fn changes(out: &[Output]) -> Vec<(State, State, Diag)> {
    out.iter()
        .filter_map(|o| match o {
            Output::StateChanged { from, to, diag } => Some((*from, *to, *diag)),
            _ => None,
        })
        .collect()
}

/// Every packet goes through the wire format.
fn wire(p: ControlPacket) -> ControlPacket {
    ControlPacket::decode(&p.encode()).expect("our own packets decode")
}

/// Deliver `a`'s packets to `b` and back until neither sends, starting
/// with a transmit timer on `a`. Returns every output of each.
fn converse(a: &mut Session, b: &mut Session) -> (Vec<Output>, Vec<Output>) {
    let (mut all_a, mut all_b) = (Vec::new(), Vec::new());
    let mut to_b = sent(&a.process(Input::TxTimer));
    let mut to_a: Vec<ControlPacket> = Vec::new();
    for _ in 0..20 {
        if to_a.is_empty() && to_b.is_empty() {
            break;
        }
        for p in std::mem::take(&mut to_b) {
            let out = b.process(Input::Received(wire(p)));
            to_a.extend(sent(&out));
            all_b.extend(out);
        }
        for p in std::mem::take(&mut to_a) {
            let out = a.process(Input::Received(wire(p)));
            to_b.extend(sent(&out));
            all_a.extend(out);
        }
    }
    (all_a, all_b)
}

fn up_pair() -> (Session, Session) {
    let (mut a, mut b) = (Session::new(Config::new(11)), Session::new(Config::new(22)));
    converse(&mut a, &mut b);
    assert_eq!((a.state(), b.state()), (State::Up, State::Up));
    (a, b)
}

#[test]
fn wire_format_is_rfc5880_section_4_1() {
    let p = ControlPacket {
        diag: Diag::NeighborSignaledSessionDown,
        state: State::Up,
        poll: true,
        final_: false,
        cpi: true,
        auth: false,
        demand: false,
        detect_mult: 3,
        my_discr: 0x0102_0304,
        your_discr: 0x0a0b_0c0d,
        desired_min_tx: ms(300),
        required_min_rx: ms(250),
        required_min_echo_rx: Duration::ZERO,
    };
    let b = p.encode();
    assert_eq!(
        b,
        [
            0x23, // version 1, diag 3
            0xe8, // Up, P, C
            3, 24, // detect mult, length
            1, 2, 3, 4, // my discriminator
            10, 11, 12, 13, // your discriminator
            0x00, 0x04, 0x93, 0xe0, // 300,000 us
            0x00, 0x03, 0xd0, 0x90, // 250,000 us
            0, 0, 0, 0,
        ]
    );
    assert_eq!(ControlPacket::decode(&b).unwrap(), p);
}

#[test]
fn decoder_discards_what_section_6_8_6_discards() {
    let good = ControlPacket {
        diag: Diag::None,
        state: State::Down,
        poll: false,
        final_: false,
        cpi: false,
        auth: false,
        demand: false,
        detect_mult: 3,
        my_discr: 7,
        your_discr: 0,
        desired_min_tx: ms(1000),
        required_min_rx: ms(300),
        required_min_echo_rx: Duration::ZERO,
    }
    .encode();
    let with = |i: usize, v: u8| {
        let mut b = good;
        b[i] = v;
        b
    };
    assert_eq!(
        ControlPacket::decode(&good[..23]),
        Err(DecodeError::TooShort(23))
    );
    assert_eq!(
        ControlPacket::decode(&with(0, 0x00)),
        Err(DecodeError::Version(0))
    );
    assert!(matches!(
        ControlPacket::decode(&with(3, 23)),
        Err(DecodeError::Length { field: 23, .. })
    ));
    assert!(matches!(
        ControlPacket::decode(&with(3, 30)),
        Err(DecodeError::Length { field: 30, .. })
    ));
    assert_eq!(
        ControlPacket::decode(&with(2, 0)),
        Err(DecodeError::ZeroDetectMult)
    );
    assert_eq!(
        ControlPacket::decode(&with(1, 0x41)),
        Err(DecodeError::Multipoint)
    );
    let mut no_discr = good;
    no_discr[4..8].copy_from_slice(&[0; 4]);
    assert_eq!(
        ControlPacket::decode(&no_discr),
        Err(DecodeError::ZeroMyDiscr)
    );
    // An authentication section (A bit, length 28 with one in the buffer).
    let mut authed = [0u8; 28];
    authed[..LEN].copy_from_slice(&with(1, 0x44));
    authed[3] = 28;
    assert_eq!(
        ControlPacket::decode(&authed),
        Err(DecodeError::Authenticated)
    );
    // Trailing bytes beyond the length field are allowed.
    let mut longer = [0u8; 30];
    longer[..LEN].copy_from_slice(&good);
    assert!(ControlPacket::decode(&longer).is_ok());
}

#[test]
fn three_way_handshake_then_fast_rate_by_poll() {
    let (mut a, mut b) = (Session::new(Config::new(11)), Session::new(Config::new(22)));
    // Not Up: at least 1 s between packets (§6.8.3).
    assert_eq!(a.start(), vec![Output::ArmTx(Duration::from_secs(1))]);
    let (out_a, out_b) = converse(&mut a, &mut b);
    assert_eq!(
        changes(&out_b),
        vec![
            (State::Down, State::Init, Diag::None),
            (State::Init, State::Up, Diag::None)
        ]
    );
    assert_eq!(changes(&out_a), vec![(State::Down, State::Up, Diag::None)]);
    assert_eq!((a.remote_discr(), b.remote_discr()), (22, 11));
    // Coming Up, each announces its faster rate with a Poll Sequence: a's
    // poll was answered by b's Final in the handshake; b's runs on its
    // periodic packets until a answers.
    assert!(sent(&out_a).iter().any(|p| p.poll && p.state == State::Up));
    assert!(sent(&out_b).iter().any(|p| p.final_));
    let polled = sent(&b.process(Input::TxTimer))[0];
    assert!(polled.poll);
    let fin = sent(&a.process(Input::Received(wire(polled))))[0];
    assert!(fin.final_);
    b.process(Input::Received(wire(fin)));
    assert!(!sent(&b.process(Input::TxTimer))[0].poll);
    assert_eq!(a.tx_interval(), ms(300));
    assert_eq!(b.tx_interval(), ms(300));
    // Detection: the peer's multiplier × max(our RX, its TX).
    assert_eq!(a.detection_time(), ms(900));
    // Periodic packets carry no P any more.
    let tick = sent(&a.process(Input::TxTimer));
    assert_eq!(tick.len(), 1);
    assert!(!tick[0].poll && tick[0].state == State::Up && tick[0].your_discr == 22);
}

#[test]
fn detection_time_expiry_takes_the_session_down() {
    let (mut a, _b) = up_pair();
    let out = a.process(Input::DetectTimer);
    assert_eq!(
        changes(&out),
        vec![(State::Up, State::Down, Diag::ControlDetectionTimeExpired)]
    );
    assert_eq!(a.remote_discr(), 0);
    // Back to the slow rate, still sending (to find the peer again), with
    // the diagnostic and no Your Discriminator.
    assert!(out.contains(&Output::ArmTx(Duration::from_secs(1))));
    let p = sent(&a.process(Input::TxTimer))[0];
    assert_eq!(
        (p.state, p.diag, p.your_discr),
        (State::Down, Diag::ControlDetectionTimeExpired, 0)
    );
}

#[test]
fn peer_admin_down_and_peer_down() {
    let (mut a, mut b) = up_pair();
    let out = b.process(Input::AdminDown);
    assert_eq!(
        changes(&out),
        vec![(State::Up, State::AdminDown, Diag::AdministrativelyDown)]
    );
    let p = sent(&out)[0];
    let out = a.process(Input::Received(wire(p)));
    assert_eq!(
        changes(&out),
        vec![(State::Up, State::Down, Diag::NeighborSignaledSessionDown)]
    );
    // More AdminDown packets keep it Down (not Init).
    let again = sent(&b.process(Input::TxTimer))[0];
    a.process(Input::Received(wire(again)));
    assert_eq!(a.state(), State::Down);
    // Packets to an AdminDown session change nothing.
    let from_a = sent(&a.process(Input::TxTimer))[0];
    assert!(changes(&b.process(Input::Received(wire(from_a)))).is_empty());
    assert_eq!(b.state(), State::AdminDown);
    // Enabled again: the handshake runs again.
    b.process(Input::AdminUp);
    converse(&mut a, &mut b);
    assert_eq!((a.state(), b.state()), (State::Up, State::Up));

    // A peer that says Down while we are Up.
    let mut down = sent(&b.process(Input::TxTimer))[0];
    down.state = State::Down;
    let out = a.process(Input::Received(down));
    assert_eq!(
        changes(&out),
        vec![(State::Up, State::Down, Diag::NeighborSignaledSessionDown)]
    );
}

#[test]
fn packets_for_another_session_or_unaddressed_while_up_are_dropped() {
    let (mut a, mut b) = up_pair();
    let mut p = sent(&b.process(Input::TxTimer))[0];
    p.your_discr = 99;
    p.state = State::Down;
    assert!(a.process(Input::Received(p)).is_empty());
    p.your_discr = 0;
    assert!(a.process(Input::Received(p)).is_empty());
    assert_eq!(a.state(), State::Up);
}

#[test]
fn a_poll_is_answered_with_a_final_at_once() {
    let (mut a, mut b) = up_pair();
    let mut p = sent(&b.process(Input::TxTimer))[0];
    p.poll = true;
    let reply = sent(&a.process(Input::Received(wire(p))));
    assert_eq!(reply.len(), 1);
    assert!(reply[0].final_ && !reply[0].poll);
}

#[test]
fn passive_waits_for_the_peer() {
    let mut cfg = Config::new(22);
    cfg.passive = true;
    let (mut a, mut b) = (Session::new(Config::new(11)), Session::new(cfg));
    assert!(b.start().is_empty());
    assert!(b.process(Input::TxTimer).is_empty());
    converse(&mut a, &mut b);
    assert_eq!((a.state(), b.state()), (State::Up, State::Up));
    assert_eq!(sent(&b.process(Input::TxTimer)).len(), 1);
}

#[test]
fn slower_tx_waits_for_the_final_lower_rx_too() {
    let (mut a, mut b) = up_pair();
    let out = a.process(Input::SetTimers {
        desired_min_tx: ms(1000),
        required_min_rx: ms(100),
        detect_mult: 5,
    });
    let poll = sent(&out);
    assert!(poll[0].poll && poll[0].desired_min_tx == ms(1000));
    // Until the Final: still 300 ms out, and the old RX for detection.
    assert_eq!(a.tx_interval(), ms(300));
    assert_eq!(a.detection_time(), ms(900));
    let fin = sent(&b.process(Input::Received(wire(poll[0]))));
    assert!(fin[0].final_);
    // b now sends no faster than a's new RX allows and detects a at 5 × 1 s.
    assert_eq!(b.detection_time(), Duration::from_secs(5));
    a.process(Input::Received(wire(fin[0])));
    assert_eq!(a.tx_interval(), ms(1000));
    assert_eq!(a.detection_time(), ms(300) * 3);
}

#[test]
fn a_peer_in_demand_mode_is_not_sent_periodic_packets() {
    let (mut a, mut b) = up_pair();
    let mut p = sent(&b.process(Input::TxTimer))[0];
    p.demand = true;
    let out = a.process(Input::Received(wire(p)));
    assert!(out.contains(&Output::StopTx));
    assert!(a.process(Input::TxTimer).is_empty());
}

#[test]
fn the_c_bit_goes_out_and_is_seen() {
    let mut cfg = Config::new(11);
    cfg.control_plane_independent = true;
    let (mut a, mut b) = (Session::new(cfg), Session::new(Config::new(22)));
    converse(&mut a, &mut b);
    assert!(b.remote_control_plane_independent());
    assert!(!a.remote_control_plane_independent());
}

#[test]
fn jitter_stays_within_75_to_100_percent() {
    for r in [0u32, 1, 12, 25, 26, 1000, u32::MAX] {
        let j = jittered(ms(1000), 3, r);
        assert!(j >= ms(750) && j <= ms(1000), "{j:?}");
        let j1 = jittered(ms(1000), 1, r);
        assert!(j1 >= ms(750) && j1 <= ms(900), "{j1:?}");
    }
}
