//! `manx-ipam`: the CNI IPAM plugin. All logic is in `ipam::cni_plugin`, the
//! protocol (environment, errors, output) in the `manx-cni-proto` crate.

use std::collections::HashMap;
use std::process::ExitCode;

use cni_proto::CniError;
use cni_proto::output::{Outcome, emit, read_stdin};
use ipam::cni_plugin::{datastore_connector, run};

fn main() -> ExitCode {
    let stdin = match read_stdin() {
        Ok(stdin) => stdin,
        Err(e) => return exit(emit(&Outcome::new(b"", &Err(e)))),
    };
    // The same log settings as the `manx` plugin (`log_file_path`, `log_level`).
    let _log = cni_proto::logging::init(&stdin);
    let vars: HashMap<String, String> = std::env::vars().collect();
    let result = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(run(&vars, &stdin, &datastore_connector())),
        Err(e) => Err(CniError::io(format!("cannot start the async runtime: {e}"))),
    };
    exit(emit(&Outcome::new(&stdin, &result)))
}

fn exit(code: i32) -> ExitCode {
    if code == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
