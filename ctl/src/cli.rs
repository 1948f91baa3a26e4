//! The command line, calicoctl-style.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// Output formats of `get`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Wide,
    Yaml,
    Json,
}

#[derive(Parser, Debug)]
#[command(
    name = "manxctl",
    version,
    about = "Manage Manx resources and inspect nodes (calicoctl-style)",
    long_about = "Datastore selection as calicoctl: DATASTORE_TYPE=etcdv3|embedded, ETCD_ENDPOINTS, \
                  ETCD_CA_CERT_FILE, ETCD_CERT_FILE, ETCD_KEY_FILE, ETCD_USERNAME, ETCD_PASSWORD, \
                  MANX_DB; or a config file with the same keys (--config)."
)]
pub struct Cli {
    /// A config file of KEY=VALUE lines (or calicoctl.cfg's `datastoreType:` /
    /// `etcdEndpoints:` YAML spec) selecting the datastore.
    #[arg(short = 'c', long, global = true, env = "MANXCTL_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create resources from a file; fails for those that exist.
    Create(FileArgs),
    /// Create or update resources from a file.
    Apply(FileArgs),
    /// Replace existing resources (resourceVersion checked when given).
    Replace(FileArgs),
    /// Delete resources, by file or by kind and name.
    Delete(DeleteArgs),
    /// Show resources.
    Get(GetArgs),
    /// Merge-patch one resource: `manxctl patch ippool p1 -p '{"spec":{"disabled":true}}'`.
    Patch(PatchArgs),
    /// Add, change or remove a label: `manxctl label node n1 route-reflector=true`.
    Label(LabelArgs),
    /// Node commands.
    #[command(subcommand)]
    Node(NodeCmd),
    /// IP address management.
    #[command(subcommand)]
    Ipam(IpamCmd),
    /// Print a shell completion script.
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(clap::Args, Debug)]
pub struct FileArgs {
    /// Manifest file (YAML or JSON, several documents); `-` for stdin.
    #[arg(short = 'f', long = "filename")]
    pub file: String,
    /// With `create`: do not fail on resources that already exist.
    #[arg(long)]
    pub skip_exists: bool,
}

#[derive(clap::Args, Debug)]
pub struct DeleteArgs {
    /// Manifest file naming what to delete.
    #[arg(short = 'f', long = "filename", conflicts_with_all = ["kind", "name"])]
    pub file: Option<String>,
    /// Kind (`ippool`, `bgppeer`, `node`, ...).
    pub kind: Option<String>,
    pub name: Option<String>,
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// Do not fail on resources that do not exist.
    #[arg(long)]
    pub skip_not_exists: bool,
}

#[derive(clap::Args, Debug)]
pub struct GetArgs {
    /// Kind (`ippool`, `ippools`, `bgppeer`, `bgpconfig`, `node`, `wep`, ...).
    pub kind: String,
    /// Names; all of the kind if none.
    pub names: Vec<String>,
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    pub output: Output,
    /// Namespace of namespaced kinds (WorkloadEndpoint).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// Every namespace.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
}

#[derive(clap::Args, Debug)]
pub struct PatchArgs {
    pub kind: String,
    pub name: String,
    /// A JSON merge patch (RFC 7386).
    #[arg(short = 'p', long)]
    pub patch: String,
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct LabelArgs {
    pub kind: String,
    pub name: String,
    /// `key=value`, or `key` with --remove.
    pub label: String,
    #[arg(long)]
    pub remove: bool,
    /// Replace an existing value.
    #[arg(long)]
    pub overwrite: bool,
}

#[derive(Subcommand, Debug)]
pub enum NodeCmd {
    /// BGP peers of this node: PEER ADDRESS | PEER TYPE | STATE | SINCE | INFO
    /// (and BFD after STATE once a peer has BFD).
    Status {
        /// manx-node's run directory (its status socket lives there).
        #[arg(long, env = "MANX_RUN_DIR", default_value = manx_status::DEFAULT_RUN_DIR)]
        run_dir: PathBuf,
        /// Also the BGP routes from outside the IP pools: PREFIX | NEXT HOP |
        /// STATE | INFO (installed, or why not).
        #[arg(long)]
        routes: bool,
    },
    /// Exit 0 when manx-node on this host is ready (what /readyz says).
    Ready {
        #[arg(long, env = "MANX_RUN_DIR", default_value = manx_status::DEFAULT_RUN_DIR)]
        run_dir: PathBuf,
    },
    /// Check the kernel and host for what Manx needs.
    Checksystem,
}

#[derive(Subcommand, Debug)]
pub enum IpamCmd {
    /// Pool utilisation; blocks, borrowed addresses, or one address.
    Show {
        #[arg(long)]
        show_blocks: bool,
        #[arg(long)]
        show_borrowed: bool,
        #[arg(long)]
        ip: Option<String>,
        #[arg(long)]
        show_configuration: bool,
    },
    /// Find leaked addresses, orphan handles and stale blocks.
    Check {
        /// Write the JSON report here.
        #[arg(short = 'o', long)]
        output: Option<PathBuf>,
        /// Also list every problem address.
        #[arg(long)]
        show_all_ips: bool,
    },
    /// Release one address, or every leak in a `check` report.
    Release {
        #[arg(long, conflicts_with = "from_report")]
        ip: Option<String>,
        #[arg(long)]
        from_report: Option<PathBuf>,
    },
    /// Change IPAM settings.
    Configure {
        #[arg(long, action = clap::ArgAction::Set)]
        strictaffinity: Option<bool>,
        #[arg(long)]
        max_blocks_per_host: Option<u32>,
    },
}
