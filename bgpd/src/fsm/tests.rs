//! FSM unit tests: no sockets, every transition by hand (RFC 4271 §8.2.2).

use super::*;
use crate::packet::{Message, Notification, Open};

const LOCAL_ID: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const PEER_ID: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);

fn cfg(local_as: u32, peer_as: u32) -> FsmConfig {
    FsmConfig {
        local_as,
        router_id: LOCAL_ID,
        peer_as,
        hold_time: 90,
        connect_retry: DEFAULT_CONNECT_RETRY,
        capabilities: FsmConfig::default_capabilities(local_as),
    }
}

fn peer_open(asn: u32, hold: u16, id: Ipv4Addr) -> Open {
    Open::new(asn, hold, id, FsmConfig::default_capabilities(asn))
}

fn sent(out: &[Output]) -> Vec<&Message> {
    out.iter()
        .filter_map(|o| match o {
            Output::SendMessage(m) => Some(m),
            _ => None,
        })
        .collect()
}

fn sent_notification_msg(out: &[Output]) -> Option<Notification> {
    sent(out).into_iter().find_map(|m| match m {
        Message::Notification(n) => Some(n.clone()),
        _ => None,
    })
}

fn sent_notification(out: &[Output]) -> Option<(u8, u8)> {
    sent_notification_msg(out).map(|n| (n.code, n.subcode))
}

fn started(out: &[Output], timer: Timer) -> Option<Duration> {
    out.iter().rev().find_map(|o| match o {
        Output::StartTimer(t, d) if *t == timer => Some(*d),
        _ => None,
    })
}

fn has(out: &[Output], pred: impl Fn(&Output) -> bool) -> bool {
    out.iter().any(pred)
}

/// Drive a fresh FSM to OpenSent over an outgoing connection.
fn to_open_sent(fsm: &mut Fsm) {
    let out = fsm.process(Input::ManualStart);
    assert_eq!(fsm.state(), State::Connect);
    assert!(has(&out, |o| matches!(o, Output::Connect)));
    let out = fsm.process(Input::TcpCrAcked);
    assert_eq!(fsm.state(), State::OpenSent);
    assert!(matches!(sent(&out)[..], [Message::Open(_)]));
}

fn to_established(fsm: &mut Fsm, peer_hold: u16) -> Vec<Output> {
    to_open_sent(fsm);
    let peer_as = fsm.config().peer_as;
    fsm.process(Input::BgpOpen(peer_open(peer_as, peer_hold, PEER_ID)));
    assert_eq!(fsm.state(), State::OpenConfirm);
    let out = fsm.process(Input::KeepAliveMsg);
    assert_eq!(fsm.state(), State::Established);
    out
}

/// §8.2.2 Idle, Event 1: ManualStart starts ConnectRetry and connects.
#[test]
fn manual_start_connects_with_connect_retry_timer() {
    let mut fsm = Fsm::new(cfg(64512, 64512));
    let out = fsm.process(Input::ManualStart);
    assert_eq!(fsm.state(), State::Connect);
    assert_eq!(
        started(&out, Timer::ConnectRetry),
        Some(Duration::from_secs(5))
    );
    assert!(has(&out, |o| matches!(o, Output::Connect)));
}

/// §8.2.2 Idle, Event 5: a passive start never dials and waits in Active.
#[test]
fn passive_start_waits_in_active_and_never_connects() {
    let mut fsm = Fsm::new(cfg(64512, 64512));
    let out = fsm.process(Input::AutomaticStart { passive: true });
    assert_eq!(fsm.state(), State::Active);
    assert!(!has(&out, |o| matches!(o, Output::Connect)));
    let out = fsm.process(Input::ConnectRetryTimerExpires);
    assert!(out.is_empty(), "passive peers ignore ConnectRetry: {out:?}");
    assert_eq!(fsm.state(), State::Active);
    // Event 17 in Active: the peer connected; send OPEN, large hold timer (4 min).
    let out = fsm.process(Input::TcpConnectionConfirmed);
    assert_eq!(fsm.state(), State::OpenSent);
    assert_eq!(started(&out, Timer::Hold), Some(LARGE_HOLD_TIME));
}

