//! manxctl entry point (thin: see the `manxctl` library).

use std::sync::Arc;

use anyhow::{Context, Result, anyhow, bail};
use clap::{CommandFactory, Parser};
use datastore::client::Client;
use ipam::Ipam;
use ipam::resources::DatastoreTopology;
use manxctl::cli::{Cli, Command, IpamCmd, NodeCmd};
use manxctl::resources::{self, Verb};

fn main() {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match rt.block_on(run(cli)) {
        Ok(0) => {}
        Ok(_) => std::process::exit(1),
        Err(e) => {
            eprintln!("{e:#}");
            std::process::exit(1);
        }
    }
}

async fn client(cli: &Cli) -> Result<Client> {
    let cfg = manxctl::datastore_config::datastore_config(cli.config.as_deref())?;
    let store = cfg
        .connect()
        .await
        .map_err(|e| anyhow!("connecting to the datastore ({}): {e}", cfg.describe()))?;
    Ok(Client::new(store))
}

async fn ipam(cli: &Cli) -> Result<Ipam> {
    let c = client(cli).await?;
    let store = c.store().clone();
    Ok(Ipam::new(
        store.clone(),
        Arc::new(DatastoreTopology::new(store)),
    ))
}

/// Returns the number of objects that failed (exit code 1 if any).
async fn run(cli: Cli) -> Result<usize> {
    match &cli.command {
        Command::Create(f) => {
            let verb = Verb::Create {
                skip_exists: f.skip_exists,
            };
            resources::from_file(&client(&cli).await?, verb, &f.file).await
        }
        Command::Apply(f) => resources::from_file(&client(&cli).await?, Verb::Apply, &f.file).await,
        Command::Replace(f) => {
            resources::from_file(&client(&cli).await?, Verb::Replace, &f.file).await
        }
        Command::Delete(d) => {
            let verb = Verb::Delete {
                skip_not_exists: d.skip_not_exists,
            };
            let c = client(&cli).await?;
            match (&d.file, &d.kind, &d.name) {
                (Some(file), _, _) => resources::from_file(&c, verb, file).await,
                (None, Some(kind), Some(name)) => {
                    let kind = resources::kind_arg(kind)?;
                    match c
                        .delete_resource(kind, d.namespace.as_deref(), name, None)
                        .await
                    {
                        Ok(_) => {
                            println!("Successfully deleted 1 '{kind}' resource(s)");
                            Ok(0)
                        }
                        Err(datastore::client::ClientError::NotFound { .. })
                            if d.skip_not_exists =>
                        {
                            Ok(0)
                        }
                        Err(e) => Err(e.into()),
                    }
                }
                _ => bail!("delete: give -f FILE, or KIND NAME"),
            }
        }
        Command::Get(g) => {
            let kind = resources::kind_arg(&g.kind)?;
            let ns = if g.all_namespaces {
                None
            } else {
                g.namespace.as_deref()
            };
            let items = resources::fetch(&client(&cli).await?, kind, &g.names, ns).await?;
            print!(
                "{}",
                resources::render_get(&items, g.output, g.names.len() == 1)
            );
            Ok(0)
        }
        Command::Patch(p) => {
            let kind = resources::kind_arg(&p.kind)?;
            resources::patch(
                &client(&cli).await?,
                kind,
                &p.name,
                p.namespace.as_deref(),
                &p.patch,
            )
            .await?;
            println!("Successfully patched 1 '{kind}' resource");
            Ok(0)
        }
        Command::Label(l) => {
            let kind = resources::kind_arg(&l.kind)?;
            resources::label(
                &client(&cli).await?,
                kind,
                &l.name,
                &l.label,
                l.remove,
                l.overwrite,
            )
            .await?;
            println!(
                "Successfully updated label {} on {} {}",
                l.label,
                kind.lower(),
                l.name
            );
            Ok(0)
        }
        Command::Node(NodeCmd::Checksystem) => {
            let checks = manxctl::checksystem::checksystem();
            print!("{}", manxctl::checksystem::render(&checks));
            Ok(checks.iter().filter(|c| !c.ok).count())
        }
        Command::Node(NodeCmd::Status { run_dir, routes }) => {
            print!("{}", manxctl::node_status::status(run_dir, *routes).await?);
            Ok(0)
        }
        Command::Node(NodeCmd::Ready { run_dir }) => {
            manxctl::node_status::ready(run_dir).await?;
            println!("ready");
            Ok(0)
        }
        Command::Ipam(cmd) => ipam_cmd(&cli, cmd).await,
        Command::Completion { shell } => {
            clap_complete::generate(
                *shell,
                &mut Cli::command(),
                "manxctl",
                &mut std::io::stdout(),
            );
            Ok(0)
        }
    }
}

async fn ipam_cmd(cli: &Cli, cmd: &IpamCmd) -> Result<usize> {
    use ipam::ops;
    let ipam = ipam(cli).await?;
    match cmd {
        IpamCmd::Show {
            show_blocks,
            show_borrowed,
            ip,
            show_configuration,
        } => {
            if *show_configuration {
                print!("{}", ops::render_config(&ipam.config().await?));
            } else if let Some(ip) = ip {
                let ip = ip
                    .parse()
                    .with_context(|| format!("--ip {ip:?} is not an IP address"))?;
                print!("{}", ops::show_ip(&ipam, ip).await?);
            } else {
                let opts = ops::ShowOptions {
                    show_blocks: *show_blocks,
                    show_borrowed: *show_borrowed,
                };
                print!("{}", ops::show(&ipam, opts).await?);
            }
            Ok(0)
        }
        IpamCmd::Check {
            output,
            show_all_ips,
        } => {
            let live =
                manxctl::node_status::live_handles(&Client::new(ipam.rw().store().clone())).await?;
            let report = ipam.check(Some(&live)).await?;
            for line in report
                .problems()
                .iter()
                .take(if *show_all_ips { usize::MAX } else { 50 })
            {
                println!("{line}");
            }
            if let Some(path) = output {
                std::fs::write(path, serde_json::to_vec_pretty(&report)?)
                    .with_context(|| format!("writing {}", path.display()))?;
                println!("Report written to {}", path.display());
            }
            if report.is_clean() {
                println!("Check complete: no problems found.");
                Ok(0)
            } else {
                println!(
                    "Check complete: {} problem(s) found.",
                    report.problems().len()
                );
                Ok(1)
            }
        }
        IpamCmd::Release { ip, from_report } => {
            let summary = match (ip, from_report) {
                (Some(ip), _) => {
                    let ip = ip
                        .parse()
                        .with_context(|| format!("--ip {ip:?} is not an IP address"))?;
                    ops::release_ip(&ipam, ip).await?
                }
                (None, Some(path)) => {
                    let text = std::fs::read_to_string(path)
                        .with_context(|| format!("reading {}", path.display()))?;
                    let report = ops::parse_report(&text)?;
                    ops::release_from_report(&ipam, &report).await?
                }
                (None, None) => bail!("ipam release: give --ip X or --from-report FILE"),
            };
            print!("{summary}");
            Ok(0)
        }
        IpamCmd::Configure {
            strictaffinity,
            max_blocks_per_host,
        } => {
            let cfg = ops::configure(&ipam, *strictaffinity, *max_blocks_per_host, None).await?;
            print!("{}", ops::render_config(&cfg));
            Ok(0)
        }
    }
}
