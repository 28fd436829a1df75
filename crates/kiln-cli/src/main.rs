//! `kiln`: build, run, inspect and check models.

mod conformance;
mod inputs;
mod inspect;
mod npy;
mod run;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "kiln", version, about = "Kiln: an inference optimiser for ONNX models")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a model (random inputs unless given) and summarise its outputs.
    Run(run::Args),
    /// Show a model's inputs, outputs, opsets, op histogram and parameters.
    Inspect(inspect::Args),
    /// Run the ONNX backend node test cases and compare with their expected outputs.
    Conformance(conformance::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run::main(args).map(|_| ExitCode::SUCCESS),
        Command::Inspect(args) => inspect::main(args).map(|_| ExitCode::SUCCESS),
        Command::Conformance(args) => conformance::main(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
