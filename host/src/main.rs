fn main() -> std::process::ExitCode {
    match linecook::cli::main() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // `linecook … | head`: the reader is done, so is the command.
        Err(e) if linecook::cli::is_broken_pipe(&e) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            match e.downcast_ref::<linecook::cli::Exit>() {
                Some(exit) => std::process::ExitCode::from(exit.code),
                None => std::process::ExitCode::FAILURE,
            }
        }
    }
}
