//! The labelgate binary: parse the command line, run, turn errors into exit codes.

fn main() {
    std::process::exit(labelgate::app::main());
}
