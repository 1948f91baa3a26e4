//! The `manx` CNI plugin binary: reads stdin, logs to stderr (and
//! `log_file_path`), runs the command, prints the result or error.

use std::io::{Read, Write};

fn main() {
    let mut stdin = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut stdin) {
        let err = cni::CniError::io(format!(
            "cannot read the network configuration from stdin: {e}"
        ));
        println!("{}", err.to_json(cni::version::CURRENT_VERSION));
        std::process::exit(1);
    }
    let _guard = cni::logging::init(&stdin);
    let outcome = cni::run(|k| std::env::var(k).ok(), &stdin, &cni::store::open);
    let mut out = std::io::stdout().lock();
    // Nothing useful can be done if stdout is closed: the exit code stays.
    let _ = out.write_all(&outcome.stdout);
    let _ = out.flush();
    std::process::exit(outcome.exit_code);
}