/// §8.2.2 Connect, Event 9: the attempt is dropped and retried.
#[test]
fn connect_retry_expiry_retries() {
    let mut fsm = Fsm::new(cfg(64512, 64512));
    fsm.process(Input::ManualStart);
    let out = fsm.process(Input::ConnectRetryTimerExpires);
    assert_eq!(fsm.state(), State::Connect);
    assert!(has(&out, |o| matches!(o, Output::CloseConnection)));
    assert!(has(&out, |o| matches!(o, Output::Connect)));
    assert_eq!(
        started(&out, Timer::ConnectRetry),
        Some(DEFAULT_CONNECT_RETRY)
    );
}

/// Event 18 in Connect: go to Active, retry after ConnectRetry.
#[test]
fn tcp_failure_in_connect_goes_active_then_retries() {
    let mut fsm = Fsm::new(cfg(64512, 64512));
    fsm.process(Input::ManualStart);
    let out = fsm.process(Input::TcpConnectionFails);
    assert_eq!(fsm.state(), State::Active);
    assert_eq!(
        started(&out, Timer::ConnectRetry),
        Some(DEFAULT_CONNECT_RETRY)
    );
    let out = fsm.process(Input::ConnectRetryTimerExpires);
    assert_eq!(fsm.state(), State::Connect);
    assert!(has(&out, |o| matches!(o, Output::Connect)));
}

/// §8.2.2 OpenSent, Event 18 (the peer accepted TCP, then closed): Active,
/// still accepting a connection from the peer, ConnectRetry restarted; not
/// Idle with its back-off.
#[test]
fn tcp_failure_in_open_sent_goes_active_and_still_accepts() {
    let mut fsm = Fsm::new(cfg(64512, 64513));
    to_open_sent(&mut fsm);
    let out = fsm.process(Input::TcpConnectionFails);
    assert_eq!(fsm.state(), State::Active);
    assert!(has(&out, |o| matches!(o, Output::CloseConnection)));
    assert!(has(&out, |o| matches!(o, Output::StopTimer(Timer::Hold))));
    assert_eq!(
        started(&out, Timer::ConnectRetry),
        Some(DEFAULT_CONNECT_RETRY)
    );
    assert_eq!(started(&out, Timer::IdleHold), None, "no Idle back-off");
    // The peer dials us: its connection is taken and our OPEN goes out.
    let out = fsm.process(Input::TcpConnectionConfirmed);
    assert_eq!(fsm.state(), State::OpenSent);
    assert!(has(&out, |o| matches!(
        o,
        Output::SendMessage(Message::Open(_))
    )));
    // In OpenConfirm the same event still goes to Idle.
    fsm.process(Input::BgpOpen(peer_open(64513, 30, PEER_ID)));
    assert_eq!(fsm.state(), State::OpenConfirm);
    fsm.process(Input::TcpConnectionFails);
    assert_eq!(fsm.state(), State::Idle);
}

/// §8.2.2 OpenSent, Event 19 then OpenConfirm, Event 26: hold = min(local, remote), keepalive = hold/3.
#[test]
fn open_then_keepalive_establishes_with_negotiated_hold() {
    let mut fsm = Fsm::new(cfg(64512, 64513));
    to_open_sent(&mut fsm);
    let out = fsm.process(Input::BgpOpen(peer_open(64513, 30, PEER_ID)));
    assert_eq!(fsm.state(), State::OpenConfirm);
    assert!(matches!(sent(&out)[..], [Message::Keepalive]));
    assert_eq!(started(&out, Timer::Hold), Some(Duration::from_secs(30)));
    assert_eq!(
        started(&out, Timer::Keepalive),
        Some(Duration::from_secs(10))
    );
    assert_eq!(fsm.negotiated_hold_time(), 30);
    let out = fsm.process(Input::KeepAliveMsg);
    assert_eq!(fsm.state(), State::Established);
    let est = out.iter().find_map(|o| match o {
        Output::SessionEstablished {
            peer_open,
            hold_time,
            ..
        } => Some((peer_open.router_id, *hold_time)),
        _ => None,
    });
    assert_eq!(est, Some((PEER_ID, 30)));
}

/// §4.2 / §10: a hold time of zero means no keepalives and no hold timer.
#[test]
fn zero_hold_time_disables_keepalives() {
    let mut fsm = Fsm::new(cfg(64512, 64512));
    to_open_sent(&mut fsm);
    let out = fsm.process(Input::BgpOpen(peer_open(64512, 0, PEER_ID)));
    assert_eq!(started(&out, Timer::Hold), None);
    assert_eq!(started(&out, Timer::Keepalive), None);
    assert!(has(&out, |o| matches!(o, Output::StopTimer(Timer::Hold))));
    let out = fsm.process(Input::KeepAliveMsg);
    assert_eq!(started(&out, Timer::Hold), None);
}

