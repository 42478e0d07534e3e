use clap::Parser;

fn main() {
    let cli = migrun::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("migrun: cannot start the async runtime: {e}");
            std::process::exit(migrun::ExitCode::Internal.code());
        }
    };
    let env = |name: &str| std::env::var(name).ok();
    let exit = runtime.block_on(migrun::run(cli, &env));
    std::process::exit(exit.code());
}
