//! `prepare`: builds what a run needs on the remote side. All logic is in
//! the library.

// prepare renders millions of short strings on every core; mimalloc keeps
// that from queueing on the system allocator.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    offload::cli::main("prepare", offload::prepare::run)
}
