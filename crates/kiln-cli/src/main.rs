//! `kiln`: build, run, inspect and check models.

mod backend;
mod bench;
mod build;
mod conformance;
mod dot;
mod inputs;
mod inspect;
mod inspect_plan;
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
    /// Build a plan file (.kiln) for a GPU (or the CPU) from an ONNX model.
    Build(build::Args),
    /// Measure a plan's (or a model's) throughput and latency, trtexec style.
    Bench(bench::Args),
}

/// Activation layout of convolution regions (`--layout`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LayoutArg {
    /// The model's own layout.
    #[default]
    Nchw,
    /// Channels last.
    Nhwc,
}

/// `graph` optimised at `level` (0: only dead nodes dropped), with the CPU backend
/// folding constants.
pub fn optimize(
    graph: &kiln_ir::Graph,
    level: u8,
    layout: LayoutArg,
) -> Result<(kiln_ir::Graph, kiln_opt::Report), kiln_opt::OptError> {
    let layout = match layout {
        LayoutArg::Nchw => kiln_engine::prepare::Layout::Nchw,
        LayoutArg::Nhwc => kiln_engine::prepare::Layout::Nhwc,
    };
    kiln_engine::prepare::optimize(graph, level, layout)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run::main(args).map(|_| ExitCode::SUCCESS),
        Command::Inspect(args) => inspect::main(args).map(|_| ExitCode::SUCCESS),
        Command::Conformance(args) => conformance::main(args),
        Command::Build(args) => build::main(args).map(|_| ExitCode::SUCCESS),
        Command::Bench(args) => bench::main(args).map(|_| ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