/// §6.2: hold times of 1 and 2 seconds are refused with 2/6 Unacceptable Hold Time.
#[test]
fn hold_time_one_or_two_is_unacceptable() {
    for hold in [1, 2] {
        let mut fsm = Fsm::new(cfg(64512, 64512));
        to_open_sent(&mut fsm);
        let out = fsm.process(Input::BgpOpen(peer_open(64512, hold, PEER_ID)));
        assert_eq!(sent_notification(&out), Some((2, 6)), "hold {hold}");
        assert_eq!(fsm.state(), State::Idle);
        assert!(has(&out, |o| matches!(o, Output::CloseConnection)));
    }
    // 3 is the smallest acceptable value.
    let mut fsm = Fsm::new(cfg(64512, 64512));
    to_open_sent(&mut fsm);
    let out = fsm.process(Input::BgpOpen(peer_open(64512, 3, PEER_ID)));
    assert_eq!(fsm.state(), State::OpenConfirm);
    assert_eq!(
        started(&out, Timer::Keepalive),
        Some(Duration::from_secs(1))
    );
}

/// §6.2: an OPEN from the wrong AS gets 2/2 Bad Peer AS.
#[test]
fn wrong_peer_as_is_bad_peer_as() {
    let mut fsm = Fsm::new(cfg(64512, 64513));
    to_open_sent(&mut fsm);
    let out = fsm.process(Input::BgpOpen(peer_open(64999, 90, PEER_ID)));
    assert_eq!(sent_notification(&out), Some((2, 2)));
    assert_eq!(fsm.state(), State::Idle);
}

/// RFC 6793: a 4-octet AS arrives in the capability, AS_TRANS in My AS.
#[test]
fn four_octet_peer_as_is_read_from_the_capability() {
    let mut fsm = Fsm::new(cfg(64512, 4_200_000_001));
    to_open_sent(&mut fsm);
    fsm.process(Input::BgpOpen(peer_open(4_200_000_001, 90, PEER_ID)));
    assert_eq!(fsm.state(), State::OpenConfirm);
}

/// §6.2 / RFC 6286: identifier 0 is bad; for iBGP our own identifier is bad too.
#[test]
fn bad_bgp_identifier() {
    let mut fsm = Fsm::new(cfg(64512, 64513));
    to_open_sent(&mut fsm);
    let out = fsm.process(Input::BgpOpen(peer_open(64513, 90, Ipv4Addr::UNSPECIFIED)));
    assert_eq!(sent_notification(&out), Some((2, 3)));

    let mut fsm = Fsm::new(cfg(64512, 64512));
    to_open_sent(&mut fsm);
    let out = fsm.process(Input::BgpOpen(peer_open(64512, 90, LOCAL_ID)));
    assert_eq!(sent_notification(&out), Some((2, 3)));

    // eBGP with the same identifier is allowed (RFC 6286 §2.1).
    let mut fsm = Fsm::new(cfg(64512, 64513));
    to_open_sent(&mut fsm);
    fsm.process(Input::BgpOpen(peer_open(64513, 90, LOCAL_ID)));
    assert_eq!(fsm.state(), State::OpenConfirm);
}

/// Events 21/22: a header or OPEN error sends the codec's NOTIFICATION and goes Idle.
#[test]
fn decode_errors_send_their_notification() {
    let mut fsm = Fsm::new(cfg(64512, 64512));
    to_open_sent(&mut fsm);
    let out = fsm.process(Input::BgpHeaderErr(Notification {
        code: 1,
        subcode: 1,
        data: vec![],
    }));
    assert_eq!(sent_notification(&out), Some((1, 1)));
    assert_eq!(fsm.state(), State::Idle);

    let mut fsm = Fsm::new(cfg(64512, 64512));
    to_open_sent(&mut fsm);
    let out = fsm.process(Input::BgpOpenMsgErr(Notification {
        code: 2,
        subcode: 1,
        data: vec![0, 4],
    }));
    assert_eq!(sent_notification(&out), Some((2, 1)));
}

