//! `prepare`: builds what a run needs on the remote side. All logic is in
//! the library.

fn main() -> std::process::ExitCode {
    offload::cli::main("prepare", offload::prepare::run)
}
