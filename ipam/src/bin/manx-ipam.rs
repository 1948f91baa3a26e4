//! `manx-ipam`: the CNI IPAM plugin. All logic is in `ipam::cni_plugin`.

use std::io::{Read, Write};
use std::process::ExitCode;

use ipam::cni_plugin::{CniEnv, CniError, codes, datastore_connector, run};

fn main() -> ExitCode {
    // Logs go to stderr (stdout is the protocol); quiet unless MANX_LOG says.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("MANX_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let env = CniEnv::from_vars(std::env::vars());
    let mut stdin = Vec::new();
    if env.command != "VERSION"
        && let Err(e) = std::io::stdin().read_to_end(&mut stdin)
    {
        return emit(Err(CniError {
            cni_version: "1.1.0".into(),
            code: codes::DECODE,
            msg: format!("reading the network config from stdin: {e}"),
            details: String::new(),
        }));
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            return emit(Err(CniError {
                cni_version: "1.1.0".into(),
                code: codes::TRY_AGAIN,
                msg: format!("starting the runtime: {e}"),
                details: String::new(),
            }));
        }
    };
    let connector = datastore_connector();
    emit(rt.block_on(run(&env, &stdin, &connector)))
}

fn emit(r: Result<Option<serde_json::Value>, CniError>) -> ExitCode {
    let mut out = std::io::stdout().lock();
    match r {
        Ok(Some(v)) => {
            let _ = writeln!(out, "{v}");
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(
                out,
                "{}",
                serde_json::to_string(&e).unwrap_or_else(|_| format!("{{\"code\":{}}}", e.code))
            );
            ExitCode::FAILURE
        }
    }
}
