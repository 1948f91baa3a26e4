//! The `manx` CNI plugin binary: reads stdin, logs to stderr (and
//! `log_file_path`), runs the command, prints the result or error.

use cni_proto::output::{Outcome, emit, read_stdin};

fn main() {
    let stdin = match read_stdin() {
        Ok(stdin) => stdin,
        Err(e) => std::process::exit(emit(&Outcome::new(b"", &Err(e)))),
    };
    let _guard = cni_proto::logging::init(&stdin);
    let outcome = cni::run(|k| std::env::var(k).ok(), &stdin, &cni::store::open);
    std::process::exit(emit(&outcome));
}
