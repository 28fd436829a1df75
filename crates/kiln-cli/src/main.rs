//! `kiln`: build, run, inspect and check models.

mod backend;
mod conformance;
mod dot;
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

/// The CPU backend as the optimiser's constant evaluator.
fn cpu_eval(op: &kiln_ir::Op, inputs: &[Option<kiln_ir::Tensor>], n: usize) -> Result<Vec<kiln_ir::Tensor>, String> {
    kiln_cpu::eval_op(op, inputs, n, &kiln_cpu::EvalContext::default()).map_err(|e| e.to_string())
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
    let eval = cpu_eval;
    let layout = match layout {
        LayoutArg::Nchw => kiln_opt::Layout::Nchw,
        LayoutArg::Nhwc => kiln_opt::Layout::Nhwc,
    };
    let options = kiln_opt::Options { evaluator: Some(&eval), layout, ..kiln_opt::Options::default() };
    kiln_opt::Optimizer::new(level).with_options(options).optimize(graph)
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
