//! `remotetool`: the database tool of offload. All logic is in the library.

fn main() -> std::process::ExitCode {
    offload::cli::main("remotetool", offload::remotetool::run)
}