/// RFC 6608: unexpected messages are FSM errors with a per-state subcode.
#[test]
fn unexpected_messages_are_fsm_errors() {
    let mut fsm = Fsm::new(cfg(64512, 64512));
    to_open_sent(&mut fsm);
    let out = fsm.process(Input::KeepAliveMsg);
    assert_eq!(sent_notification(&out), Some((5, 1)));

    let mut fsm = Fsm::new(cfg(64512, 64512));
    to_open_sent(&mut fsm);
    fsm.process(Input::BgpOpen(peer_open(64512, 90, PEER_ID)));
    let out = fsm.process(Input::UpdateMsg(crate::packet::Update::end_of_rib(
        ipv4_unicast(),
    )));
    assert_eq!(sent_notification(&out), Some((5, 2)));

    let mut fsm = Fsm::new(cfg(64512, 64512));
    to_established(&mut fsm, 90);
    let out = fsm.process(Input::BgpOpen(peer_open(64512, 90, PEER_ID)));
    assert_eq!(sent_notification(&out), Some((5, 3)));
}

fn ipv4_unicast() -> crate::packet::AfiSafi {
    crate::packet::AfiSafi {
        afi: crate::packet::Afi::Ipv4,
        safi: crate::packet::Safi::Unicast,
    }
}

/// Event 10 in Established: send 4/0 Hold Timer Expired, report the session down.
#[test]
fn hold_timer_expiry_sends_notification() {
    let mut fsm = Fsm::new(cfg(64512, 64512));
    to_established(&mut fsm, 90);
    let out = fsm.process(Input::HoldTimerExpires);
    assert_eq!(sent_notification(&out), Some((4, 0)));
    assert!(has(&out, |o| matches!(
        o,
        Output::SessionDown {
            from: State::Established,
            ..
        }
    )));
    assert_eq!(fsm.state(), State::Idle);
    // An automatic restart is scheduled.
    assert_eq!(started(&out, Timer::IdleHold), Some(MIN_IDLE_HOLD));
    let out = fsm.process(Input::IdleHoldTimerExpires);
    assert_eq!(fsm.state(), State::Connect);
    assert!(has(&out, |o| matches!(o, Output::Connect)));
}

/// Event 11 in Established: send KEEPALIVE and restart the keepalive timer.
#[test]
fn keepalive_timer_sends_keepalive() {
    let mut fsm = Fsm::new(cfg(64512, 64512));
    to_established(&mut fsm, 9);
    let out = fsm.process(Input::KeepaliveTimerExpires);
    assert!(matches!(sent(&out)[..], [Message::Keepalive]));
    assert_eq!(
        started(&out, Timer::Keepalive),
        Some(Duration::from_secs(3))
    );
}

/// Events 26/27 in Established restart the hold timer; UPDATEs go to the RIB.
#[test]
fn updates_are_delivered_and_restart_hold() {
    let mut fsm = Fsm::new(cfg(64512, 64512));
    to_established(&mut fsm, 60);
    let out = fsm.process(Input::UpdateMsg(crate::packet::Update::end_of_rib(
        ipv4_unicast(),
    )));
    assert_eq!(started(&out, Timer::Hold), Some(Duration::from_secs(60)));
    assert!(has(&out, |o| matches!(o, Output::DeliverUpdate(_))));
    let out = fsm.process(Input::KeepAliveMsg);
    assert_eq!(started(&out, Timer::Hold), Some(Duration::from_secs(60)));
}

/// Event 2 with RFC 8203: CEASE/Administrative Shutdown carries the message; no restart.
#[test]
fn manual_stop_sends_cease_with_shutdown_message() {
    let mut fsm = Fsm::new(cfg(64512, 64512));
    to_established(&mut fsm, 90);
    let out = fsm.process(Input::ManualStop {
        shutdown_message: Some("maintenance".into()),
        deconfigured: false,
    });
    let n = sent_notification_msg(&out).expect("a NOTIFICATION");
    assert_eq!((n.code, n.subcode), (6, 2));
    assert_eq!(n.shutdown_message().as_deref(), Some("maintenance"));
    assert_eq!(fsm.state(), State::Idle);
    assert!(has(&out, |o| matches!(
        o,
        Output::StopTimer(Timer::IdleHold)
    )));
    assert_eq!(started(&out, Timer::IdleHold), None);
}

