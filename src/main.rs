use clap::Parser;
use migrun::commands::{Handover, Outcome};
use migrun::signals::SignalHub;

fn main() {
    // First, before anything slow: as PID 1 a SIGTERM without a handler is simply lost.
    let hub = match SignalHub::install() {
        Ok(hub) => hub,
        Err(e) => {
            eprintln!("migrun: cannot install signal handlers: {e}");
            std::process::exit(migrun::ExitCode::Internal.code());
        }
    };
    let cli = migrun::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("migrun: cannot start the async runtime: {e}");
            std::process::exit(migrun::ExitCode::Internal.code());
        }
    };
    let env = |name: &str| std::env::var(name).ok();
    let outcome = runtime.block_on(migrun::run(cli, &env, hub.shutdown()));
    let exit = match outcome {
        Outcome::Exit(exit) => exit,
        Outcome::Exec(handover) => {
            let Handover { child, report, held } = *handover;
            match held {
                None => {
                    // The runtime (and any connection left in it) is gone before the child starts.
                    drop(runtime);
                    report.finish(migrun::supervise::run(&child, &hub))
                }
                Some(held) => {
                    let exit = migrun::supervise::run(&child, &hub);
                    runtime.block_on(held.release());
                    report.finish(exit)
                }
            }
        }
    };
    std::process::exit(exit.code());
}
