//! `nanofaas`: see the library (`nanofaas_cli`) for everything it does.

/// mimalloc: the control plane allocates small, short-lived objects on every invocation, where
/// it is markedly cheaper than the system allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    nanofaas_cli::cli::main()
}