/// Event 25: a NOTIFICATION from the peer closes the session without answering.
#[test]
fn received_notification_goes_idle_silently() {
    let mut fsm = Fsm::new(cfg(64512, 64512));
    to_established(&mut fsm, 90);
    let out = fsm.process(Input::NotifMsg(Notification {
        code: 6,
        subcode: 4,
        data: vec![],
    }));
    assert!(sent(&out).is_empty());
    assert!(has(&out, |o| matches!(
        o,
        Output::SessionDown { reason: DownReason::NotificationReceived(n), .. } if n.code == 6
    )));
}

/// Event 23: the losing connection sends CEASE/7 Connection Collision Resolution.
#[test]
fn collision_dump_sends_cease_7() {
    let mut fsm = Fsm::new(cfg(64512, 64512));
    to_open_sent(&mut fsm);
    fsm.process(Input::BgpOpen(peer_open(64512, 90, PEER_ID)));
    let out = fsm.process(Input::OpenCollisionDump);
    assert_eq!(sent_notification(&out), Some((6, 7)));
    assert_eq!(fsm.state(), State::Idle);
}

/// §6.8: the connection initiated by the higher BGP identifier survives.
#[test]
fn collision_keeps_the_higher_identifiers_connection() {
    let low = Ipv4Addr::new(10, 0, 0, 1);
    let high = Ipv4Addr::new(10, 0, 0, 2);
    assert_eq!(
        resolve_collision(high, low),
        CollisionWinner::LocallyInitiated
    );
    assert_eq!(
        resolve_collision(low, high),
        CollisionWinner::RemotelyInitiated
    );
    // Compared as integers, not as strings: 9.x < 10.x.
    assert_eq!(
        resolve_collision(Ipv4Addr::new(9, 255, 255, 255), low),
        CollisionWinner::RemotelyInitiated
    );
}

/// §8.2.2 Idle: connections are refused.
#[test]
fn idle_refuses_connections() {
    let mut fsm = Fsm::new(cfg(64512, 64512));
    let out = fsm.process(Input::TcpConnectionConfirmed);
    assert!(has(&out, |o| matches!(o, Output::CloseConnection)));
    assert_eq!(fsm.state(), State::Idle);
}

/// The IdleHold back-off doubles per failure and is capped.
#[test]
fn idle_hold_backs_off() {
    assert_eq!(idle_hold(1), Duration::from_secs(1));
    assert_eq!(idle_hold(2), Duration::from_secs(2));
    assert_eq!(idle_hold(4), Duration::from_secs(8));
    assert_eq!(idle_hold(100), MAX_IDLE_HOLD);
}

/// §10: KeepaliveTime is one third of the hold time.
#[test]
fn keepalive_is_a_third_of_hold() {
    assert_eq!(keepalive_interval(90), Duration::from_secs(30));
    assert_eq!(keepalive_interval(3), Duration::from_secs(1));
    assert_eq!(keepalive_interval(4), Duration::from_secs(1));
}

/// Events 21/22/28: the same decode error is a header, OPEN or UPDATE
/// error event depending on the state; the NOTIFICATION is the codec's.
#[test]
fn decode_error_event_depends_on_state() {
    let err = crate::packet::DecodeError::ConnectionNotSynchronized;
    assert!(
        matches!(Input::decode_error(&err, State::OpenSent), Input::BgpOpenMsgErr(n) if (n.code, n.subcode) == (1, 1))
    );
    assert!(matches!(
        Input::decode_error(&err, State::Established),
        Input::UpdateMsgErr(_)
    ));
    assert!(matches!(
        Input::decode_error(&err, State::OpenConfirm),
        Input::BgpHeaderErr(_)
    ));
}

/// After ManualStop a stale IdleHold expiry must not restart the peer.
#[test]
fn stale_idle_hold_after_manual_stop_is_ignored() {
    let mut fsm = Fsm::new(cfg(64512, 64512));
    to_established(&mut fsm, 90);
    fsm.process(Input::ManualStop {
        shutdown_message: None,
        deconfigured: false,
    });
    assert!(fsm.process(Input::IdleHoldTimerExpires).is_empty());
    assert_eq!(fsm.state(), State::Idle);
    // A start event still works.
    fsm.process(Input::ManualStart);
    assert_eq!(fsm.state(), State::Connect);
}

