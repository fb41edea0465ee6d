//! `nanofaas`: see the library (`nanofaas_cli`) for everything it does.

fn main() -> std::process::ExitCode {
    nanofaas_cli::cli::main()
}
