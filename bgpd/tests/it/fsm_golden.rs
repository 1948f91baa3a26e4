//! FSM scenario tests with golden transcripts (holo's events-in,
//! outputs-out style): each `fsm_golden/<name>.events` is a list of RFC 4271
//! §8.1 events fed to a fresh [`Fsm`]; the state and outputs after each one
//! must match `fsm_golden/<name>.golden`. `MANX_BLESS=1` rewrites the golden
//! files after a deliberate change (review the diff).

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::Path;

use bgpd::fsm::{DEFAULT_CONNECT_RETRY, Fsm, FsmConfig, Input, Output};
use bgpd::packet::{AfiSafi, Message, Notification, Open, Update};

fn parse_input(line: &str) -> Input {
    let mut w = line.split_whitespace();
    let name = w.next().unwrap();
    let mut num = || w.next().expect("argument").parse::<u32>().expect("number");
    match name {
        "ManualStart" => Input::ManualStart,
        "ManualStop" => {
            let msg = line.strip_prefix("ManualStop").unwrap().trim();
            Input::ManualStop {
                shutdown_message: (!msg.is_empty()).then(|| msg.to_string()),
                deconfigured: false,
            }
        }
        "AutomaticStart" => Input::AutomaticStart { passive: false },
        "AutomaticStartPassive" => Input::AutomaticStart { passive: true },
        "ConnectRetryTimerExpires" => Input::ConnectRetryTimerExpires,
        "HoldTimerExpires" => Input::HoldTimerExpires,
        "KeepaliveTimerExpires" => Input::KeepaliveTimerExpires,
        "IdleHoldTimerExpires" => Input::IdleHoldTimerExpires,
        "TcpConnectionValid" => Input::TcpConnectionValid,
        "TcpCrAcked" => Input::TcpCrAcked,
        "TcpConnectionConfirmed" => Input::TcpConnectionConfirmed,
        "TcpConnectionFails" => Input::TcpConnectionFails,
        "BgpOpen" => {
            let (asn, hold) = (num(), num() as u16);
            let id: Ipv4Addr = line
                .split_whitespace()
                .nth(3)
                .expect("router id")
                .parse()
                .unwrap();
            Input::BgpOpen(Open::new(
                asn,
                hold,
                id,
                FsmConfig::default_capabilities(asn),
            ))
        }
        "BgpHeaderErr" => Input::BgpHeaderErr(Notification::new(num() as u8, num() as u8, vec![])),
        "BgpOpenMsgErr" => {
            Input::BgpOpenMsgErr(Notification::new(num() as u8, num() as u8, vec![]))
        }
        "UpdateMsgErr" => Input::UpdateMsgErr(Notification::new(num() as u8, num() as u8, vec![])),
        "OpenCollisionDump" => Input::OpenCollisionDump,
        "NotifMsg" => Input::NotifMsg(Notification::new(num() as u8, num() as u8, vec![])),
        "KeepAliveMsg" => Input::KeepAliveMsg,
        "UpdateMsg" => Input::UpdateMsg(Update::end_of_rib(AfiSafi::IPV4_UNICAST)),
        other => panic!("unknown event {other}"),
    }
}

fn describe(o: &Output) -> String {
    match o {
        Output::Connect => "Connect".into(),
        Output::SendMessage(Message::Open(open)) => {
            format!(
                "Send OPEN as={} hold={} id={}",
                open.asn(),
                open.hold_time,
                open.router_id
            )
        }
        Output::SendMessage(Message::Keepalive) => "Send KEEPALIVE".into(),
        Output::SendMessage(Message::Notification(n)) => {
            format!(
                "Send NOTIFICATION {}/{} message={:?}",
                n.code,
                n.subcode,
                n.shutdown_message()
            )
        }
        Output::SendMessage(m) => format!("Send {m:?}"),
        Output::CloseConnection => "CloseConnection".into(),
        Output::StartTimer(t, d) => format!("StartTimer {t:?} {}s", d.as_secs()),
        Output::StopTimer(t) => format!("StopTimer {t:?}"),
        Output::SessionEstablished {
            peer_open,
            hold_time,
            ..
        } => {
            format!(
                "SessionEstablished peer_id={} hold={hold_time}",
                peer_open.router_id
            )
        }
        Output::SessionDown { reason, from } => format!("SessionDown from={from} reason={reason}"),
        Output::DeliverUpdate(_) => "DeliverUpdate".into(),
        Output::DeliverRouteRefresh(_) => "DeliverRouteRefresh".into(),
    }
}

fn run(name: &str) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/fsm_golden");
    let events = std::fs::read_to_string(dir.join(format!("{name}.events"))).unwrap();
    let mut lines = events
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'));
    // First line: `config <local_as> <peer_as> <hold>`.
    let cfg: Vec<u32> = lines
        .next()
        .unwrap()
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap())
        .collect();
    let mut fsm = Fsm::new(FsmConfig {
        local_as: cfg[0],
        router_id: Ipv4Addr::new(198, 18, 0, 1),
        peer_as: cfg[1],
        hold_time: cfg[2] as u16,
        connect_retry: DEFAULT_CONNECT_RETRY,
        capabilities: FsmConfig::default_capabilities(cfg[0]),
    });
    let mut transcript = String::new();
    for line in lines {
        let outputs = fsm.process(parse_input(line));
        writeln!(transcript, "> {line}").unwrap();
        for o in &outputs {
            writeln!(transcript, "    {}", describe(o)).unwrap();
        }
        writeln!(transcript, "  = {}", fsm.state()).unwrap();
    }
    let golden = dir.join(format!("{name}.golden"));
    if std::env::var("MANX_BLESS").is_ok_and(|v| v == "1") {
        std::fs::write(&golden, &transcript).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&golden).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with MANX_BLESS=1 to create it)",
            golden.display()
        )
    });
    assert_eq!(
        transcript,
        expected,
        "transcript of {name} differs from {}",
        golden.display()
    );
}

/// §8.2.2: active open, OPEN/KEEPALIVE exchange, keepalives, hold expiry, automatic restart.
#[test]
fn fsm_golden_active_session_lifecycle() {
    run("active_session_lifecycle");
}

/// §8.2.2 + RFC 8203: passive start, ManualStop with a shutdown message.
#[test]
fn fsm_golden_passive_and_manual_stop() {
    run("passive_and_manual_stop");
}

/// §6.2, §6.8, RFC 6608: OPEN errors, collision dump, unexpected messages, back-off.
#[test]
fn fsm_golden_errors_and_backoff() {
    run("errors_and_backoff");
}
