//! `nanofaas-watchdog`: read the configuration, build the async runtime, run, exit with a
//! documented code (see `ExitCode`).

use nanofaas_watchdog::{log, Config, ExitCode};

fn main() -> std::process::ExitCode {
    let cfg = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("nanofaas-watchdog: {e}");
            return ExitCode::Config.into();
        }
    };
    log::set_level(cfg.log_level);
    let mut builder = if cfg.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(cfg.threads);
        b
    };
    let rt = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("nanofaas-watchdog: cannot start the async runtime: {e}");
            return ExitCode::Internal.into();
        }
    };
    rt.block_on(nanofaas_watchdog::run(cfg)).into()
}
