fn main() {
    std::process::exit(fledge::cli::main())
}
