//! The `rig` binary (also installed as `rigbox`); everything lives in the library.

fn main() {
    std::process::exit(rigbox_cli::main());
}
