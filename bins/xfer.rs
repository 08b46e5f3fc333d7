//! `xfer`: bundled parallel transfers over the ControlMaster. All logic is
//! in the library.

fn main() -> std::process::ExitCode {
    offload::cli::main("xfer", offload::xfer::run)
}
