//! `exec`: sends a prepared run and submits it. All logic is in the library.

fn main() -> std::process::ExitCode {
    offload::cli::main("exec", offload::exec::run)
}
