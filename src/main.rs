fn main() {
    // First, before anything slow: as PID 1 a SIGTERM without a handler is simply lost.
    let hub = match migrun::SignalHub::install() {
        Ok(hub) => hub,
        Err(e) => {
            eprintln!("migrun: cannot install signal handlers: {e}");
            std::process::exit(migrun::ExitCode::Internal.code());
        }
    };
    let env = |name: &str| std::env::var(name).ok();
    let exit = migrun::run(std::env::args_os().collect(), &env, &hub);
    std::process::exit(exit.code());
}
