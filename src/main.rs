//! The `yima-gate` binary: parses the command line and hands over to [`yima_gate::cli`].

fn main() -> std::process::ExitCode {
    yima_gate::cli::main()
}
