//! `poll`: watches a run's job and brings it back. All logic is in the
//! library.

fn main() -> std::process::ExitCode {
    offload::cli::main("poll", offload::poll::run)
}
