//! The `meridian` binary.

/// mimalloc instead of glibc's malloc: the request path allocates and frees a few dozen
/// small blocks per request, which glibc serves at several times mimalloc's cost
/// (docs/performance.md, "The patches and their share"). Off with `--no-default-features`.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    meridian::cli::main()
}