/// A removed peer gets exactly one NOTIFICATION: CEASE / Peer De-configured
/// (RFC 4486 §4; RFC 4271 §6: one NOTIFICATION, then the close).
#[test]
fn deconfigured_peer_gets_one_cease_subcode_3() {
    let mut fsm = Fsm::new(cfg(64512, 64512));
    to_established(&mut fsm, 90);
    let out = fsm.process(Input::ManualStop {
        shutdown_message: Some("ignored".into()),
        deconfigured: true,
    });
    let sent = sent(&out);
    assert_eq!(sent.len(), 1, "{out:?}");
    match &sent[0] {
        Message::Notification(n) => assert_eq!((n.code, n.subcode), (6, 3)),
        other => panic!("expected a NOTIFICATION, got {other:?}"),
    }
    assert!(out.iter().any(|o| matches!(o, Output::CloseConnection)));
}

fn with_gr(
    mut caps: Vec<crate::packet::Capability>,
    n_bit: bool,
) -> Vec<crate::packet::Capability> {
    caps.push(crate::packet::Capability::GracefulRestart(
        crate::packet::GracefulRestart {
            restart_state: false,
            notification: n_bit,
            restart_time: 120,
            families: vec![(ipv4_unicast(), false)],
        },
    ));
    caps
}

/// Establish with both sides advertising graceful restart, the peer with
/// `peer_n` as its N bit, then deconfigure the peer: the Cease it is sent.
fn deconfigure_cease(peer_n: bool) -> Notification {
    let mut c = cfg(64512, 64512);
    c.capabilities = with_gr(c.capabilities, true);
    let mut fsm = Fsm::new(c);
    to_open_sent(&mut fsm);
    let caps = with_gr(FsmConfig::default_capabilities(64512), peer_n);
    fsm.process(Input::BgpOpen(Open::new(64512, 90, PEER_ID, caps)));
    let out = fsm.process(Input::KeepAliveMsg);
    let Some(Output::SessionEstablished { caps, .. }) = out
        .iter()
        .find(|o| matches!(o, Output::SessionEstablished { .. }))
    else {
        panic!("not established: {out:?}");
    };
    assert_eq!(caps.graceful_notification, peer_n);
    let out = fsm.process(Input::ManualStop {
        shutdown_message: None,
        deconfigured: true,
    });
    sent_notification_msg(&out).expect("a NOTIFICATION")
}

/// RFC 8538 §5: with the N bit on both sides, Peer De-configured goes as a
/// Hard Reset carrying 6/3, so the peer does not keep our routes as stale;
/// without the peer's N bit it stays a plain 6/3.
#[test]
fn deconfigured_peer_gets_hard_reset_only_when_n_bit_negotiated() {
    let hr = deconfigure_cease(true);
    assert_eq!((hr.code, hr.subcode), (6, 9));
    let inner = hr.encapsulated().expect("Hard Reset carries the Cease");
    assert_eq!((inner.code, inner.subcode), (6, 3));
    let plain = deconfigure_cease(false);
    assert_eq!((plain.code, plain.subcode), (6, 3));
}

/// A send stall (the peer took no octet for the stall timeout) drops the
/// session with Cease / Out of Resources (RFC 4486 §4, subcode 8), and the
/// reason says what happened, not a header error.
#[test]
fn send_stall_sends_cease_out_of_resources_and_says_so() {
    let mut fsm = Fsm::new(cfg(64512, 64512));
    to_established(&mut fsm, 90);
    let out = fsm.process(Input::SendStalled {
        after: Duration::from_secs(90),
    });
    assert_eq!(sent_notification(&out), Some((6, 8)));
    assert!(has(&out, |o| matches!(o, Output::CloseConnection)));
    assert_eq!(fsm.state(), State::Idle);
    let reason = out
        .iter()
        .find_map(|o| match o {
            Output::SessionDown { reason, from } => {
                assert_eq!(*from, State::Established);
                Some(reason.clone())
            }
            _ => None,
        })
        .expect("SessionDown");
    assert!(matches!(
        &reason,
        DownReason::SendStalled { after, notification }
            if after.as_secs() == 90 && (notification.code, notification.subcode) == (6, 8)
    ));
    assert_eq!(
        reason.to_string(),
        "send stall: no write progress for 90 s (sent NOTIFICATION 6/8 (Cease: Out of Resources))"
    );
    // Not a Hard Reset: with RFC 8538 the peer may keep our routes as stale.
    assert!(!sent_notification_msg(&out).unwrap().is_hard_reset());
    // It restarts automatically (IdleHold), like any other failure.
    assert!(started(&out, Timer::IdleHold).is_some());
}
