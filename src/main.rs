fn main() {
    // One malloc arena for every thread: the few short-lived threads (signals, reading files)
    // would each reserve an arena and grow it a page at a time, a system call and a page fault
    // per step, for no gain at this scale.
    // SAFETY: mallopt only changes glibc's allocator settings; called before any thread exists.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) };
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
