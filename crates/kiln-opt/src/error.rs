use kiln_ir::IrError;

#[derive(Debug, thiserror::Error)]
pub enum OptError {
    #[error(transparent)]
    Ir(#[from] IrError),
    /// A pass built a replacement the graph refused; the graph is left unchanged.
    #[error("pass '{pass}' at node '{node}': {msg}")]
    Rewrite { pass: &'static str, node: String, msg: String },
    #[error("the optimiser did not reach a fixpoint after {0} sweeps")]
    NoFixpoint(usize),
}

pub type Result<T> = std::result::Result<T, OptError>;
