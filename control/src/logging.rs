//! What the running router says on stderr, through the `log` facade, filtered by
//! `--log-level` (lab.md). One line per event, `vpcd: ` first, as vpcd's other messages.

use crate::cli::LogLevel;

struct Stderr;

impl log::Log for Stderr {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record) {
        if self.enabled(record.metadata()) {
            eprintln!("vpcd: {}", record.args());
        }
    }

    fn flush(&self) {}
}

static LOGGER: Stderr = Stderr;

/// Installs the logger at `level` (once; a second call changes only the level).
pub fn init(level: LogLevel) {
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(match level {
        LogLevel::Error => log::LevelFilter::Error,
        LogLevel::Warn => log::LevelFilter::Warn,
        LogLevel::Info => log::LevelFilter::Info,
    });
}
