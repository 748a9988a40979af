//! mingen: turns host facts and a target's rules into one reviewed ash script
//! that minimises an Alpine Linux VPS. `main` parses, runs, and prints errors.

mod cli;
mod error;
mod facts;
mod plan;
mod script;
mod target;

use clap::Parser;
use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    match cli::run(cli::Cli::parse()) {
        Ok(output) => {
            let mut stdout = std::io::stdout().lock();
            match stdout.write_all(&output.bytes).and_then(|()| stdout.flush()) {
                Ok(()) => {
                    if output.is_script {
                        eprintln!("{}", script::integrity_note(&output.bytes));
                    }
                    if let Some(warning) = output.warning {
                        eprintln!("{warning}");
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("mingen: cannot write the output: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Err(e) => {
            eprintln!("mingen: error: {e}");
            ExitCode::FAILURE
        }
    }
}
