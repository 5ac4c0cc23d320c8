//! One module per command group. Each command returns an [`Out`] (or prints NDJSON events
//! itself when it waits) and never exits the process.

pub mod account;
pub mod keys;
pub mod raw;
pub mod workspace;

use crate::client::Api;
use crate::config::ConfigFile;
use crate::output::Printer;

/// What every command gets.
#[derive(Debug)]
pub struct Ctx {
    pub api: Api,
    pub printer: Printer,
    pub file: ConfigFile,
    pub verbose: bool,
}
