//! The `meridian` binary.

fn main() -> std::process::ExitCode {
    meridian::cli::main()
}
