use clap::Parser;
use migrun::commands::Outcome;
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
    // The runtime (and any connection left in it) is gone before a child starts.
    drop(runtime);
    let exit = match outcome {
        Outcome::Exit(exit) => exit,
        Outcome::Exec { child, report } => report.finish(migrun::supervise::run(&child, &hub)),
    };
    std::process::exit(exit.code());
}
